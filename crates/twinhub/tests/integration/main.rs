//! Black-box tests of twinhub: real hubs on loopback ports with real TLS and a store on disk,
//! driven by raw MQTT (our codec over rustls) and raw HTTPS, plus the `twinhub` binary itself.

mod agent;
mod cli;
mod durability;
mod firmware;
mod fleet;
mod identities;
mod methods;
mod metrics;
mod mqtt_edge;
mod query;
mod registry;
mod sessions;
mod simulate;
mod support;
mod twin;
mod x509;
