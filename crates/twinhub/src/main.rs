//! The `twinhub` command.

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twinhub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
