//! Turns credentials (SAS tokens, TLS client certificates) into what the caller may do.
//! Every comparison of a secret is constant-time, and no secret reaches a log line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use twinhub_core::constant_time_eq;
use twinhub_core::identity::{AuthType, DeviceStatus};
use twinhub_core::policy::{AccessPolicy, Permissions};
use twinhub_core::sas::{ResourceUri, SasToken};
use twinhub_core::time::Timestamp;

use crate::hub::{Hub, IdentityKey};

/// Why credentials were refused. The text is safe to return to the caller: it never contains
/// key material, and it does not reveal whether an identity exists.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials were presented")]
    Missing,
    #[error("the SAS token is malformed: {0}")]
    Malformed(String),
    #[error("the SAS token has expired")]
    Expired,
    #[error("the SAS token is not valid for this resource")]
    WrongScope,
    #[error("the credentials are not valid")]
    Invalid,
    #[error("the policy lacks the {0} permission")]
    Forbidden(&'static str),
}

/// A device credential that was accepted, with the moment the connection must end.
#[derive(Clone, Copy, Debug)]
pub struct DeviceGrant {
    /// Unix seconds at which the SAS token expires; `None` for certificate authentication.
    pub expires_at: Option<u64>,
}

impl Hub {
    /// Checks a service `Authorization` header for a request on `path_segments` that needs
    /// `needed`. Service tokens must name a shared access policy (`skn`).
    pub fn authorize_service(
        &self,
        header: Option<&str>,
        path_segments: &[&str],
        needed: Permissions,
        needed_name: &'static str,
    ) -> Result<(), AuthError> {
        let text = header.ok_or(AuthError::Missing)?.trim();
        let policies = self.policies();
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let grant = match self.service_tokens().get(&digest, &policies) {
            Some(grant) => {
                self.check_grant(&grant, path_segments)?;
                grant
            }
            None => {
                let grant = Arc::new(self.verify_service_token(text, path_segments, &policies)?);
                self.service_tokens()
                    .insert(digest, &policies, Arc::clone(&grant));
                grant
            }
        };
        let policy = policies
            .iter()
            .find(|p| p.name == grant.policy)
            .ok_or(AuthError::Invalid)?;
        if !policy.permissions.contains(needed) {
            return Err(AuthError::Forbidden(needed_name));
        }
        Ok(())
    }

    /// Parses a service token and checks it in full: expiry, scope, and its signature by one of
    /// the named policy's keys.
    fn verify_service_token(
        &self,
        text: &str,
        path_segments: &[&str],
        policies: &[AccessPolicy],
    ) -> Result<ServiceGrant, AuthError> {
        let token = SasToken::parse(text).map_err(|e| AuthError::Malformed(e.to_string()))?;
        self.check_expiry(token.expiry())?;
        let resource = token
            .resource()
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        self.check_scope(&resource, path_segments)?;
        let name = token.key_name().ok_or(AuthError::Invalid)?;
        let policy = policies
            .iter()
            .find(|p| p.name == name)
            .ok_or(AuthError::Invalid)?;
        if !(token.verify(&policy.primary_key) | token.verify(&policy.secondary_key)) {
            return Err(AuthError::Invalid);
        }
        Ok(ServiceGrant {
            policy: name.to_owned(),
            expiry: token.expiry(),
            resource,
        })
    }

    /// What a service token that verified earlier is still checked for on every request.
    fn check_grant(&self, grant: &ServiceGrant, path_segments: &[&str]) -> Result<(), AuthError> {
        self.check_expiry(grant.expiry)?;
        self.check_scope(&grant.resource, path_segments)
    }

    /// Authenticates a device (or module) connection by SAS password or client certificate.
    pub fn authenticate_device(
        &self,
        key: &IdentityKey,
        password: Option<&str>,
        peer_certificate: Option<&[u8]>,
    ) -> Result<DeviceGrant, AuthError> {
        let (record, _) = self.get_identity(key).map_err(|_| AuthError::Invalid)?;
        let identity = &record.identity;
        if identity.status == DeviceStatus::Disabled {
            return Err(AuthError::Invalid);
        }
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            let token =
                SasToken::parse(password).map_err(|e| AuthError::Malformed(e.to_string()))?;
            self.check_expiry(token.expiry())?;
            let mut segments = vec!["devices", key.device_id.as_str()];
            if let Some(module_id) = &key.module_id {
                segments.extend(["modules", module_id.as_str()]);
            }
            let resource = token
                .resource()
                .map_err(|e| AuthError::Malformed(e.to_string()))?;
            self.check_scope(&resource, &segments)?;
            let valid = match token.key_name() {
                None => {
                    let keys = &identity.authentication.symmetric_key;
                    identity.authentication.auth_type == AuthType::Sas
                        && (token.verify(&keys.primary_key) | token.verify(&keys.secondary_key))
                }
                Some(name) => {
                    let policies = self.policies();
                    policies.iter().any(|p| {
                        p.name == name
                            && p.permissions.contains(Permissions::DEVICE_CONNECT)
                            && (token.verify(&p.primary_key) | token.verify(&p.secondary_key))
                    })
                }
            };
            return if valid {
                Ok(DeviceGrant {
                    expires_at: Some(token.expiry()),
                })
            } else {
                Err(AuthError::Invalid)
            };
        }
        let certificate = peer_certificate.ok_or(AuthError::Missing)?;
        if identity.authentication.auth_type != AuthType::SelfSigned {
            return Err(AuthError::Invalid);
        }
        let (sha1, sha256) = crate::tls::thumbprints(certificate);
        let registered = &identity.authentication.x509_thumbprint;
        let matches = [&registered.primary, &registered.secondary]
            .into_iter()
            .flatten()
            .fold(false, |acc, expected| {
                acc | constant_time_eq(expected.as_bytes(), sha1.as_bytes())
                    | constant_time_eq(expected.as_bytes(), sha256.as_bytes())
            });
        if matches {
            Ok(DeviceGrant { expires_at: None })
        } else {
            Err(AuthError::Invalid)
        }
    }

    fn check_expiry(&self, expiry: u64) -> Result<(), AuthError> {
        let now = u64::try_from(Timestamp::now().unix_seconds()).unwrap_or(0);
        if twinhub_core::sas::is_expired(expiry, now, self.settings().sas_skew_secs) {
            return Err(AuthError::Expired);
        }
        Ok(())
    }

    /// The token's resource must name this hub (a `:port` suffix is tolerated, as the Python
    /// service SDK adds one) and cover the target path by whole segments.
    fn check_scope(&self, resource: &ResourceUri, segments: &[&str]) -> Result<(), AuthError> {
        let host_only = resource.host.split(':').next().unwrap_or_default();
        if !host_only.eq_ignore_ascii_case(&self.settings().hostname) {
            return Err(AuthError::WrongScope);
        }
        if !resource.covers(&resource.host, segments) {
            return Err(AuthError::WrongScope);
        }
        Ok(())
    }
}

/// A service token that verified: the policy that signed it, and what is still checked on every
/// request (expiry, scope; the policy's permissions are looked up each time).
#[derive(Debug)]
struct ServiceGrant {
    policy: String,
    expiry: u64,
    resource: ResourceUri,
}

/// Service tokens that verified, by the SHA-256 of their text. A back end sends the same token
/// with every request until it renews it, and verifying one means parsing it and an HMAC per
/// policy key. Keying by digest means no lookup compares token text. A grant counts only
/// against the policy set it was verified with.
#[derive(Default)]
pub(crate) struct VerifiedServiceTokens(Mutex<HashMap<[u8; 32], Verified>>);

struct Verified {
    policies: Arc<Vec<AccessPolicy>>,
    grant: Arc<ServiceGrant>,
}

/// Distinct tokens remembered; past this the memory starts over (each token verifies again once).
const MAX_VERIFIED_TOKENS: usize = 1024;

impl VerifiedServiceTokens {
    fn get(
        &self,
        digest: &[u8; 32],
        policies: &Arc<Vec<AccessPolicy>>,
    ) -> Option<Arc<ServiceGrant>> {
        let tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(digest)
            .filter(|verified| Arc::ptr_eq(&verified.policies, policies))
            .map(|verified| Arc::clone(&verified.grant))
    }

    fn insert(
        &self,
        digest: [u8; 32],
        policies: &Arc<Vec<AccessPolicy>>,
        grant: Arc<ServiceGrant>,
    ) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_VERIFIED_TOKENS {
            tokens.clear();
        }
        tokens.insert(
            digest,
            Verified {
                policies: Arc::clone(policies),
                grant,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use twinhub_core::sas::generate_token;

    use super::*;
    use crate::hub::test_support::open_hub_with_settings;
    use crate::hub::{HubSettings, JobLimits};

    async fn hub_without_skew() -> Hub {
        open_hub_with_settings(
            Arc::new(twinhub_store::MemoryStore::new()),
            HubSettings {
                hostname: "hub.test".into(),
                sas_skew_secs: 0,
                max_modules_per_device: 50,
                max_configurations: 100,
                configuration_twins_per_second: 1000,
                jobs: JobLimits::default(),
            },
        )
        .await
    }

    fn token(hub: &Hub, policy: &str, resource: &str, expiry: u64) -> String {
        let policies = hub.policies();
        let key = &policies
            .iter()
            .find(|p| p.name == policy)
            .expect("a default policy")
            .primary_key;
        generate_token(resource, key, Some(policy), expiry).expect("signed")
    }

    fn now() -> u64 {
        u64::try_from(Timestamp::now().unix_seconds()).expect("after 1970")
    }

    impl VerifiedServiceTokens {
        fn len(&self) -> usize {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
        }
    }

    /// A token that verified once is not verified again, but every request still checks its
    /// expiry, its scope and the policy's permissions.
    #[tokio::test]
    async fn a_remembered_service_token_is_still_checked_on_every_request() {
        let hub = hub_without_skew().await;
        let owner = token(&hub, "iothubowner", "hub.test/devices/d1", now() + 1);
        let authorize = |token: &str, segments: &[&str], needed| {
            hub.authorize_service(Some(token), segments, needed, "needed")
        };
        for _ in 0..2 {
            assert!(authorize(&owner, &["devices", "d1"], Permissions::REGISTRY_WRITE).is_ok());
            assert!(matches!(
                authorize(&owner, &["devices", "d2"], Permissions::REGISTRY_READ),
                Err(AuthError::WrongScope)
            ));
        }
        assert_eq!(hub.service_tokens().len(), 1);

        let reader = token(&hub, "registryRead", "hub.test", now() + 60);
        for _ in 0..2 {
            assert!(authorize(&reader, &["devices"], Permissions::REGISTRY_READ).is_ok());
            assert!(matches!(
                authorize(&reader, &["devices"], Permissions::REGISTRY_WRITE),
                Err(AuthError::Forbidden("needed"))
            ));
        }
        assert_eq!(hub.service_tokens().len(), 2);

        // The signature is the token's last field: change its last character.
        let mut forged = reader.clone();
        let last = forged.pop().expect("not empty");
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(
            authorize(&forged, &["devices"], Permissions::REGISTRY_READ),
            Err(AuthError::Invalid | AuthError::Malformed(_))
        ));

        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(matches!(
            authorize(&owner, &["devices", "d1"], Permissions::REGISTRY_READ),
            Err(AuthError::Expired)
        ));
    }
}
