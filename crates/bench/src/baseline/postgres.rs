//! The PostgreSQL baseline's connection: a local server (trust authentication) unless
//! `TWINHUB_BENCH_POSTGRES` gives another connection string.

/// The connection string used when `TWINHUB_BENCH_POSTGRES` is unset.
pub const DEFAULT_CONNINFO: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// The connection string in use.
pub fn conninfo() -> String {
    std::env::var("TWINHUB_BENCH_POSTGRES").unwrap_or_else(|_| DEFAULT_CONNINFO.to_owned())
}

/// One connection, its driver running on its own task.
pub async fn connect() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&conninfo(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The reason to print when PostgreSQL cannot be reached.
pub fn missing_reason(error: &tokio_postgres::Error) -> String {
    format!(
        "cannot connect to PostgreSQL at \"{}\": {error}; start PostgreSQL or set TWINHUB_BENCH_POSTGRES",
        conninfo()
    )
}
