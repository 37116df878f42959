//! Turns credentials (SAS tokens, TLS client certificates) into what the caller may do.
//! Every comparison of a secret is constant-time, and no secret reaches a log line.

use twinhub_core::constant_time_eq;
use twinhub_core::identity::{AuthType, DeviceStatus};
use twinhub_core::policy::Permissions;
use twinhub_core::sas::SasToken;
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
        let token = header.ok_or(AuthError::Missing)?;
        let token =
            SasToken::parse(token.trim()).map_err(|e| AuthError::Malformed(e.to_string()))?;
        self.check_expiry(&token)?;
        self.check_scope(&token, path_segments)?;
        let name = token.key_name().ok_or(AuthError::Invalid)?;
        let policies = self.policies();
        let policy = policies
            .iter()
            .find(|p| p.name == name)
            .ok_or(AuthError::Invalid)?;
        if !(token.verify(&policy.primary_key) | token.verify(&policy.secondary_key)) {
            return Err(AuthError::Invalid);
        }
        if !policy.permissions.contains(needed) {
            return Err(AuthError::Forbidden(needed_name));
        }
        Ok(())
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
            self.check_expiry(&token)?;
            let mut segments = vec!["devices", key.device_id.as_str()];
            if let Some(module_id) = &key.module_id {
                segments.extend(["modules", module_id.as_str()]);
            }
            self.check_scope(&token, &segments)?;
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

    fn check_expiry(&self, token: &SasToken<'_>) -> Result<(), AuthError> {
        let now = u64::try_from(Timestamp::now().unix_seconds()).unwrap_or(0);
        if token.is_expired(now, self.settings().sas_skew_secs) {
            return Err(AuthError::Expired);
        }
        Ok(())
    }

    /// The token's resource must name this hub (a `:port` suffix is tolerated, as the Python
    /// service SDK adds one) and cover the target path by whole segments.
    fn check_scope(&self, token: &SasToken<'_>, segments: &[&str]) -> Result<(), AuthError> {
        let resource = token
            .resource()
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
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
