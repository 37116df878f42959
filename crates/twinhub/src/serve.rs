//! `twinhub serve`: configuration (flags > environment > config file > defaults), logging,
//! and the signal-driven lifetime of a hub.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use twinhub_server::{HubConfig, start};

#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with any of the settings below (keys as the flags, with underscores).
    #[arg(long, env = "TWINHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Where the hub keeps its store, keys and certificates [default: ./twinhub-data]
    #[arg(long, env = "TWINHUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The host name devices and back ends connect to [default: localhost]
    #[arg(long, env = "TWINHUB_HOSTNAME")]
    hostname: Option<String>,
    /// Port for MQTT over TLS [default: 8883]
    #[arg(long, env = "TWINHUB_MQTT_PORT")]
    mqtt_port: Option<u16>,
    /// Port for HTTPS (REST and MQTT over WebSockets) [default: 443]
    #[arg(long, env = "TWINHUB_HTTPS_PORT")]
    https_port: Option<u16>,
    /// Address to listen on [default: 0.0.0.0]
    #[arg(long, env = "TWINHUB_BIND")]
    bind: Option<IpAddr>,
    /// Serve Prometheus metrics over plain HTTP here, e.g. 127.0.0.1:9464 [default: off]
    #[arg(long, env = "TWINHUB_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain to serve instead of the generated one (needs --tls-key)
    #[arg(long, env = "TWINHUB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "TWINHUB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The iothubowner policy's primary key (base64) [default: generated on first start, then kept]
    #[arg(long, env = "TWINHUB_OWNER_KEY", hide_env_values = true)]
    owner_key: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "TWINHUB_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Scheduled jobs queued, scheduled or running at once; more are refused (429) [default: 10]
    #[arg(long, env = "TWINHUB_MAX_CONCURRENT_JOBS", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_jobs: Option<u32>,
    /// Devices per second scheduled jobs process, over all jobs together [default: 1000]
    #[arg(long, env = "TWINHUB_JOB_DEVICES_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    job_devices_per_second: Option<u32>,
    /// Most automatic device management configurations the hub accepts [default: 100]
    #[arg(long, env = "TWINHUB_MAX_CONFIGURATIONS")]
    max_configurations: Option<u32>,
    /// Twins per second re-evaluated after a configuration changes [default: 20000]
    #[arg(long, env = "TWINHUB_CONFIGURATION_TWINS_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    configuration_twins_per_second: Option<u32>,
    /// Largest firmware package accepted, in bytes; a larger upload is refused (413) [default: 536870912, 512 MiB]
    #[arg(long, env = "TWINHUB_MAX_FIRMWARE_SIZE", value_parser = clap::value_parser!(u64).range(1..))]
    max_firmware_size: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The config file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    hostname: Option<String>,
    mqtt_port: Option<u16>,
    https_port: Option<u16>,
    bind: Option<IpAddr>,
    metrics_addr: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    owner_key: Option<String>,
    log_format: Option<LogFormat>,
    max_concurrent_jobs: Option<u32>,
    job_devices_per_second: Option<u32>,
    max_configurations: Option<u32>,
    configuration_twins_per_second: Option<u32>,
    max_firmware_size: Option<u64>,
}

fn read_file_settings(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("the config file {} is invalid", path.display()))
}

fn resolve(args: ServeArgs) -> anyhow::Result<(HubConfig, LogFormat)> {
    let file = match &args.config {
        Some(path) => read_file_settings(path)?,
        None => FileSettings::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("twinhub-data"));
    let mut config = HubConfig::new(data_dir);
    if let Some(hostname) = args.hostname.or(file.hostname) {
        config.hostname = hostname;
    }
    let bind = args
        .bind
        .or(file.bind)
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    config.mqtt_addr = SocketAddr::new(bind, args.mqtt_port.or(file.mqtt_port).unwrap_or(8883));
    config.https_addr = SocketAddr::new(bind, args.https_port.or(file.https_port).unwrap_or(443));
    config.metrics_addr = args.metrics_addr.or(file.metrics_addr);
    config.owner_key = args.owner_key.or(file.owner_key);
    if let Some(key) = &config.owner_key {
        twinhub_core::identity::validate_symmetric_key(key)
            .map_err(|e| anyhow::anyhow!("--owner-key is not a usable key: {e}"))?;
    }
    config.tls_cert = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    if let Some(jobs) = args.max_concurrent_jobs.or(file.max_concurrent_jobs) {
        anyhow::ensure!(jobs >= 1, "max_concurrent_jobs must be at least 1");
        config.max_concurrent_jobs = usize::try_from(jobs)?;
    }
    if let Some(max) = args.max_configurations.or(file.max_configurations) {
        config.max_configurations = usize::try_from(max)?;
    }
    if let Some(rate) = args
        .configuration_twins_per_second
        .or(file.configuration_twins_per_second)
    {
        anyhow::ensure!(
            rate >= 1,
            "configuration_twins_per_second must be at least 1"
        );
        config.configuration_twins_per_second = rate;
    }
    if let Some(rate) = args.job_devices_per_second.or(file.job_devices_per_second) {
        anyhow::ensure!(rate >= 1, "job_devices_per_second must be at least 1");
        config.job_devices_per_second = rate;
    }
    if let Some(max) = args.max_firmware_size.or(file.max_firmware_size) {
        anyhow::ensure!(max >= 1, "max_firmware_size must be at least 1");
        config.max_firmware_size = max;
    }
    let log_format = args.log_format.or(file.log_format).unwrap_or_default();
    Ok((config, log_format))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, log_format) = resolve(args)?;
    init_logging(log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let hostname = config.hostname.clone();
        let data_dir = config.data_dir.clone();
        let hub = start(config).await?;
        println!("twinhub is ready");
        println!(
            "  devices:   mqtts://{hostname}:{}  and  wss://{hostname}:{}/$iothub/websocket",
            hub.mqtt_addr.port(),
            hub.https_addr.port()
        );
        println!("  back ends: https://{hostname}:{}", hub.https_addr.port());
        if let Some(ca) = &hub.ca_pem_path {
            println!("  CA to trust: {}", ca.display());
        }
        println!(
            "  service connection string (also in {}):",
            data_dir.join("service-connection-string").display()
        );
        println!("    {}", hub.service_connection_string);
        wait_for_signal().await?;
        tracing::info!("shutting down");
        hub.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_config_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("twinhub-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("twinhub.toml");
        std::fs::write(
            &file,
            "hostname = \"hub.example\"\nmqtt_port = 18883\nhttps_port = 10443\n\
             max_concurrent_jobs = 3\njob_devices_per_second = 50\nmax_configurations = 7\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(file),
            https_port: Some(20443),
            job_devices_per_second: Some(75),
            ..Default::default()
        };
        let (config, _) = resolve(args).expect("resolves");
        assert_eq!(config.hostname, "hub.example");
        assert_eq!(config.mqtt_addr.port(), 18883);
        assert_eq!(config.https_addr.port(), 20443);
        assert_eq!(config.data_dir, PathBuf::from("twinhub-data"));
        assert_eq!(config.max_concurrent_jobs, 3);
        assert_eq!(config.max_configurations, 7);
        assert_eq!(config.configuration_twins_per_second, 20_000);
        assert_eq!(config.job_devices_per_second, 75);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn job_limits_default_and_refuse_zero() {
        let (config, _) = resolve(ServeArgs::default()).expect("resolves");
        assert_eq!(config.max_concurrent_jobs, 10);
        assert_eq!(config.job_devices_per_second, 1000);
        let dir = std::env::temp_dir().join(format!("twinhub-config-jobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("twinhub.toml");
        std::fs::write(&file, "max_concurrent_jobs = 0\n").expect("write");
        let error = resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .expect_err("fails");
        assert!(
            format!("{error:#}").contains("max_concurrent_jobs"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn max_firmware_size_defaults_to_512_mib_and_comes_from_the_file() {
        let (config, _) = resolve(ServeArgs::default()).expect("resolves");
        assert_eq!(config.max_firmware_size, 512 * 1024 * 1024);
        let dir =
            std::env::temp_dir().join(format!("twinhub-config-firmware-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("twinhub.toml");
        std::fs::write(&file, "max_firmware_size = 1048576\n").expect("write");
        let (config, _) = resolve(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(config.max_firmware_size, 1_048_576);
        std::fs::write(&file, "max_firmware_size = 0\n").expect("write");
        let error = resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .expect_err("zero is refused");
        assert!(
            format!("{error:#}").contains("max_firmware_size"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn unknown_config_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("twinhub-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("twinhub.toml");
        std::fs::write(&file, "mqtt_prot = 1\n").expect("write");
        let error = resolve(ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .expect_err("fails");
        assert!(format!("{error:#}").contains("mqtt_prot"), "{error:#}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
