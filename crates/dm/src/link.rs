//! The seam between the patterns and the hub connection. The runner speaks only these traits;
//! [`crate::sdk`] implements them over `twinhub-device`, and the tests over an in-memory fake,
//! so every state machine is tested without MQTT.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};

use crate::schema::merge;

/// A failed exchange with the hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LinkError(pub(crate) String);

/// The twin as the device sees it when a session starts or resynchronises.
#[derive(Debug, Clone, Default)]
pub(crate) struct TwinSnapshot {
    pub(crate) desired: Map<String, Value>,
    pub(crate) desired_version: i64,
    pub(crate) reported: Map<String, Value>,
}

/// Answers one direct method call.
pub(crate) trait Reply: Send {
    /// Sends the method response.
    fn send(
        self: Box<Self>,
        status: i32,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A direct method call waiting for its answer.
pub(crate) struct MethodCall {
    pub(crate) name: String,
    pub(crate) payload: Value,
    pub(crate) reply: Box<dyn Reply>,
}

impl MethodCall {
    /// Answers the call.
    pub(crate) async fn respond(self, status: i32, payload: Value) {
        self.reply.send(status, payload).await;
    }
}

/// Something that happened on a session.
pub(crate) enum Event {
    /// A desired-properties notification.
    Desired {
        version: i64,
        patch: Map<String, Value>,
        full: bool,
    },
    /// A direct method call.
    Method(MethodCall),
    /// Notifications may have been missed (the connection was re-established, or the device fell
    /// behind): the twin must be read again.
    Resync,
    /// The session is over.
    Closed,
}

/// Sends reported-property patches.
pub(crate) trait Report: Clone + Send + Sync + 'static {
    /// Sends `patch`, resolving when the hub acknowledged it.
    fn report(&self, patch: Value) -> impl Future<Output = Result<(), LinkError>> + Send;
}

/// One connection to the hub.
pub(crate) trait Session: Send + 'static {
    /// The session's reporter.
    type Reporter: Report;
    /// A reporter usable from other tasks while the session waits for events.
    fn reporter(&self) -> Self::Reporter;
    /// Reads the whole twin.
    fn twin(&self) -> impl Future<Output = Result<TwinSnapshot, LinkError>> + Send;
    /// Waits for the next event.
    fn next_event(&mut self) -> impl Future<Output = Event> + Send;
    /// Disconnects.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Opens sessions.
pub(crate) trait Connect: Send + Sync + 'static {
    /// The session type.
    type Session: Session;
    /// Connects to the hub.
    fn connect(&self) -> impl Future<Output = Result<Self::Session, LinkError>> + Send;
}

/// A reporter that remembers what it reported, so that the whole reported state can be sent
/// again after notifications or acknowledgements may have been lost, and that never fails its
/// caller: a lost report is logged and repaired by that resend.
#[derive(Clone)]
pub(crate) struct Reporter<R> {
    inner: R,
    sent: Arc<Mutex<Map<String, Value>>>,
}

impl<R: Report> Reporter<R> {
    /// Wraps `inner`, knowing that the twin already reports `reported`.
    pub(crate) fn seeded(inner: R, reported: &Map<String, Value>) -> Reporter<R> {
        let known = reported
            .iter()
            .filter(|(key, _)| !key.starts_with('$'))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Reporter {
            inner,
            sent: Arc::new(Mutex::new(known)),
        }
    }

    /// Reports `patch` (a JSON object), unless the twin already says all of it.
    pub(crate) async fn report(&self, patch: Value) {
        if let Value::Object(fields) = &patch {
            let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            if is_contained(&sent, fields) {
                return;
            }
            merge(&mut sent, fields);
        }
        if let Err(error) = self.inner.report(patch).await {
            tracing::warn!(%error, "reporting properties failed; they are sent again on resync");
        }
    }

    /// The value to report at `path` so that it ends up exactly `value` rather than merged into
    /// what is there: object keys that `value` lacks become `null`.
    pub(crate) fn replacing(&self, path: &[&str], value: &Value) -> Value {
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let mut current = None;
        let mut level = Some(&*sent);
        for key in path {
            current = level.and_then(|map| map.get(*key));
            level = current.and_then(Value::as_object);
        }
        match (current, value) {
            (Some(Value::Object(old)), Value::Object(new)) => crate::runner::replacement(old, new),
            _ => value.clone(),
        }
    }

    /// What was last reported at `path`, as far as this session knows.
    pub(crate) fn reported(&self, path: &[&str]) -> Option<Value> {
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let (first, rest) = path.split_first()?;
        let mut current = sent.get(*first)?;
        for key in rest {
            current = current.get(*key)?;
        }
        Some(current.clone())
    }

    /// Sends everything reported so far again.
    pub(crate) async fn resend(&self) {
        let all = self
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if all.is_empty() {
            return;
        }
        if let Err(error) = self.inner.report(Value::Object(all)).await {
            tracing::warn!(%error, "re-sending reported properties failed");
        }
    }
}

/// Whether merging `patch` into `document` would change nothing.
fn is_contained(document: &Map<String, Value>, patch: &Map<String, Value>) -> bool {
    patch
        .iter()
        .all(|(key, value)| match (document.get(key), value) {
            (None, Value::Null) => true,
            (Some(Value::Object(inner)), Value::Object(patch)) => is_contained(inner, patch),
            (Some(existing), value) => !value.is_null() && !value.is_object() && existing == value,
            (None, _) => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn containment_sees_what_a_patch_would_change() {
        let document = object(json!({"a": {"b": 1}, "c": "x"}));
        assert!(is_contained(&document, &object(json!({"a": {"b": 1}}))));
        assert!(is_contained(
            &document,
            &object(json!({"gone": null, "c": "x"}))
        ));
        assert!(!is_contained(&document, &object(json!({"a": {"b": 2}}))));
        assert!(!is_contained(&document, &object(json!({"a": null}))));
        assert!(!is_contained(&document, &object(json!({"c": {"d": 1}}))));
        assert!(is_contained(&document, &object(json!({"a": {}}))));
    }
}
