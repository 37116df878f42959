//! An in-memory hub and package server behind the crate's seams, for testing the state
//! machines without MQTT or HTTP.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::download::{DownloadError, Fetch, FetchRequest, Progress, hex};
use crate::link::{Connect, Event, LinkError, MethodCall, Reply, Report, Session, TwinSnapshot};
use crate::schema::merge;

/// How long a test waits for the device before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct HubState {
    desired: Map<String, Value>,
    desired_version: i64,
    reported: Map<String, Value>,
    patches: Vec<Value>,
    events: Option<mpsc::UnboundedSender<Event>>,
    connects: u32,
    closes: u32,
}

/// The hub side: a twin, a log of reported patches, and the current session's event queue.
#[derive(Clone)]
pub(crate) struct FakeHub {
    state: Arc<Mutex<HubState>>,
    /// Bumped on every change, so that tests can wait for a condition.
    changed: Arc<watch::Sender<u64>>,
}

impl FakeHub {
    pub(crate) fn new() -> FakeHub {
        FakeHub {
            state: Arc::new(Mutex::new(HubState::default())),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Sets the reported properties as if an earlier device process had reported them.
    pub(crate) fn preset_reported(&self, reported: Value) {
        if let Value::Object(map) = reported {
            self.lock().reported = map;
        }
    }

    /// Writes desired properties like a back end (merge patch), notifying a connected device.
    pub(crate) fn set_desired(&self, patch: Value) {
        let Value::Object(patch) = patch else { return };
        {
            let mut state = self.lock();
            merge(&mut state.desired, &patch);
            state.desired_version += 1;
            let version = state.desired_version;
            if let Some(events) = &state.events {
                let _ = events.send(Event::Desired {
                    version,
                    patch,
                    full: false,
                });
            }
        }
        self.bump();
    }

    /// Invokes a direct method; resolves to the device's answer.
    pub(crate) async fn call(&self, name: &str, payload: Value) -> (i32, Value) {
        let (sender, receiver) = oneshot::channel();
        let call = MethodCall {
            name: name.to_owned(),
            payload,
            reply: Box::new(OneshotReply(sender)),
        };
        self.wait_for(|state| state.events.is_some()).await;
        if let Some(events) = &self.lock().events {
            let _ = events.send(Event::Method(call));
        }
        tokio::time::timeout(WAIT, receiver)
            .await
            .expect("the device answers in time")
            .expect("the device answers")
    }

    /// Drops the current session's connection.
    pub(crate) fn disconnect(&self) {
        self.lock().events = None;
        self.bump();
    }

    pub(crate) fn reported(&self) -> Map<String, Value> {
        self.lock().reported.clone()
    }

    pub(crate) fn patches(&self) -> Vec<Value> {
        self.lock().patches.clone()
    }

    pub(crate) fn connects(&self) -> u32 {
        self.lock().connects
    }

    /// The `fwUpdateStatus` values reported, in order.
    pub(crate) fn firmware_statuses(&self) -> Vec<String> {
        self.statuses(&["firmware", "fwUpdateStatus"])
    }

    /// The values reported at `path`, in order.
    pub(crate) fn statuses(&self, path: &[&str]) -> Vec<String> {
        self.patches()
            .iter()
            .filter_map(|patch| {
                let mut value = patch;
                for key in path {
                    value = value.get(key)?;
                }
                value.as_str().map(str::to_owned)
            })
            .collect()
    }

    /// Waits until the reported properties satisfy `condition`.
    pub(crate) async fn wait_reported(&self, condition: impl Fn(&Map<String, Value>) -> bool) {
        self.wait_for(|state| condition(&state.reported)).await;
    }

    async fn wait_for(&self, condition: impl Fn(&HubState) -> bool) {
        let mut changed = self.changed.subscribe();
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                if condition(&self.lock()) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let state = self.lock();
        assert!(
            waited.is_ok() && condition(&state),
            "condition not reached; reported: {}; patches: {:?}",
            Value::Object(state.reported.clone()),
            state.patches
        );
    }
}

struct OneshotReply(oneshot::Sender<(i32, Value)>);

impl Reply for OneshotReply {
    fn send(
        self: Box<Self>,
        status: i32,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let _ = self.0.send((status, payload));
        Box::pin(std::future::ready(()))
    }
}

impl Connect for FakeHub {
    type Session = FakeSession;

    async fn connect(&self) -> Result<FakeSession, LinkError> {
        let (sender, events) = mpsc::unbounded_channel();
        {
            let mut state = self.lock();
            state.events = Some(sender);
            state.connects += 1;
        }
        self.bump();
        Ok(FakeSession {
            hub: self.clone(),
            events,
        })
    }
}

pub(crate) struct FakeSession {
    hub: FakeHub,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Session for FakeSession {
    type Reporter = FakeHub;

    fn reporter(&self) -> FakeHub {
        self.hub.clone()
    }

    async fn twin(&self) -> Result<TwinSnapshot, LinkError> {
        let state = self.hub.lock();
        Ok(TwinSnapshot {
            desired: state.desired.clone(),
            desired_version: state.desired_version,
            reported: state.reported.clone(),
        })
    }

    async fn next_event(&mut self) -> Event {
        self.events.recv().await.unwrap_or(Event::Closed)
    }

    async fn close(self) {
        let mut state = self.hub.lock();
        state.events = None;
        state.closes += 1;
        drop(state);
        self.hub.bump();
    }
}

impl Report for FakeHub {
    async fn report(&self, patch: Value) -> Result<(), LinkError> {
        {
            let mut state = self.lock();
            if let Value::Object(fields) = &patch {
                merge(&mut state.reported, fields);
            }
            state.patches.push(patch);
        }
        self.bump();
        Ok(())
    }
}

/// Packages by URI, written in two halves (with a progress call after each) so that resumption
/// and progress are observable; a URI may be held until released.
#[derive(Clone, Default)]
pub(crate) struct FakePackages {
    packages: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    gate: Arc<Notify>,
    held: Arc<Mutex<Vec<String>>>,
    /// The byte offset each fetch started from.
    starts: Arc<Mutex<Vec<u64>>>,
}

impl FakePackages {
    /// Serves `bytes` at `uri`; returns their SHA-256.
    pub(crate) fn add(&self, uri: &str, bytes: &[u8]) -> String {
        lock(&self.packages).insert(uri.to_owned(), bytes.to_vec());
        hex(&Sha256::digest(bytes))
    }

    /// Makes fetches of `uri` wait until [`FakePackages::release`].
    pub(crate) fn hold(&self, uri: &str) {
        lock(&self.held).push(uri.to_owned());
    }

    pub(crate) fn release(&self) {
        lock(&self.held).clear();
        self.gate.notify_waiters();
    }

    pub(crate) fn starts(&self) -> Vec<u64> {
        lock(&self.starts).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fetch for FakePackages {
    async fn fetch<P: Progress>(
        &self,
        request: &FetchRequest<'_>,
        progress: &P,
    ) -> Result<u64, DownloadError> {
        loop {
            let released = self.gate.notified();
            if !lock(&self.held).iter().any(|uri| uri == request.uri) {
                break;
            }
            released.await;
        }
        let Some(bytes) = lock(&self.packages).get(request.uri).cloned() else {
            return Err(DownloadError::Http("404 Not Found".to_owned()));
        };
        let io = |source| DownloadError::Io {
            path: request.dest.to_path_buf(),
            source,
        };
        let have = tokio::fs::metadata(request.dest)
            .await
            .map_or(0, |metadata| metadata.len());
        lock(&self.starts).push(have);
        if let Some(parent) = request.dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(request.dest)
            .await
            .map_err(io)?;
        let start = usize::try_from(have).unwrap_or(usize::MAX).min(bytes.len());
        let rest = &bytes[start..];
        let total = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let (first, second) = rest.split_at(rest.len() / 2);
        let mut written = have;
        for part in [first, second] {
            file.write_all(part).await.map_err(io)?;
            written += u64::try_from(part.len()).unwrap_or(u64::MAX);
            progress.progress(written, Some(total)).await;
        }
        file.flush().await.map_err(io)?;
        Ok(written)
    }
}
