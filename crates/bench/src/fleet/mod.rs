//! The load generator: many device connections (TLS MQTT with our own codec) multiplexed on a
//! few tasks per process, run in child processes so that each process stays below its
//! open-files cap. The orchestrator drives them over stdin/stdout ([`spawn`]); a child runs
//! [`child::run`].

pub mod child;
mod device;
mod group;
pub mod spawn;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::latency::LatencyPairs;

/// What the devices of a fleet do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Connect to the hub (TLS + MQTT CONNECT) and stay idle.
    HubIdle,
    /// Complete a TLS handshake with the echo server and stay idle.
    TlsIdle,
    /// Connect to the hub, subscribe to direct methods and answer every call with 200.
    HubMethods,
    /// Connect to the hub and send reported patches in a closed loop, each waiting for its
    /// acknowledgement (`res/204`), which the hub sends only once the write is durable.
    HubReporter,
    /// Connect to the hub, subscribe to desired patches and time the first one that arrives.
    HubDesired,
    /// Connect to Mosquitto and answer requests published to `bench/req/{id}`.
    MosquittoResponder,
    /// Connect to Mosquitto and send requests to the responders in a closed loop.
    MosquittoRequester,
}

impl Role {
    /// Whether the role's devices report a measurement after `start`.
    pub const fn measures(self) -> bool {
        matches!(
            self,
            Role::HubReporter | Role::HubDesired | Role::MosquittoRequester
        )
    }

    fn as_arg(self) -> &'static str {
        match self {
            Role::HubIdle => "hub-idle",
            Role::TlsIdle => "tls-idle",
            Role::HubMethods => "hub-methods",
            Role::HubReporter => "hub-reporter",
            Role::HubDesired => "hub-desired",
            Role::MosquittoResponder => "mosquitto-responder",
            Role::MosquittoRequester => "mosquitto-requester",
        }
    }
}

/// The command line of a generator process (`twinhub-bench fleet ...`).
#[derive(Clone, Debug, clap::Args)]
pub struct FleetArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    /// Where to connect.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The CA certificate (PEM) the server's certificate chains to.
    #[arg(long)]
    pub ca: PathBuf,
    /// The devices' shared symmetric key (hub roles sign SAS tokens with it).
    #[arg(long, default_value = "")]
    pub device_key: String,
    /// Index of this process's first device.
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    /// Devices in this process.
    #[arg(long)]
    pub count: usize,
    /// Distance between consecutive devices' indices (1: a contiguous range), so a fleet can
    /// be spread over a larger registry.
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Responders a requester addresses (device indices `0..targets`).
    #[arg(long, default_value_t = 0)]
    pub targets: usize,
    /// Devices multiplexed on one task.
    #[arg(long, default_value_t = 250)]
    pub per_task: usize,
    /// Requests outstanding at once over this process (closed-loop roles).
    #[arg(long, default_value_t = 0)]
    pub in_flight: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds measured after `start` (closed loops), or the longest wait (desired patches).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds run before measuring (closed loops).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

impl FleetArgs {
    /// The indices of this process's devices.
    pub fn indices(&self) -> impl Iterator<Item = usize> + use<> {
        let (first, stride) = (self.first, self.stride.max(1));
        (0..self.count).map(move |k| first + k * stride)
    }

    /// The arguments that reproduce these settings on a child's command line.
    fn to_args(&self) -> Vec<String> {
        vec![
            "fleet".into(),
            "--role".into(),
            self.role.as_arg().into(),
            "--addr".into(),
            self.addr.to_string(),
            "--ca".into(),
            self.ca.display().to_string(),
            "--device-key".into(),
            self.device_key.clone(),
            "--first".into(),
            self.first.to_string(),
            "--count".into(),
            self.count.to_string(),
            "--stride".into(),
            self.stride.to_string(),
            "--targets".into(),
            self.targets.to_string(),
            "--per-task".into(),
            self.per_task.to_string(),
            "--in-flight".into(),
            self.in_flight.to_string(),
            "--connect-concurrency".into(),
            self.connect_concurrency.to_string(),
            "--seconds".into(),
            self.seconds.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
        ]
    }
}

/// A line a generator process writes on stdout.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChildEvent {
    /// Every device tried to connect.
    Connected {
        connected: usize,
        failed: usize,
        connect_secs: f64,
        first_error: Option<String>,
    },
    /// A measuring role finished its run.
    Measured {
        ops: u64,
        errors: u64,
        secs: f64,
        latency: LatencyPairs,
    },
    /// The process is about to exit.
    Finished { answered: u64, disconnected: u64 },
}

/// A line the orchestrator writes on a generator's stdin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Connect every device.
    Connect,
    /// Start measuring; `t0` (µs since the Unix epoch) is when the event being timed began.
    Start { t0_unix_micros: u64 },
}

impl Command {
    fn to_line(self) -> String {
        match self {
            Command::Connect => "connect\n".into(),
            Command::Start { t0_unix_micros } => format!("start {t0_unix_micros}\n"),
        }
    }

    fn parse(line: &str) -> Option<Command> {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("connect"), None, None) => Some(Command::Connect),
            (Some("start"), Some(t0), None) => t0
                .parse()
                .ok()
                .map(|t0_unix_micros| Command::Start { t0_unix_micros }),
            _ => None,
        }
    }
}

/// The id of the device with index `index`; every scenario names its devices this way.
pub fn device_id(index: usize) -> String {
    format!("bench-{index:07}")
}

/// Reported patch number `seq`, as a sensor sends it: two readings and a sequence number. The
/// hub and the PostgreSQL baseline merge the same patches.
pub fn reported_patch(seq: u64) -> bytes::Bytes {
    let temperature = 18.0 + (seq % 120) as f64 / 10.0;
    let humidity = 30 + seq % 50;
    bytes::Bytes::from(format!(
        "{{\"temperature\":{temperature:.1},\"humidity\":{humidity},\"sequence\":{seq}}}"
    ))
}

/// `total` split into `parts` shares that differ by at most one.
pub fn split_evenly(total: usize, parts: usize) -> Vec<usize> {
    if parts == 0 {
        return Vec::new();
    }
    let (base, extra) = (total / parts, total % parts);
    (0..parts).map(|i| base + usize::from(i < extra)).collect()
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        assert_eq!(split_evenly(10, 3), vec![4, 3, 3]);
        assert_eq!(split_evenly(2, 4), vec![1, 1, 0, 0]);
        assert!(split_evenly(5, 0).is_empty());
    }

    #[test]
    fn commands_round_trip_through_their_lines() {
        for command in [
            Command::Connect,
            Command::Start {
                t0_unix_micros: 1_700_000_000_123_456,
            },
        ] {
            assert_eq!(Command::parse(command.to_line().trim()), Some(command));
        }
        assert_eq!(Command::parse("start soon"), None);
        assert_eq!(Command::parse("jump"), None);
    }

    #[test]
    fn reported_patches_are_json_objects() {
        for seq in [0, 1, 119, 120, 10_000] {
            let patch: serde_json::Value =
                serde_json::from_slice(&reported_patch(seq)).expect("valid JSON");
            assert_eq!(patch["sequence"], seq);
            assert!(patch["temperature"].is_f64());
        }
    }

    #[test]
    fn device_ids_sort_in_index_order() {
        assert_eq!(device_id(42), "bench-0000042");
        assert!(device_id(9) < device_id(10));
    }

    #[derive(Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Fleet(FleetArgs),
    }

    #[test]
    fn child_arguments_parse_back_to_the_same_settings() {
        let args = FleetArgs {
            role: Role::HubReporter,
            addr: "127.0.0.1:4242".parse().expect("address"),
            ca: PathBuf::from("/tmp/ca.pem"),
            device_key: "a2V5".into(),
            first: 100,
            count: 50,
            stride: 3,
            targets: 7,
            per_task: 25,
            in_flight: 16,
            connect_concurrency: 8,
            seconds: 2.5,
            warmup: 0.5,
        };
        let mut line = vec!["twinhub-bench".to_owned()];
        line.extend(args.to_args());
        let Sub::Fleet(parsed) = Wrapper::try_parse_from(line).expect("parses").command;
        assert_eq!(parsed.role, Role::HubReporter);
        assert_eq!(parsed.addr, args.addr);
        assert_eq!((parsed.first, parsed.count, parsed.targets), (100, 50, 7));
        assert_eq!(
            parsed.indices().take(3).collect::<Vec<_>>(),
            vec![100, 103, 106]
        );
        assert_eq!((parsed.per_task, parsed.in_flight), (25, 16));
        assert!((parsed.seconds - 2.5).abs() < f64::EPSILON);
        assert!((parsed.warmup - 0.5).abs() < f64::EPSILON);
    }
}
