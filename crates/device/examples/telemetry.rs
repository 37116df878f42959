//! Sends ten telemetry messages, one per second, each acknowledged by the hub.
//!
//! ```text
//! cargo run -p twinhub-device --example telemetry -- "<device connection string>" [--ca <ca.pem>]
//! ```

use std::time::Duration;

use twinhub_device::{DeviceClient, DeviceConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (connection_string, ca_path) = arguments()?;
    let mut config = DeviceConfig::from_connection_string(&connection_string)?;
    if let Some(path) = ca_path {
        config.ca_pem = Some(std::fs::read_to_string(path)?);
    }
    let client = DeviceClient::connect(config).await?;
    for sequence in 1..=10 {
        let body = format!(
            r#"{{"sequence":{sequence},"temperature":{}}}"#,
            20 + sequence % 5
        );
        client
            .send_telemetry(body, &[("$.ct", "application/json"), ("$.ce", "utf-8")])
            .await?;
        println!("message {sequence} acknowledged");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    client.close().await;
    Ok(())
}

/// `<connection string> [--ca <file>]`.
fn arguments() -> Result<(String, Option<String>), String> {
    let usage = "usage: telemetry <device connection string> [--ca <ca.pem>]";
    let mut connection_string = None;
    let mut ca = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca" => ca = Some(args.next().ok_or(usage)?),
            _ if connection_string.is_none() => connection_string = Some(arg),
            _ => return Err(usage.to_owned()),
        }
    }
    Ok((connection_string.ok_or(usage)?, ca))
}
