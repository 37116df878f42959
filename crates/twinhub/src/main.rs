//! The `twinhub` command.

mod cli;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "twinhub",
    version,
    about = "A self-hostable device-management hub that speaks Azure IoT Hub's protocols"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub: MQTT devices on --mqtt-port, the service REST API and MQTT over WebSockets on --https-port.
    Serve(serve::ServeArgs),
    #[command(flatten)]
    BackEnd(cli::BackEndCommand),
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => match serve::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("twinhub: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::BackEnd(command) => cli::run(command),
    }
}
