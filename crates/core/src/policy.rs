//! Shared access policies: named key pairs granting a set of permissions to service clients.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::{generate_symmetric_key, redacted};

/// A set of IoT Hub permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permissions(u8);

impl Permissions {
    /// Read the identity registry.
    pub const REGISTRY_READ: Permissions = Permissions(1);
    /// Write the identity registry.
    pub const REGISTRY_WRITE: Permissions = Permissions(1 << 1);
    /// Service-facing operations: twins, queries, direct methods, cloud-to-device messages.
    pub const SERVICE_CONNECT: Permissions = Permissions(1 << 2);
    /// Device-facing operations (e.g. a protocol gateway connecting on behalf of devices).
    pub const DEVICE_CONNECT: Permissions = Permissions(1 << 3);
    /// Every permission.
    pub const ALL: Permissions = Permissions(0b1111);

    /// Whether every permission in `other` is also in `self`.
    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions in either set.
    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }
}

/// A named shared access policy with its two keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    /// Policy name, sent as `skn` in SAS tokens.
    pub name: String,
    /// Base64 primary key.
    pub primary_key: String,
    /// Base64 secondary key.
    pub secondary_key: String,
    /// What tokens signed with these keys may do.
    pub permissions: Permissions,
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("name", &self.name)
            .field("primary_key", &redacted(&self.primary_key))
            .field("secondary_key", &redacted(&self.secondary_key))
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// The policies a new IoT hub starts with, with freshly generated keys; `owner_key`, when given,
/// becomes `iothubowner`'s primary key (so an operator can pin the owner connection string).
///
/// # Panics
/// If the operating system's random source fails.
pub fn default_policies(owner_key: Option<&str>) -> Vec<AccessPolicy> {
    let policy = |name: &str, permissions| AccessPolicy {
        name: name.to_owned(),
        primary_key: generate_symmetric_key(),
        secondary_key: generate_symmetric_key(),
        permissions,
    };
    let mut owner = policy("iothubowner", Permissions::ALL);
    if let Some(key) = owner_key {
        owner.primary_key = key.to_owned();
    }
    vec![
        owner,
        policy("service", Permissions::SERVICE_CONNECT),
        policy("device", Permissions::DEVICE_CONNECT),
        policy("registryRead", Permissions::REGISTRY_READ),
        policy(
            "registryReadWrite",
            Permissions::REGISTRY_READ.union(Permissions::REGISTRY_WRITE),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::validate_symmetric_key;

    #[test]
    fn permission_sets() {
        let read_write = Permissions::REGISTRY_READ.union(Permissions::REGISTRY_WRITE);
        assert!(read_write.contains(Permissions::REGISTRY_READ));
        assert!(read_write.contains(read_write));
        assert!(!read_write.contains(Permissions::SERVICE_CONNECT));
        assert!(!Permissions::REGISTRY_READ.contains(read_write));
        let all = [
            Permissions::REGISTRY_READ,
            Permissions::REGISTRY_WRITE,
            Permissions::SERVICE_CONNECT,
            Permissions::DEVICE_CONNECT,
        ]
        .into_iter()
        .fold(Permissions::REGISTRY_READ, Permissions::union);
        assert_eq!(all, Permissions::ALL);
        assert!(Permissions::ALL.contains(Permissions::DEVICE_CONNECT));
    }

    #[test]
    fn default_policies_match_iot_hub() {
        let policies = default_policies(None);
        let summary: Vec<(&str, Permissions)> = policies
            .iter()
            .map(|p| (p.name.as_str(), p.permissions))
            .collect();
        assert_eq!(
            summary,
            [
                ("iothubowner", Permissions::ALL),
                ("service", Permissions::SERVICE_CONNECT),
                ("device", Permissions::DEVICE_CONNECT),
                ("registryRead", Permissions::REGISTRY_READ),
                (
                    "registryReadWrite",
                    Permissions::REGISTRY_READ.union(Permissions::REGISTRY_WRITE)
                ),
            ]
        );
        for policy in &policies {
            assert_eq!(validate_symmetric_key(&policy.primary_key), Ok(()));
            assert_eq!(validate_symmetric_key(&policy.secondary_key), Ok(()));
            assert_ne!(policy.primary_key, policy.secondary_key);
        }
    }

    #[test]
    fn owner_key_is_used_when_given() {
        let owner_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let policies = default_policies(Some(owner_key));
        assert_eq!(policies[0].primary_key, owner_key);
        assert_ne!(policies[0].secondary_key, owner_key);
        assert_ne!(policies[1].primary_key, owner_key);
    }

    #[test]
    fn policies_round_trip_and_debug_hides_keys() {
        let policies = default_policies(None);
        let stored = serde_json::to_string(&policies).unwrap();
        let loaded: Vec<AccessPolicy> = serde_json::from_str(&stored).unwrap();
        assert_eq!(loaded, policies);
        let shown = format!("{:?}", policies[0]);
        assert!(shown.contains("iothubowner"));
        assert!(!shown.contains(&policies[0].primary_key));
        assert!(!shown.contains(&policies[0].secondary_key));
    }
}
