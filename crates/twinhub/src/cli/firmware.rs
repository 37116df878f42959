//! `twinhub firmware upload|list|delete` and `twinhub rollout firmware`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Map, Value, json};
use twinhub_client::rest::{ConfigurationContentDto, ConfigurationDto, ConfigurationMetricsDto};
use twinhub_client::{FirmwarePackage, ServiceClient};

use super::configurations::{self, DEFAULT_PRIORITY, metric_count};
use super::options::Output;
use super::render::{LiveBlock, Table, key_values, print, print_json, progress_bar};
use super::{CliError, HubOptions};

/// How often a watched rollout is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest package id the hub accepts.
const MAX_PACKAGE_ID_CHARS: usize = 128;
/// The standard firmware metrics, in the order they are drawn.
const METRICS: [&str; 5] = ["current", "applying", "rebooting", "error", "rolledback"];

#[derive(Args, Debug)]
pub(crate) struct FirmwareArgs {
    #[command(flatten)]
    hub: HubOptions,
    #[command(subcommand)]
    command: FirmwareCommand,
}

#[derive(Subcommand, Debug)]
enum FirmwareCommand {
    /// Upload a firmware package to the hub; prints its download URL and SHA-256.
    Upload {
        /// The package file.
        file: PathBuf,
        /// The firmware version it holds.
        #[arg(long)]
        version: String,
        /// The package id [default: <file stem>-<version>]
        #[arg(long)]
        id: Option<String>,
    },
    /// List the hub's firmware packages.
    List,
    /// Delete a firmware package.
    Delete {
        /// The package id.
        id: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct RolloutArgs {
    #[command(flatten)]
    hub: HubOptions,
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Subcommand, Debug)]
enum RolloutCommand {
    /// Roll firmware out to the devices a condition selects: uploads the package if given a
    /// file, then creates a configuration setting `properties.desired.firmware` with the
    /// standard firmware metrics.
    #[command(group(ArgGroup::new("source").required(true).args(["file", "package", "url"])))]
    Firmware(FirmwareRollout),
}

#[derive(Args, Debug)]
struct FirmwareRollout {
    /// The firmware version to roll out.
    #[arg(long)]
    version: String,
    /// Which devices, e.g. "tags.model = 'chiller'", or "*"
    #[arg(long, value_name = "COND")]
    target: String,
    /// Upload this package file first
    #[arg(long)]
    file: Option<PathBuf>,
    /// Use this already uploaded package
    #[arg(long, value_name = "ID")]
    package: Option<String>,
    /// Use a package hosted elsewhere (needs --sha256)
    #[arg(long, requires = "sha256")]
    url: Option<String>,
    /// SHA-256 of the package at --url (hex)
    #[arg(long, requires = "url")]
    sha256: Option<String>,
    /// Size in bytes of the package at --url
    #[arg(long, requires = "url")]
    size: Option<u64>,
    /// The configuration id [default: firmware-<version>]
    #[arg(long)]
    id: Option<String>,
    /// Higher wins where configurations overlap
    #[arg(long, default_value_t = DEFAULT_PRIORITY)]
    priority: i64,
    /// Follow the rollout with one progress bar per status until every targeted device is done
    #[arg(long)]
    watch: bool,
    /// Stop watching after this many seconds (exit 1)
    #[arg(long, requires = "watch", value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Exit 1 if any device ends in error or rolled back
    #[arg(long, requires = "watch")]
    fail_on_error: bool,
}

pub(crate) async fn run(args: FirmwareArgs) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let output = args.hub.output;
    match args.command {
        FirmwareCommand::Upload { file, version, id } => {
            let id = id.unwrap_or_else(|| default_package_id(&file, &version));
            let package = client.upload_firmware(&id, &version, &file).await?;
            show_package(&package, output)
        }
        FirmwareCommand::List => {
            let packages = client.list_firmware().await?;
            if output == Output::Json {
                return print_json(&packages);
            }
            let mut table = Table::new(&["id", "version", "size", "sha256", "url"]);
            for package in &packages {
                table.row(vec![
                    package.id.clone(),
                    package.version.clone(),
                    package.size.to_string(),
                    package.sha256.clone(),
                    package.url.clone(),
                ]);
            }
            print(&table.render())
        }
        FirmwareCommand::Delete { id } => {
            client.delete_firmware(&id).await?;
            match output {
                Output::Json => print_json(&json!({"id": id, "deleted": true})),
                Output::Table => print(&format!("deleted firmware package {id}\n")),
            }
        }
    }
}

fn show_package(package: &FirmwarePackage, output: Output) -> Result<(), CliError> {
    match output {
        Output::Json => print_json(package),
        Output::Table => print(&key_values(&[
            ("id", package.id.clone()),
            ("version", package.version.clone()),
            ("size", package.size.to_string()),
            ("sha256", package.sha256.clone()),
            ("url", package.url.clone()),
        ])),
    }
}

/// `<file stem>-<version>`, with characters the hub does not accept in ids turned into `-`.
fn default_package_id(file: &Path, version: &str) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "firmware".to_owned());
    format!("{stem}-{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_PACKAGE_ID_CHARS)
        .collect()
}

/// `firmware-<version>` in the characters configuration ids allow (lowercase, digits, `-`).
fn default_configuration_id(version: &str) -> String {
    let version: String = version
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("firmware-{version}")
}

/// Where the package is and what devices check it against.
struct PackageRef {
    url: String,
    sha256: String,
    size: Option<u64>,
}

pub(crate) async fn run_rollout(args: RolloutArgs) -> Result<(), CliError> {
    let client = args.hub.connect()?;
    let output = args.hub.output;
    let RolloutCommand::Firmware(rollout) = args.command;
    // The version is quoted inside the metric queries.
    if rollout.version.is_empty() || rollout.version.contains(['\'', '"', '\\']) {
        return Err(CliError::Usage(
            "--version must be non-empty and free of quotes and backslashes".to_owned(),
        ));
    }
    let uploaded = match (&rollout.file, &rollout.package) {
        (Some(file), _) => {
            let id = default_package_id(file, &rollout.version);
            Some(client.upload_firmware(&id, &rollout.version, file).await?)
        }
        (None, Some(id)) => Some(client.get_firmware(id).await?),
        (None, None) => None,
    };
    let package = match (&uploaded, &rollout.url, &rollout.sha256) {
        (Some(package), _, _) => PackageRef {
            url: package.url.clone(),
            sha256: package.sha256.clone(),
            size: Some(package.size),
        },
        (None, Some(url), Some(sha256)) => PackageRef {
            url: url.clone(),
            sha256: sha256.to_lowercase(),
            size: rollout.size,
        },
        _ => {
            return Err(CliError::Usage(
                "give --file, --package, or --url with --sha256".to_owned(),
            ));
        }
    };
    let id = rollout
        .id
        .clone()
        .unwrap_or_else(|| default_configuration_id(&rollout.version));
    let configuration = firmware_configuration(
        &id,
        &rollout.version,
        &rollout.target,
        rollout.priority,
        &package,
    );
    let created = client.create_configuration(&configuration).await?;
    if output == Output::Table
        && let Some(package) = &uploaded
    {
        show_package(package, output)?;
        print("\n")?;
    }
    if !rollout.watch {
        return match output {
            Output::Json => print_json(&json!({"package": uploaded, "configuration": created})),
            Output::Table => configurations::show(&created, output),
        };
    }
    watch(&client, &id, &rollout, output).await
}

/// The configuration of a firmware rollout: `properties.desired.firmware` and the five
/// standard metrics. `current` also requires the new version, so devices still reporting
/// `current` on the old firmware (before they see the update) do not count as done.
fn firmware_configuration(
    id: &str,
    version: &str,
    target: &str,
    priority: i64,
    package: &PackageRef,
) -> ConfigurationDto {
    let mut firmware = json!({
        "fwVersion": version,
        "fwPackageURI": package.url,
        "fwPackageCheckValue": package.sha256,
    });
    if let (Some(size), Value::Object(map)) = (package.size, &mut firmware) {
        map.insert("fwSize".into(), Value::from(size));
    }
    let mut content = Map::new();
    content.insert("properties.desired.firmware".into(), firmware);
    let applied =
        format!("SELECT deviceId FROM devices WHERE configurations.[[{id}]].status='Applied'");
    let status = "properties.reported.firmware.fwUpdateStatus";
    let queries: Map<String, Value> = [
        (
            "current",
            format!(
                "{applied} AND {status}='current' AND properties.reported.firmware.currentFwVersion='{version}'"
            ),
        ),
        (
            "applying",
            format!(
                "{applied} AND ({status}='downloading' OR {status}='verifying' OR {status}='applying')"
            ),
        ),
        ("rebooting", format!("{applied} AND {status}='rebooting'")),
        ("error", format!("{applied} AND {status}='error'")),
        ("rolledback", format!("{applied} AND {status}='rolledback'")),
    ]
    .into_iter()
    .map(|(name, query)| (name.to_owned(), Value::from(query)))
    .collect();
    let mut labels = Map::new();
    labels.insert("fwVersion".into(), Value::from(version));
    ConfigurationDto {
        id: id.to_owned(),
        schema_version: Some("1.0".to_owned()),
        labels,
        content: ConfigurationContentDto {
            device_content: Some(content),
            ..Default::default()
        },
        target_condition: target.to_owned(),
        priority,
        metrics: ConfigurationMetricsDto {
            queries,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The counts a rollout's configuration reports.
#[derive(Debug, PartialEq, Eq)]
struct RolloutProgress {
    targeted: u64,
    applied: u64,
    /// Per status, in [`METRICS`] order.
    counts: [u64; 5],
}

impl RolloutProgress {
    fn of(configuration: &ConfigurationDto) -> RolloutProgress {
        let system = &configuration.system_metrics.results;
        let custom = &configuration.metrics.results;
        RolloutProgress {
            targeted: metric_count(system, "targetedCount"),
            applied: metric_count(system, "appliedCount"),
            counts: METRICS.map(|name| metric_count(custom, name)),
        }
    }

    fn count(&self, name: &str) -> u64 {
        METRICS
            .iter()
            .position(|m| *m == name)
            .map_or(0, |i| self.counts[i])
    }

    /// Devices that reached an end state: the new version, an error, or a rollback.
    fn finished(&self) -> u64 {
        self.count("current") + self.count("error") + self.count("rolledback")
    }

    /// Done once every targeted device has finished. No targeted device is not done: Azure
    /// evaluates configurations eventually, so the count may still be on its way.
    fn done(&self) -> bool {
        self.targeted > 0 && self.finished() >= self.targeted
    }

    fn lines(&self, id: &str) -> Vec<String> {
        let reporting: u64 = self.counts.iter().sum();
        let mut lines = vec![format!(
            "rollout {id}: {} targeted, {} applied, {} not reporting yet",
            self.targeted,
            self.applied,
            self.targeted.saturating_sub(reporting)
        )];
        let width = METRICS.iter().map(|m| m.len()).max().unwrap_or(0);
        lines.extend(
            METRICS
                .iter()
                .zip(self.counts)
                .map(|(name, count)| progress_bar(name, width, count, self.targeted)),
        );
        lines
    }
}

/// Polls the configuration every second, drawing a bar per status, until every targeted device
/// is current, in error or rolled back.
async fn watch(
    client: &ServiceClient,
    id: &str,
    rollout: &FirmwareRollout,
    output: Output,
) -> Result<(), CliError> {
    let deadline = rollout
        .timeout
        .map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
    let mut block = LiveBlock::new();
    loop {
        let configuration = client.get_configuration(id).await?;
        let progress = RolloutProgress::of(&configuration);
        if output == Output::Table {
            block.draw(progress.lines(id))?;
        }
        if progress.done() {
            if output == Output::Json {
                print_json(&configuration)?;
            }
            let failed = progress.count("error") + progress.count("rolledback");
            if rollout.fail_on_error && failed > 0 {
                return Err(CliError::Failed(format!(
                    "rollout {id}: {failed} of {} devices failed ({} in error, {} rolled back)",
                    progress.targeted,
                    progress.count("error"),
                    progress.count("rolledback")
                )));
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(CliError::Failed(format!(
                "timed out watching rollout {id}: {} of {} devices finished",
                progress.finished(),
                progress.targeted
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids() {
        assert_eq!(
            default_package_id(Path::new("/tmp/fw image.bin"), "1.2.0"),
            "fw-image-1.2.0"
        );
        assert_eq!(default_configuration_id("1.2.0-RC1"), "firmware-1-2-0-rc1");
        assert_eq!(
            default_package_id(Path::new("x"), &"9".repeat(200)).len(),
            MAX_PACKAGE_ID_CHARS
        );
    }

    #[test]
    fn the_configuration_carries_the_package_and_the_five_metrics() {
        let package = PackageRef {
            url: "https://hub/firmware/p/content".to_owned(),
            sha256: "ab".repeat(32),
            size: Some(42),
        };
        let configuration = firmware_configuration("firmware-2", "2.0", "tags.a = 1", 10, &package);
        let content = configuration
            .content
            .device_content
            .expect("device content");
        assert_eq!(
            content["properties.desired.firmware"],
            json!({"fwVersion": "2.0", "fwPackageURI": "https://hub/firmware/p/content",
                   "fwPackageCheckValue": "ab".repeat(32), "fwSize": 42})
        );
        let names: Vec<&String> = configuration.metrics.queries.keys().collect();
        assert_eq!(names, METRICS);
        assert_eq!(
            configuration.metrics.queries["rebooting"],
            "SELECT deviceId FROM devices WHERE configurations.[[firmware-2]].status='Applied' AND properties.reported.firmware.fwUpdateStatus='rebooting'"
        );
        assert!(
            configuration.metrics.queries["current"]
                .as_str()
                .is_some_and(|q| q.ends_with("currentFwVersion='2.0'"))
        );
    }

    #[test]
    fn progress_is_done_when_every_targeted_device_finished() {
        let mut configuration = ConfigurationDto::default();
        let progress = RolloutProgress::of(&configuration);
        assert!(!progress.done(), "nothing targeted yet is not done");
        configuration
            .system_metrics
            .results
            .insert("targetedCount".into(), json!(3));
        for (name, count) in [("current", 1), ("applying", 1), ("error", 1)] {
            configuration
                .metrics
                .results
                .insert(name.into(), json!(count));
        }
        let progress = RolloutProgress::of(&configuration);
        assert_eq!(progress.finished(), 2);
        assert!(!progress.done());
        configuration
            .metrics
            .results
            .insert("rolledback".into(), json!(1));
        configuration
            .metrics
            .results
            .insert("applying".into(), json!(0));
        assert!(RolloutProgress::of(&configuration).done());
        let lines = RolloutProgress::of(&configuration).lines("r");
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[0],
            "rollout r: 3 targeted, 0 applied, 0 not reporting yet"
        );
    }
}
