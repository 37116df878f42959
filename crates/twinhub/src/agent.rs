//! `twinhub agent --config FILE`: the device-management patterns (reboot, factory reset,
//! configuration, firmware update) on a real Linux device, acting through shell commands.
//!
//! The agent is `twinhub_dm::run` with [`CommandActions`] and a [`FileState`]; this module
//! reads the TOML file into their configurations and ties the run to SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use twinhub_device::{ConfigError, Credential, DeviceConfig, Transport};
use twinhub_dm::{CommandActions, CommandConfig, FileState, Options, RunError};

/// Where the agent keeps its progress record and downloads when `agent_dir` is not given:
/// `<state_dir>` with this suffix, next to it (outside it, so a factory reset does not wipe
/// the record that the reset is in progress).
const AGENT_DIR_SUFFIX: &str = "-agent";
/// The version reported before any update wrote `firmware-version`.
const DEFAULT_INITIAL_VERSION: &str = "0.0.0";
/// The longest a command may run, by default.
const DEFAULT_COMMAND_TIMEOUT_SECONDS: u64 = 300;
/// How long the agent waits to be killed by a reboot, by default.
const DEFAULT_REBOOT_GRACE_SECONDS: u64 = 120;

/// `twinhub agent` arguments.
#[derive(Args, Debug)]
pub(crate) struct AgentArgs {
    /// TOML file describing the device connection, the commands and the state directory
    #[arg(long, env = "TWINHUB_AGENT_CONFIG", value_name = "FILE")]
    config: PathBuf,
}

/// The agent's TOML file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    connection_string: Option<String>,
    host_name: Option<String>,
    device_id: Option<String>,
    shared_access_key: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    transport: TransportName,
    gateway_host: Option<String>,
    port: Option<u16>,
    state_dir: PathBuf,
    agent_dir: Option<PathBuf>,
    initial_firmware_version: Option<String>,
    configuration_properties: Option<Vec<String>>,
    command_timeout_seconds: Option<u64>,
    reboot_grace_seconds: Option<u64>,
    connect_attempts: Option<u32>,
    commands: Commands,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TransportName {
    #[default]
    Mqtt,
    Websockets,
}

/// `[commands]`: what the device runs for each action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Commands {
    reboot: String,
    install_firmware: String,
    factory_reset: Option<String>,
    rollback_firmware: Option<String>,
    apply_configuration: Option<String>,
}

/// Everything `twinhub_dm::run` needs, resolved from an [`AgentFile`].
#[derive(Debug)]
struct AgentConfig {
    device: DeviceConfig,
    commands: CommandConfig,
    agent_dir: PathBuf,
    options: Options,
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
enum ConfigFileError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("connection_string: {0}")]
    ConnectionString(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
}

/// Why the agent stopped with a failure.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs the agent until SIGTERM or SIGINT; exit status 1 when it cannot start or gives up.
pub(crate) fn main(args: &AgentArgs) -> ExitCode {
    init_logging();
    match run(&args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("twinhub agent: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(config_path: &Path) -> Result<(), AgentError> {
    let config = load(config_path)?;
    // One device, mostly waiting: a single thread is enough (commands run as processes and
    // file writes on the blocking pool).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(async move {
        // Listening starts before connecting, so a signal during start-up is not lost.
        let shutdown = shutdown_signal()?;
        tracing::info!(
            device_id = %config.device.device_id,
            state_dir = %config.commands.state_dir.display(),
            agent_dir = %config.agent_dir.display(),
            "agent starting"
        );
        let actions = CommandActions::new(config.commands);
        let state = FileState::new(&config.agent_dir);
        twinhub_dm::run(config.device, actions, state, config.options, shutdown).await?;
        tracing::info!("agent stopped");
        Ok(())
    })
}

/// A future resolving on the first SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send, AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind, name| {
        signal(kind).map_err(|source| AgentError::Signal {
            signal: name,
            source,
        })
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
}

/// Reads and resolves the configuration file; relative paths in it are relative to its
/// directory.
fn load(path: &Path) -> Result<AgentConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: AgentFile = toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new(""));
    resolve(file, base)
}

fn read_file(path: &Path) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(message: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Invalid(message.into())
}

fn resolve(file: AgentFile, base: &Path) -> Result<AgentConfig, ConfigFileError> {
    let at = |path: &Path| base.join(path);
    let certificate = match (&file.cert_file, &file.key_file) {
        (Some(cert), Some(key)) => Some(Credential::X509 {
            cert_pem: read_file(&at(cert))?,
            key_pem: read_file(&at(key))?,
        }),
        (None, None) => None,
        _ => return Err(invalid("cert_file and key_file go together")),
    };
    let mut device = match &file.connection_string {
        Some(connection_string) => {
            if file.host_name.is_some()
                || file.device_id.is_some()
                || file.shared_access_key.is_some()
            {
                return Err(invalid(
                    "give either connection_string or host_name/device_id/shared_access_key, not both",
                ));
            }
            let mut device = DeviceConfig::from_connection_string(connection_string)?;
            match (&device.credential, certificate) {
                (Credential::X509 { .. }, Some(credential)) => device.credential = credential,
                (Credential::X509 { .. }, None) => {
                    return Err(invalid(
                        "the connection string says x509=true: give cert_file and key_file",
                    ));
                }
                (_, Some(_)) => {
                    return Err(invalid(
                        "the connection string carries a key or token: remove cert_file and key_file, or use x509=true",
                    ));
                }
                (_, None) => {}
            }
            device
        }
        None => {
            let (Some(host_name), Some(device_id)) = (&file.host_name, &file.device_id) else {
                return Err(invalid(
                    "no device connection: give connection_string, or host_name and device_id",
                ));
            };
            let credential = match (&file.shared_access_key, certificate) {
                (Some(key), None) => Credential::SymmetricKey(key.clone()),
                (None, Some(credential)) => credential,
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "give either shared_access_key or cert_file/key_file, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "no credential: give shared_access_key, or cert_file and key_file",
                    ));
                }
            };
            DeviceConfig::new(host_name.clone(), device_id.clone(), credential)
        }
    };
    if let Some(ca) = &file.ca_file {
        device.ca_pem = Some(read_file(&at(ca))?);
    }
    device.transport = match file.transport {
        TransportName::Mqtt => Transport::Mqtt,
        TransportName::Websockets => Transport::WebSockets,
    };
    if file.gateway_host.is_some() {
        device.gateway_host = file.gateway_host;
    }
    device.port = file.port.or(device.port);

    let state_dir = at(&file.state_dir);
    let agent_dir = match &file.agent_dir {
        Some(dir) => at(dir),
        None => default_agent_dir(&state_dir)?,
    };
    if agent_dir.starts_with(&state_dir) {
        return Err(invalid(
            "agent_dir must be outside state_dir: a factory reset empties state_dir",
        ));
    }
    let commands = CommandConfig {
        reboot: file.commands.reboot,
        factory_reset: file.commands.factory_reset,
        install_firmware: file.commands.install_firmware,
        rollback_firmware: file.commands.rollback_firmware,
        apply_configuration: file.commands.apply_configuration,
        state_dir,
        initial_firmware_version: file
            .initial_firmware_version
            .unwrap_or_else(|| DEFAULT_INITIAL_VERSION.to_owned()),
        timeout: Duration::from_secs(
            file.command_timeout_seconds
                .unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECONDS),
        ),
        reboot_grace: Duration::from_secs(
            file.reboot_grace_seconds
                .unwrap_or(DEFAULT_REBOOT_GRACE_SECONDS),
        ),
    };
    if commands.timeout.is_zero() {
        return Err(invalid("command_timeout_seconds must be at least 1"));
    }
    let mut options = Options {
        download_dir: Some(agent_dir.join("downloads")),
        // A device keeps trying to reach its hub (the delay grows to a minute) unless told
        // to give up, e.g. to let a supervisor restart it.
        connect_attempts: u32::MAX,
        ..Options::default()
    };
    if let Some(attempts) = file.connect_attempts {
        if attempts == 0 {
            return Err(invalid("connect_attempts must be at least 1"));
        }
        options.connect_attempts = attempts;
    }
    if let Some(properties) = file.configuration_properties {
        options.configuration_properties = properties;
    }
    Ok(AgentConfig {
        device,
        commands,
        agent_dir,
        options,
    })
}

/// `<parent>/<name>-agent` for a state directory `<parent>/<name>`.
fn default_agent_dir(state_dir: &Path) -> Result<PathBuf, ConfigFileError> {
    let name = state_dir
        .file_name()
        .ok_or_else(|| invalid("state_dir must name a directory (not `/` or `..`)"))?;
    let mut agent_name = name.to_owned();
    agent_name.push(AGENT_DIR_SUFFIX);
    Ok(state_dir.with_file_name(agent_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=";

    fn parse(text: &str) -> Result<AgentConfig, ConfigFileError> {
        let file: AgentFile = toml::from_str(text).map_err(|source| ConfigFileError::Parse {
            path: PathBuf::from("test.toml"),
            source: Box::new(source),
        })?;
        resolve(file, Path::new("/etc/twinhub"))
    }

    fn commands() -> &'static str {
        "[commands]\nreboot = \"systemctl reboot\"\ninstall_firmware = \"install.sh \\\"$1\\\"\"\n"
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "CA").expect("writes");
        let text = include_str!("../../../examples/agent.toml")
            .replace("/etc/twinhub/ca.pem", &ca.to_string_lossy());
        let config = parse(&text).expect("examples/agent.toml resolves");
        assert_eq!(config.device.ca_pem.as_deref(), Some("CA"));
        assert_eq!(config.device.device_id, "pump-17");
        assert_eq!(config.commands.reboot_grace, Duration::from_secs(120));
        assert!(config.commands.rollback_firmware.is_some());
        assert_eq!(
            config.options.configuration_properties,
            vec!["telemetryConfig".to_owned()]
        );
    }

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n# /etc/twinhub/agent.toml")
            .expect("the README shows an agent configuration");
        let block = &readme[start + "```toml\n".len()..];
        let end = block.find("```").expect("the example block ends");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "CA").expect("writes");
        let text = block[..end].replace("/etc/twinhub/ca.pem", &ca.to_string_lossy());
        let config = parse(&text).expect("the README example resolves");
        assert_eq!(config.device.device_id, "pump-17");
        assert_eq!(config.commands.initial_firmware_version, "1.0.0");
    }

    #[test]
    fn connection_string_with_defaults() {
        let config = parse(&format!(
            "connection_string = \"HostName=hub.example;DeviceId=d1;SharedAccessKey={KEY}\"\n\
             state_dir = \"state\"\n{}",
            commands()
        ))
        .expect("valid");
        assert_eq!(config.device.host_name, "hub.example");
        assert_eq!(config.device.transport, Transport::Mqtt);
        assert_eq!(
            config.commands.state_dir,
            PathBuf::from("/etc/twinhub/state")
        );
        assert_eq!(config.agent_dir, PathBuf::from("/etc/twinhub/state-agent"));
        assert_eq!(
            config.options.download_dir,
            Some(PathBuf::from("/etc/twinhub/state-agent/downloads"))
        );
        assert_eq!(config.commands.initial_firmware_version, "0.0.0");
        assert_eq!(config.commands.timeout, Duration::from_secs(300));
        assert_eq!(config.options.connect_attempts, u32::MAX);
    }

    #[test]
    fn separate_fields_gateway_port_and_timings() {
        let config = parse(&format!(
            "host_name = \"localhost\"\ndevice_id = \"d2\"\nshared_access_key = \"{KEY}\"\n\
             transport = \"websockets\"\ngateway_host = \"127.0.0.1\"\nport = 18443\n\
             state_dir = \"/var/lib/dev\"\nagent_dir = \"/var/lib/agent\"\n\
             initial_firmware_version = \"1.0\"\ncommand_timeout_seconds = 7\n\
             reboot_grace_seconds = 0\nconnect_attempts = 3\n\
             configuration_properties = [\"telemetryConfig\", \"sampling\"]\n{}",
            commands()
        ))
        .expect("valid");
        assert_eq!(config.device.transport, Transport::WebSockets);
        assert_eq!(config.device.effective_host(), "127.0.0.1");
        assert_eq!(config.device.effective_port(), 18443);
        assert_eq!(config.agent_dir, PathBuf::from("/var/lib/agent"));
        assert_eq!(config.commands.reboot_grace, Duration::ZERO);
        assert_eq!(config.commands.timeout, Duration::from_secs(7));
        assert_eq!(config.options.connect_attempts, 3);
        assert_eq!(config.options.configuration_properties.len(), 2);
        assert_eq!(
            config.device.credential,
            Credential::SymmetricKey(KEY.to_owned())
        );
    }

    #[test]
    fn x509_reads_the_certificate_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cert.pem"), "CERT").expect("writes");
        std::fs::write(dir.path().join("key.pem"), "KEY").expect("writes");
        let file: AgentFile = toml::from_str(&format!(
            "host_name = \"h\"\ndevice_id = \"d\"\ncert_file = \"cert.pem\"\n\
             key_file = \"key.pem\"\nstate_dir = \"s\"\n{}",
            commands()
        ))
        .expect("parses");
        let config = resolve(file, dir.path()).expect("valid");
        assert_eq!(
            config.device.credential,
            Credential::X509 {
                cert_pem: "CERT".to_owned(),
                key_pem: "KEY".to_owned()
            }
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            ("state_dir = \"s\"\n", "no device connection"),
            (
                "host_name = \"h\"\ndevice_id = \"d\"\nstate_dir = \"s\"\n",
                "no credential",
            ),
            (
                "connection_string = \"HostName=h;DeviceId=d;x509=true\"\nstate_dir = \"s\"\n",
                "x509=true",
            ),
            (
                "host_name = \"h\"\ndevice_id = \"d\"\nshared_access_key = \"k\"\ncert_file = \"c\"\nstate_dir = \"s\"\n",
                "go together",
            ),
            (
                "connection_string = \"HostName=h;DeviceId=d;SharedAccessKey=k\"\nhost_name = \"h\"\nstate_dir = \"s\"\n",
                "not both",
            ),
            (
                "host_name = \"h\"\ndevice_id = \"d\"\nshared_access_key = \"k\"\nstate_dir = \"s\"\nagent_dir = \"s/agent\"\n",
                "outside state_dir",
            ),
            (
                "host_name = \"h\"\ndevice_id = \"d\"\nshared_access_key = \"k\"\nstate_dir = \"/\"\n",
                "must name a directory",
            ),
            (
                "host_name = \"h\"\ndevice_id = \"d\"\nshared_access_key = \"k\"\nstate_dir = \"s\"\ncommand_timeout_seconds = 0\n",
                "at least 1",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&format!("{text}{}", commands())).expect_err(text);
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn unknown_keys_and_transports_are_rejected() {
        for text in [
            "hostname = \"h\"\nstate_dir = \"s\"\n",
            "transport = \"amqp\"\nstate_dir = \"s\"\n",
        ] {
            let error = parse(&format!("{text}{}", commands())).expect_err(text);
            assert!(matches!(error, ConfigFileError::Parse { .. }), "{error}");
        }
        let missing_install = parse("state_dir = \"s\"\n[commands]\nreboot = \"true\"\n")
            .expect_err("install_firmware is required");
        assert!(
            missing_install.to_string().contains("install_firmware"),
            "{missing_install}"
        );
    }
}
