//! What twinhub is compared against in the same run: Mosquitto over TLS (request/response),
//! PostgreSQL (JSONB merges and queries) and a bare tokio + rustls echo server (idle
//! connections).

pub mod echo;
pub mod mosquitto;
pub mod postgres;

/// A loopback port nothing listens on right now (the OS picks it; never 443 or 8883).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
