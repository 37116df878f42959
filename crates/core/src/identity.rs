//! Device and module identities as the registry stores them (our storage format, not Azure's JSON).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Shortest decoded symmetric key accepted, in bytes.
pub const MIN_SYMMETRIC_KEY_BYTES: usize = 16;
/// Longest decoded symmetric key accepted, in bytes.
pub const MAX_SYMMETRIC_KEY_BYTES: usize = 64;
/// Length of generated symmetric keys, in bytes before base64.
const GENERATED_KEY_BYTES: usize = 32;

/// Whether an identity may connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceStatus {
    /// The identity may authenticate.
    Enabled,
    /// Authentication is refused; this is also how certificates are revoked.
    Disabled,
}

/// How an identity authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthType {
    /// SAS tokens signed with the identity's symmetric keys.
    Sas,
    /// A client certificate whose thumbprint is registered.
    SelfSigned,
    /// A client certificate chaining to a registered certificate authority.
    CertificateAuthority,
    /// No credentials of its own (e.g. modules authenticated through their Edge device).
    None,
}

/// The pair of base64 symmetric keys of an identity.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymmetricKey {
    /// Base64 primary key.
    pub primary_key: String,
    /// Base64 secondary key.
    pub secondary_key: String,
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricKey")
            .field("primary_key", &redacted(&self.primary_key))
            .field("secondary_key", &redacted(&self.secondary_key))
            .finish()
    }
}

/// Shows whether a secret is set without showing it.
pub(crate) fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        "<empty>"
    } else {
        "<redacted>"
    }
}

/// Registered certificate thumbprints, normalised by [`normalize_thumbprint`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509Thumbprint {
    /// Primary thumbprint: uppercase hex, no separators.
    pub primary: Option<String>,
    /// Secondary thumbprint: uppercase hex, no separators.
    pub secondary: Option<String>,
}

/// The credentials of an identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authentication {
    /// Which of the credentials below is used.
    pub auth_type: AuthType,
    /// Keys used when `auth_type` is [`AuthType::Sas`].
    pub symmetric_key: SymmetricKey,
    /// Thumbprints used when `auth_type` is [`AuthType::SelfSigned`].
    pub x509_thumbprint: X509Thumbprint,
}

/// A device (`module_id` is `None`) or module identity in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Device identifier (case-sensitive).
    pub device_id: String,
    /// Module identifier, for module identities.
    pub module_id: Option<String>,
    /// Distinguishes identities re-created under the same id; see [`generate_generation_id`].
    pub generation_id: String,
    /// Bumped by the registry on every identity write; rendered by [`Identity::etag`].
    pub etag_version: u64,
    /// Whether the identity may connect.
    pub status: DeviceStatus,
    /// Free-text reason for the status.
    pub status_reason: Option<String>,
    /// When `status` last changed.
    pub status_updated: Timestamp,
    /// Credentials.
    pub authentication: Authentication,
    /// Whether this device is an IoT Edge device.
    pub iot_edge: bool,
    /// Scope of an Edge device (`ms-azure-iot-edge://...`).
    pub device_scope: Option<String>,
    /// Scopes of the parent Edge devices.
    pub parent_scopes: Vec<String>,
    /// Owner of a module (e.g. `IotEdge`).
    pub managed_by: Option<String>,
}

impl Identity {
    /// The identity etag the way IoT Hub renders it: base64 of the decimal version (1 → `MQ==`).
    pub fn etag(&self) -> String {
        BASE64.encode(self.etag_version.to_string())
    }
}

/// Why a symmetric key was refused. Never contains the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    /// Not standard padded base64.
    #[error("the symmetric key is not valid base64")]
    NotBase64,
    /// Decodes to a length outside the accepted range.
    #[error(
        "the symmetric key decodes to {len} bytes; between {MIN_SYMMETRIC_KEY_BYTES} and \
         {MAX_SYMMETRIC_KEY_BYTES} bytes are required"
    )]
    WrongLength {
        /// Decoded length in bytes.
        len: usize,
    },
}

/// Generates a fresh symmetric key: 32 random bytes as standard base64 (44 characters).
///
/// # Panics
/// If the operating system's random source fails; no key is better than a guessable one.
pub fn generate_symmetric_key() -> String {
    BASE64.encode(random_bytes::<GENERATED_KEY_BYTES>())
}

/// Checks that a symmetric key is standard base64 decoding to 16..=64 bytes.
pub fn validate_symmetric_key(key: &str) -> Result<(), InvalidKey> {
    let len = BASE64.decode(key).map_err(|_| InvalidKey::NotBase64)?.len();
    if (MIN_SYMMETRIC_KEY_BYTES..=MAX_SYMMETRIC_KEY_BYTES).contains(&len) {
        Ok(())
    } else {
        Err(InvalidKey::WrongLength { len })
    }
}

/// Generates a generation id: 18 decimal digits, like IoT Hub's (.NET ticks of `now`, whose last
/// four digits are replaced by random ones so ids made in the same instant still differ).
///
/// # Panics
/// If the operating system's random source fails.
pub fn generate_generation_id(now: Timestamp) -> String {
    const LIMIT: i64 = 1_000_000_000_000_000_000;
    const RANDOM_SPAN: i64 = 10_000;
    let dotnet_ticks = now
        .ticks()
        .saturating_sub(Timestamp::NEVER.ticks())
        .clamp(0, LIMIT - 1);
    let random = i64::from(u16::from_le_bytes(random_bytes::<2>())) % RANDOM_SPAN;
    format!("{:018}", dotnet_ticks / RANDOM_SPAN * RANDOM_SPAN + random)
}

/// Normalises a certificate thumbprint: drops `:`, `-` and spaces and uppercases. `Some` only when
/// the result is a SHA-1 (40) or SHA-256 (64) hex digest.
pub fn normalize_thumbprint(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let is_digest = matches!(hex.len(), 40 | 64) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    is_digest.then_some(hex)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(error) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random source failed: {error}");
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_identity() -> Identity {
        Identity {
            device_id: "d1".to_owned(),
            module_id: None,
            generation_id: generate_generation_id(Timestamp::from_unix_seconds(1_700_000_000)),
            etag_version: 1,
            status: DeviceStatus::Enabled,
            status_reason: None,
            status_updated: Timestamp::NEVER,
            authentication: Authentication {
                auth_type: AuthType::Sas,
                symmetric_key: SymmetricKey {
                    primary_key: generate_symmetric_key(),
                    secondary_key: generate_symmetric_key(),
                },
                x509_thumbprint: X509Thumbprint::default(),
            },
            iot_edge: false,
            device_scope: None,
            parent_scopes: Vec::new(),
            managed_by: None,
        }
    }

    #[test]
    fn identity_etag_is_base64_of_the_decimal_version() {
        let mut identity = sample_identity();
        assert_eq!(identity.etag(), "MQ==");
        identity.etag_version = 795_214_636;
        assert_eq!(identity.etag(), "Nzk1MjE0NjM2");
    }

    #[test]
    fn identity_round_trips_through_serde() {
        let identity = sample_identity();
        let stored = serde_json::to_string(&identity).unwrap();
        let loaded: Identity = serde_json::from_str(&stored).unwrap();
        assert_eq!(loaded, identity);
    }

    #[test]
    fn debug_redacts_keys() {
        let identity = sample_identity();
        let shown = format!("{identity:?}");
        assert!(!shown.contains(&identity.authentication.symmetric_key.primary_key));
        assert!(!shown.contains(&identity.authentication.symmetric_key.secondary_key));
        assert!(shown.contains("<redacted>"));
        assert!(format!("{:?}", SymmetricKey::default()).contains("<empty>"));
    }

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = generate_symmetric_key();
        let b = generate_symmetric_key();
        assert_eq!(a.len(), 44);
        assert_eq!(validate_symmetric_key(&a), Ok(()));
        assert_ne!(a, b);
    }

    #[test]
    fn symmetric_key_length_boundaries() {
        let key = |n: usize| BASE64.encode(vec![7u8; n]);
        assert_eq!(
            validate_symmetric_key(&key(15)),
            Err(InvalidKey::WrongLength { len: 15 })
        );
        assert_eq!(validate_symmetric_key(&key(16)), Ok(()));
        assert_eq!(validate_symmetric_key(&key(64)), Ok(()));
        assert_eq!(
            validate_symmetric_key(&key(65)),
            Err(InvalidKey::WrongLength { len: 65 })
        );
        assert_eq!(
            validate_symmetric_key(""),
            Err(InvalidKey::WrongLength { len: 0 })
        );
        assert_eq!(
            validate_symmetric_key("not base64!"),
            Err(InvalidKey::NotBase64)
        );
        let err = validate_symmetric_key("c2VjcmV0c2VjcmV0").unwrap_err();
        assert!(!err.to_string().contains("c2Vj"));
    }

    #[test]
    fn generation_ids_are_dotnet_ticks_with_random_tail() {
        let now = Timestamp::parse_rfc3339("2019-12-16T15:38:13.0370650Z").unwrap();
        let id = generate_generation_id(now);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("63712107493037"), "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(generate_generation_id(Timestamp::NEVER).len(), 18);
        assert_eq!(
            generate_generation_id(Timestamp::from_ticks(i64::MAX)).len(),
            18
        );
    }

    #[test]
    fn thumbprints_are_normalised() {
        let sha1 = "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01";
        assert_eq!(
            normalize_thumbprint(sha1).as_deref(),
            Some("ABCDEF0123456789ABCDEF0123456789ABCDEF01")
        );
        let sha256 = "0123456789abcdef-0123456789abcdef 0123456789abcdef0123456789abcdef";
        assert_eq!(
            normalize_thumbprint(sha256).as_deref(),
            Some("0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF")
        );
        assert_eq!(normalize_thumbprint(""), None);
        assert_eq!(normalize_thumbprint(&"a".repeat(39)), None);
        assert_eq!(normalize_thumbprint(&"a".repeat(41)), None);
        assert_eq!(normalize_thumbprint(&"g".repeat(40)), None);
        assert_eq!(normalize_thumbprint(&"é".repeat(20)), None);
    }
}
