//! The connections baseline: a bare tokio + rustls server that echoes what it reads, run as its
//! own process so its memory per connection is measured alone.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_rustls::TlsAcceptor;
use twinhub_server::tls::Pki;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    addr: SocketAddr,
    ca: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Rss {
    rss: u64,
}

/// The echo server process (`twinhub-bench echo-server`): prints where it listens, answers
/// `rss` on stdin with its resident set size, and exits when stdin closes.
pub async fn serve() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("twinhub-bench-echo-")
        .tempdir()?;
    let pki = Pki::load_or_create(dir.path(), "localhost", None)?;
    let acceptor = TlsAcceptor::from(pki.server_config(&[])?);
    let ca = pki
        .ca_pem_path()
        .context("the echo server made no CA")?
        .to_path_buf();
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    print_line(&Ready {
        addr: listener.local_addr()?,
        ca,
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let (mut reader, mut writer) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = commands.next_line().await? {
        if line.trim() == "rss" {
            print_line(&Rss {
                rss: crate::stats::rss_bytes().unwrap_or(0),
            });
        }
    }
    Ok(())
}

fn print_line(value: &impl Serialize) {
    if let Ok(line) = serde_json::to_string(value) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
}

/// A running echo server process.
pub struct EchoServer {
    process: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    pub addr: SocketAddr,
    pub ca: PathBuf,
}

impl EchoServer {
    /// Starts the echo server process and waits until it listens.
    pub async fn start() -> anyhow::Result<EchoServer> {
        let exe = std::env::current_exe()?;
        let mut process = tokio::process::Command::new(exe)
            .arg("echo-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the echo server process")?;
        let stdin = process.stdin.take();
        let stdout = process
            .stdout
            .take()
            .context("the echo server has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the echo server did not start within 30 s")??
            .context("the echo server exited at start")?;
        let ready: Ready = serde_json::from_str(&line)?;
        Ok(EchoServer {
            process,
            stdin,
            lines,
            addr: ready.addr,
            ca: ready.ca,
        })
    }

    /// The echo server process's resident set size in bytes.
    pub async fn rss(&mut self) -> anyhow::Result<u64> {
        let stdin = self.stdin.as_mut().context("the echo server is stopping")?;
        stdin.write_all(b"rss\n").await?;
        stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .context("the echo server did not report its memory")??
            .context("the echo server exited")?;
        Ok(serde_json::from_str::<Rss>(&line)?.rss)
    }

    /// Stops the process.
    pub async fn stop(mut self) {
        self.stdin = None;
        if tokio::time::timeout(Duration::from_secs(5), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}
