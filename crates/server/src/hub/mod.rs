//! The hub's state and every operation on it. `rest` and `mqtt` call into this module; nothing else
//! mutates identities, twins or sessions.
//!
//! State lives in memory and is written through to the [`Store`]. Each identity (device or module)
//! is an [`Entry`] whose writes are serialised by an async lock held across the durable commit, so
//! versions are assigned, persisted and announced in one order. Readers never wait for writers: they
//! clone the `Arc` of the last committed [`Record`].

mod configurations;
mod error;
mod firmware;
mod index;
mod jobs;
mod methods;
mod query;
mod registry;
mod sessions;
#[cfg(test)]
pub(crate) mod test_support;
mod twins;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use twinhub_core::identity::Identity;
use twinhub_core::policy::AccessPolicy;
use twinhub_core::time::Timestamp;
use twinhub_core::twin::{Twin, TwinShape, TwinView};
use twinhub_store::{Batch, Row, Store, Table};

use crate::metrics::Metrics;
use crate::shape::{DocumentParts, StoredIdentity, TwinSource};

pub use configurations::{
    Configuration, ConfigurationError, ConfigurationStatus, MAX_METRICS, SystemMetrics,
    compile_metric_query, compile_target_condition,
};
pub use error::HubError;
pub use firmware::{FirmwarePackage, FirmwareSettings};
pub use jobs::{
    DeviceJob, DeviceJobError, DeviceJobStatus, DeviceMethodResponse, Job, JobAction, JobFilter,
    JobLimits, JobSpec, JobStatistics, JobStatus, JobType, JobView, MAX_EXECUTION_SECS,
    SectionChange,
};
pub use methods::{MethodCall, MethodOutcome};
pub use query::{ItemType, Page};
pub use registry::{BulkOutcome, IdentitySpec, RegistryStatistics};
pub use sessions::Subscriptions;
pub(crate) use sessions::{Outbound, Session, SessionGuard};

/// Addresses one identity: a device, or a module of a device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdentityKey {
    pub device_id: String,
    pub module_id: Option<String>,
}

impl IdentityKey {
    pub fn device(device_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            module_id: None,
        }
    }

    pub fn module(device_id: impl Into<String>, module_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            module_id: Some(module_id.into()),
        }
    }

    /// Store key: ids cannot contain NUL, so `device\0module` is unambiguous and sorts modules
    /// right after their device.
    fn store_key(&self) -> Vec<u8> {
        let mut key = self.device_id.as_bytes().to_vec();
        if let Some(module_id) = &self.module_id {
            key.push(0);
            key.extend_from_slice(module_id.as_bytes());
        }
        key
    }
}

impl std::fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.module_id {
            Some(m) => write!(f, "{}/{}", self.device_id, m),
            None => f.write_str(&self.device_id),
        }
    }
}

/// What is stored per identity: the identity and its twin, written together.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub identity: Identity,
    pub twin: Twin,
    /// The automatic configurations targeting this twin, and whether they applied content.
    #[serde(default)]
    pub configurations: BTreeMap<String, ConfigurationStatus>,
    /// Which configuration wrote each desired path (dotted, below `properties.desired`), so its
    /// value can be removed when the configuration stops owning it.
    #[serde(default)]
    pub configured_paths: BTreeMap<String, String>,
}

/// Connection bookkeeping. Not persisted: after a restart every device is disconnected.
#[derive(Clone, Copy, Debug)]
pub struct Presence {
    pub connected: bool,
    pub state_updated: Timestamp,
    pub last_activity: Timestamp,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            connected: false,
            state_updated: Timestamp::NEVER,
            last_activity: Timestamp::NEVER,
        }
    }
}

/// A record as an entry holds it: the bytes the store has (a tenth of the decoded size, so a
/// million twins fit in memory) and, while the identity is connected, the decoded record too,
/// since connected devices are the ones whose twins are read and written often.
struct Held {
    bytes: Box<[u8]>,
    decoded: Option<Arc<Record>>,
    /// The record's configuration statuses, kept decoded so configuration metrics do not decode
    /// every twin.
    configurations: BTreeMap<String, ConfigurationStatus>,
    /// Whether the record has configuration statuses or configured paths.
    configured: bool,
}

impl Held {
    fn new(bytes: Box<[u8]>, record: &Record) -> Self {
        Self::from_parts(
            bytes,
            record.configurations.clone(),
            !record.configured_paths.is_empty(),
        )
    }

    fn from_parts(
        bytes: Box<[u8]>,
        configurations: BTreeMap<String, ConfigurationStatus>,
        has_configured_paths: bool,
    ) -> Self {
        Self {
            bytes,
            decoded: None,
            configured: !configurations.is_empty() || has_configured_paths,
            configurations,
        }
    }
}

/// What start-up reads of a stored record: the identity and the configuration bookkeeping, with
/// the twin checked but not built ([`TwinShape`]), so that decoding it later cannot fail.
#[derive(Deserialize)]
#[serde(rename = "Record")]
struct StoredRecordSummary {
    identity: Identity,
    #[serde(rename = "twin")]
    _twin: TwinShape,
    #[serde(default)]
    configurations: BTreeMap<String, ConfigurationStatus>,
    #[serde(default)]
    configured_paths: BTreeMap<String, String>,
}

/// What a twin is rendered from when its record is not decoded: the stored bytes, borrowed.
#[derive(Deserialize)]
#[serde(rename = "Record")]
struct StoredRecordView<'a> {
    /// Read only when rendered.
    #[serde(borrow)]
    identity: &'a RawValue,
    #[serde(borrow)]
    twin: TwinView<'a>,
    #[serde(default, borrow)]
    configured_paths: Option<&'a RawValue>,
}

pub(crate) struct Entry {
    write: tokio::sync::Mutex<()>,
    held: RwLock<Held>,
    /// Whether to keep the decoded record: the identity is connected.
    hot: AtomicBool,
    deleted: AtomicBool,
    presence: Mutex<Presence>,
}

impl Entry {
    fn new(bytes: Box<[u8]>, record: &Record) -> Arc<Self> {
        Self::holding(Held::new(bytes, record))
    }

    fn holding(held: Held) -> Arc<Self> {
        Arc::new(Self {
            write: tokio::sync::Mutex::new(()),
            held: RwLock::new(held),
            hot: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            presence: Mutex::new(Presence::default()),
        })
    }

    pub(crate) fn record(&self) -> Arc<Record> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        match &held.decoded {
            Some(record) => Arc::clone(record),
            None => Arc::new(decode_held(&held.bytes)),
        }
    }

    /// The record's status for configuration `id`, without decoding the record.
    fn configuration_status(&self, id: &str) -> Option<ConfigurationStatus> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        held.configurations.get(id).copied()
    }

    fn is_configured(&self) -> bool {
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .configured
    }

    fn set_record(&self, record: Record, bytes: Box<[u8]>) -> Arc<Record> {
        let record = Arc::new(record);
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        *held = Held::new(bytes, &record);
        if self.hot.load(Ordering::Acquire) {
            held.decoded = Some(Arc::clone(&record));
        }
        record
    }

    pub(crate) fn presence(&self) -> Presence {
        *self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_presence(&self, f: impl FnOnce(&mut Presence)) {
        let connected = {
            let mut presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut presence);
            presence.connected
        };
        if self.hot.swap(connected, Ordering::AcqRel) != connected {
            let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
            held.decoded = connected.then(|| Arc::new(decode_held(&held.bytes)));
        }
    }

    /// Runs `read` on the twin: the decoded record while the identity is connected, else a view
    /// of the stored bytes, which renders without building the record. Writes to this entry
    /// wait until `read` returns.
    pub(crate) fn with_twin<T>(
        &self,
        read: impl FnOnce(TwinSource<'_>) -> T,
    ) -> Result<T, HubError> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        match &held.decoded {
            Some(record) => Ok(read(TwinSource::Decoded(record))),
            None => {
                let stored: StoredRecordView<'_> = serde_json::from_slice(&held.bytes)
                    .map_err(|e| HubError::Rendering(format!("a held twin is unreadable: {e}")))?;
                let identity = StoredIdentity::new(stored.identity);
                Ok(read(TwinSource::Stored {
                    identity: &identity,
                    twin: &stored.twin,
                    configurations: &held.configurations,
                    configured_paths: stored.configured_paths,
                }))
            }
        }
    }

    /// The twin as queries see it: the REST twin shape with `parts` built (the `$metadata` of
    /// every section is most of the cost).
    pub(crate) fn document(&self, parts: DocumentParts) -> Result<serde_json::Value, HubError> {
        let presence = self.presence();
        self.with_twin(|twin| twin.document(&presence, parts))
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}

/// Decodes bytes an entry holds. They were either encoded by [`encode_record`] or decoded once
/// when the store was loaded, so failing here means memory was corrupted.
fn decode_held(bytes: &[u8]) -> Record {
    serde_json::from_slice(bytes).expect("held records were encoded by the hub or checked at load")
}

/// The stored form of a record.
fn encode_record(record: &Record) -> Result<Vec<u8>, HubError> {
    serde_json::to_vec(record).map_err(|e| HubError::Storage(e.to_string()))
}

/// Settings a running hub needs from its configuration.
#[derive(Clone, Debug)]
pub struct HubSettings {
    pub hostname: String,
    /// Clock skew tolerated when checking SAS expiry.
    pub sas_skew_secs: u64,
    pub max_modules_per_device: usize,
    /// Most configurations the hub accepts (Azure: 100).
    pub max_configurations: usize,
    /// Twins per second a configuration change re-evaluates in the background.
    pub configuration_twins_per_second: u32,
    /// Limits on scheduled jobs.
    pub jobs: JobLimits,
}

/// A cheap handle to the hub; clone it freely.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

pub(crate) struct Inner {
    settings: HubSettings,
    store: Arc<dyn Store>,
    policies: RwLock<Arc<Vec<AccessPolicy>>>,
    /// Service SAS tokens already verified against `policies`.
    service_tokens: crate::auth::VerifiedServiceTokens,
    entries: RwLock<BTreeMap<IdentityKey, Arc<Entry>>>,
    indexes: index::Indexes,
    /// Serialises creating and deleting identities, so existence checks and the durable write agree.
    structure: tokio::sync::Mutex<()>,
    sessions: sessions::Directory,
    configurations: configurations::Configurations,
    jobs: jobs::Jobs,
    /// Set once by [`Hub::host_firmware`].
    firmware: std::sync::OnceLock<firmware::Firmware>,
    metrics: Arc<Metrics>,
}

const POLICIES_KEY: &[u8] = b"access-policies";

impl Hub {
    /// Loads the whole registry from the store. `owner_key`, when given, becomes (or stays) the
    /// `iothubowner` primary key.
    pub fn open(
        settings: HubSettings,
        store: Arc<dyn Store>,
        owner_key: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Option<Batch>), HubError> {
        let loading = std::time::Instant::now();
        let entries = load_entries(store.as_ref())?;
        tracing::info!(
            identities = entries.len(),
            elapsed_ms = loading.elapsed().as_millis(),
            "registry read and checked"
        );
        let stored_policies = store
            .get(Table::Settings, POLICIES_KEY)
            .map_err(HubError::storage)?;
        let (policies, policy_write) = match stored_policies {
            Some(bytes) => {
                let mut policies: Vec<AccessPolicy> =
                    serde_json::from_slice(&bytes).map_err(|e| {
                        HubError::Storage(format!("access policies are unreadable: {e}"))
                    })?;
                let mut changed = false;
                if let Some(key) = owner_key
                    && let Some(owner) = policies.iter_mut().find(|p| p.name == "iothubowner")
                    && owner.primary_key != key
                {
                    owner.primary_key = key.to_owned();
                    changed = true;
                }
                (policies, changed)
            }
            None => (twinhub_core::policy::default_policies(owner_key), true),
        };
        let pending = if policy_write {
            let mut batch = Batch::new();
            batch.put(
                Table::Settings,
                POLICIES_KEY,
                serde_json::to_vec(&policies).map_err(|e| HubError::Storage(e.to_string()))?,
            );
            Some(batch)
        } else {
            None
        };
        let sessions = sessions::Directory::load(store.as_ref())?;
        let configurations = configurations::Configurations::load(
            store.as_ref(),
            settings.max_configurations,
            settings.configuration_twins_per_second,
        )?;
        let (jobs, pending) = jobs::Jobs::load(store.as_ref(), settings.jobs, pending)?;
        metrics.devices_registered.set(entries.len() as i64);
        let hub = Hub(Arc::new(Inner {
            settings,
            store,
            policies: RwLock::new(Arc::new(policies)),
            service_tokens: crate::auth::VerifiedServiceTokens::default(),
            entries: RwLock::new(entries),
            indexes: index::Indexes::default(),
            structure: tokio::sync::Mutex::new(()),
            sessions,
            configurations,
            jobs,
            firmware: std::sync::OnceLock::new(),
            metrics,
        }));
        Ok((hub, pending))
    }

    /// Commits a batch produced by [`Hub::open`] (kept apart so `open` stays synchronous).
    pub async fn commit_startup(&self, batch: Batch) -> Result<(), HubError> {
        self.0.store.commit(batch).await.map_err(HubError::storage)
    }

    pub fn settings(&self) -> &HubSettings {
        &self.0.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn service_tokens(&self) -> &crate::auth::VerifiedServiceTokens {
        &self.0.service_tokens
    }

    pub fn policies(&self) -> Arc<Vec<AccessPolicy>> {
        Arc::clone(&self.0.policies.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn entry(&self, key: &IdentityKey) -> Option<Arc<Entry>> {
        self.0
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Stops the store after every acknowledged write is on disk.
    pub fn shutdown_store(&self) {
        self.0.store.shutdown();
    }

    fn not_found(key: &IdentityKey) -> HubError {
        match &key.module_id {
            Some(_) => HubError::ModuleNotFound(key.clone()),
            None => HubError::DeviceNotFound(key.device_id.clone()),
        }
    }

    fn existing(&self, key: &IdentityKey) -> Result<Arc<Entry>, HubError> {
        self.entry(key)
            .filter(|e| !e.is_deleted())
            .ok_or_else(|| Self::not_found(key))
    }

    /// Writes one record durably, then publishes it to readers. The caller holds the entry's
    /// write lock.
    async fn persist(&self, entry: &Entry, record: Record) -> Result<Arc<Record>, HubError> {
        let mut persisted = self.persist_all(vec![(entry, record)]).await?;
        persisted
            .pop()
            .ok_or_else(|| HubError::Storage("a write produced no record".into()))
    }

    /// Writes the records of several entries in one commit (each entry's write lock held by
    /// the caller), then publishes them; returns them in the order given.
    async fn persist_all(
        &self,
        writes: Vec<(&Entry, Record)>,
    ) -> Result<Vec<Arc<Record>>, HubError> {
        let mut batch = Batch::new();
        let mut encoded = Vec::with_capacity(writes.len());
        for (entry, record) in writes {
            let key = IdentityKey {
                device_id: record.identity.device_id.clone(),
                module_id: record.identity.module_id.clone(),
            };
            let value = encode_record(&record)?;
            batch.put(Table::Registry, key.store_key(), value.clone());
            encoded.push((entry, key, record, value));
        }
        self.0
            .store
            .commit(batch)
            .await
            .map_err(HubError::storage)?;
        Ok(encoded
            .into_iter()
            .map(|(entry, key, record, value)| {
                let record = entry.set_record(record, value.into_boxed_slice());
                self.0.indexes.record_change(&key, Some(&record));
                record
            })
            .collect())
    }
}

/// Rows handed to a checking thread at a time while the registry is read.
const LOAD_CHUNK: usize = 4096;

/// Builds the entries from the registry table while it is read: chunks of rows go to one
/// checking thread per core, which check every row so that decoding it later cannot fail and
/// read its identity and configuration bookkeeping.
fn load_entries(store: &dyn Store) -> Result<BTreeMap<IdentityKey, Arc<Entry>>, HubError> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    type Checked = Result<Vec<(usize, Vec<LoadedEntry>)>, HubError>;
    let (scanned, checked): (Result<(), _>, Vec<Checked>) = std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(threads);
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (sender, chunks) = std::sync::mpsc::sync_channel::<(usize, Vec<Row>)>(2);
            senders.push(sender);
            workers.push(scope.spawn(move || -> Checked {
                let mut checked = Vec::new();
                for (index, rows) in chunks {
                    let entries = rows
                        .into_iter()
                        .map(|(key, value)| load_entry(&key, value))
                        .collect::<Result<_, _>>()?;
                    checked.push((index, entries));
                }
                Ok(checked)
            }));
        }
        let mut chunk = Vec::with_capacity(LOAD_CHUNK);
        let mut index = 0;
        // A worker that stopped at a bad row no longer receives; its error is reported below.
        let hand_over = |rows: Vec<Row>, index: &mut usize| {
            let _ = senders[*index % threads].send((*index, rows));
            *index += 1;
        };
        let scanned = store.scan(Table::Registry, &mut |row| {
            chunk.push(row);
            if chunk.len() == LOAD_CHUNK {
                hand_over(
                    std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK)),
                    &mut index,
                );
            }
        });
        if !chunk.is_empty() {
            hand_over(chunk, &mut index);
        }
        drop(senders);
        let checked = workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or_else(|_| {
                    Err(HubError::Storage("loading the registry failed".into()))
                })
            })
            .collect();
        (scanned, checked)
    });
    scanned.map_err(HubError::storage)?;
    let mut chunks = Vec::new();
    for worker in checked {
        chunks.extend(worker?);
    }
    // Chunks in the order read are identities in key order, which `BTreeMap` builds in one pass.
    chunks.sort_unstable_by_key(|(index, _)| *index);
    Ok(chunks
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .collect())
}

type LoadedEntry = (IdentityKey, Arc<Entry>);

fn load_entry(key: &[u8], value: Vec<u8>) -> Result<LoadedEntry, HubError> {
    let summary: StoredRecordSummary = serde_json::from_slice(&value).map_err(|e| {
        HubError::Storage(format!(
            "registry row {:?} is unreadable: {e}",
            String::from_utf8_lossy(key)
        ))
    })?;
    let identity = summary.identity;
    let id_key = IdentityKey {
        device_id: identity.device_id,
        module_id: identity.module_id,
    };
    let held = Held::from_parts(
        value.into_boxed_slice(),
        summary.configurations,
        !summary.configured_paths.is_empty(),
    );
    Ok((id_key, Entry::holding(held)))
}

/// An `If-Match` precondition as the SDKs send it (`"*"`, `*`, `"etag"`, `W/"etag"`, or absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    Absent,
    Any,
    Etag(String),
}

impl IfMatch {
    pub fn from_header(value: Option<&str>) -> Self {
        let Some(raw) = value.map(str::trim) else {
            return IfMatch::Absent;
        };
        let raw = raw.strip_prefix("W/").unwrap_or(raw);
        let unquoted = raw
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(raw);
        match unquoted {
            "" => IfMatch::Absent,
            "*" => IfMatch::Any,
            etag => IfMatch::Etag(etag.to_owned()),
        }
    }

    fn check(&self, current: &str) -> Result<(), HubError> {
        match self {
            IfMatch::Etag(expected) if expected != current => Err(HubError::PreconditionFailed),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use twinhub_core::time::Timestamp;
    use twinhub_core::twin::{Change, ServiceUpdate, Twin};

    use super::{
        ConfigurationStatus, IdentityKey, IdentitySpec, IfMatch, Record, StoredRecordSummary,
    };
    use crate::shape::DocumentParts;

    fn object(value: Value) -> serde_json::Map<String, Value> {
        match value {
            Value::Object(members) => members,
            _ => panic!("not an object"),
        }
    }

    /// A record with every part filled: module identity, nested tags, desired and reported
    /// properties written at different times (so the stored metadata has children), and
    /// configuration bookkeeping.
    fn stored_record() -> Value {
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let mut twin = Twin::new(now);
        twin.apply_service_update(
            ServiceUpdate {
                tags: Some(Change::Patch(object(
                    json!({"site": "north", "location": {"floor": 2, "zones": ["a", "b"]}}),
                ))),
                desired: Some(Change::Patch(object(
                    json!({"mode": "eco", "limits": {"low": -1.5, "high": 40}}),
                ))),
            },
            now,
        )
        .expect("the update applies");
        twin.patch_reported(
            &object(json!({"fw": {"version": "1.2", "ok": true}, "n": null})),
            now.plus_seconds(5),
        )
        .expect("the patch applies");
        twin.patch_reported(
            &object(json!({"fw": {"version": "1.3"}})),
            now.plus_seconds(9),
        )
        .expect("the patch applies");
        twin.model_id = Some("dtmi:com:example;1".into());
        let spec = IdentitySpec {
            key: IdentityKey::module("dev-1", "m1"),
            managed_by: Some("IotEdge".into()),
            ..IdentitySpec::sas_device("dev-1")
        };
        let identity = spec.new_identity(now).expect("the spec is valid");
        let record = Record {
            identity,
            twin,
            configurations: [("cfg".to_owned(), ConfigurationStatus::Applied)].into(),
            configured_paths: [("mode".to_owned(), "cfg".to_owned())].into(),
        };
        serde_json::to_value(&record).expect("records serialize")
    }

    /// Every way to damage one member of `value`: removed, or replaced by each JSON type.
    fn damaged(value: &Value) -> Vec<Value> {
        let replacements = [
            Value::Null,
            json!(true),
            json!(-1),
            json!(7),
            json!(1.5),
            json!("text"),
            json!([]),
            json!([1]),
            json!({}),
            json!({"last_updated": 1}),
        ];
        let mut out = Vec::new();
        match value {
            Value::Object(members) => {
                for (key, member) in members {
                    let mut removed = members.clone();
                    removed.shift_remove(key);
                    out.push(Value::Object(removed));
                    for replacement in replacements.iter().cloned().chain(damaged(member)) {
                        let mut changed = members.clone();
                        changed.insert(key.clone(), replacement);
                        out.push(Value::Object(changed));
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    for replacement in replacements.iter().cloned().chain(damaged(item)) {
                        let mut changed = items.clone();
                        changed[i] = replacement;
                        out.push(Value::Array(changed));
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// A registry of several load chunks, every row with its own identity.
    async fn registry_of(
        count: usize,
        damaged: Option<usize>,
    ) -> std::sync::Arc<twinhub_store::MemoryStore> {
        let store = std::sync::Arc::new(twinhub_store::MemoryStore::new());
        let template = stored_record();
        let mut batch = twinhub_store::Batch::new();
        for i in 0..count {
            let mut row = template.clone();
            let device_id = format!("dev-{i:05}");
            row["identity"]["device_id"] = json!(device_id);
            row["identity"]["module_id"] = Value::Null;
            let mut bytes = serde_json::to_vec(&row).expect("values serialize");
            if damaged == Some(i) {
                bytes.truncate(bytes.len() / 2);
            }
            batch.put(
                twinhub_store::Table::Registry,
                device_id.into_bytes(),
                bytes,
            );
        }
        twinhub_store::Store::commit(store.as_ref(), batch)
            .await
            .expect("the rows are stored");
        store
    }

    /// A twin read in place from its bytes (disconnected) renders and evaluates exactly as the
    /// decoded record (connected) does, in rows and in documents of any parts.
    #[test]
    fn a_twin_renders_alike_read_in_place_or_decoded() {
        let bytes = serde_json::to_vec(&stored_record()).expect("values serialize");
        let record: Record = serde_json::from_slice(&bytes).expect("the record decodes");
        let entry = super::Entry::new(bytes.into_boxed_slice(), &record);
        let presence = entry.presence();
        let expected_row = serde_json::to_string(&crate::shape::twin_dto(&record, &presence, true))
            .expect("twins render");
        let full = serde_json::from_str::<Value>(&expected_row).expect("rows are JSON");
        let conditions = [
            "tags.site = 'north'",
            "properties.reported.fw.version = '1.3' AND tags.location.floor = 2",
            "properties.desired.$metadata.mode.$lastUpdatedVersion = 2",
            "properties.reported.$metadata.fw.version.$lastUpdated > '2023'",
            "IS_DEFINED(properties.desired.limits) AND status = 'enabled'",
            "configurations.[[cfg]].status = 'Applied'",
            "deviceId = 'dev-1' AND NOT IS_DEFINED(tags.missing)",
        ];
        for connected in [false, true] {
            entry.update_presence(|presence| presence.connected = connected);
            let presence = entry.presence();
            let row = entry
                .with_twin(|twin| twin.to_json(&presence))
                .expect("the twin is readable")
                .expect("the twin renders");
            let expected = serde_json::to_string(&crate::shape::twin_dto(&record, &presence, true))
                .expect("twins render");
            assert_eq!(row.get(), expected, "connected: {connected}");
            let everything = entry
                .document(DocumentParts::all(true))
                .expect("the twin is readable");
            assert_eq!(
                everything,
                serde_json::from_str::<Value>(&expected).expect("JSON")
            );
            for text in conditions {
                let condition = twinhub_query::parse_condition(text).expect("conditions parse");
                let document = entry
                    .document(DocumentParts::read_by(&condition))
                    .expect("the twin is readable");
                assert!(condition.matches(&full), "{text} holds of the whole twin");
                assert!(
                    condition.matches(&document),
                    "{text}, connected: {connected}"
                );
            }
        }
    }

    #[tokio::test]
    async fn start_up_reads_every_row_of_a_large_registry_in_key_order() {
        let count = super::LOAD_CHUNK * 3 + 17;
        let store = registry_of(count, None).await;
        let entries = super::load_entries(store.as_ref()).expect("the registry loads");
        let keys: Vec<String> = entries.keys().map(|key| key.device_id.clone()).collect();
        let expected: Vec<String> = (0..count).map(|i| format!("dev-{i:05}")).collect();
        assert_eq!(keys, expected);
        let entry = &entries[&IdentityKey::device("dev-00042")];
        assert_eq!(
            entry.configuration_status("cfg"),
            Some(ConfigurationStatus::Applied)
        );
        assert_eq!(entry.record().identity.device_id, "dev-00042");
    }

    #[tokio::test]
    async fn a_damaged_row_anywhere_fails_the_start_with_its_key() {
        let store = registry_of(super::LOAD_CHUNK * 2 + 5, Some(super::LOAD_CHUNK + 3)).await;
        let error = super::load_entries(store.as_ref())
            .err()
            .expect("a damaged row is an error");
        let text = error.to_string();
        let damaged = format!("dev-{:05}", super::LOAD_CHUNK + 3);
        assert!(
            text.contains("unreadable") && text.contains(&damaged),
            "{text}"
        );
    }

    /// Start-up checks rows with `StoredRecordSummary`, and later decodes them as `Record`
    /// expecting no error: the check must accept no row that `Record` refuses, and refuse no
    /// row that `Record` accepts.
    #[test]
    fn the_start_up_check_accepts_exactly_the_rows_that_decode() {
        let record = stored_record();
        let rows = damaged(&record);
        assert!(rows.len() > 500, "only {} damaged rows", rows.len());
        for row in std::iter::once(record).chain(rows) {
            let bytes = serde_json::to_vec(&row).expect("values serialize");
            let decodes = serde_json::from_slice::<Record>(&bytes).is_ok();
            let checked = serde_json::from_slice::<StoredRecordSummary>(&bytes).is_ok();
            assert_eq!(checked, decodes, "check and decode disagree on {row}");
        }
        for text in [r#"{"a": 1e400}"#, r#"{"a": "\ud800"}"#, r#"{"a": [1, }"#] {
            let row = serde_json::to_string(&stored_record())
                .expect("values serialize")
                .replacen(r#""site":"north""#, &format!(r#""site":{text}"#), 1);
            assert_eq!(
                serde_json::from_str::<StoredRecordSummary>(&row).is_ok(),
                serde_json::from_str::<Record>(&row).is_ok(),
                "check and decode disagree on {text}"
            );
        }
    }

    #[test]
    fn if_match_accepts_every_form_the_sdks_send() {
        assert_eq!(IfMatch::from_header(None), IfMatch::Absent);
        assert_eq!(IfMatch::from_header(Some("*")), IfMatch::Any);
        assert_eq!(IfMatch::from_header(Some("\"*\"")), IfMatch::Any);
        assert_eq!(
            IfMatch::from_header(Some("\"MQ==\"")),
            IfMatch::Etag("MQ==".into())
        );
        assert_eq!(
            IfMatch::from_header(Some("W/\"MQ==\"")),
            IfMatch::Etag("MQ==".into())
        );
        assert_eq!(
            IfMatch::from_header(Some("MQ==")),
            IfMatch::Etag("MQ==".into())
        );
    }
}
