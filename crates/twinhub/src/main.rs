//! The `twinhub` command.

mod agent;
mod cli;
mod demo;
mod serve;
mod simulate;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: with 1,000,000 twins it made queries 2-3x faster, seeding
/// 2x faster and the process 1 GB smaller; it costs about 10 KB more per idle connection
/// (BENCHMARKS.md, "Changes that mattered").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the device-management agent on this device: reboot, factory reset, configuration and firmware updates through shell commands.
    Agent(agent::AgentArgs),
    /// Simulate a fleet of devices in this process, each carrying out every device-management pattern with virtual actions.
    Simulate(simulate::SimulateArgs),
    /// A hub, a simulated fleet and a firmware rollout in one command, with no setup.
    Demo(demo::DemoArgs),
    #[command(flatten)]
    BackEnd(cli::BackEndCommand),
}

/// Which tokio runtime a command runs on.
#[derive(Clone, Copy)]
enum Runtime {
    CurrentThread,
    MultiThread,
}

/// Runs `work` on a fresh runtime; an error goes to stderr as `error: ...` with exit status 1.
fn run_to_exit<E: std::fmt::Display>(
    runtime: Runtime,
    work: impl Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let mut builder = match runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
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
        Command::Agent(args) => agent::main(&args),
        Command::Simulate(args) => simulate::main(args),
        Command::Demo(args) => demo::main(args),
        Command::BackEnd(command) => cli::run(command),
    }
}
