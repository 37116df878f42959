//! The direct-methods baseline: a Mosquitto broker of our own, on a free loopback port, serving
//! TLS with a certificate from `twinhub_server::tls`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Child;
use twinhub_server::tls::Pki;

/// Where to look for the broker when `TWINHUB_BENCH_MOSQUITTO` does not say.
const CANDIDATES: [&str; 3] = [
    "mosquitto",
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
];

/// Why the Mosquitto baseline is missing.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    #[error(
        "the mosquitto binary was not found (tried $TWINHUB_BENCH_MOSQUITTO, {}); install mosquitto (e.g. apt-get install mosquitto) or set TWINHUB_BENCH_MOSQUITTO",
        CANDIDATES.join(", ")
    )]
    NotInstalled,
    #[error("cannot prepare mosquitto's files: {0}")]
    Setup(String),
    #[error("mosquitto exited at start ({0}); its stderr above says why")]
    Exited(std::process::ExitStatus),
    #[error("mosquitto did not accept connections on {0} within 10 s")]
    NotListening(SocketAddr),
}

/// A running broker; killed when stopped or dropped.
pub struct Mosquitto {
    process: Child,
    pub addr: SocketAddr,
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Generates a configuration and certificate, starts `mosquitto -c` and waits until it
    /// accepts TCP connections.
    pub async fn start() -> Result<Mosquitto, MosquittoError> {
        let setup = |e: &dyn std::fmt::Display| MosquittoError::Setup(e.to_string());
        let dir = tempfile::Builder::new()
            .prefix("twinhub-bench-mosquitto-")
            .tempdir()
            .map_err(|e| setup(&e))?;
        let pki = Pki::load_or_create(dir.path(), "localhost", None).map_err(|e| setup(&e))?;
        let ca = pki
            .ca_pem_path()
            .ok_or_else(|| MosquittoError::Setup("no CA was made".into()))?
            .to_path_buf();
        let port = super::free_port().map_err(|e| setup(&e))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = configuration(port, dir.path(), crate::stats::is_root());
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(&config_path, config).map_err(|e| setup(&e))?;

        let explicit = std::env::var("TWINHUB_BENCH_MOSQUITTO").ok();
        let mut process = None;
        for binary in explicit.iter().map(String::as_str).chain(CANDIDATES) {
            match tokio::process::Command::new(binary)
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
            {
                Ok(child) => {
                    process = Some(child);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(setup(&e)),
            }
        }
        let mut process = process.ok_or(MosquittoError::NotInstalled)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = process.try_wait() {
                return Err(MosquittoError::Exited(status));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(MosquittoError::NotListening(addr));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Mosquitto {
            process,
            addr,
            ca,
            _dir: dir,
        })
    }

    /// Stops the broker.
    pub async fn stop(mut self) {
        let _ = self.process.kill().await;
    }
}

/// A TLS listener on loopback, anonymous, in memory, logging only errors. Run as root,
/// Mosquitto would switch to its own user and lose access to our key file, so it is told to
/// stay root.
fn configuration(port: u16, dir: &std::path::Path, as_root: bool) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut config = format!(
        "per_listener_settings false\n\
         allow_anonymous true\n\
         persistence false\n\
         log_dest stderr\n\
         log_type error\n\
         listener {port} 127.0.0.1\n\
         cafile {}\n\
         certfile {}\n\
         keyfile {}\n",
        file("ca.pem"),
        file("server.pem"),
        file("server-key.pem"),
    );
    if as_root {
        config.push_str("user root\n");
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_serves_tls_on_loopback_only() {
        let config = configuration(18830, std::path::Path::new("/d"), false);
        assert!(config.contains("listener 18830 127.0.0.1\n"));
        assert!(config.contains("certfile /d/server.pem\n"));
        assert!(config.contains("keyfile /d/server-key.pem\n"));
        assert!(!config.contains("user root"));
        assert!(configuration(1, std::path::Path::new("/d"), true).contains("user root\n"));
    }
}
