//! The device client: one supervised MQTT connection, replaced on loss or SAS renewal, with
//! requests that wait for (and retry on) the current connection until their timeout.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::config::{Credential, DeviceConfig, Transport};
use crate::error::{ConnectError, RespondError, SubscribeError, TelemetryError, TwinError};
use crate::transport::{Endpoint, Inbound, MqttConnection, OpenError, Qos};
use crate::wire::{self, HubPublish};

/// Desired-property updates buffered per receiver before it lags.
const DESIRED_CAPACITY: usize = 64;
/// How long `close` waits for the connection to wind down.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// IoT Hub's device-to-cloud message limit.
const MAX_TELEMETRY_BYTES: usize = 256 * 1024;
/// IoT Hub's direct-method payload limit.
const MAX_METHOD_RESPONSE_BYTES: usize = 128 * 1024;
/// Twin requests carry at most a 32 KB reported document; leave room for the topic and escapes.
const MAX_TWIN_REQUEST_BYTES: usize = 128 * 1024;
/// Share of the SAS token lifetime after which the connection is renewed.
const RENEW_AT_FRACTION: f64 = 0.8;

/// A twin as the device sees it: the desired and reported properties (without `$version` and
/// `$metadata`) and their versions.
#[derive(Clone, Debug, PartialEq)]
pub struct Twin {
    /// Desired properties, written by the back end.
    pub desired: Map<String, Value>,
    /// Reported properties, written by the device.
    pub reported: Map<String, Value>,
    /// The desired section's `$version`.
    pub desired_version: i64,
    /// The reported section's `$version`.
    pub reported_version: i64,
}

/// A change to the desired properties.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredUpdate {
    /// The desired `$version` after the change.
    pub version: i64,
    /// A JSON merge patch (`null` removes a key), or with `full` the whole desired document.
    pub patch: Map<String, Value>,
    /// The desired document changed while the device was disconnected: `patch` is all of it.
    pub full: bool,
}

/// Whether the client is connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected and subscribed.
    Connected,
    /// Reconnecting in the background.
    Disconnected {
        /// Why the last connection ended or the last attempt failed.
        reason: String,
    },
    /// [`DeviceClient::close`] was called (or every handle dropped); nothing reconnects.
    Closed,
}

/// A direct-method call from the back end. Answer it with [`MethodRequest::respond`]; a request
/// dropped unanswered times out at the caller.
pub struct MethodRequest {
    /// The method name.
    pub name: String,
    /// The call's payload (`null` when empty; a string when the hub sent bytes that are not JSON).
    pub payload: Value,
    rid: String,
    connection: Arc<MqttConnection>,
    timeout: Duration,
}

impl std::fmt::Debug for MethodRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodRequest")
            .field("name", &self.name)
            .field("payload", &self.payload)
            .field("rid", &self.rid)
            .finish_non_exhaustive()
    }
}

impl MethodRequest {
    /// Sends the device's answer: any status the application chooses, and a JSON payload.
    pub async fn respond(self, status: i32, payload: Value) -> Result<(), RespondError> {
        let body = Bytes::from(payload.to_string());
        let topic = wire::method_response_topic(status, &self.rid);
        let size = topic.len() + body.len();
        if body.len() > MAX_METHOD_RESPONSE_BYTES {
            return Err(RespondError::TooLarge { size });
        }
        let written = self
            .connection
            .publish(topic, body, Qos::AtMostOnce)
            .await
            .map_err(|_| RespondError::ConnectionLost)?;
        match timeout(self.timeout, written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RespondError::ConnectionLost),
            Err(_) => Err(RespondError::Timeout),
        }
    }
}

/// The stream of direct-method calls; see [`DeviceClient::methods`].
#[derive(Debug)]
pub struct MethodRequests {
    receiver: mpsc::UnboundedReceiver<MethodRequest>,
}

impl MethodRequests {
    /// The next call; `None` once the client is closed or a newer [`DeviceClient::methods`]
    /// stream replaced this one.
    pub async fn recv(&mut self) -> Option<MethodRequest> {
        self.receiver.recv().await
    }
}

/// A device connected to an IoT Hub (twinhub or Azure). Cheap to clone; every clone drives the
/// same connection, which closes when [`DeviceClient::close`] is called or the last clone drops.
#[derive(Clone)]
pub struct DeviceClient {
    handle: Arc<Handle>,
}

/// What only the application's handles hold: dropping the last one drops `shutdown`, which
/// stops the supervisor.
struct Handle {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

/// State shared by the handles, the supervisor and in-flight requests.
struct Shared {
    settings: Settings,
    link: watch::Sender<LinkState>,
    state: watch::Sender<ConnectionState>,
    desired: broadcast::Sender<DesiredUpdate>,
    /// The last desired `$version` delivered or learned at connect; older notifications are
    /// ignored.
    desired_version: Mutex<Option<i64>>,
    methods: Mutex<Option<mpsc::UnboundedSender<MethodRequest>>>,
    /// Filters every new connection subscribes to.
    subscriptions: Mutex<Vec<&'static str>>,
    twin_waiters: Mutex<HashMap<String, oneshot::Sender<TwinResponse>>>,
    next_rid: AtomicU64,
}

#[derive(Clone)]
enum LinkState {
    Down,
    Up(Link),
    Closed,
}

/// The current connection, numbered so a request can tell when it has been replaced.
#[derive(Clone)]
struct Link {
    generation: u64,
    connection: Arc<MqttConnection>,
}

struct TwinResponse {
    status: u16,
    version: Option<i64>,
    body: Bytes,
}

/// A connection that is open and subscribed.
struct Established {
    connection: Arc<MqttConnection>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    renew_at: Option<Instant>,
}

/// A request could not complete on any connection before the client closed.
struct ClientClosed;

impl DeviceClient {
    /// Connects; the first CONNACK must be accepted ([`ConnectError::Refused`] carries the
    /// return code otherwise). Later drops reconnect in the background with jittered exponential
    /// backoff, re-subscribing everything and resynchronising the desired properties.
    pub async fn connect(config: DeviceConfig) -> Result<DeviceClient, ConnectError> {
        let settings = Settings::new(&config)?;
        let (link, _) = watch::channel(LinkState::Down);
        let (state, _) = watch::channel(ConnectionState::Disconnected {
            reason: "connecting".to_owned(),
        });
        let shared = Arc::new(Shared {
            settings,
            link,
            state,
            desired: broadcast::channel(DESIRED_CAPACITY).0,
            desired_version: Mutex::new(None),
            methods: Mutex::new(None),
            subscriptions: Mutex::new(vec![wire::TWIN_RESPONSES, wire::DESIRED_PATCHES]),
            twin_waiters: Mutex::new(HashMap::new()),
            next_rid: AtomicU64::new(1),
        });
        let first = establish(&shared).await?;
        // Connected from the caller's point of view as soon as this returns; the supervisor
        // publishes the connection itself an instant later.
        shared.state.send_replace(ConnectionState::Connected);
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(supervise(Arc::clone(&shared), first, shutdown_rx));
        Ok(DeviceClient {
            handle: Arc::new(Handle { shared, shutdown }),
        })
    }

    /// Reads the twin.
    pub async fn get_twin(&self) -> Result<Twin, TwinError> {
        let response = self
            .twin_request(wire::twin_get_topic, Bytes::new())
            .await?;
        check_status(&response)?;
        parse_twin(&response.body)
    }

    /// Merges `patch` (a JSON object; `null` removes) into the reported properties; returns the
    /// new reported `$version`.
    pub async fn update_reported(&self, patch: Value) -> Result<i64, TwinError> {
        if !patch.is_object() {
            return Err(TwinError::InvalidPatch);
        }
        let body = Bytes::from(patch.to_string());
        if body.len() > MAX_TWIN_REQUEST_BYTES {
            return Err(TwinError::TooLarge { size: body.len() });
        }
        let response = self.twin_request(wire::reported_patch_topic, body).await?;
        check_status(&response)?;
        response.version.ok_or_else(|| {
            TwinError::MalformedResponse("the response topic carries no $version".to_owned())
        })
    }

    /// Desired-property changes from now on. After a reconnect that missed changes, one update
    /// with `full: true` carries the whole desired document. A receiver that falls more than 64
    /// updates behind gets `Lagged` and should re-read the twin.
    pub fn desired_updates(&self) -> broadcast::Receiver<DesiredUpdate> {
        self.handle.shared.desired.subscribe()
    }

    /// Subscribes to direct methods (once; kept across reconnections) and returns the stream of
    /// calls. A later call returns a new stream that replaces this one.
    pub async fn methods(&self) -> Result<MethodRequests, SubscribeError> {
        let shared = &self.handle.shared;
        let (sender, receiver) = mpsc::unbounded_channel();
        *lock(&shared.methods) = Some(sender);
        let newly_wanted = {
            let mut subscriptions = lock(&shared.subscriptions);
            let new = !subscriptions.contains(&wire::METHOD_REQUESTS);
            if new {
                subscriptions.push(wire::METHOD_REQUESTS);
            }
            new
        };
        if newly_wanted && let Err(e) = self.subscribe(wire::METHOD_REQUESTS).await {
            lock(&shared.subscriptions).retain(|filter| *filter != wire::METHOD_REQUESTS);
            return Err(e);
        }
        Ok(MethodRequests { receiver })
    }

    /// Sends a device-to-cloud message at QoS 1 and waits for the hub's PUBACK. `properties`
    /// become the topic's property bag (application properties, or system ones such as
    /// `$.ct` / `$.ce`).
    pub async fn send_telemetry(
        &self,
        payload: impl Into<Bytes>,
        properties: &[(&str, &str)],
    ) -> Result<(), TelemetryError> {
        let settings = &self.handle.shared.settings;
        let topic = wire::telemetry_topic(
            &settings.device_id,
            settings.module_id.as_deref(),
            properties,
        );
        let payload = payload.into();
        let size = topic.len() + payload.len();
        if size > MAX_TELEMETRY_BYTES {
            return Err(TelemetryError::TooLarge { size });
        }
        let attempt = self.on_link(move |link| {
            let topic = topic.clone();
            let payload = payload.clone();
            async move {
                let acked = link
                    .connection
                    .publish(topic, payload, Qos::AtLeastOnce)
                    .await
                    .ok()?;
                acked.await.ok()
            }
        });
        match timeout(settings.request_timeout, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ClientClosed)) => Err(TelemetryError::Closed),
            Err(_) => Err(TelemetryError::Timeout),
        }
    }

    /// Watches the connection: `Connected`, `Disconnected { reason }` while reconnecting,
    /// `Closed` at the end.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.handle.shared.state.subscribe()
    }

    /// Sends DISCONNECT and stops reconnecting; requests still waiting fail with `Closed`.
    pub async fn close(&self) {
        let mut state = self.handle.shared.state.subscribe();
        self.handle.shutdown.send_replace(true);
        let _ = timeout(
            CLOSE_WAIT,
            state.wait_for(|s| *s == ConnectionState::Closed),
        )
        .await;
    }

    async fn subscribe(&self, filter: &'static str) -> Result<(), SubscribeError> {
        let attempt = self.on_link(move |link| async move {
            let granted = link.connection.subscribe(&[filter]).await.ok()?;
            granted.await.ok()
        });
        match timeout(self.handle.shared.settings.request_timeout, attempt).await {
            Ok(Ok(granted)) if granted.iter().all(|ok| *ok) => Ok(()),
            Ok(Ok(_)) => Err(SubscribeError::Refused),
            Ok(Err(ClientClosed)) => Err(SubscribeError::Closed),
            Err(_) => Err(SubscribeError::Timeout),
        }
    }

    /// Publishes a twin request with a fresh `$rid` and waits for the response with that `$rid`,
    /// repeating on the next connection if this one is lost first.
    async fn twin_request(
        &self,
        topic: fn(&str) -> String,
        body: Bytes,
    ) -> Result<TwinResponse, TwinError> {
        let shared = Arc::clone(&self.handle.shared);
        let attempt = self.on_link(move |link| {
            let shared = Arc::clone(&shared);
            let body = body.clone();
            async move { twin_exchange(&shared, &link, topic, body).await }
        });
        match timeout(self.handle.shared.settings.request_timeout, attempt).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(ClientClosed)) => Err(TwinError::Closed),
            Err(_) => Err(TwinError::Timeout),
        }
    }

    /// Runs `attempt` on the current connection; when it reports the connection lost (`None`)
    /// or the connection is replaced meanwhile, waits for the next connection and runs it again.
    async fn on_link<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientClosed>
    where
        F: FnMut(Link) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let mut links = self.handle.shared.link.subscribe();
        loop {
            let link = match links.wait_for(|s| !matches!(s, LinkState::Down)).await {
                Ok(state) => match &*state {
                    LinkState::Up(link) => link.clone(),
                    LinkState::Down | LinkState::Closed => return Err(ClientClosed),
                },
                Err(_) => return Err(ClientClosed),
            };
            let generation = link.generation;
            tokio::select! {
                outcome = attempt(link) => {
                    if let Some(value) = outcome {
                        return Ok(value);
                    }
                    replaced(&mut links, generation).await;
                }
                () = replaced(&mut links, generation) => {}
            }
        }
    }
}

/// Waits until connection `generation` is no longer the current one.
async fn replaced(links: &mut watch::Receiver<LinkState>, generation: u64) {
    let _ = links
        .wait_for(|s| !matches!(s, LinkState::Up(link) if link.generation == generation))
        .await;
}

/// One twin request/response on `link`; `None` if the connection went away first.
async fn twin_exchange(
    shared: &Shared,
    link: &Link,
    topic: fn(&str) -> String,
    body: Bytes,
) -> Option<TwinResponse> {
    let rid = shared.next_rid.fetch_add(1, Ordering::Relaxed).to_string();
    let (sender, answer) = oneshot::channel();
    let _waiting = TwinWaiter::register(shared, rid.clone(), sender);
    link.connection
        .publish(topic(&rid), body, Qos::AtMostOnce)
        .await
        .ok()?;
    answer.await.ok()
}

/// Removes a twin request's `$rid` from the waiters however the request ends.
struct TwinWaiter<'a> {
    shared: &'a Shared,
    rid: String,
}

impl<'a> TwinWaiter<'a> {
    fn register(
        shared: &'a Shared,
        rid: String,
        sender: oneshot::Sender<TwinResponse>,
    ) -> TwinWaiter<'a> {
        lock(&shared.twin_waiters).insert(rid.clone(), sender);
        TwinWaiter { shared, rid }
    }
}

impl Drop for TwinWaiter<'_> {
    fn drop(&mut self) {
        lock(&self.shared.twin_waiters).remove(&self.rid);
    }
}

fn check_status(response: &TwinResponse) -> Result<(), TwinError> {
    if (200..300).contains(&response.status) {
        return Ok(());
    }
    let body = serde_json::from_slice::<Value>(&response.body).ok();
    let message = body
        .as_ref()
        .and_then(|b| b.get("message").or_else(|| b.get("Message")))
        .and_then(Value::as_str)
        .map_or_else(
            || String::from_utf8_lossy(&response.body).into_owned(),
            str::to_owned,
        );
    Err(TwinError::Rejected {
        status: response.status,
        message,
    })
}

/// `{"desired": {..., "$version": n}, "reported": {..., "$version": m}}` → [`Twin`].
fn parse_twin(body: &[u8]) -> Result<Twin, TwinError> {
    let malformed = |why: &str| TwinError::MalformedResponse(why.to_owned());
    let document: Value =
        serde_json::from_slice(body).map_err(|e| TwinError::MalformedResponse(e.to_string()))?;
    let section = |name: &str| -> Result<(Map<String, Value>, i64), TwinError> {
        let Some(Value::Object(properties)) = document.get(name) else {
            return Err(malformed(&format!("no \"{name}\" object")));
        };
        let mut properties = properties.clone();
        let version = properties
            .remove("$version")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| malformed(&format!("\"{name}\" has no integer $version")))?;
        properties.remove("$metadata");
        Ok((properties, version))
    };
    let (desired, desired_version) = section("desired")?;
    let (reported, reported_version) = section("reported")?;
    Ok(Twin {
        desired,
        reported,
        desired_version,
        reported_version,
    })
}

/// Opens a connection with a fresh credential and subscribes everything wanted.
async fn establish(shared: &Shared) -> Result<Established, ConnectError> {
    let settings = &shared.settings;
    let (password, renew_at) = settings.password()?;
    let opening = MqttConnection::open(&settings.endpoint, settings.username.clone(), password);
    let (connection, session_present, inbound) = timeout(settings.request_timeout, opening)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| match e {
            OpenError::Refused(code) => ConnectError::Refused { code },
            OpenError::Network(reason) => ConnectError::Network(reason),
        })?;
    // Always re-subscribe: it costs one packet, and a hub that lost the session (session_present
    // false, as Azure may answer) would otherwise stay silent.
    tracing::debug!(session_present, "CONNACK accepted; subscribing");
    let filters = lock(&shared.subscriptions).clone();
    let lost = || ConnectError::Network("the connection closed while subscribing".to_owned());
    let granted = connection.subscribe(&filters).await.map_err(|_| lost())?;
    let granted = timeout(settings.request_timeout, granted)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|_| lost())?;
    if granted.len() != filters.len() || !granted.iter().all(|ok| *ok) {
        return Err(ConnectError::SubscribeRefused);
    }
    Ok(Established {
        connection: Arc::new(connection),
        inbound,
        renew_at,
    })
}

/// Why a connection's session ended.
enum SessionEnd {
    Shutdown,
    Renew,
    Lost(String),
}

/// Runs connections one after another until shutdown.
async fn supervise(shared: Arc<Shared>, first: Established, mut shutdown: watch::Receiver<bool>) {
    let mut established = first;
    let mut generation = 0;
    'sessions: loop {
        generation += 1;
        let end = run_session(&shared, established, generation, &mut shutdown).await;
        let mut failures = match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Renew => {
                tracing::debug!("renewing the SAS token");
                shared.state.send_replace(ConnectionState::Disconnected {
                    reason: "renewing the SAS token".to_owned(),
                });
                0
            }
            SessionEnd::Lost(reason) => {
                tracing::warn!(reason, "connection to the hub lost; reconnecting");
                shared
                    .state
                    .send_replace(ConnectionState::Disconnected { reason });
                1
            }
        };
        established = loop {
            if failures > 0 {
                let delay = backoff_delay(failures - 1, shared.settings.backoff, random());
                tokio::select! {
                    () = sleep(delay) => {}
                    () = shutdown_requested(&mut shutdown) => break 'sessions,
                }
            }
            tokio::select! {
                result = establish(&shared) => match result {
                    Ok(established) => break established,
                    Err(e) => {
                        tracing::warn!(error = %e, "reconnection failed");
                        shared.state.send_replace(ConnectionState::Disconnected { reason: e.to_string() });
                        failures = failures.saturating_add(1);
                    }
                },
                () = shutdown_requested(&mut shutdown) => break 'sessions,
            }
        };
    }
    shared.link.send_replace(LinkState::Closed);
    lock(&shared.methods).take();
    shared.state.send_replace(ConnectionState::Closed);
    tracing::debug!("device client closed");
}

/// Resolves when `close` was called or every handle dropped.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|closing| *closing).await;
}

/// Serves one connection: dispatches what the hub sends until the connection ends, the SAS
/// token is due for renewal, or the client closes.
async fn run_session(
    shared: &Arc<Shared>,
    established: Established,
    generation: u64,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let Established {
        connection,
        mut inbound,
        renew_at,
    } = established;
    let link = Link {
        generation,
        connection: Arc::clone(&connection),
    };
    shared.link.send_replace(LinkState::Up(link.clone()));
    shared.state.send_replace(ConnectionState::Connected);
    tracing::info!(generation, "connected to the hub");
    let resync = tokio::spawn(resync_desired(Arc::clone(shared), link.clone()));
    let renewal = async {
        match renew_at {
            Some(at) => sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(renewal);
    let end = loop {
        tokio::select! {
            message = inbound.recv() => match message {
                Some(Inbound::Publish { topic, payload }) => dispatch(shared, &link, &topic, &payload),
                Some(Inbound::Closed(reason)) => break SessionEnd::Lost(reason),
                None => break SessionEnd::Lost("the connection task ended".to_owned()),
            },
            () = &mut renewal => break SessionEnd::Renew,
            () = shutdown_requested(shutdown) => break SessionEnd::Shutdown,
        }
    };
    resync.abort();
    shared.link.send_replace(LinkState::Down);
    if !matches!(end, SessionEnd::Lost(_)) {
        connection.disconnect().await;
    }
    end
}

/// The documented recovery flow: after (re)connecting, read the twin; if the desired `$version`
/// moved past the last one delivered, deliver the whole desired document once.
async fn resync_desired(shared: Arc<Shared>, link: Link) {
    let exchange = twin_exchange(&shared, &link, wire::twin_get_topic, Bytes::new());
    let twin = match timeout(shared.settings.request_timeout, exchange).await {
        Ok(Some(response)) => check_status(&response).and_then(|()| parse_twin(&response.body)),
        Ok(None) => return,
        Err(_) => Err(TwinError::Timeout),
    };
    let twin = match twin {
        Ok(twin) => twin,
        Err(e) => {
            tracing::warn!(error = %e, "could not re-read the twin after connecting");
            return;
        }
    };
    let mut known = lock(&shared.desired_version);
    match *known {
        None => *known = Some(twin.desired_version),
        Some(version) if twin.desired_version > version => {
            *known = Some(twin.desired_version);
            let _ = shared.desired.send(DesiredUpdate {
                version: twin.desired_version,
                patch: twin.desired,
                full: true,
            });
        }
        Some(_) => {}
    }
}

fn dispatch(shared: &Shared, link: &Link, topic: &str, payload: &Bytes) {
    match wire::parse_hub_publish(topic) {
        Some(HubPublish::TwinResponse {
            status,
            rid,
            version,
        }) => {
            if let Some(waiter) = lock(&shared.twin_waiters).remove(&rid) {
                let _ = waiter.send(TwinResponse {
                    status,
                    version,
                    body: payload.clone(),
                });
            }
        }
        Some(HubPublish::DesiredPatch { version }) => deliver_desired(shared, version, payload),
        Some(HubPublish::MethodRequest { name, rid }) => {
            deliver_method(shared, link, name, rid, payload);
        }
        None => tracing::debug!(topic, "ignoring a publish on an unhandled topic"),
    }
}

fn deliver_desired(shared: &Shared, topic_version: Option<i64>, payload: &[u8]) {
    let Ok(Value::Object(mut patch)) = serde_json::from_slice::<Value>(payload) else {
        tracing::warn!("ignoring a desired-property patch that is not a JSON object");
        return;
    };
    let version = patch
        .remove("$version")
        .and_then(|v| v.as_i64())
        .or(topic_version);
    let Some(version) = version else {
        tracing::warn!("ignoring a desired-property patch without $version");
        return;
    };
    let mut known = lock(&shared.desired_version);
    if known.is_some_and(|known| version <= known) {
        return;
    }
    *known = Some(version);
    let _ = shared.desired.send(DesiredUpdate {
        version,
        patch,
        full: false,
    });
}

fn deliver_method(shared: &Shared, link: &Link, name: String, rid: String, payload: &[u8]) {
    let payload = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
    };
    let request = MethodRequest {
        name,
        payload,
        rid,
        connection: Arc::clone(&link.connection),
        timeout: shared.settings.request_timeout,
    };
    let undelivered = match &*lock(&shared.methods) {
        Some(sender) => sender.send(request).err().map(|e| e.0),
        None => Some(request),
    };
    if let Some(request) = undelivered {
        // The application dropped its stream: answer rather than let the caller time out.
        tokio::spawn(async move {
            let answer = serde_json::json!({ "message": "no handler for direct methods" });
            if let Err(e) = request.respond(501, answer).await {
                tracing::debug!(error = %e, "could not refuse a method call");
            }
        });
    }
}

/// A delay for reconnection attempt `attempt` (0-based): `min × 2^attempt` capped at `max`, then
/// a uniformly random point in its upper half, never below `min`.
fn backoff_delay(attempt: u32, (min, max): (Duration, Duration), random: u64) -> Duration {
    let max = max.max(min);
    let ceiling = min
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(max);
    let floor = ceiling / 2;
    let span = u64::try_from((ceiling - floor).as_millis()).unwrap_or(u64::MAX);
    let jitter = Duration::from_millis(random % span.saturating_add(1));
    (floor + jitter).clamp(min, max)
}

/// Randomness good enough for jitter, without a dependency: std seeds each `RandomState` anew.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// The shared maps stay consistent even if a holder panicked (every update is one step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What connecting needs, resolved once from the [`DeviceConfig`].
struct Settings {
    endpoint: Endpoint,
    username: String,
    auth: Auth,
    device_id: String,
    module_id: Option<String>,
    request_timeout: Duration,
    backoff: (Duration, Duration),
}

enum Auth {
    Key {
        key: String,
        resource: String,
        ttl: Duration,
    },
    Token(String),
    Certificate,
}

impl Settings {
    fn new(config: &DeviceConfig) -> Result<Settings, ConnectError> {
        let invalid = |why: &str| Err(ConnectError::InvalidConfig(why.to_owned()));
        if config.host_name.is_empty() {
            return invalid("host_name is empty");
        }
        if config.device_id.is_empty() || config.device_id.contains('/') {
            return invalid("device_id is empty or contains '/'");
        }
        if config
            .module_id
            .as_deref()
            .is_some_and(|m| m.is_empty() || m.contains('/'))
        {
            return invalid("module_id is empty or contains '/'");
        }
        if config.effective_host().is_empty() || config.effective_port() == 0 {
            return invalid("the gateway host or port is empty");
        }
        let module_id = config.module_id.as_deref();
        let client_id = wire::client_id(&config.device_id, module_id);
        let auth = match &config.credential {
            Credential::SymmetricKey(key) => Auth::Key {
                key: key.clone(),
                resource: wire::sas_resource(&config.host_name, &config.device_id, module_id),
                ttl: config.sas_ttl.max(Duration::from_secs(1)),
            },
            Credential::SasToken(token) => Auth::Token(token.clone()),
            Credential::X509 { .. } => Auth::Certificate,
        };
        let settings = Settings {
            endpoint: Endpoint {
                client_id: client_id.clone(),
                host: config.effective_host().to_owned(),
                port: config.effective_port(),
                websocket: config.transport == Transport::WebSockets,
                tls: tls_config(config)?,
                keep_alive: config.keep_alive,
                connect_timeout: config.request_timeout,
            },
            username: wire::username(&config.host_name, &client_id, config.model_id.as_deref()),
            auth,
            device_id: config.device_id.clone(),
            module_id: config.module_id.clone(),
            request_timeout: config.request_timeout.max(Duration::from_millis(1)),
            backoff: config.reconnect_backoff,
        };
        // Sign once now so a malformed key fails `connect` instead of every reconnection.
        settings.password()?;
        Ok(settings)
    }

    /// The CONNECT password and, for signed tokens, when to renew it.
    fn password(&self) -> Result<(String, Option<Instant>), ConnectError> {
        match &self.auth {
            Auth::Key { key, resource, ttl } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                // Rounded up so the token lives at least `ttl`, and the renewal comes before it.
                let expiry = (now + *ttl).as_secs() + 1;
                let token = twinhub_core::sas::generate_token(resource, key, None, expiry)
                    .map_err(|e| ConnectError::InvalidCredential(e.to_string()))?;
                Ok((token, Some(Instant::now() + ttl.mul_f64(RENEW_AT_FRACTION))))
            }
            Auth::Token(token) => Ok((token.clone(), None)),
            Auth::Certificate => Ok((String::new(), None)),
        }
    }
}

/// The system's trust roots, read once per process: a simulator connecting thousands of
/// devices would otherwise parse the whole certificate store for each of them.
pub fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: std::sync::OnceLock<rustls::RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    })
}

/// Trust roots (the system's plus `ca_pem`) and, for X.509 devices, the client certificate.
fn tls_config(config: &DeviceConfig) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    let tls_error = |e: &dyn std::fmt::Display| ConnectError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca_pem) = &config.ca_pem {
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| tls_error(&e))?;
            roots.add(cert).map_err(|e| tls_error(&e))?;
        }
        if roots.is_empty() {
            return Err(ConnectError::Tls("ca_pem holds no certificate".to_owned()));
        }
    }
    roots.extend(system_roots().roots.iter().cloned());
    if roots.is_empty() {
        return Err(ConnectError::Tls(
            "no trust roots: the system has none and no ca_pem was given".to_owned(),
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(&e))?
    .with_root_certificates(roots);
    let tls = match &config.credential {
        Credential::X509 { cert_pem, key_pem } => {
            let invalid = |why: String| ConnectError::InvalidCredential(why);
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("client certificate: {e}")))?;
            if chain.is_empty() {
                return Err(invalid("no client certificate in cert_pem".to_owned()));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| invalid(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("client certificate: {e}")))?
        }
        Credential::SymmetricKey(_) | Credential::SasToken(_) => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn twin_documents_lose_their_versions_and_metadata() {
        let body = json!({
            "desired": {"a": 1, "$version": 4, "$metadata": {}},
            "reported": {"b": {"c": true}, "$version": 9},
        });
        let twin = parse_twin(body.to_string().as_bytes()).expect("valid");
        assert_eq!(
            twin.desired,
            json!({"a": 1}).as_object().cloned().unwrap_or_default()
        );
        assert_eq!(twin.reported["b"], json!({"c": true}));
        assert_eq!((twin.desired_version, twin.reported_version), (4, 9));
    }

    #[test]
    fn malformed_twin_documents_are_errors() {
        for body in [
            "",
            "[]",
            r#"{"desired": {"$version": 1}}"#,
            r#"{"desired": {}, "reported": {"$version": 1}}"#,
            r#"{"desired": {"$version": "1"}, "reported": {"$version": 1}}"#,
        ] {
            assert!(
                matches!(
                    parse_twin(body.as_bytes()),
                    Err(TwinError::MalformedResponse(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn error_statuses_carry_the_hubs_message() {
        let response = |status, body: &str| TwinResponse {
            status,
            version: None,
            body: Bytes::from(body.to_owned()),
        };
        assert_eq!(check_status(&response(204, "")), Ok(()));
        assert_eq!(
            check_status(&response(
                400,
                r#"{"errorCode":400004,"message":"bad key"}"#
            )),
            Err(TwinError::Rejected {
                status: 400,
                message: "bad key".to_owned()
            })
        );
        assert_eq!(
            check_status(&response(500, "oops")),
            Err(TwinError::Rejected {
                status: 500,
                message: "oops".to_owned()
            })
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let bounds = (Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(backoff_delay(0, bounds, 0), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, bounds, 0), Duration::from_secs(4));
        assert_eq!(backoff_delay(30, bounds, 4000), Duration::from_secs(8));
    }

    #[test]
    fn signed_passwords_renew_before_they_expire() {
        let mut config = DeviceConfig::new(
            "h",
            "d",
            Credential::SymmetricKey("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MDA=".to_owned()),
        );
        config.ca_pem = Some(test_ca());
        config.sas_ttl = Duration::from_secs(10);
        let settings = Settings::new(&config).expect("valid");
        let (token, renew_at) = settings.password().expect("signs");
        assert!(token.starts_with("SharedAccessSignature sr=h%2Fdevices%2Fd&sig="));
        let renew_in = renew_at.expect("renews") - Instant::now();
        assert!(renew_in <= Duration::from_secs(8) && renew_in > Duration::from_secs(7));

        config.credential = Credential::SymmetricKey("not base64!".to_owned());
        assert!(matches!(
            Settings::new(&config),
            Err(ConnectError::InvalidCredential(_))
        ));
        config.credential = Credential::X509 {
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        assert!(matches!(
            Settings::new(&config),
            Err(ConnectError::InvalidCredential(_))
        ));
        config.device_id = String::new();
        assert!(matches!(
            Settings::new(&config),
            Err(ConnectError::InvalidConfig(_))
        ));
    }

    fn test_ca() -> String {
        let (cert, _key) = twinhub_server::tls::self_signed_client_cert("test-ca").expect("cert");
        cert
    }

    proptest! {
        #[test]
        fn backoff_stays_within_bounds(attempt in 0u32..100, min_ms in 1u64..10_000, extra_ms in 0u64..100_000, random in any::<u64>()) {
            let min = Duration::from_millis(min_ms);
            let max = min + Duration::from_millis(extra_ms);
            let delay = backoff_delay(attempt, (min, max), random);
            prop_assert!(delay >= min && delay <= max);
            let ceiling = min.saturating_mul(2u32.saturating_pow(attempt.min(31))).min(max);
            prop_assert!(delay >= ceiling / 2);
        }
    }
}
