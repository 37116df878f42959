//! The hub connection over `twinhub-device`.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use twinhub_device::{
    ConnectionState, DesiredUpdate, DeviceClient, DeviceConfig, MethodRequest, MethodRequests,
};

use crate::link::{Connect, Event, LinkError, MethodCall, Reply, Report, Session, TwinSnapshot};

/// Connects with [`DeviceClient`].
pub(crate) struct SdkConnector {
    config: DeviceConfig,
}

impl SdkConnector {
    pub(crate) fn new(config: DeviceConfig) -> SdkConnector {
        SdkConnector { config }
    }
}

impl Connect for SdkConnector {
    type Session = SdkSession;

    async fn connect(&self) -> Result<SdkSession, LinkError> {
        let client = DeviceClient::connect(self.config.clone())
            .await
            .map_err(|error| LinkError(error.to_string()))?;
        // Subscribed before the twin is read, so that no change falls between the two.
        let desired = client.desired_updates();
        let state = client.connection_state();
        let methods = match client.methods().await {
            Ok(methods) => methods,
            Err(error) => {
                client.close().await;
                return Err(LinkError(format!("subscribing to methods: {error}")));
            }
        };
        Ok(SdkSession {
            client,
            desired,
            methods,
            state,
        })
    }
}

/// One [`DeviceClient`]; it reconnects by itself, so the session ends only when it closes.
pub(crate) struct SdkSession {
    client: DeviceClient,
    desired: broadcast::Receiver<DesiredUpdate>,
    methods: MethodRequests,
    state: watch::Receiver<ConnectionState>,
}

impl Session for SdkSession {
    type Reporter = SdkReporter;

    fn reporter(&self) -> SdkReporter {
        SdkReporter(self.client.clone())
    }

    async fn twin(&self) -> Result<TwinSnapshot, LinkError> {
        let twin = self
            .client
            .get_twin()
            .await
            .map_err(|error| LinkError(error.to_string()))?;
        Ok(TwinSnapshot {
            desired: twin.desired,
            desired_version: twin.desired_version,
            reported: twin.reported,
        })
    }

    async fn next_event(&mut self) -> Event {
        tokio::select! {
            update = self.desired.recv() => match update {
                Ok(update) => Event::Desired {
                    version: update.version,
                    patch: update.patch,
                    full: update.full,
                },
                Err(RecvError::Lagged(_)) => Event::Resync,
                Err(RecvError::Closed) => Event::Closed,
            },
            call = self.methods.recv() => match call {
                Some(mut call) => Event::Method(MethodCall {
                    name: std::mem::take(&mut call.name),
                    payload: std::mem::take(&mut call.payload),
                    reply: Box::new(SdkReply(call)),
                }),
                None => Event::Closed,
            },
            _ = self.state.wait_for(|state| *state == ConnectionState::Closed) => Event::Closed,
        }
    }

    async fn close(self) {
        self.client.close().await;
    }
}

/// Reports through a [`DeviceClient`] clone.
#[derive(Clone)]
pub(crate) struct SdkReporter(DeviceClient);

impl Report for SdkReporter {
    async fn report(&self, patch: Value) -> Result<(), LinkError> {
        self.0
            .update_reported(patch)
            .await
            .map(drop)
            .map_err(|error| LinkError(error.to_string()))
    }
}

struct SdkReply(MethodRequest);

impl Reply for SdkReply {
    fn send(
        self: Box<Self>,
        status: i32,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            if let Err(error) = self.0.respond(status, payload).await {
                tracing::warn!(%error, "answering a method call failed");
            }
        })
    }
}
