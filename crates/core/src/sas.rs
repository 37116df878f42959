//! Shared access signature tokens:
//! `SharedAccessSignature sr=<url-encoded uri>&sig=<url-encoded base64>&se=<unix>[&skn=<policy>]`.
//!
//! Verification signs the `sr` and `se` fields exactly as they were sent, so it works whatever
//! percent-encoding style the client used (uppercase or lowercase hex, `/` left unencoded, ...).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

use crate::constant_time_eq;

const PREFIX: &str = "SharedAccessSignature ";
/// Length of an HMAC-SHA256 signature in bytes.
const SIGNATURE_BYTES: usize = 32;
/// Longest unknown field name quoted in an error message, in characters.
const MAX_QUOTED_NAME_CHARS: usize = 32;
/// What Node's SDK leaves unescaped: `encodeURIComponent` minus `!'()*`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a SAS token could not be parsed or a signature made. Never contains a key or signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    /// The token does not start with `SharedAccessSignature `.
    #[error("the token does not start with \"SharedAccessSignature \"")]
    MissingPrefix,
    /// A field is not of the form `name=value`.
    #[error("a token field is not of the form name=value")]
    MalformedField,
    /// A field other than `sr`, `sig`, `se` and `skn`.
    #[error("the token has an unknown field {name:?}")]
    UnknownField {
        /// The field name (shortened if very long).
        name: String,
    },
    /// A field given twice.
    #[error("the token has more than one {name:?} field")]
    DuplicateField {
        /// The field name.
        name: &'static str,
    },
    /// A required field is absent.
    #[error("the token has no {name:?} field")]
    MissingField {
        /// The field name.
        name: &'static str,
    },
    /// A field is present but empty.
    #[error("the token's {name:?} field is empty")]
    EmptyField {
        /// The field name.
        name: &'static str,
    },
    /// `se` is not a decimal number of seconds.
    #[error("the token's expiry (se) is not a decimal number of seconds")]
    InvalidExpiry,
    /// `sig` is not a URL-encoded base64 HMAC-SHA256.
    #[error("the token's signature (sig) is not a URL-encoded base64 HMAC-SHA256")]
    InvalidSignature,
    /// `sr` does not decode to `host[/segment...]`.
    #[error("the token's resource URI (sr) is not a valid host and path")]
    InvalidResource,
    /// `skn` does not decode to UTF-8.
    #[error("the token's key name (skn) is not valid UTF-8")]
    InvalidKeyName,
    /// The signing key is not base64.
    #[error("the signing key is not valid base64")]
    InvalidKey,
}

/// A parsed SAS token, borrowing the raw `sr` and `se` from the token text.
#[derive(Clone)]
pub struct SasToken<'a> {
    /// `sr` exactly as sent (still percent-encoded): the signed bytes.
    raw_resource: &'a str,
    /// `se` exactly as sent: the signed bytes.
    raw_expiry: &'a str,
    signature: Vec<u8>,
    expiry: u64,
    key_name: Option<String>,
}

impl fmt::Debug for SasToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.raw_resource)
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .field("signature", &"<redacted>")
            .finish()
    }
}

impl<'a> SasToken<'a> {
    /// Parses a token: the literal `SharedAccessSignature ` prefix, then `&`-separated fields in
    /// any order, each split on its first `=`. `sr`, `sig` and `se` are required, `skn` optional;
    /// duplicate and unknown fields are refused. This is the fuzzing entry point: it never panics.
    pub fn parse(token: &'a str) -> Result<SasToken<'a>, SasError> {
        let fields = token.strip_prefix(PREFIX).ok_or(SasError::MissingPrefix)?;
        let (mut resource, mut signature, mut expiry, mut key_name) = (None, None, None, None);
        for field in fields.split('&') {
            let (name, value) = field.split_once('=').ok_or(SasError::MalformedField)?;
            let (name, slot) = match name {
                "sr" => ("sr", &mut resource),
                "sig" => ("sig", &mut signature),
                "se" => ("se", &mut expiry),
                "skn" => ("skn", &mut key_name),
                unknown => {
                    return Err(SasError::UnknownField {
                        name: unknown.chars().take(MAX_QUOTED_NAME_CHARS).collect(),
                    });
                }
            };
            if value.is_empty() {
                return Err(SasError::EmptyField { name });
            }
            if slot.replace(value).is_some() {
                return Err(SasError::DuplicateField { name });
            }
        }
        let raw_resource = resource.ok_or(SasError::MissingField { name: "sr" })?;
        let raw_signature = signature.ok_or(SasError::MissingField { name: "sig" })?;
        let raw_expiry = expiry.ok_or(SasError::MissingField { name: "se" })?;

        // `parse::<u64>` alone would also accept a leading '+'.
        if !raw_expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SasError::InvalidExpiry);
        }
        let expiry = raw_expiry.parse().map_err(|_| SasError::InvalidExpiry)?;

        // Percent-decoding only: '+' is a base64 digit here, never an encoded space.
        let signature_base64: Vec<u8> = percent_decode_str(raw_signature).collect();
        let signature = BASE64
            .decode(signature_base64)
            .map_err(|_| SasError::InvalidSignature)?;
        if signature.len() != SIGNATURE_BYTES {
            return Err(SasError::InvalidSignature);
        }

        let key_name = key_name
            .map(|raw| {
                percent_decode_str(raw)
                    .decode_utf8()
                    .map(|name| name.into_owned())
                    .map_err(|_| SasError::InvalidKeyName)
            })
            .transpose()?;

        Ok(SasToken {
            raw_resource,
            raw_expiry,
            signature,
            expiry,
            key_name,
        })
    }

    /// Expiry, in seconds since the Unix epoch.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// The policy name (`skn`), percent-decoded; `None` for tokens signed with an identity's key.
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// The resource URI (`sr`), percent-decoded (hex in either case) and split into host and path
    /// segments. A leading `https://` and a trailing `/` are tolerated.
    pub fn resource(&self) -> Result<ResourceUri, SasError> {
        let decoded = percent_decode_str(self.raw_resource)
            .decode_utf8()
            .map_err(|_| SasError::InvalidResource)?;
        let uri = match decoded.get(..8) {
            Some(scheme) if scheme.eq_ignore_ascii_case("https://") => &decoded[8..],
            _ => &decoded[..],
        };
        let uri = uri.strip_suffix('/').unwrap_or(uri);
        let mut parts = uri.split('/');
        let host = parts.next().unwrap_or_default();
        let segments: Vec<String> = parts.map(str::to_owned).collect();
        if host.is_empty() || segments.iter().any(String::is_empty) {
            return Err(SasError::InvalidResource);
        }
        Ok(ResourceUri {
            host: host.to_owned(),
            segments,
        })
    }

    /// Whether the token has expired at `now_unix`, allowing `skew_secs` of clock difference.
    pub fn is_expired(&self, now_unix: u64, skew_secs: u64) -> bool {
        is_expired(self.expiry, now_unix, skew_secs)
    }

    /// Whether the signature is HMAC-SHA256(key, `sr` + "\n" + `se`) over the fields as sent.
    /// Compares in constant time; a key that is not base64 never verifies.
    pub fn verify(&self, key_base64: &str) -> bool {
        let Ok(key) = BASE64.decode(key_base64) else {
            return false;
        };
        let string_to_sign = format!("{}\n{}", self.raw_resource, self.raw_expiry);
        hmac_sha256(&key, &string_to_sign)
            .is_some_and(|expected| constant_time_eq(&expected, &self.signature))
    }
}

/// Whether a token expiring at `expiry` has expired at `now_unix`, allowing `skew_secs` of clock
/// difference (for a token already parsed and checked, whose expiry is all that was kept).
pub fn is_expired(expiry: u64, now_unix: u64, skew_secs: u64) -> bool {
    expiry.saturating_add(skew_secs) <= now_unix
}

/// A token's resource URI: host and path segments, percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceUri {
    /// Host name as written in the token.
    pub host: String,
    /// Path segments after the host, e.g. `["devices", "d1"]`.
    pub segments: Vec<String>,
}

impl ResourceUri {
    /// Scope check by path segment: the host must equal `host` ignoring ASCII case, and the token's
    /// segments must be a prefix of `target_segments`, compared exactly (ids are case-sensitive).
    ///
    /// `h/devices` covers `["devices", "d1"]`; `h/devices/d1` covers
    /// `["devices", "d1", "modules", "m"]` but not `["devices", "d10"]`.
    pub fn covers(&self, host: &str, target_segments: &[&str]) -> bool {
        self.host.eq_ignore_ascii_case(host)
            && self.segments.len() <= target_segments.len()
            && self
                .segments
                .iter()
                .zip(target_segments)
                .all(|(granted, target)| granted == target)
    }
}

/// Base64 HMAC-SHA256 of `string_to_sign` under the base64 key `key_base64`.
pub fn sign(key_base64: &str, string_to_sign: &str) -> Result<String, SasError> {
    let key = BASE64
        .decode(key_base64)
        .map_err(|_| SasError::InvalidKey)?;
    let signature = hmac_sha256(&key, string_to_sign).ok_or(SasError::InvalidKey)?;
    Ok(BASE64.encode(signature))
}

/// Builds a token as Node's SDK does: `sr` is `resource_uri` encoded like `encodeURIComponent`
/// (uppercase hex, also escaping `!'()*`), `sig` likewise; fields in the order `sr, sig, se, skn`.
pub fn generate_token(
    resource_uri: &str,
    key_base64: &str,
    key_name: Option<&str>,
    expiry_unix: u64,
) -> Result<String, SasError> {
    if resource_uri.is_empty() {
        return Err(SasError::EmptyField { name: "sr" });
    }
    let resource = utf8_percent_encode(resource_uri, URI_COMPONENT).to_string();
    let signature = sign(key_base64, &format!("{resource}\n{expiry_unix}"))?;
    let mut token = format!(
        "{PREFIX}sr={resource}&sig={}&se={expiry_unix}",
        utf8_percent_encode(&signature, URI_COMPONENT)
    );
    match key_name {
        Some("") => return Err(SasError::EmptyField { name: "skn" }),
        Some(name) => {
            token.push_str("&skn=");
            token.extend(utf8_percent_encode(name, URI_COMPONENT));
        }
        None => {}
    }
    Ok(token)
}

/// HMAC-SHA256; `None` only if the MAC refuses the key, which HMAC never does.
fn hmac_sha256(key: &[u8], message: &str) -> Option<[u8; SIGNATURE_BYTES]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(message.as_bytes());
    Some(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests;
