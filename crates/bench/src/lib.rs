//! The twinhub benchmark harness: load generators built for load (our MQTT codec over rustls,
//! many devices per task, several processes), the baselines twinhub is compared against, and the
//! scenarios of BENCHMARKS.md. The `twinhub-bench` binary drives it.

pub mod baseline;
pub mod fleet;
pub mod http1;
pub mod hub;
pub mod latency;
pub mod report;
pub mod rest;
pub mod scenarios;
pub mod stats;
pub mod tls;
