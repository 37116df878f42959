//! `twinhub twin show|update`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use twinhub_client::rest::TwinDto;

use super::options::Output;
use super::render::{key_values, print, print_json, time};
use super::{CliError, HubOptions, parse_json};

#[derive(Args, Debug)]
pub(crate) struct TwinArgs {
    #[command(flatten)]
    hub: HubOptions,
    #[command(subcommand)]
    command: TwinCommand,
}

#[derive(Subcommand, Debug)]
enum TwinCommand {
    /// Show a device's twin: tags, desired and reported properties.
    Show {
        /// The device id.
        device_id: String,
    },
    /// Merge tags and/or desired properties into a twin (`null` removes a key).
    #[command(group(clap::ArgGroup::new("patch").required(true).multiple(true).args(["tags", "desired"])))]
    Update {
        /// The device id.
        device_id: String,
        /// Tags to merge, as JSON, e.g. '{"site":"north"}'
        #[arg(long, value_name = "JSON")]
        tags: Option<String>,
        /// Desired properties to merge, as JSON, e.g. '{"interval":30}'
        #[arg(long, value_name = "JSON")]
        desired: Option<String>,
        /// Update only if the twin still has this etag (else PreconditionFailed)
        #[arg(long)]
        etag: Option<String>,
    },
}

pub(crate) async fn run(args: TwinArgs) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let output = args.hub.output;
    let twin = match args.command {
        TwinCommand::Show { device_id } => client.get_twin(&device_id).await?,
        TwinCommand::Update {
            device_id,
            tags,
            desired,
            etag,
        } => {
            let patch = twin_patch(tags.as_deref(), desired.as_deref())?;
            client
                .update_twin(&device_id, &patch, etag.as_deref())
                .await?
        }
    };
    show(&twin, output)
}

/// `{"tags": ..., "properties": {"desired": ...}}` from the flags given; each must be an object.
pub(super) fn twin_patch(tags: Option<&str>, desired: Option<&str>) -> Result<Value, CliError> {
    let mut patch = Map::new();
    if let Some(tags) = tags {
        patch.insert("tags".into(), object("--tags", tags)?);
    }
    if let Some(desired) = desired {
        let mut properties = Map::new();
        properties.insert("desired".into(), object("--desired", desired)?);
        patch.insert("properties".into(), Value::Object(properties));
    }
    Ok(Value::Object(patch))
}

fn object(flag: &str, text: &str) -> Result<Value, CliError> {
    match parse_json(flag, text)? {
        value @ Value::Object(_) => Ok(value),
        _ => Err(CliError::Usage(format!("{flag} must be a JSON object"))),
    }
}

fn show(twin: &TwinDto, output: Output) -> Result<(), CliError> {
    if output == Output::Json {
        return print_json(twin);
    }
    let pretty = |value: &Value| serde_json::to_string_pretty(value).unwrap_or_default();
    let mut text = key_values(&[
        ("device id", twin.device_id.clone()),
        ("etag", twin.etag.clone()),
        ("version", twin.version.to_string()),
        ("status", twin.status.clone()),
        ("connection", twin.connection_state.clone()),
        ("last activity", time(Some(&twin.last_activity_time))),
    ]);
    for (title, value) in [
        ("tags", &twin.tags),
        ("desired", &twin.properties.desired),
        ("reported", &twin.properties.reported),
    ] {
        text.push_str(&format!(
            "\n{title}:\n{}\n",
            pretty(&without_metadata(value))
        ));
    }
    print(&text)
}

/// A twin section without `$metadata` and `$version`, which people rarely want to read.
fn without_metadata(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn patches_from_flags() {
        assert_eq!(
            twin_patch(Some(r#"{"a":1}"#), Some(r#"{"b":null}"#)).expect("patch"),
            json!({"tags": {"a": 1}, "properties": {"desired": {"b": null}}})
        );
        assert_eq!(
            twin_patch(None, Some("{}")).expect("patch"),
            json!({"properties": {"desired": {}}})
        );
        assert!(matches!(
            twin_patch(Some("[1]"), None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            twin_patch(Some("{"), None),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn metadata_is_hidden_from_people() {
        assert_eq!(
            without_metadata(&json!({"$version": 3, "$metadata": {}, "x": 1})),
            json!({"x": 1})
        );
    }
}
