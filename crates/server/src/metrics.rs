//! Prometheus metrics, rendered in the text exposition format. Hand-rolled: a handful of atomics
//! does not justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter with one label whose values come from a small fixed vocabulary.
#[derive(Default)]
pub struct LabeledCounter(Mutex<BTreeMap<&'static str, u64>>);

impl LabeledCounter {
    pub fn inc(&self, label: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(label)
            .or_default() += 1;
    }

    pub fn get(&self, label: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(label)
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub connected_devices: Gauge,
    pub devices_registered: Gauge,
    pub twin_reads: Counter,
    pub twin_updates: Counter,
    pub telemetry_messages: Counter,
    /// Firmware package downloads answered (whole or ranged).
    pub firmware_downloads: Counter,
    /// Label: outcome (`ok`, `device_not_online`, `timeout`, `error`).
    pub method_calls: LabeledCounter,
    /// Label: transport (`mqtt`, `https`).
    pub auth_failures: LabeledCounter,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "twinhub_connected_devices",
            "Devices with a live MQTT connection.",
            self.connected_devices.get(),
        );
        gauge(
            "twinhub_registered_identities",
            "Devices and modules in the registry.",
            self.devices_registered.get(),
        );
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "twinhub_twin_reads_total",
            "Twin reads by devices.",
            self.twin_reads.get(),
        );
        counter(
            "twinhub_twin_updates_total",
            "Durable twin writes (service and device).",
            self.twin_updates.get(),
        );
        counter(
            "twinhub_telemetry_messages_total",
            "Device-to-cloud messages accepted.",
            self.telemetry_messages.get(),
        );
        counter(
            "twinhub_firmware_downloads_total",
            "Firmware package downloads answered (whole or ranged).",
            self.firmware_downloads.get(),
        );
        let labeled =
            |out: &mut String, name: &str, help: &str, label: &str, counter: &LabeledCounter| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (value, count) in counter.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
                }
            };
        labeled(
            &mut out,
            "twinhub_method_calls_total",
            "Direct method calls by outcome.",
            "outcome",
            &self.method_calls,
        );
        labeled(
            &mut out,
            "twinhub_auth_failures_total",
            "Rejected credentials by transport.",
            "transport",
            &self.auth_failures,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.connected_devices.set(3);
        m.method_calls.inc("ok");
        m.method_calls.inc("ok");
        m.auth_failures.inc("mqtt");
        let text = m.render();
        assert!(
            text.contains("# TYPE twinhub_connected_devices gauge\ntwinhub_connected_devices 3\n")
        );
        assert!(text.contains("twinhub_method_calls_total{outcome=\"ok\"} 2\n"));
        assert!(text.contains("twinhub_auth_failures_total{transport=\"mqtt\"} 1\n"));
    }
}
