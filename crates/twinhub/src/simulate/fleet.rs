//! A simulated fleet: registering its identities, and running every device in this process as
//! a `twinhub_dm` runner over [`VirtualActions`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use twinhub_client::rest::DeviceDto;
use twinhub_client::{ClientError, DeviceAuth, ServiceClient};
use twinhub_device::{Credential, DeviceConfig};
use twinhub_dm::{Actions as _, MemoryState, Options, VirtualActions, VirtualConfig};

use super::SimulateError;

/// Registry and twin requests in flight at once while provisioning.
const REGISTRY_CONCURRENCY: usize = 16;
/// The error code a bulk create reports for an id that is already registered.
const ALREADY_EXISTS: &str = "DeviceAlreadyExists";
/// Random bytes in a generated device key (Azure's keys are 32 bytes too).
const KEY_BYTES: usize = 32;

/// A device the simulator runs: its id and primary key.
#[derive(Clone)]
pub(crate) struct SimIdentity {
    pub(crate) device_id: String,
    pub(crate) key: String,
}

/// What provisioning found.
pub(crate) struct Provisioned {
    pub(crate) identities: Vec<SimIdentity>,
    /// How many identities were registered now (the rest existed already).
    pub(crate) created: usize,
}

/// The id of the `index`th (1-based) simulated device: `<prefix><index, five digits or more>`,
/// so ids stay the same whatever the fleet's size.
pub(crate) fn device_id(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:05}")
}

/// Registers the devices `ids` names that do not exist yet (in bulk, with keys generated here,
/// their twins tagged with `tags(index)` when that is an object with members) and reads back the
/// keys of those that do. Every identity must use symmetric keys.
pub(crate) async fn provision(
    client: &ServiceClient,
    ids: &[String],
    tags: impl Fn(usize) -> Map<String, Value>,
) -> Result<Provisioned, SimulateError> {
    let mut keys: Vec<Option<String>> = Vec::with_capacity(ids.len());
    let mut requests = Vec::with_capacity(ids.len());
    for id in ids {
        let key = generate_key()?;
        keys.push(Some(key.clone()));
        requests.push((
            id.clone(),
            DeviceAuth::Keys {
                primary: key,
                secondary: generate_key()?,
            },
        ));
    }
    let result = client.bulk_create_devices(&requests).await?;
    let position: BTreeMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut existing = Vec::new();
    for error in &result.errors {
        let Some(&index) = position.get(error.device_id.as_str()) else {
            continue;
        };
        if error.error_code != ALREADY_EXISTS {
            return Err(SimulateError::Provision(format!(
                "cannot register {}: {} {}",
                error.device_id, error.error_code, error.error_status
            )));
        }
        keys[index] = None;
        existing.push(index);
    }
    let created: Vec<usize> = (0..ids.len()).filter(|i| keys[*i].is_some()).collect();

    let read_back: Vec<(usize, Result<DeviceDto, ClientError>)> =
        futures_util::stream::iter(existing.iter().copied())
            .map(|index| async move { (index, client.get_device(&ids[index]).await) })
            .buffer_unordered(REGISTRY_CONCURRENCY)
            .collect()
            .await;
    for (index, device) in read_back {
        keys[index] = Some(primary_key(&device?)?);
    }

    let tagged: Vec<Result<(), ClientError>> = futures_util::stream::iter(created.iter().copied())
        .filter_map(|index| {
            let tags = tags(index);
            std::future::ready((!tags.is_empty()).then_some((index, tags)))
        })
        .map(|(index, tags)| async move {
            let patch = json!({ "tags": tags });
            client
                .update_twin(&ids[index], &patch, None)
                .await
                .map(drop)
        })
        .buffer_unordered(REGISTRY_CONCURRENCY)
        .collect()
        .await;
    tagged.into_iter().collect::<Result<(), ClientError>>()?;

    let identities = ids
        .iter()
        .zip(keys)
        .map(|(id, key)| {
            key.map(|key| SimIdentity {
                device_id: id.clone(),
                key,
            })
            .ok_or_else(|| SimulateError::Provision(format!("no key for {id}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Provisioned {
        identities,
        created: created.len(),
    })
}

/// A fresh base64 key of [`KEY_BYTES`] random bytes.
fn generate_key() -> Result<String, SimulateError> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| SimulateError::Provision(format!("no randomness for device keys: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The primary symmetric key of an existing identity.
fn primary_key(device: &DeviceDto) -> Result<String, SimulateError> {
    device
        .authentication
        .as_ref()
        .and_then(|a| a.symmetric_key.as_ref())
        .and_then(|k| k.primary_key.clone())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            SimulateError::Provision(format!(
                "{} exists but has no symmetric key; the simulator needs SAS devices",
                device.device_id
            ))
        })
}

/// How every device of a fleet reaches the hub and behaves.
#[derive(Clone, Debug)]
pub(crate) struct DeviceTemplate {
    /// The hub's host name (no port): usernames and SAS scopes name it.
    pub(crate) host_name: String,
    /// The MQTT port; `None` for 8883.
    pub(crate) port: Option<u16>,
    /// Where to connect if not `host_name`; TLS verifies this name.
    pub(crate) gateway_host: Option<String>,
    /// A PEM CA to trust besides the system's roots.
    pub(crate) ca_pem: Option<String>,
    /// The virtual device; each device draws failures from its own seed derived from this one.
    pub(crate) behaviour: VirtualConfig,
    /// New connections started per second while the fleet ramps up.
    pub(crate) connects_per_second: u32,
}

/// A device whose runner gave up, and why.
#[derive(Clone, Debug)]
pub(crate) struct DeviceFailure {
    pub(crate) device_id: String,
    pub(crate) reason: String,
}

/// What the devices themselves know: their firmware and the actions they carried out.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct LocalSummary {
    /// Devices per installed firmware version.
    pub(crate) versions: BTreeMap<String, u64>,
    /// Completed reboots (including those after factory resets and firmware installs).
    pub(crate) reboots: u64,
    /// Completed factory resets.
    pub(crate) factory_resets: u64,
}

/// A running fleet. Stop it with [`Fleet::stop`]; dropping it leaves the devices running.
pub(crate) struct Fleet {
    devices: Vec<(String, VirtualActions)>,
    failures: Arc<Mutex<Vec<DeviceFailure>>>,
    shutdown: watch::Sender<bool>,
    ramp: JoinHandle<Vec<JoinHandle<()>>>,
    /// Where devices keep downloaded packages; removed with the fleet.
    _downloads: tempfile::TempDir,
}

impl Fleet {
    /// Starts one runner per identity, at most `template.connects_per_second` new ones per
    /// second, so that the hub does not face a connection storm.
    pub(crate) fn start(
        identities: Vec<SimIdentity>,
        template: &DeviceTemplate,
    ) -> Result<Fleet, SimulateError> {
        let downloads = tempfile::Builder::new()
            .prefix("twinhub-simulate-")
            .tempdir()
            .map_err(SimulateError::Io)?;
        let (shutdown, stop) = watch::channel(false);
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut devices = Vec::with_capacity(identities.len());
        let mut launches = Vec::with_capacity(identities.len());
        for (index, identity) in identities.into_iter().enumerate() {
            let behaviour = VirtualConfig {
                seed: device_seed(template.behaviour.seed, index as u64),
                ..template.behaviour.clone()
            };
            let actions = VirtualActions::new(behaviour);
            let options = Options {
                download_dir: Some(downloads.path().join(&identity.device_id)),
                ..Options::default()
            };
            let mut config = DeviceConfig::new(
                template.host_name.clone(),
                identity.device_id.clone(),
                Credential::SymmetricKey(identity.key),
            );
            config.ca_pem = template.ca_pem.clone();
            config.port = template.port;
            config.gateway_host = template.gateway_host.clone();
            devices.push((identity.device_id.clone(), actions.clone()));
            launches.push(Launch {
                device_id: identity.device_id,
                config,
                actions,
                options,
            });
        }
        let interval = Duration::from_secs(1) / template.connects_per_second.max(1);
        let ramp = tokio::spawn(ramp(launches, interval, stop, Arc::clone(&failures)));
        Ok(Fleet {
            devices,
            failures,
            shutdown,
            ramp,
            _downloads: downloads,
        })
    }

    /// How many devices the fleet runs.
    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }

    /// The devices whose runners gave up (they could not reach the hub).
    pub(crate) fn failures(&self) -> Vec<DeviceFailure> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Firmware versions and action counts, read from the virtual devices.
    pub(crate) async fn local_summary(&self) -> LocalSummary {
        let mut summary = LocalSummary::default();
        for (_, actions) in &self.devices {
            let version = actions
                .firmware_version()
                .await
                .unwrap_or_else(|e| format!("unknown ({e})"));
            *summary.versions.entry(version).or_default() += 1;
            summary.reboots += actions.reboots();
            summary.factory_resets += actions.factory_resets();
        }
        summary
    }

    /// Tells every device to disconnect and waits up to `grace` for them; returns how many
    /// had not finished by then (they are aborted).
    pub(crate) async fn stop(self, grace: Duration) -> usize {
        let _ = self.shutdown.send(true);
        let runners = match self.ramp.await {
            Ok(runners) => runners,
            Err(_) => return self.devices.len(),
        };
        let deadline = Instant::now() + grace;
        let mut unfinished = 0;
        for mut runner in runners {
            if tokio::time::timeout_at(deadline, &mut runner)
                .await
                .is_err()
            {
                runner.abort();
                unfinished += 1;
            }
        }
        unfinished
    }
}

/// One device waiting to be started.
struct Launch {
    device_id: String,
    config: DeviceConfig,
    actions: VirtualActions,
    options: Options,
}

/// Starts the devices one `interval` apart until all run or the fleet is stopped.
async fn ramp(
    launches: Vec<Launch>,
    interval: Duration,
    stop: watch::Receiver<bool>,
    failures: Arc<Mutex<Vec<DeviceFailure>>>,
) -> Vec<JoinHandle<()>> {
    let start = Instant::now();
    let mut runners = Vec::with_capacity(launches.len());
    let mut stopped = stop.clone();
    for (index, launch) in launches.into_iter().enumerate() {
        let due = start + interval * u32::try_from(index).unwrap_or(u32::MAX);
        tokio::select! {
            biased;
            _ = stopped.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let mut stop = stop.clone();
        let failures = Arc::clone(&failures);
        runners.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            let outcome = twinhub_dm::run(
                launch.config,
                launch.actions,
                MemoryState::new(),
                launch.options,
                shutdown,
            )
            .await;
            if let Err(error) = outcome {
                failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(DeviceFailure {
                        device_id: launch.device_id,
                        reason: error.to_string(),
                    });
            }
        }));
    }
    runners
}

/// SplitMix64 of `seed + index`: neighbouring devices get unrelated failure draws, and the same
/// seed reproduces the same fleet.
fn device_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ids_are_stable_and_sort_in_order() {
        assert_eq!(device_id("sim-", 1), "sim-00001");
        assert_eq!(device_id("sim-", 10_000), "sim-10000");
        assert_eq!(device_id("x", 123_456), "x123456");
        let ids: Vec<String> = (1..=500).map(|i| device_id("d", i)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn device_seeds_differ_and_repeat() {
        let seeds: BTreeSet<u64> = (0..10_000).map(|i| device_seed(7, i)).collect();
        assert_eq!(seeds.len(), 10_000);
        assert_eq!(device_seed(7, 3), device_seed(7, 3));
        assert_ne!(device_seed(7, 3), device_seed(8, 3));
    }

    #[test]
    fn generated_keys_are_32_bytes_of_base64() {
        let key = generate_key().expect("randomness");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .expect("base64");
        assert_eq!(bytes.len(), KEY_BYTES);
        assert_ne!(key, generate_key().expect("randomness"));
    }

    #[test]
    fn existing_devices_without_keys_are_refused() {
        let device: DeviceDto = serde_json::from_value(json!({
            "deviceId": "x1",
            "authentication": {"type": "selfSigned", "symmetricKey": {"primaryKey": null}},
        }))
        .expect("a device");
        assert!(primary_key(&device).is_err());
        let device: DeviceDto = serde_json::from_value(json!({
            "deviceId": "k1",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "a2V5"}},
        }))
        .expect("a device");
        assert_eq!(primary_key(&device).expect("a key"), "a2V5");
    }
}
