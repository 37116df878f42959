//! `twinhub configurations create|list|show|delete`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use twinhub_client::rest::{ConfigurationContentDto, ConfigurationDto, ConfigurationMetricsDto};

use super::options::Output;
use super::render::{Table, cell, key_values, opt, print, print_json};
use super::{CliError, HubOptions, parse_json};

/// The priority Azure's samples use when none is given.
pub(super) const DEFAULT_PRIORITY: i64 = 10;

#[derive(Args, Debug)]
pub(crate) struct ConfigurationsArgs {
    #[command(flatten)]
    hub: HubOptions,
    #[command(subcommand)]
    command: ConfigurationsCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigurationsCommand {
    /// Create a configuration: content for every twin matching the target condition.
    Create {
        /// The configuration id (lowercase letters, digits and -+%_*!').
        id: String,
        /// Which twins it targets, e.g. "tags.site = 'north'", or "*"
        #[arg(long, value_name = "COND")]
        target: String,
        /// The device content: twin path to value, as JSON, e.g. '{"properties.desired.interval": 30}'
        #[arg(long, value_name = "JSON")]
        content: String,
        /// Higher wins where configurations overlap
        #[arg(long, default_value_t = DEFAULT_PRIORITY)]
        priority: i64,
        /// A custom metric, NAME=QUERY (repeatable), e.g. "ok=SELECT deviceId FROM devices WHERE properties.reported.interval = 30"
        #[arg(long = "metric", value_name = "NAME=QUERY", value_parser = name_value)]
        metrics: Vec<(String, String)>,
        /// A label, KEY=VALUE (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = name_value)]
        labels: Vec<(String, String)>,
    },
    /// List configurations with their targeted and applied counts.
    List {
        /// At most this many configurations
        #[arg(long)]
        top: Option<u32>,
    },
    /// Show a configuration with its metrics as of now.
    Show {
        /// The configuration id.
        id: String,
    },
    /// Delete a configuration; the values it wrote are removed from the twins it owned.
    Delete {
        /// The configuration id.
        id: String,
        /// Delete only if the configuration still has this etag
        #[arg(long)]
        etag: Option<String>,
    },
}

/// `NAME=VALUE`, split at the first `=` (queries contain `=` themselves).
fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err("expected NAME=VALUE".to_owned()),
    }
}

pub(crate) async fn run(args: ConfigurationsArgs) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let output = args.hub.output;
    match args.command {
        ConfigurationsCommand::Create {
            id,
            target,
            content,
            priority,
            metrics,
            labels,
        } => {
            let Value::Object(device_content) = parse_json("--content", &content)? else {
                return Err(CliError::Usage(
                    "--content must be a JSON object of twin paths to values".to_owned(),
                ));
            };
            let configuration = ConfigurationDto {
                id,
                schema_version: Some("1.0".to_owned()),
                labels: labels
                    .into_iter()
                    .map(|(k, v)| (k, Value::from(v)))
                    .collect(),
                content: ConfigurationContentDto {
                    device_content: Some(device_content),
                    ..Default::default()
                },
                target_condition: target,
                priority,
                metrics: ConfigurationMetricsDto {
                    queries: metrics
                        .into_iter()
                        .map(|(k, v)| (k, Value::from(v)))
                        .collect(),
                    ..Default::default()
                },
                ..Default::default()
            };
            let created = client.create_configuration(&configuration).await?;
            show(&created, output)
        }
        ConfigurationsCommand::List { top } => {
            let configurations = client.list_configurations(top).await?;
            if output == Output::Json {
                return print_json(&configurations);
            }
            let mut table =
                Table::new(&["id", "priority", "target", "targeted", "applied", "created"]);
            for configuration in &configurations {
                let results = &configuration.system_metrics.results;
                table.row(vec![
                    configuration.id.clone(),
                    configuration.priority.to_string(),
                    configuration.target_condition.clone(),
                    results.get("targetedCount").map(cell).unwrap_or_default(),
                    results.get("appliedCount").map(cell).unwrap_or_default(),
                    opt(configuration.created_time_utc.as_deref()),
                ]);
            }
            print(&table.render())
        }
        ConfigurationsCommand::Show { id } => show(&client.get_configuration(&id).await?, output),
        ConfigurationsCommand::Delete { id, etag } => {
            client.delete_configuration(&id, etag.as_deref()).await?;
            match output {
                Output::Json => print_json(&json!({"id": id, "deleted": true})),
                Output::Table => print(&format!("deleted configuration {id}\n")),
            }
        }
    }
}

/// A configuration as key/value lines, its content, and one table of every metric.
pub(super) fn show(configuration: &ConfigurationDto, output: Output) -> Result<(), CliError> {
    if output == Output::Json {
        return print_json(configuration);
    }
    let labels: Vec<String> = configuration
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={}", cell(v)))
        .collect();
    let mut text = key_values(&[
        ("id", configuration.id.clone()),
        ("priority", configuration.priority.to_string()),
        ("target", configuration.target_condition.clone()),
        ("labels", labels.join(", ")),
        ("created", opt(configuration.created_time_utc.as_deref())),
        (
            "updated",
            opt(configuration.last_updated_time_utc.as_deref()),
        ),
        ("etag", opt(configuration.etag.as_deref())),
    ]);
    if let Some(content) = &configuration.content.device_content {
        let pretty = serde_json::to_string_pretty(content).unwrap_or_default();
        text.push_str(&format!("\ncontent:\n{pretty}\n"));
    }
    text.push('\n');
    text.push_str(&metrics_table(configuration).render());
    print(&text)
}

/// System metrics first (`targetedCount`, `appliedCount`), then the custom ones.
fn metrics_table(configuration: &ConfigurationDto) -> Table {
    let mut table = Table::new(&["metric", "count", "query"]);
    for metrics in [&configuration.system_metrics, &configuration.metrics] {
        let mut names: Vec<&String> = metrics.results.keys().collect();
        names.extend(
            metrics
                .queries
                .keys()
                .filter(|name| !metrics.results.contains_key(*name)),
        );
        for name in names {
            table.row(vec![
                name.clone(),
                metrics.results.get(name).map(cell).unwrap_or_default(),
                metrics.queries.get(name).map(cell).unwrap_or_default(),
            ]);
        }
    }
    table
}

/// A metric's count, 0 when absent or not a number.
pub(super) fn metric_count(metrics: &Map<String, Value>, name: &str) -> u64 {
    metrics.get(name).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_value_splits_at_the_first_equals() {
        assert_eq!(
            name_value("ok=SELECT deviceId FROM devices WHERE a = 1"),
            Ok((
                "ok".to_owned(),
                "SELECT deviceId FROM devices WHERE a = 1".to_owned()
            ))
        );
        assert!(name_value("no-equals").is_err());
        assert!(name_value("=x").is_err());
    }

    #[test]
    fn metrics_table_lists_system_then_custom_metrics() {
        let mut configuration = ConfigurationDto::default();
        configuration
            .system_metrics
            .results
            .insert("targetedCount".into(), json!(3));
        configuration
            .metrics
            .queries
            .insert("ok".into(), json!("SELECT deviceId FROM devices"));
        configuration.metrics.results.insert("ok".into(), json!(2));
        assert_eq!(
            metrics_table(&configuration).render(),
            "METRIC         COUNT  QUERY\ntargetedCount  3\nok             2      SELECT deviceId FROM devices\n"
        );
        assert_eq!(metric_count(&configuration.metrics.results, "ok"), 2);
        assert_eq!(metric_count(&configuration.metrics.results, "none"), 0);
    }
}
