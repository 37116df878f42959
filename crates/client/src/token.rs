//! Service SAS tokens: signed with a shared access policy's key, cached, renewed before expiry.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use twinhub_core::sas::generate_token;

use crate::ClientError;

/// How long a token this client signs is valid.
const TOKEN_LIFETIME_SECS: u64 = 3600;
/// A cached token closer than this to its expiry is replaced, so no request carries a token
/// that expires in flight (or under a little clock skew).
const RENEW_BEFORE_SECS: u64 = 300;

/// Where the `Authorization` header comes from.
pub(crate) enum Credentials {
    /// A shared access policy: tokens are signed here.
    PolicyKey { key_name: String, key: String },
    /// A ready-made token from the connection string, sent as is.
    FixedToken(String),
}

/// Hands out a valid token for the hub, signing a new one only when needed.
pub(crate) struct TokenSource {
    /// The signed resource: the hub's host name.
    resource: String,
    credentials: Credentials,
    /// The last signed token and its expiry (Unix seconds).
    cached: Mutex<Option<(String, u64)>>,
}

impl fmt::Debug for TokenSource {
    /// Keys and tokens are secrets and never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.credentials {
            Credentials::PolicyKey { key_name, .. } => format!("policy {key_name}"),
            Credentials::FixedToken(_) => "fixed token".to_owned(),
        };
        f.debug_struct("TokenSource")
            .field("resource", &self.resource)
            .field("credentials", &kind)
            .finish()
    }
}

impl TokenSource {
    /// A source of tokens for `resource` (the host name, without a port).
    pub(crate) fn new(resource: String, credentials: Credentials) -> Self {
        Self {
            resource,
            credentials,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least [`RENEW_BEFORE_SECS`] more seconds.
    pub(crate) fn token(&self) -> Result<String, ClientError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.token_at(now)
    }

    /// [`TokenSource::token`] at `now` (Unix seconds).
    fn token_at(&self, now: u64) -> Result<String, ClientError> {
        let (key_name, key) = match &self.credentials {
            Credentials::FixedToken(token) => return Ok(token.clone()),
            Credentials::PolicyKey { key_name, key } => (key_name, key),
        };
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((token, expiry)) = cached.as_ref()
            && *expiry > now.saturating_add(RENEW_BEFORE_SECS)
        {
            return Ok(token.clone());
        }
        let expiry = now.saturating_add(TOKEN_LIFETIME_SECS);
        let token = generate_token(&self.resource, key, Some(key_name), expiry)?;
        *cached = Some((token.clone(), expiry));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use twinhub_core::sas::SasToken;

    use super::*;

    const KEY: &str = "dGhpcyBpcyBhIHRlc3Qgb3duZXIga2V5IDMyIGJ5dGU=";

    fn owner() -> TokenSource {
        TokenSource::new(
            "localhost".to_owned(),
            Credentials::PolicyKey {
                key_name: "iothubowner".to_owned(),
                key: KEY.to_owned(),
            },
        )
    }

    #[test]
    fn signs_the_host_with_the_policy_name() {
        let token = owner().token_at(1_000).expect("signs");
        let parsed = SasToken::parse(&token).expect("parses");
        assert_eq!(parsed.expiry(), 1_000 + TOKEN_LIFETIME_SECS);
        assert_eq!(parsed.key_name(), Some("iothubowner"));
        assert!(parsed.verify(KEY));
        assert!(token.starts_with("SharedAccessSignature sr=localhost&sig="));
    }

    #[test]
    fn reuses_the_token_until_it_nears_expiry() {
        let source = owner();
        let first = source.token_at(1_000).expect("signs");
        let renew_at = 1_000 + TOKEN_LIFETIME_SECS - RENEW_BEFORE_SECS;
        assert_eq!(source.token_at(renew_at - 1).expect("cached"), first);
        let renewed = source.token_at(renew_at).expect("renews");
        assert_ne!(renewed, first);
        let parsed = SasToken::parse(&renewed).expect("parses");
        assert_eq!(parsed.expiry(), renew_at + TOKEN_LIFETIME_SECS);
    }

    #[test]
    fn fixed_tokens_are_sent_as_given() {
        let source = TokenSource::new(
            "h".to_owned(),
            Credentials::FixedToken("SharedAccessSignature sr=h&sig=x&se=1".to_owned()),
        );
        assert_eq!(
            source.token_at(u64::MAX).expect("fixed"),
            "SharedAccessSignature sr=h&sig=x&se=1"
        );
    }

    #[test]
    fn a_bad_key_is_an_error_not_a_panic() {
        let source = TokenSource::new(
            "h".to_owned(),
            Credentials::PolicyKey {
                key_name: "service".to_owned(),
                key: "not base64!".to_owned(),
            },
        );
        assert!(matches!(source.token_at(0), Err(ClientError::Sas(_))));
    }

    #[test]
    fn debug_hides_the_key() {
        let debug = format!("{:?}", owner());
        assert!(!debug.contains(KEY));
        assert!(debug.contains("iothubowner"));
    }
}
