//! Direct methods: a synchronous call from the back end to a connected device.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Hub, HubError, IdentityKey, Outbound};

/// A method call as the back end asked for it.
#[derive(Clone, Debug)]
pub struct MethodCall {
    pub name: String,
    pub payload: Value,
    pub response_timeout: Duration,
    /// How long to wait for the device to connect and subscribe to methods.
    pub connect_timeout: Duration,
}

/// The device's answer, passed through as given.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodOutcome {
    pub status: i32,
    pub payload: Value,
}

impl Hub {
    pub async fn invoke_method(
        &self,
        key: &IdentityKey,
        call: MethodCall,
    ) -> Result<MethodOutcome, HubError> {
        self.existing(key)?;
        let result = self.invoke_method_on_session(key, call).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(HubError::DeviceNotOnline | HubError::DeviceDisconnected) => "device_not_online",
            Err(HubError::MethodTimeout(_)) => "timeout",
            Err(_) => "error",
        };
        self.0.metrics.method_calls.inc(outcome);
        result
    }

    async fn invoke_method_on_session(
        &self,
        key: &IdentityKey,
        call: MethodCall,
    ) -> Result<MethodOutcome, HubError> {
        let payload = Bytes::from(serde_json::to_vec(&call.payload).map_err(HubError::storage)?);
        let connect_deadline = Instant::now() + call.connect_timeout;
        let directory = self.sessions();
        let session = loop {
            // Created before the check so a connect between check and wait is not missed.
            let changed = directory.changed().notified();
            if let Some(session) = directory.method_session(key) {
                break session;
            }
            if Instant::now() >= connect_deadline
                || tokio::time::timeout_at(connect_deadline, changed)
                    .await
                    .is_err()
                    && directory.method_session(key).is_none()
            {
                return Err(HubError::DeviceNotOnline);
            }
        };
        let rid = directory.next_rid();
        let (waiter, answer) = oneshot::channel();
        if !session.await_method(rid.clone(), waiter) {
            return Err(HubError::DeviceNotOnline);
        }
        let request = Outbound::MethodRequest {
            name: call.name,
            rid: rid.clone(),
            payload,
        };
        if !self.queue(&session, request) {
            session.abandon_method(&rid);
            return Err(HubError::DeviceNotOnline);
        }
        match tokio::time::timeout(call.response_timeout, answer).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(HubError::DeviceDisconnected),
            Err(_) => {
                session.abandon_method(&rid);
                Err(HubError::MethodTimeout(call.response_timeout.as_secs()))
            }
        }
    }
}
