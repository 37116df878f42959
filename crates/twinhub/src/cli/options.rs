//! Which hub to talk to and how to print: the options every back-end command takes.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use twinhub_client::ServiceClient;

use super::CliError;

/// Where a local hub keeps its files when `serve` is given no `--data-dir`.
const DEFAULT_DATA_DIR: &str = "twinhub-data";

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The hub's JSON, for scripts.
    Json,
}

/// The hub and the output format, accepted before or after the subcommand.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Hub options")]
pub(crate) struct HubOptions {
    /// Service connection string of the hub (HostName may carry :port) [default: the local hub's, from --data-dir]
    #[arg(
        long,
        global = true,
        env = "TWINHUB_CONNECTION_STRING",
        hide_env_values = true
    )]
    connection_string: Option<String>,
    /// A local hub's data directory: reads its service-connection-string and trusts its ca.pem [default: ./twinhub-data if it exists]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PEM file of the CA to trust instead of the system's roots
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
}

impl HubOptions {
    /// A client for the hub these options name: the connection string from the flag or the
    /// environment, else from the data directory; the CA from `--ca`, else the data
    /// directory's `ca.pem` when the data directory is in use, else the system's roots.
    pub(crate) fn connect(&self) -> Result<ServiceClient, CliError> {
        let (connection_string, ca_pem) = self.resolve()?;
        Ok(ServiceClient::from_connection_string(
            &connection_string,
            ca_pem.as_deref(),
        )?)
    }

    /// The service connection string and the PEM CA to trust (`None`: the system's roots),
    /// resolved as [`HubOptions::connect`] describes.
    pub(crate) fn resolve(&self) -> Result<(String, Option<String>), CliError> {
        let data_dir = self.data_dir.clone().or_else(|| {
            // The default directory is only a fallback for a missing connection string, so a
            // connection string to Azure is never paired with a local CA by accident.
            let default = PathBuf::from(DEFAULT_DATA_DIR);
            (self.connection_string.is_none() && default.is_dir()).then_some(default)
        });
        let connection_string = match (&self.connection_string, &data_dir) {
            (Some(connection_string), _) => connection_string.clone(),
            (None, Some(dir)) => read(&dir.join("service-connection-string"))?,
            (None, None) => {
                return Err(CliError::Usage(
                    "no hub to talk to: pass --connection-string, set TWINHUB_CONNECTION_STRING, or pass --data-dir of a local hub".to_owned(),
                ));
            }
        };
        let ca_pem = match (&self.ca, &data_dir) {
            (Some(ca), _) => Some(read(ca)?),
            (None, Some(dir)) if dir.join("ca.pem").is_file() => Some(read(&dir.join("ca.pem"))?),
            (None, _) => None,
        };
        Ok((connection_string.trim().to_owned(), ca_pem))
    }
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::File {
        path: path.to_owned(),
        source,
    })
}
