//! Reports its state, prints desired-property changes and answers direct methods until Ctrl-C.
//! The `echo` method returns its payload; any other method answers 404.
//!
//! ```text
//! cargo run -p twinhub-device --example twin_and_methods -- "<device connection string>" [--ca <ca.pem>]
//! ```

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use twinhub_device::{DeviceClient, DeviceConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (connection_string, ca_path) = arguments()?;
    let mut config = DeviceConfig::from_connection_string(&connection_string)?;
    if let Some(path) = ca_path {
        config.ca_pem = Some(std::fs::read_to_string(path)?);
    }
    let client = DeviceClient::connect(config).await?;

    let twin = client.get_twin().await?;
    println!(
        "desired (version {}): {:?}",
        twin.desired_version, twin.desired
    );
    let version = client
        .update_reported(json!({"example": {"started": true}}))
        .await?;
    println!("reported version is now {version}");

    let mut desired = client.desired_updates();
    let mut methods = client.methods().await?;
    loop {
        tokio::select! {
            update = desired.recv() => match update {
                Ok(update) => {
                    println!("desired version {} (full: {}): {:?}", update.version, update.full, update.patch);
                    client.update_reported(json!({"lastDesiredVersion": update.version})).await?;
                }
                Err(RecvError::Lagged(_)) => println!("missed desired updates; re-read the twin"),
                Err(RecvError::Closed) => break,
            },
            call = methods.recv() => match call {
                Some(call) if call.name == "echo" => {
                    let payload = call.payload.clone();
                    call.respond(200, payload).await?;
                }
                Some(call) => {
                    println!("unknown method {}", call.name);
                    call.respond(404, json!({"message": "no such method"})).await?;
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}

/// `<connection string> [--ca <file>]`.
fn arguments() -> Result<(String, Option<String>), String> {
    let usage = "usage: twin_and_methods <device connection string> [--ca <ca.pem>]";
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
