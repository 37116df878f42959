//! The session directory: which identity is connected over which connection, what it subscribed
//! to, and the persistent subscriptions of CleanSession=0 clients (kept across reconnects and
//! restarts, because neither Microsoft device SDK subscribes again after reconnecting).
//!
//! This is the seam for cross-node delivery: desired-property notifications and method requests
//! reach a connection only through [`Directory`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use twinhub_store::{Batch, Store, Table};

use super::{Hub, HubError, IdentityKey, MethodOutcome};

/// What a connection is asked to send, or to do, on behalf of the hub.
#[derive(Debug)]
pub(crate) enum Outbound {
    DesiredPatch {
        version: i64,
        body: Bytes,
    },
    MethodRequest {
        name: String,
        rid: String,
        payload: Bytes,
    },
    Close {
        reason: &'static str,
    },
}

/// The topic families a device has subscribed to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriptions {
    pub twin_responses: bool,
    pub desired_patches: bool,
    pub methods: bool,
    pub cloud_to_device: bool,
    pub module_inputs: bool,
}

/// One live connection of one identity.
pub(crate) struct Session {
    pub(crate) conn_id: u64,
    pub(crate) key: IdentityKey,
    persistent: bool,
    tx: mpsc::Sender<Outbound>,
    subscriptions: Mutex<Subscriptions>,
    pending_methods: Mutex<HashMap<String, oneshot::Sender<MethodOutcome>>>,
    closed: AtomicBool,
}

impl Session {
    pub(crate) fn subscriptions(&self) -> Subscriptions {
        *self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message without waiting. A connection whose queue is full is not keeping up:
    /// it is closed, and the device recovers by reconnecting and reading its twin.
    fn send(&self, message: Outbound) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close("outbound queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn close(&self, reason: &'static str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // The queue may be full; the connection also polls `closed` via a dropped sender.
            let _ = self.tx.try_send(Outbound::Close { reason });
        }
        self.fail_pending_methods();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Completes a method call with the device's answer; false if no call waits for `rid`.
    pub(crate) fn complete_method(&self, rid: &str, outcome: MethodOutcome) -> bool {
        let waiter = self
            .pending_methods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(rid);
        waiter.is_some_and(|w| w.send(outcome).is_ok())
    }

    /// Registers a caller waiting for the answer to request `rid`; false if the session is gone.
    pub(super) fn await_method(&self, rid: String, waiter: oneshot::Sender<MethodOutcome>) -> bool {
        let mut pending = self
            .pending_methods
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.is_closed() {
            return false;
        }
        pending.insert(rid, waiter);
        true
    }

    pub(super) fn abandon_method(&self, rid: &str) {
        self.pending_methods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(rid);
    }

    /// Dropping the senders wakes every caller at once with "device disconnected".
    fn fail_pending_methods(&self) {
        self.pending_methods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

pub(crate) struct Directory {
    live: RwLock<HashMap<IdentityKey, Arc<Session>>>,
    persisted: Mutex<HashMap<IdentityKey, Subscriptions>>,
    changed: Notify,
    next_conn: AtomicU64,
    next_rid: AtomicU64,
}

/// Outbound queue depth per connection.
const OUTBOUND_CAPACITY: usize = 1024;

impl Directory {
    pub(super) fn load(store: &dyn Store) -> Result<Self, HubError> {
        let mut persisted = HashMap::new();
        for (_, value) in store.load(Table::Sessions).map_err(HubError::storage)? {
            let (key, subs): (IdentityKey, Subscriptions) = serde_json::from_slice(&value)
                .map_err(|e| HubError::Storage(format!("a stored session is unreadable: {e}")))?;
            persisted.insert(key, subs);
        }
        Ok(Self {
            live: RwLock::new(HashMap::new()),
            persisted: Mutex::new(persisted),
            changed: Notify::new(),
            next_conn: AtomicU64::new(1),
            next_rid: AtomicU64::new(1),
        })
    }

    fn live(&self, key: &IdentityKey) -> Option<Arc<Session>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(super) fn close_identity(&self, key: &IdentityKey, reason: &'static str) {
        if let Some(session) = self.live(key) {
            session.close(reason);
        }
    }

    /// Drops the persisted sessions of deleted identities (adds the deletes to `batch`).
    pub(super) fn forget(&self, keys: &[IdentityKey], batch: &mut Batch) {
        let mut persisted = self.persisted.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            if persisted.remove(key).is_some() {
                batch.delete(Table::Sessions, key.store_key());
            }
        }
    }

    pub(super) fn notify_desired(&self, key: &IdentityKey, version: i64, patch: &Value) {
        let Some(session) = self.live(key) else {
            return;
        };
        if !session.subscriptions().desired_patches {
            return;
        }
        match serde_json::to_vec(patch) {
            Ok(body) => {
                session.send(Outbound::DesiredPatch {
                    version,
                    body: Bytes::from(body),
                });
            }
            Err(e) => tracing::error!(error = %e, "desired patch could not be serialised"),
        }
    }

    pub(super) fn connected_devices(&self) -> u64 {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.keys().filter(|k| k.module_id.is_none()).count() as u64
    }

    pub(super) fn method_session(&self, key: &IdentityKey) -> Option<Arc<Session>> {
        self.live(key)
            .filter(|s| !s.is_closed() && s.subscriptions().methods)
    }

    pub(super) fn changed(&self) -> &Notify {
        &self.changed
    }

    pub(super) fn next_rid(&self) -> String {
        format!("{:x}", self.next_rid.fetch_add(1, Ordering::Relaxed))
    }
}

/// Detaches its session from the directory when the connection ends, however it ends.
pub(crate) struct SessionGuard {
    hub: Hub,
    session: Arc<Session>,
}

impl SessionGuard {
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.hub.detach(&self.session);
    }
}

impl Hub {
    /// Registers a new connection for `key`, closing any older one. Returns the session, its
    /// outbound queue, and whether a persistent session was resumed (CONNACK session-present).
    pub(crate) async fn attach(
        &self,
        key: IdentityKey,
        clean_session: bool,
    ) -> Result<(SessionGuard, mpsc::Receiver<Outbound>, bool), HubError> {
        let directory = &self.0.sessions;
        let (subscriptions, present, batch) = {
            let mut persisted = directory
                .persisted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut batch = Batch::new();
            if clean_session {
                if persisted.remove(&key).is_some() {
                    batch.delete(Table::Sessions, key.store_key());
                }
                (Subscriptions::default(), false, batch)
            } else {
                match persisted.get(&key) {
                    Some(subs) => (*subs, true, batch),
                    None => {
                        let subs = Subscriptions::default();
                        persisted.insert(key.clone(), subs);
                        batch.put(Table::Sessions, key.store_key(), session_row(&key, &subs)?);
                        (subs, false, batch)
                    }
                }
            }
        };
        if !batch.is_empty() {
            self.0
                .store
                .commit(batch)
                .await
                .map_err(HubError::storage)?;
        }
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let session = Arc::new(Session {
            conn_id: directory.next_conn.fetch_add(1, Ordering::Relaxed),
            key: key.clone(),
            persistent: !clean_session,
            tx,
            subscriptions: Mutex::new(subscriptions),
            pending_methods: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let previous = directory
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), Arc::clone(&session));
        if let Some(previous) = previous {
            previous.close("a new connection for the same identity");
        }
        self.set_connected(&key, true);
        self.0
            .metrics
            .connected_devices
            .set(directory.connected_devices() as i64);
        directory.changed.notify_waiters();
        Ok((
            SessionGuard {
                hub: self.clone(),
                session,
            },
            rx,
            present,
        ))
    }

    fn detach(&self, session: &Arc<Session>) {
        session.close("connection ended");
        let directory = &self.0.sessions;
        let removed = {
            let mut live = directory.live.write().unwrap_or_else(|e| e.into_inner());
            match live.get(&session.key) {
                Some(current) if current.conn_id == session.conn_id => {
                    live.remove(&session.key);
                    true
                }
                _ => false,
            }
        };
        if removed {
            self.set_connected(&session.key, false);
        }
        self.0
            .metrics
            .connected_devices
            .set(directory.connected_devices() as i64);
        directory.changed.notify_waiters();
    }

    /// Records new subscriptions of a session; durable before it returns when the session is
    /// persistent, so a SUBACK is never lost by a restart.
    pub(crate) async fn subscribe(
        &self,
        session: &Session,
        update: impl FnOnce(&mut Subscriptions),
    ) -> Result<(), HubError> {
        let subs = {
            let mut subs = session
                .subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            update(&mut subs);
            *subs
        };
        if session.persistent {
            let changed = {
                let mut persisted = self
                    .0
                    .sessions
                    .persisted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                persisted.insert(session.key.clone(), subs) != Some(subs)
            };
            if changed {
                let mut batch = Batch::new();
                batch.put(
                    Table::Sessions,
                    session.key.store_key(),
                    session_row(&session.key, &subs)?,
                );
                self.0
                    .store
                    .commit(batch)
                    .await
                    .map_err(HubError::storage)?;
            }
        }
        self.0.sessions.changed.notify_waiters();
        Ok(())
    }

    pub(super) fn sessions(&self) -> &Directory {
        &self.0.sessions
    }

    pub(super) fn queue(&self, session: &Session, message: Outbound) -> bool {
        session.send(message)
    }
}

fn session_row(key: &IdentityKey, subs: &Subscriptions) -> Result<Vec<u8>, HubError> {
    serde_json::to_vec(&(key, subs)).map_err(HubError::storage)
}
