//! The hub under test: started in this process on loopback ephemeral ports with a fresh data
//! directory, its devices registered and its twins seeded through the hub's Rust API (far faster
//! than REST, and not what is being measured).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use twinhub_core::twin::{Change, ServiceUpdate};
use twinhub_server::hub::{Hub, IdentityKey, IdentitySpec, IfMatch};
use twinhub_server::{HubConfig, RunningHub};

use crate::fleet::device_id;

/// Every benchmark device's primary and secondary key (32 bytes, base64).
pub const DEVICE_KEY: &str = "YmVuY2htYXJrIGRldmljZSBrZXkgLSAzMiBieXRlcyE=";
/// The `iothubowner` key of every benchmark hub.
pub const OWNER_KEY: &str = "YmVuY2htYXJrIG93bmVyIGtleSAtLSAzMiBieXRlcyE=";
/// Identities created per durable write when registering devices.
const REGISTER_BATCH: usize = 1_000;
/// Twin writes in flight while seeding (the store groups them into shared commits).
const SEED_CONCURRENCY: usize = 512;

/// A hub on a fresh data directory, removed when this is dropped.
pub struct BenchHub {
    pub running: RunningHub,
    pub ca: PathBuf,
    data_dir: tempfile::TempDir,
}

/// How long seeding took.
#[derive(Clone, Copy, Debug)]
pub struct SeedStats {
    pub twins: usize,
    pub secs: f64,
}

impl SeedStats {
    /// Twins seeded per second.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.twins as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// A hub configuration on loopback ephemeral ports in `data_dir`; `tune` adjusts it.
pub fn config(data_dir: &Path, tune: impl FnOnce(&mut HubConfig)) -> HubConfig {
    let mut config = HubConfig::new(data_dir);
    config.hostname = "localhost".into();
    config.mqtt_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.https_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.owner_key = Some(OWNER_KEY.into());
    tune(&mut config);
    config
}

impl BenchHub {
    /// Starts a hub on a new temporary data directory.
    pub async fn start(tune: impl FnOnce(&mut HubConfig)) -> anyhow::Result<BenchHub> {
        let data_dir = tempfile::Builder::new()
            .prefix("twinhub-bench-")
            .tempdir()
            .context("cannot create a data directory for the hub")?;
        let running = twinhub_server::start(config(data_dir.path(), tune))
            .await
            .context("cannot start the hub")?;
        let ca = running
            .ca_pem_path
            .clone()
            .context("the hub made no CA certificate")?;
        Ok(BenchHub {
            running,
            ca,
            data_dir,
        })
    }

    /// The hub's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The handle to the hub's state.
    pub fn hub(&self) -> &Hub {
        &self.running.hub
    }

    /// Stops the hub and gives back its data directory (still on disk until dropped).
    pub async fn stop(self) -> tempfile::TempDir {
        self.running.shutdown().await;
        self.data_dir
    }
}

/// Registers devices `0..count` with [`DEVICE_KEY`], `REGISTER_BATCH` per durable write.
pub async fn register_devices(hub: &Hub, count: usize) -> anyhow::Result<()> {
    for start in (0..count).step_by(REGISTER_BATCH) {
        let specs = (start..(start + REGISTER_BATCH).min(count))
            .map(|i| {
                let mut spec = IdentitySpec::sas_device(device_id(i));
                spec.primary_key = Some(DEVICE_KEY.into());
                spec.secondary_key = Some(DEVICE_KEY.into());
                spec
            })
            .collect();
        for outcome in hub.create_identities(specs).await {
            if let Err(e) = outcome.result {
                bail!("cannot register {}: {e}", outcome.key);
            }
        }
    }
    Ok(())
}

/// Registers `count` devices and gives each a realistic twin (tags, desired, reported).
pub async fn seed_twins(hub: &Hub, count: usize) -> anyhow::Result<SeedStats> {
    let began = Instant::now();
    register_devices(hub, count).await?;
    let mut writes = futures_util::stream::iter(0..count)
        .map(|i| {
            let hub = hub.clone();
            async move {
                let content = TwinContent::new(i, count);
                let key = IdentityKey::device(device_id(i));
                let update = ServiceUpdate {
                    tags: Some(Change::Patch(content.tags)),
                    desired: Some(Change::Patch(content.desired)),
                };
                hub.update_twin(&key, update, &IfMatch::Any)
                    .await
                    .with_context(|| format!("seeding the tags and desired of {key}"))?;
                hub.patch_reported(&key, &content.reported)
                    .await
                    .with_context(|| format!("seeding the reported properties of {key}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(SEED_CONCURRENCY);
    while let Some(written) = writes.next().await {
        written?;
    }
    Ok(SeedStats {
        twins: count,
        secs: began.elapsed().as_secs_f64(),
    })
}

/// Waits until `hub` reports `connected` devices (or `timeout` passes); returns the count seen.
pub async fn wait_connected(hub: &Hub, connected: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let now = hub.connected_device_count();
        if now >= connected || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Regions twins are spread over evenly; a filter on one selects an eighth of the fleet.
pub const REGIONS: [&str; 8] = [
    "eu-west",
    "eu-north",
    "us-east",
    "us-west",
    "asia-east",
    "asia-south",
    "sa-east",
    "af-south",
];
/// Firmware versions reported across the fleet; `GROUP BY` on them yields this many groups.
const FIRMWARE: [&str; 12] = [
    "1.0.0",
    "1.0.4",
    "1.1.0",
    "1.1.2",
    "1.2.0",
    "1.2.7",
    "2.0.0",
    "2.0.1",
    "2.1.0",
    "2.1.3",
    "2.2.0",
    "3.0.0-beta",
];
const DEVICE_TYPES: [&str; 5] = ["thermostat", "meter", "gateway", "camera", "valve"];

/// One twin's seeded sections: about 1 KB as the REST twin shape, with nested objects, numbers,
/// strings and booleans in every section, like a deployed fleet's.
#[derive(Clone, Debug, PartialEq)]
pub struct TwinContent {
    pub tags: Map<String, Value>,
    pub desired: Map<String, Value>,
    pub reported: Map<String, Value>,
}

/// The customer a twin belongs to: `fleet / 100` customers, so each has about 100 twins.
pub fn customer(index: usize, fleet: usize) -> String {
    format!("customer-{:06}", index % (fleet / 100).max(1))
}

impl TwinContent {
    /// The content of twin `index` in a fleet of `fleet`; deterministic, so the PostgreSQL
    /// baseline stores exactly the same documents.
    pub fn new(index: usize, fleet: usize) -> TwinContent {
        let h = mix(index as u64);
        let pick = |shift: u32, n: usize| ((h >> shift) as usize) % n;
        let region = REGIONS[pick(0, REGIONS.len())];
        let battery = pick(8, 100);
        let firmware = FIRMWARE[pick(16, FIRMWARE.len())];
        let device_type = DEVICE_TYPES[pick(24, DEVICE_TYPES.len())];
        let tags = json!({
            "fleet": "bench",
            "customer": customer(index, fleet),
            "deviceType": device_type,
            "environment": if pick(32, 10) == 0 { "staging" } else { "production" },
            "location": {
                "region": region,
                "site": format!("site-{:04}", pick(36, 2000)),
                "building": format!("B{}", pick(48, 20)),
                "floor": pick(52, 12),
            },
            "owner": {"team": format!("team-{}", pick(40, 40)), "costCenter": format!("cc-{:05}", pick(20, 90_000))},
        });
        let desired = json!({
            "telemetryInterval": 30 + pick(4, 4) * 30,
            "firmware": {"version": FIRMWARE[FIRMWARE.len() - 2], "channel": "stable"},
            "thresholds": {"temperature": {"min": 5, "max": 35}, "humidity": {"max": 80}},
            "maintenanceWindow": {"day": "sunday", "start": "02:00", "durationMinutes": 120},
        });
        let reported = json!({
            "firmware": {"currentVersion": firmware, "state": "current", "lastUpdate": "2026-01-15T08:00:00Z"},
            "battery": battery,
            "temperature": 15.0 + pick(12, 200) as f64 / 10.0,
            "connectivity": {"type": if pick(44, 3) == 0 { "cellular" } else { "wifi" }, "rssi": -40 - pick(28, 50) as i64},
            "uptimeSeconds": pick(2, 10_000_000),
            "serialNumber": format!("SN-{h:016x}"),
            "diagnostics": {"errors": pick(56, 5), "lastReboot": "2026-02-01T03:12:00Z", "selfTest": true},
        });
        TwinContent {
            tags: into_map(tags),
            desired: into_map(desired),
            reported: into_map(reported),
        }
    }
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// SplitMix64: a cheap, well-spread hash so generated twins look varied but are reproducible.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_varied() {
        assert_eq!(TwinContent::new(7, 1000), TwinContent::new(7, 1000));
        let regions: std::collections::BTreeSet<_> = (0..200)
            .map(|i| TwinContent::new(i, 1000).tags["location"]["region"].to_string())
            .collect();
        assert_eq!(regions.len(), REGIONS.len());
    }

    #[test]
    fn each_customer_has_about_a_hundred_twins() {
        let fleet = 10_000;
        let target = customer(42, fleet);
        let matching = (0..fleet).filter(|i| customer(*i, fleet) == target).count();
        assert_eq!(matching, 100);
    }

    #[test]
    fn sections_pass_the_twin_rules() {
        let mut twin = twinhub_core::twin::Twin::new(twinhub_core::time::Timestamp::now());
        let content = TwinContent::new(3, 100);
        let now = twinhub_core::time::Timestamp::now();
        twin.apply_service_update(
            ServiceUpdate {
                tags: Some(Change::Patch(content.tags)),
                desired: Some(Change::Patch(content.desired)),
            },
            now,
        )
        .expect("tags and desired are valid");
        twin.patch_reported(&content.reported, now)
            .expect("reported is valid");
    }

    #[tokio::test]
    async fn a_seeded_hub_holds_every_twin() {
        let hub = BenchHub::start(|_| {}).await.expect("hub starts");
        let stats = seed_twins(hub.hub(), 20).await.expect("seeds");
        assert_eq!(stats.twins, 20);
        let (record, _) = hub
            .hub()
            .get_identity(&IdentityKey::device(device_id(19)))
            .expect("the last twin exists");
        assert_eq!(record.twin.tags["fleet"], "bench");
        assert!(record.twin.reported.to_json(false)["battery"].is_number());
        hub.stop().await;
    }
}
