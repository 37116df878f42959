//! Actions of a simulated device: everything happens in memory, a reboot is a pause, and
//! firmware installs fail at a configured, reproducible rate.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::actions::{ActionError, Actions};

/// How a [`VirtualActions`] device behaves.
#[derive(Clone, Debug)]
pub struct VirtualConfig {
    /// The firmware version the device starts with (and keeps across factory resets).
    pub firmware_version: String,
    /// How long a reboot keeps the device offline.
    pub reboot_time: Duration,
    /// The most bytes per second a firmware download may use; `None` for no limit.
    pub download_bytes_per_second: Option<u64>,
    /// The probability (0.0–1.0) that installing firmware fails, drawn at the `applying` step.
    pub firmware_failure_probability: f64,
    /// Seed of the failure draws, so that a run can be reproduced.
    pub seed: u64,
}

impl Default for VirtualConfig {
    fn default() -> Self {
        VirtualConfig {
            firmware_version: "1.0.0".to_owned(),
            reboot_time: Duration::from_secs(5),
            download_bytes_per_second: None,
            firmware_failure_probability: 0.0,
            seed: 1,
        }
    }
}

/// A simulated device's actions. Clones share the device, so a simulator can keep one to
/// inspect it while [`crate::run`] drives another.
#[derive(Clone, Debug)]
pub struct VirtualActions {
    config: Arc<VirtualConfig>,
    device: Arc<Mutex<VirtualDevice>>,
}

#[derive(Debug)]
struct VirtualDevice {
    firmware_version: String,
    configuration: BTreeMap<String, Value>,
    rng: XorShift64,
    reboots: u64,
    factory_resets: u64,
}

impl VirtualActions {
    /// A device behaving as `config` says.
    pub fn new(config: VirtualConfig) -> VirtualActions {
        let device = VirtualDevice {
            firmware_version: config.firmware_version.clone(),
            configuration: BTreeMap::new(),
            rng: XorShift64::new(config.seed),
            reboots: 0,
            factory_resets: 0,
        };
        VirtualActions {
            config: Arc::new(config),
            device: Arc::new(Mutex::new(device)),
        }
    }

    /// The configuration applied for property `name`.
    pub fn configuration(&self, name: &str) -> Option<Value> {
        self.device().configuration.get(name).cloned()
    }

    /// How many reboots (including those after factory resets) completed.
    pub fn reboots(&self) -> u64 {
        self.device().reboots
    }

    /// How many factory resets completed.
    pub fn factory_resets(&self) -> u64 {
        self.device().factory_resets
    }

    fn device(&self) -> MutexGuard<'_, VirtualDevice> {
        // The guarded data stays consistent across a panic elsewhere: every write is one field.
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Actions for VirtualActions {
    async fn reboot(&self) -> Result<(), ActionError> {
        tokio::time::sleep(self.config.reboot_time).await;
        self.device().reboots += 1;
        Ok(())
    }

    async fn factory_reset(&self) -> Result<(), ActionError> {
        let mut device = self.device();
        device.configuration.clear();
        device.factory_resets += 1;
        Ok(())
    }

    async fn install_firmware(&self, _package: &Path, version: &str) -> Result<(), ActionError> {
        let mut device = self.device();
        if device.rng.next_unit() < self.config.firmware_failure_probability {
            return Err(ActionError::Failed(format!(
                "simulated failure installing firmware {version}"
            )));
        }
        device.firmware_version = version.to_owned();
        Ok(())
    }

    async fn firmware_version(&self) -> Result<String, ActionError> {
        Ok(self.device().firmware_version.clone())
    }

    async fn rollback_firmware(&self, previous: &str) -> Result<(), ActionError> {
        self.device().firmware_version = previous.to_owned();
        Ok(())
    }

    async fn apply_configuration(&self, name: &str, value: &Value) -> Result<(), ActionError> {
        self.device()
            .configuration
            .insert(name.to_owned(), value.clone());
        Ok(())
    }

    fn download_rate_limit(&self) -> Option<u64> {
        self.config.download_bytes_per_second
    }
}

/// Marsaglia's xorshift64*: tiny, seedable, and good enough for failure draws.
#[derive(Debug)]
struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    fn new(seed: u64) -> XorShift64 {
        // Zero is the generator's one fixed point; any other constant would do.
        XorShift64 {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A draw in [0, 1).
    fn next_unit(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(probability: f64, seed: u64) -> VirtualActions {
        VirtualActions::new(VirtualConfig {
            firmware_failure_probability: probability,
            seed,
            reboot_time: Duration::ZERO,
            ..VirtualConfig::default()
        })
    }

    async fn outcomes(actions: &VirtualActions, installs: usize) -> Vec<bool> {
        let mut results = Vec::with_capacity(installs);
        for i in 0..installs {
            let version = format!("v{i}");
            results.push(
                actions
                    .install_firmware(Path::new("unused"), &version)
                    .await
                    .is_ok(),
            );
        }
        results
    }

    #[tokio::test]
    async fn the_same_seed_fails_the_same_installs() {
        let first = outcomes(&device(0.3, 42), 200).await;
        let second = outcomes(&device(0.3, 42), 200).await;
        let other_seed = outcomes(&device(0.3, 43), 200).await;
        assert_eq!(first, second);
        assert_ne!(first, other_seed);
    }

    #[tokio::test]
    async fn the_failure_rate_matches_the_probability() {
        let results = outcomes(&device(0.25, 7), 4000).await;
        let failures = results.iter().filter(|ok| !**ok).count();
        assert!(
            (800..1200).contains(&failures),
            "{failures} failures of 4000"
        );
        assert!(outcomes(&device(0.0, 7), 100).await.iter().all(|ok| *ok));
        assert!(outcomes(&device(1.0, 7), 100).await.iter().all(|ok| !*ok));
    }

    #[tokio::test]
    async fn installs_and_rollbacks_change_the_version_and_resets_keep_it() {
        let actions = device(0.0, 1);
        actions
            .install_firmware(Path::new("p"), "2.0")
            .await
            .expect("installs");
        assert_eq!(actions.firmware_version().await.expect("version"), "2.0");
        actions
            .rollback_firmware("1.0.0")
            .await
            .expect("rolls back");
        assert_eq!(actions.firmware_version().await.expect("version"), "1.0.0");
        actions
            .apply_configuration(
                "telemetryConfig",
                &serde_json::json!({"sendFrequency": "5m"}),
            )
            .await
            .expect("applies");
        assert!(actions.configuration("telemetryConfig").is_some());
        actions.factory_reset().await.expect("resets");
        assert_eq!(actions.configuration("telemetryConfig"), None);
        assert_eq!(actions.factory_resets(), 1);
        actions.reboot().await.expect("reboots");
        assert_eq!(actions.reboots(), 1);
    }

    #[test]
    fn a_zero_seed_still_produces_draws() {
        let mut rng = XorShift64::new(0);
        assert_ne!(rng.next_u64(), 0);
        let unit = rng.next_unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
