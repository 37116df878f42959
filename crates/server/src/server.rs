//! Starting and stopping a hub: data dir, TLS, store, listeners.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use twinhub_store::{RedbStore, Store};

use crate::hub::{FirmwareSettings, Hub, HubError, HubSettings, JobLimits};
use crate::metrics::Metrics;
use crate::rest::{self, AppState, PeerCertificate};
use crate::tls::{Pki, TlsError};

/// Everything needed to start a hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    /// The host name devices and back ends use; the TLS certificate and SAS scopes name it.
    pub hostname: String,
    pub mqtt_addr: SocketAddr,
    pub https_addr: SocketAddr,
    /// Prometheus `/metrics` over plain HTTP; keep it on loopback.
    pub metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain and key to use instead of the generated ones.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    pub owner_key: Option<String>,
    pub sas_skew_secs: u64,
    pub max_modules_per_device: usize,
    /// Most configurations the hub accepts.
    pub max_configurations: usize,
    /// Twins per second re-evaluated in the background after a configuration changes.
    pub configuration_twins_per_second: u32,
    /// Scheduled jobs queued, scheduled or running at once (Azure S3: 10).
    pub max_concurrent_jobs: usize,
    /// Devices per second scheduled jobs process, over all jobs together.
    pub job_devices_per_second: u32,
    /// The largest firmware package accepted, in bytes.
    pub max_firmware_size: u64,
}

impl HubConfig {
    /// Defaults for a hub in `data_dir`, listening on the standard ports of all interfaces.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            hostname: "localhost".into(),
            mqtt_addr: SocketAddr::from(([0, 0, 0, 0], 8883)),
            https_addr: SocketAddr::from(([0, 0, 0, 0], 443)),
            metrics_addr: None,
            tls_cert: None,
            owner_key: None,
            sas_skew_secs: 300,
            max_modules_per_device: 50,
            max_configurations: 100,
            configuration_twins_per_second: 20_000,
            max_concurrent_jobs: 10,
            job_devices_per_second: 1000,
            max_firmware_size: 512 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] twinhub_store::OpenError),
    #[error("cannot load the hub state: {0}")]
    Hub(#[from] HubError),
    #[error("cannot listen for {what} on {addr} ({cause}). {hint}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        cause: std::io::Error,
        hint: String,
    },
}

/// A started hub. Dropping it does not stop it; call [`RunningHub::shutdown`].
pub struct RunningHub {
    pub hub: Hub,
    pub mqtt_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// The CA devices and back ends must trust (absent when a certificate was provided).
    pub ca_pem_path: Option<PathBuf>,
    pub service_connection_string: String,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// How long shutdown waits for connections to finish their in-flight work.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl RunningHub {
    /// Stops accepting, lets connections finish what they are doing, then closes the store
    /// once every acknowledged write is on disk.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
        }
        let hub = self.hub.clone();
        let _ = tokio::task::spawn_blocking(move || hub.shutdown_store()).await;
    }
}

pub async fn start(config: HubConfig) -> Result<RunningHub, StartError> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let provided = config
        .tls_cert
        .as_ref()
        .map(|(c, k)| (c.as_path(), k.as_path()));
    let pki = Pki::load_or_create(data_dir, &config.hostname, provided)?;
    let opening = std::time::Instant::now();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&data_dir.join("twinhub.redb"))?);
    // Opening checks every page of the file: worth seeing when a large hub starts slowly.
    tracing::info!(
        elapsed_ms = opening.elapsed().as_millis(),
        "store opened and checked"
    );
    let settings = HubSettings {
        hostname: config.hostname.clone(),
        sas_skew_secs: config.sas_skew_secs,
        max_modules_per_device: config.max_modules_per_device,
        max_configurations: config.max_configurations,
        configuration_twins_per_second: config.configuration_twins_per_second,
        jobs: JobLimits {
            max_active_jobs: config.max_concurrent_jobs,
            devices_per_second: config.job_devices_per_second,
        },
    };
    let metrics = Arc::new(Metrics::default());
    let (hub, startup_writes) = Hub::open(
        settings,
        store,
        config.owner_key.as_deref(),
        Arc::clone(&metrics),
    )?;
    if let Some(batch) = startup_writes {
        hub.commit_startup(batch).await?;
    }

    let mqtt_listener = bind("MQTT", config.mqtt_addr, "--mqtt-port").await?;
    let https_listener = bind("HTTPS", config.https_addr, "--https-port").await?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(bind("metrics", addr, "--metrics-addr").await?),
        None => None,
    };
    let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let mqtt_addr = local(&mqtt_listener, config.mqtt_addr);
    let https_addr = local(&https_listener, config.https_addr);
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .or(config.metrics_addr);
    // Download URLs name the port actually bound, which differs from the configured 0 in tests.
    hub.host_firmware(FirmwareSettings {
        dir: data_dir.join("firmware"),
        max_size: config.max_firmware_size,
        https_port: https_addr.port(),
    })
    .await?;

    let owner_key = hub
        .policies()
        .iter()
        .find(|p| p.name == "iothubowner")
        .map(|p| p.primary_key.clone())
        .unwrap_or_default();
    let service_connection_string = format!(
        "HostName={};SharedAccessKeyName=iothubowner;SharedAccessKey={owner_key}",
        config.hostname
    );
    write_private(
        &data_dir.join("service-connection-string"),
        &service_connection_string,
    )
    .map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mqtt_acceptor = TlsAcceptor::from(pki.server_config(&[])?);
    tracker.spawn(crate::mqtt::serve_tls(
        mqtt_listener,
        mqtt_acceptor,
        hub.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    tracker.spawn(hub.clone().run_configuration_sweeps(shutdown.clone()));
    tracker.spawn(hub.clone().run_jobs(shutdown.clone()));
    let https_acceptor = TlsAcceptor::from(pki.server_config(&[b"http/1.1"])?);
    let router = rest::router(AppState {
        hub: hub.clone(),
        shutdown: shutdown.clone(),
    });
    tracker.spawn(serve_https(
        https_listener,
        https_acceptor,
        router,
        shutdown.clone(),
        tracker.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let metrics_router = Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        );
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, metrics_router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    tracing::info!(%mqtt_addr, %https_addr, hostname = %config.hostname, "twinhub ready");
    Ok(RunningHub {
        hub,
        mqtt_addr,
        https_addr,
        metrics_addr,
        ca_pem_path: pki.ca_pem_path().map(Path::to_path_buf),
        service_connection_string,
        shutdown,
        tracker,
    })
}

async fn bind(what: &'static str, addr: SocketAddr, flag: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("Another process uses port {}: stop it, or choose another port with {flag}.", addr.port())
            }
            std::io::ErrorKind::PermissionDenied => format!(
                "Ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root, grant the capability \
                 (setcap cap_net_bind_service=+ep $(which twinhub)), or choose another port with {flag}."
            ),
            _ => format!("Check the address, or choose another with {flag}."),
        };
        StartError::Bind { what, addr, cause: source, hint }
    })
}

/// Writes a file readable only by its owner: it holds a key.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

async fn serve_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let certificate = PeerCertificate(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|c| Arc::new(c.as_ref().to_vec())),
            );
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(certificate.clone());
                    router.clone().oneshot(request.map(Body::new))
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}
