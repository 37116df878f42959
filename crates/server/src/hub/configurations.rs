//! Automatic device management configurations, evaluated on events rather than on a timer.
//!
//! The rule, per twin: every configuration whose target condition matches the twin *targets* it.
//! Each desired path in any targeting configuration's content is *owned* by the targeting
//! configuration with the highest priority (ties: the most recently created); a path nested in,
//! or containing, a path already owned by a stronger configuration is skipped. A configuration
//! that owns at least one path is `Applied` on that twin, otherwise `Targeted`. The hub remembers
//! which configuration wrote each path: when a path changes owner it is written with the new
//! owner's value; when nothing owns it any more (the twin left the target, or the configuration
//! was deleted) it is removed. A path keeps its owner's value only as long as the owner is
//! unchanged: the back end may overwrite it, and the configuration does not fight back.
//!
//! Evaluation runs for a twin after every write to it, and for every twin (rate-limited, in the
//! background) after a configuration is created, updated or deleted.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twinhub_core::time::Timestamp;
use twinhub_core::twin::{Change, ServiceUpdate};
use twinhub_query::{Condition, Query};
use twinhub_store::{Batch, Table};

use super::{Entry, Hub, HubError, IdentityKey, IfMatch, Presence, Record};
use crate::shape::{ConfigurationRecords, DocumentParts, TwinSource};

/// The largest fleet a configuration change is applied to before its request is answered,
/// whatever the sweep rate, so a request never waits for a whole large fleet.
const MAX_INLINE_TWINS: usize = 20_000;

/// A configuration's status on one twin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigurationStatus {
    Targeted,
    Applied,
}

impl ConfigurationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigurationStatus::Targeted => "Targeted",
            ConfigurationStatus::Applied => "Applied",
        }
    }
}

/// A configuration as stored. Content is immutable after creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    pub id: String,
    pub schema_version: String,
    pub labels: Map<String, Value>,
    pub device_content: Option<Map<String, Value>>,
    pub module_content: Option<Map<String, Value>>,
    pub modules_content: Option<Map<String, Value>>,
    pub content_type: Option<String>,
    pub target_condition: String,
    pub priority: i64,
    pub created: Timestamp,
    pub last_updated: Timestamp,
    pub metric_queries: BTreeMap<String, String>,
    pub etag_version: u64,
}

impl Configuration {
    pub fn etag(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.etag_version.to_string())
    }

    fn same_content(&self, other: &Configuration) -> bool {
        self.device_content == other.device_content
            && self.module_content == other.module_content
            && self.modules_content == other.modules_content
    }
}

/// A configuration made ready to evaluate: its condition compiled and its content split into paths.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) configuration: Configuration,
    target: Option<Condition>,
    for_modules: bool,
    /// Paths below `properties.desired`, with the value to write.
    paths: Vec<(Vec<String>, Value)>,
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    #[error("invalid target condition: {0}")]
    TargetCondition(String),
    #[error("invalid content: {0}")]
    Content(String),
    #[error("invalid custom metric query {name:?}: {message}")]
    MetricQuery { name: String, message: String },
}

const MODULE_TARGET_PREFIX: &str = "from devices.modules";
/// Twins a sweep evaluates together and writes in one store commit. Evaluating them holds a
/// worker thread for a few milliseconds.
const RECONCILE_BATCH: usize = 256;
/// Sweep tasks running at once, so every core evaluates twins while commits are in flight.
const RECONCILE_LANES: usize = 4;

/// Azure's limit on custom metric queries per configuration.
pub const MAX_METRICS: usize = 5;

/// Parses a target condition: `*` targets every device, an empty string targets nothing, and
/// `FROM devices.modules [WHERE ...]` targets modules.
fn compile_target(text: &str) -> Result<(Option<Condition>, bool), ConfigurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok((None, false));
    }
    let lower = trimmed.to_ascii_lowercase();
    let (condition, for_modules) = match lower.strip_prefix(MODULE_TARGET_PREFIX) {
        Some(rest) => {
            let rest = rest.trim_start();
            let offset = trimmed.len() - rest.len();
            let body = &trimmed[offset..];
            match body.get(..5).map(str::to_ascii_lowercase).as_deref() {
                Some("where") => (&body[5..], true),
                _ if body.is_empty() => ("*", true),
                _ => {
                    return Err(ConfigurationError::TargetCondition(
                        "expected WHERE after FROM devices.modules".into(),
                    ));
                }
            }
        }
        None => (trimmed, false),
    };
    twinhub_query::parse_condition(condition.trim())
        .map(|c| (Some(c), for_modules))
        .map_err(|e| ConfigurationError::TargetCondition(e.to_string()))
}

fn compile_content(
    content: Option<&Map<String, Value>>,
) -> Result<Vec<(Vec<String>, Value)>, ConfigurationError> {
    let mut paths = Vec::new();
    for (path, value) in content.into_iter().flatten() {
        let Some(rest) = path.strip_prefix("properties.desired.") else {
            return Err(ConfigurationError::Content(format!(
                "content path {path:?} must start with \"properties.desired.\""
            )));
        };
        let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigurationError::Content(format!(
                "content path {path:?} has an empty segment"
            )));
        }
        paths.push((segments, value.clone()));
    }
    Ok(paths)
}

/// Checks a target condition without storing anything (`testQueries`).
pub fn compile_target_condition(text: &str) -> Result<(), ConfigurationError> {
    compile_target(text).map(drop)
}

/// Checks a custom metric query: a full `SELECT` over devices or modules.
pub fn compile_metric_query(name: &str, text: &str) -> Result<Query, ConfigurationError> {
    twinhub_query::parse(text).map_err(|e| ConfigurationError::MetricQuery {
        name: name.to_owned(),
        message: e.to_string(),
    })
}

impl Compiled {
    pub(crate) fn new(configuration: Configuration) -> Result<Self, ConfigurationError> {
        let (target, for_modules) = compile_target(&configuration.target_condition)?;
        let content = if for_modules {
            configuration.module_content.as_ref()
        } else {
            configuration.device_content.as_ref()
        };
        let paths = compile_content(content)?;
        if configuration.metric_queries.len() > MAX_METRICS {
            return Err(ConfigurationError::MetricQuery {
                name: String::new(),
                message: format!("at most {MAX_METRICS} custom metric queries are allowed"),
            });
        }
        for (name, text) in &configuration.metric_queries {
            compile_metric_query(name, text)?;
        }
        Ok(Self {
            configuration,
            target,
            for_modules,
            paths,
        })
    }

    /// What of a twin's document the target condition reads.
    fn reads(&self) -> DocumentParts {
        self.target
            .as_ref()
            .map_or(DocumentParts::NONE, DocumentParts::read_by)
    }

    fn targets(&self, modules: bool, twin: &Value) -> bool {
        self.for_modules == modules
            && self
                .target
                .as_ref()
                .is_some_and(|c| c.is_everything() || c.matches(twin))
    }
}

/// The outcome of evaluating every configuration against one twin.
#[derive(Debug, Default, PartialEq)]
struct Assignment {
    statuses: BTreeMap<String, ConfigurationStatus>,
    /// Dotted desired path → (owning configuration, value).
    owners: BTreeMap<String, (String, Value)>,
}

fn overlaps(a: &str, b: &str) -> bool {
    let nested = |outer: &str, inner: &str| {
        inner.len() > outer.len()
            && inner.starts_with(outer)
            && inner.as_bytes()[outer.len()] == b'.'
    };
    a == b || nested(a, b) || nested(b, a)
}

fn assign(configurations: &[Arc<Compiled>], modules: bool, twin: &Value) -> Assignment {
    let mut targeting: Vec<&Arc<Compiled>> = configurations
        .iter()
        .filter(|c| c.targets(modules, twin))
        .collect();
    targeting.sort_by(|a, b| {
        let (a, b) = (&a.configuration, &b.configuration);
        b.priority
            .cmp(&a.priority)
            .then(b.created.cmp(&a.created))
            .then(a.id.cmp(&b.id))
    });
    let mut assignment = Assignment::default();
    for compiled in targeting {
        let id = &compiled.configuration.id;
        let mut owns_any = false;
        for (segments, value) in &compiled.paths {
            let path = segments.join(".");
            if assignment.owners.keys().any(|owned| overlaps(owned, &path)) {
                continue;
            }
            assignment.owners.insert(path, (id.clone(), value.clone()));
            owns_any = true;
        }
        let status = if owns_any {
            ConfigurationStatus::Applied
        } else {
            ConfigurationStatus::Targeted
        };
        assignment.statuses.insert(id.clone(), status);
    }
    assignment
}

/// What re-evaluating the configurations changes in one twin.
struct Reconciled {
    record: Record,
    /// The desired patch to send the device, when desired properties changed.
    notification: Option<Map<String, Value>>,
}

/// What `configurations` assign one twin, read from the twin as it is held (a disconnected
/// twin's stored text, without decoding it), or `None` when that is what the twin records
/// already: most twins of a fleet are unchanged by most configuration changes.
fn evaluate(
    configurations: &[Arc<Compiled>],
    key: &IdentityKey,
    twin: &TwinSource<'_>,
    presence: &Presence,
) -> Result<Option<Assignment>, HubError> {
    let parts = configurations
        .iter()
        .fold(DocumentParts::NONE, |parts, c| parts.union(c.reads()));
    let document = twin.document(presence, parts);
    let assignment = assign(configurations, key.module_id.is_some(), &document);
    let ConfigurationRecords { statuses, paths } = twin
        .configuration_records()
        .map_err(|e| HubError::Rendering(format!("a held twin is unreadable: {e}")))?;
    let owners_unchanged = assignment.owners.len() == paths.len()
        && assignment.owners.iter().zip(paths.iter()).all(
            |((path, (owner, _)), (recorded_path, recorded_owner))| {
                path == recorded_path && owner == recorded_owner
            },
        );
    if owners_unchanged && assignment.statuses == *statuses {
        return Ok(None);
    }
    Ok(Some(assignment))
}

/// The twin's next record after `assignment` (which differs from what it records, see
/// [`evaluate`]).
fn reconciled(current: Arc<Record>, assignment: Assignment) -> Result<Reconciled, HubError> {
    let mut patch = Map::new();
    for (path, (owner, value)) in &assignment.owners {
        if current.configured_paths.get(path) != Some(owner) {
            insert_path(&mut patch, path, value.clone());
        }
    }
    for path in current.configured_paths.keys() {
        if !assignment.owners.contains_key(path) {
            insert_path(&mut patch, path, Value::Null);
        }
    }
    let configured_paths: BTreeMap<String, String> = assignment
        .owners
        .iter()
        .map(|(path, (owner, _))| (path.clone(), owner.clone()))
        .collect();
    // A record decoded for this evaluation is not shared: it becomes the next one uncopied.
    let mut record = Arc::unwrap_or_clone(current);
    let notification = if patch.is_empty() {
        None
    } else {
        let update = ServiceUpdate {
            tags: None,
            desired: Some(Change::Patch(patch)),
        };
        record.twin.apply_service_update(update, Timestamp::now())?
    };
    record.configurations = assignment.statuses;
    record.configured_paths = configured_paths;
    Ok(Reconciled {
        record,
        notification,
    })
}

/// What evaluating `configurations` changes in the twin of `entry`, whose write lock the caller
/// holds; the record is decoded only when something changes.
fn entry_change(
    configurations: &[Arc<Compiled>],
    key: &IdentityKey,
    entry: &Entry,
) -> Result<Option<Reconciled>, HubError> {
    let presence = entry.presence();
    let assignment = entry.with_twin(|twin| evaluate(configurations, key, &twin, &presence))??;
    assignment
        .map(|assignment| reconciled(entry.record(), assignment))
        .transpose()
}

/// Sets `value` at a dotted path inside a patch object, creating the intermediate objects.
fn insert_path(patch: &mut Map<String, Value>, path: &str, value: Value) {
    let mut segments = path.split('.').peekable();
    let mut node = patch;
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            node.insert(segment.to_owned(), value);
            return;
        }
        let child = node
            .entry(segment.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(map) = child else { return };
        node = map;
    }
}

/// State kept for configurations: the compiled set and the sweep scheduler.
pub(crate) struct Configurations {
    compiled: std::sync::RwLock<Arc<Vec<Arc<Compiled>>>>,
    sweep: tokio::sync::Notify,
    pub(crate) max_count: usize,
    pub(crate) twins_per_second: u32,
}

impl Configurations {
    pub(crate) fn load(
        store: &dyn twinhub_store::Store,
        max_count: usize,
        twins_per_second: u32,
    ) -> Result<Self, HubError> {
        let mut compiled = Vec::new();
        for (_, value) in store
            .load(Table::Configurations)
            .map_err(HubError::storage)?
        {
            let configuration: Configuration = serde_json::from_slice(&value).map_err(|e| {
                HubError::Storage(format!("a stored configuration is unreadable: {e}"))
            })?;
            let id = configuration.id.clone();
            let entry = Compiled::new(configuration).map_err(|e| {
                HubError::Storage(format!("stored configuration {id} no longer compiles: {e}"))
            })?;
            compiled.push(Arc::new(entry));
        }
        Ok(Self {
            compiled: std::sync::RwLock::new(Arc::new(compiled)),
            sweep: tokio::sync::Notify::new(),
            max_count,
            twins_per_second,
        })
    }

    pub(crate) fn all(&self) -> Arc<Vec<Arc<Compiled>>> {
        Arc::clone(&self.compiled.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, f: impl FnOnce(&mut Vec<Arc<Compiled>>)) {
        let mut guard = self.compiled.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }
}

/// Counts for a configuration's system metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemMetrics {
    pub targeted: u64,
    pub applied: u64,
}

impl Hub {
    pub fn configurations(&self) -> Vec<Configuration> {
        self.0
            .configurations
            .all()
            .iter()
            .map(|c| c.configuration.clone())
            .collect()
    }

    pub fn configuration(&self, id: &str) -> Result<Configuration, HubError> {
        self.0
            .configurations
            .all()
            .iter()
            .find(|c| c.configuration.id == id)
            .map(|c| c.configuration.clone())
            .ok_or_else(|| HubError::ConfigurationNotFound(id.to_owned()))
    }

    /// Creates (`if_match` absent) or updates a configuration, then schedules its evaluation.
    pub async fn put_configuration(
        &self,
        mut configuration: Configuration,
        if_match: &IfMatch,
    ) -> Result<Configuration, HubError> {
        let structure = self.0.structure.lock().await;
        let existing = self.configuration(&configuration.id).ok();
        let now = Timestamp::now();
        match (&existing, if_match) {
            (Some(_), IfMatch::Absent) => {
                return Err(HubError::ConfigurationAlreadyExists(configuration.id));
            }
            (None, IfMatch::Etag(_)) => {
                return Err(HubError::ConfigurationNotFound(configuration.id));
            }
            (Some(current), precondition) => {
                precondition.check(&current.etag())?;
                if !current.same_content(&configuration) {
                    return Err(HubError::ImmutableConfigurationContent);
                }
                configuration.created = current.created;
                configuration.etag_version = current.etag_version + 1;
            }
            (None, _) => {
                if self.0.configurations.all().len() >= self.0.configurations.max_count {
                    return Err(HubError::TooManyConfigurations(
                        self.0.configurations.max_count,
                    ));
                }
                configuration.created = now;
                configuration.etag_version = 1;
            }
        }
        configuration.last_updated = now;
        let compiled =
            Arc::new(Compiled::new(configuration.clone()).map_err(HubError::Configuration)?);
        let mut batch = Batch::new();
        batch.put(
            Table::Configurations,
            configuration.id.as_bytes(),
            serde_json::to_vec(&configuration).map_err(HubError::storage)?,
        );
        self.0
            .store
            .commit(batch)
            .await
            .map_err(HubError::storage)?;
        let id = configuration.id.clone();
        self.0.configurations.replace(|all| {
            all.retain(|c| c.configuration.id != id);
            all.push(compiled);
        });
        drop(structure);
        self.apply_configuration_change().await;
        Ok(configuration)
    }

    pub async fn delete_configuration(&self, id: &str, if_match: &IfMatch) -> Result<(), HubError> {
        let structure = self.0.structure.lock().await;
        let current = self.configuration(id)?;
        if_match.check(&current.etag())?;
        let mut batch = Batch::new();
        batch.delete(Table::Configurations, id.as_bytes());
        self.0
            .store
            .commit(batch)
            .await
            .map_err(HubError::storage)?;
        self.0
            .configurations
            .replace(|all| all.retain(|c| c.configuration.id != id));
        drop(structure);
        self.apply_configuration_change().await;
        Ok(())
    }

    /// Re-evaluates every twin after a configuration changed: before answering when that takes
    /// at most a second at the sweep rate and the fleet is small (so the caller reads the result
    /// at once), otherwise in the background at that rate.
    async fn apply_configuration_change(&self) {
        let inline_limit = (self.0.configurations.twins_per_second as usize).min(MAX_INLINE_TWINS);
        if self.identity_count() > inline_limit {
            self.0.configurations.sweep.notify_one();
            return;
        }
        for keys in [
            self.keys_where(|entry| entry.presence().connected),
            self.keys_where(|_| true),
        ] {
            let keys: Arc<[IdentityKey]> = keys.into();
            self.reconcile_many(&keys, 0..keys.len()).await;
        }
    }

    /// Evaluates `keys[range]`, batch by batch in the order given: each batch is evaluated
    /// together and written in one commit, and several batches are in flight at once (on every
    /// core). The lanes share `keys` rather than each copying its part.
    async fn reconcile_many(&self, keys: &Arc<[IdentityKey]>, range: Range<usize>) {
        let end = range.end;
        let batches: Vec<Range<usize>> = range
            .step_by(RECONCILE_BATCH)
            .map(|first| first..(first + RECONCILE_BATCH).min(end))
            .collect();
        let running: Vec<_> = (0..RECONCILE_LANES.min(batches.len()))
            .map(|lane| {
                let hub = self.clone();
                let keys = Arc::clone(keys);
                let mine: Vec<Range<usize>> = batches
                    .iter()
                    .skip(lane)
                    .step_by(RECONCILE_LANES)
                    .cloned()
                    .collect();
                tokio::spawn(async move {
                    for batch in mine {
                        hub.reconcile_batch(&keys[batch]).await;
                    }
                })
            })
            .collect();
        for lane in running {
            if let Err(e) = lane.await {
                tracing::error!(error = %e, "a configuration sweep task failed");
            }
        }
    }

    /// Re-evaluates a batch of twins and writes every change in one commit. A twin another
    /// write holds is evaluated on its own afterwards, so a batch never waits on, or deadlocks
    /// with, other writers.
    async fn reconcile_batch(&self, keys: &[IdentityKey]) {
        let configurations = self.0.configurations.all();
        let entries: Vec<(&IdentityKey, Arc<Entry>)> = keys
            .iter()
            .filter_map(|key| Some((key, self.entry(key)?)))
            .filter(|(_, entry)| !configurations.is_empty() || entry.is_configured())
            .collect();
        let mut busy = Vec::new();
        let mut held = Vec::new();
        let mut changes = Vec::new();
        for (key, entry) in &entries {
            let Ok(write) = entry.write.try_lock() else {
                busy.push(*key);
                continue;
            };
            if entry.is_deleted() {
                continue;
            }
            match entry_change(&configurations, key, entry) {
                Ok(Some(change)) => {
                    changes.push((*key, &**entry, change));
                    held.push(write);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(identity = %key, error = %e, "configuration evaluation failed");
                }
            }
        }
        if let Err(e) = self.commit_reconciled(changes).await {
            tracing::warn!(error = %e, "writing configuration changes failed");
        }
        drop(held);
        for key in busy {
            self.reconcile_after_write(key).await;
        }
    }

    /// Writes re-evaluated twins in one commit, then sends each device its desired patch.
    async fn commit_reconciled(
        &self,
        changes: Vec<(&IdentityKey, &Entry, Reconciled)>,
    ) -> Result<(), HubError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut notifications = Vec::with_capacity(changes.len());
        let mut writes = Vec::with_capacity(changes.len());
        for (key, entry, change) in changes {
            notifications.push((key, change.notification));
            writes.push((entry, change.record));
        }
        let records = self.persist_all(writes).await?;
        for ((key, notification), record) in notifications.into_iter().zip(records) {
            if let Some(mut patch) = notification {
                let version = record.twin.desired.version();
                patch.insert("$version".into(), Value::from(version));
                self.sessions()
                    .notify_desired(key, version, &Value::Object(patch));
            }
        }
        Ok(())
    }

    /// The identities whose entries pass `select`, in key order.
    fn keys_where(&self, select: impl Fn(&Entry) -> bool) -> Vec<IdentityKey> {
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|(_, entry)| select(entry))
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn identity_count(&self) -> usize {
        self.0
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Targeted and applied counts of a configuration, from the twins as they are now.
    pub fn configuration_system_metrics(&self, id: &str) -> SystemMetrics {
        // Read in place: only registry changes wait for this pass, and twin writes do not take
        // the registry lock.
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut metrics = SystemMetrics::default();
        for entry in entries.values() {
            match entry.configuration_status(id) {
                Some(ConfigurationStatus::Applied) => {
                    metrics.targeted += 1;
                    metrics.applied += 1;
                }
                Some(ConfigurationStatus::Targeted) => metrics.targeted += 1,
                None => {}
            }
        }
        metrics
    }

    /// Re-evaluates every configuration against one twin and writes what changed, through the
    /// same path as a service update (versions, metadata, device notification).
    pub(crate) async fn reconcile(&self, key: &IdentityKey) -> Result<(), HubError> {
        let configurations = self.0.configurations.all();
        let Some(entry) = self.entry(key) else {
            return Ok(());
        };
        if configurations.is_empty() && !entry.is_configured() {
            return Ok(());
        }
        let _write = entry.write.lock().await;
        if entry.is_deleted() {
            return Ok(());
        }
        match entry_change(&configurations, key, &entry)? {
            Some(change) => self.commit_reconciled(vec![(key, &entry, change)]).await,
            None => Ok(()),
        }
    }

    /// After a write to a twin: evaluate configurations for it (errors are logged, not returned:
    /// the write itself succeeded).
    pub(crate) async fn reconcile_after_write(&self, key: &IdentityKey) {
        if let Err(e) = self.reconcile(key).await {
            tracing::warn!(identity = %key, error = %e, "configuration evaluation failed");
        }
    }

    /// Runs until `shutdown`: each configuration change triggers a sweep over every twin, at most
    /// `twins_per_second`, so a configuration over a large fleet cannot starve other traffic.
    pub async fn run_configuration_sweeps(self, shutdown: tokio_util::sync::CancellationToken) {
        let rate = self.0.configurations.twins_per_second.max(1);
        let batch = (rate / 20).max(1) as usize;
        let pause = Duration::from_secs_f64(batch as f64 / f64::from(rate));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.0.configurations.sweep.notified() => {}
            }
            // The connected twins first, gathered by a pass that copies only their keys: their
            // devices are waiting for the change. The pass over every twin after them finds
            // those already evaluated and leaves them as they are.
            let connected = self.keys_where(|entry| entry.presence().connected);
            if !self.sweep(connected.into(), batch, pause, &shutdown).await
                || !self
                    .sweep(self.keys_where(|_| true).into(), batch, pause, &shutdown)
                    .await
            {
                return;
            }
        }
    }

    /// Evaluates `keys` `batch` at a time with `pause` between batches; false when `shutdown`
    /// came first.
    async fn sweep(
        &self,
        keys: Arc<[IdentityKey]>,
        batch: usize,
        pause: Duration,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> bool {
        for start in (0..keys.len()).step_by(batch) {
            self.reconcile_many(&keys, start..(start + batch).min(keys.len()))
                .await;
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hub::IdentitySpec;
    use crate::hub::test_support::{self, open_hub};

    /// A configuration change evaluates twins in batches that skip a twin another write holds;
    /// that twin is evaluated once the write ends, and the change is answered only then.
    #[tokio::test]
    async fn a_twin_held_by_another_write_is_applied_when_that_write_ends() {
        const DEVICES: u64 = 300;
        let hub = open_hub().await;
        for i in 0..DEVICES {
            let key = IdentityKey::device(format!("dev-{i:03}"));
            hub.create_identity(IdentitySpec::sas_device(key.device_id.clone()))
                .await
                .expect("device created");
            let tags = json!({"fleet": "a"})
                .as_object()
                .cloned()
                .expect("an object");
            let update = ServiceUpdate {
                tags: Some(Change::Replace(tags)),
                desired: None,
            };
            hub.update_twin(&key, update, &IfMatch::Any)
                .await
                .expect("tags set");
        }
        let held = IdentityKey::device("dev-007");
        let entry = hub.entry(&held).expect("the device exists");
        let write = entry.write.lock().await;
        let content = json!({"properties.desired.sampling": {"rate": 5}});
        let put = tokio::spawn({
            let hub = hub.clone();
            async move {
                let configuration = new_configuration("sampling", "tags.fleet = 'a'", content);
                hub.put_configuration(configuration, &IfMatch::Absent).await
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while hub.configuration_system_metrics("sampling").applied < DEVICES - 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the batches never applied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !put.is_finished(),
            "the change was answered before every twin was evaluated"
        );
        assert_eq!(entry.configuration_status("sampling"), None);
        drop(write);
        put.await
            .expect("the task ran")
            .expect("the configuration is stored");
        let metrics = hub.configuration_system_metrics("sampling");
        assert_eq!((metrics.targeted, metrics.applied), (DEVICES, DEVICES));
        let record = entry.record();
        assert_eq!(
            record.twin.desired.properties().get("sampling"),
            Some(&json!({"rate": 5}))
        );
        assert_eq!(
            record.configured_paths.get("sampling").map(String::as_str),
            Some("sampling")
        );
    }

    /// A fleet larger than a change may evaluate inline is swept in the background: the
    /// connected twins (whose devices wait for the change) before any other, then every twin.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_background_sweep_evaluates_connected_twins_first() {
        const DEVICES: usize = 150;
        let hub = test_support::open_hub_with_settings(
            Arc::new(twinhub_store::MemoryStore::new()),
            crate::hub::HubSettings {
                hostname: "hub.test".into(),
                sas_skew_secs: 300,
                max_modules_per_device: 50,
                max_configurations: 100,
                configuration_twins_per_second: 100,
                jobs: crate::hub::JobLimits::default(),
            },
        )
        .await;
        let keys: Vec<IdentityKey> = (0..DEVICES)
            .map(|i| IdentityKey::device(format!("dev-{i:03}")))
            .collect();
        for key in &keys {
            hub.create_identity(IdentitySpec::sas_device(key.device_id.clone()))
                .await
                .expect("device created");
        }
        // Every tenth device is connected; in key order they are spread over the fleet.
        let mut sessions = Vec::new();
        for key in keys.iter().step_by(10) {
            sessions.push(hub.attach(key.clone(), true).await.expect("attached"));
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let sweeps = tokio::spawn(hub.clone().run_configuration_sweeps(shutdown.clone()));
        let content = json!({"properties.desired.sampling": {"rate": 5}});
        hub.put_configuration(
            new_configuration("sampling", "*", content),
            &IfMatch::Absent,
        )
        .await
        .expect("the configuration is stored");
        let applied = |key: &IdentityKey| {
            hub.entry(key)
                .expect("the device exists")
                .configuration_status("sampling")
                == Some(ConfigurationStatus::Applied)
        };
        assert!(
            !keys.iter().all(applied),
            "the change was evaluated inline, not by a sweep"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (connected, offline): (Vec<_>, Vec<_>) =
                keys.iter().enumerate().partition(|(i, _)| i % 10 == 0);
            let offline_applied = offline.iter().filter(|(_, key)| applied(key)).count();
            let connected_applied = connected.iter().filter(|(_, key)| applied(key)).count();
            assert!(
                offline_applied == 0 || connected_applied == connected.len(),
                "{offline_applied} disconnected twins were applied before {} of the connected ones",
                connected.len() - connected_applied
            );
            if offline_applied == offline.len() && connected_applied == connected.len() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sweep never reached every twin"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        shutdown.cancel();
        sweeps.await.expect("the sweep task ends");
        drop(sessions);
    }

    /// A configuration as a service creates it.
    fn new_configuration(id: &str, target: &str, content: Value) -> Configuration {
        Configuration {
            id: id.into(),
            schema_version: "1.0".into(),
            labels: Map::new(),
            device_content: match content {
                Value::Object(content) => Some(content),
                _ => None,
            },
            module_content: None,
            modules_content: None,
            content_type: None,
            target_condition: target.into(),
            priority: 1,
            created: Timestamp::NEVER,
            last_updated: Timestamp::NEVER,
            metric_queries: BTreeMap::new(),
            etag_version: 0,
        }
    }

    /// A configuration change rewrites only the twins it changes: the others, read from their
    /// stored text, keep their stored bytes (and versions) as they were.
    #[tokio::test]
    async fn a_configuration_change_rewrites_only_the_twins_it_changes() {
        const DEVICES: usize = 40;
        let hub = open_hub().await;
        let keys: Vec<IdentityKey> = (0..DEVICES)
            .map(|i| IdentityKey::device(format!("dev-{i:02}")))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            hub.create_identity(IdentitySpec::sas_device(key.device_id.clone()))
                .await
                .expect("device created");
            let fleet = if i % 4 == 0 { "b" } else { "a" };
            let update = ServiceUpdate {
                tags: Some(Change::Patch(
                    json!({"fleet": fleet})
                        .as_object()
                        .cloned()
                        .expect("an object"),
                )),
                desired: None,
            };
            hub.update_twin(key, update, &IfMatch::Any)
                .await
                .expect("tags set");
        }
        let put = |id: &str, target: &str, content: Value| {
            hub.put_configuration(new_configuration(id, target, content), &IfMatch::Absent)
        };
        put("all", "*", json!({"properties.desired.mode": "eco"}))
            .await
            .expect("stored");
        // Where the held bytes are: a rewrite replaces them, even with equal bytes.
        let stored_bytes = |key: &IdentityKey| {
            let entry = hub.entry(key).expect("the device exists");
            let held = entry.held.read().expect("held");
            held.bytes.as_ptr() as usize
        };
        let before: Vec<usize> = keys.iter().map(stored_bytes).collect();
        put(
            "fleet-b",
            "tags.fleet = 'b'",
            json!({"properties.desired.rate": 5}),
        )
        .await
        .expect("stored");
        for (i, (key, before)) in keys.iter().zip(&before).enumerate() {
            let record = hub.entry(key).expect("the device exists").record();
            if i % 4 == 0 {
                assert_ne!(&stored_bytes(key), before, "{key} is in fleet b");
                assert_eq!(
                    record.twin.desired.properties().get("rate"),
                    Some(&json!(5))
                );
            } else {
                assert_eq!(&stored_bytes(key), before, "{key} is not in fleet b");
                assert_eq!(record.configurations.len(), 1, "{key}");
            }
            assert_eq!(
                record.twin.desired.properties().get("mode"),
                Some(&json!("eco"))
            );
        }
    }

    fn configuration(
        id: &str,
        target: &str,
        priority: i64,
        created: i64,
        content: Value,
    ) -> Arc<Compiled> {
        assert!(content.is_object(), "content must be an object");
        let configuration = Configuration {
            priority,
            created: Timestamp::from_unix_seconds(created),
            last_updated: Timestamp::from_unix_seconds(created),
            etag_version: 1,
            ..new_configuration(id, target, content)
        };
        Arc::new(Compiled::new(configuration).expect("compiles"))
    }

    #[test]
    fn the_highest_priority_owns_a_path_and_ties_go_to_the_newest() {
        let twin = json!({"deviceId": "d1", "tags": {"kind": "chiller"}});
        let all = vec![
            configuration(
                "low",
                "tags.kind = 'chiller'",
                10,
                1,
                json!({"properties.desired.fw": {"v": 1}, "properties.desired.extra": 1}),
            ),
            configuration(
                "high",
                "*",
                20,
                1,
                json!({"properties.desired.fw": {"v": 2}}),
            ),
            configuration(
                "old-tie",
                "*",
                5,
                1,
                json!({"properties.desired.mode": "a"}),
            ),
            configuration(
                "new-tie",
                "*",
                5,
                2,
                json!({"properties.desired.mode": "b"}),
            ),
            configuration(
                "other",
                "tags.kind = 'pump'",
                99,
                1,
                json!({"properties.desired.fw": {"v": 9}}),
            ),
        ];
        let assignment = assign(&all, false, &twin);
        assert_eq!(
            assignment.owners["fw"],
            ("high".to_owned(), json!({"v": 2}))
        );
        assert_eq!(assignment.owners["extra"], ("low".to_owned(), json!(1)));
        assert_eq!(
            assignment.owners["mode"],
            ("new-tie".to_owned(), json!("b"))
        );
        assert_eq!(assignment.statuses["low"], ConfigurationStatus::Applied);
        assert_eq!(
            assignment.statuses["old-tie"],
            ConfigurationStatus::Targeted
        );
        assert!(!assignment.statuses.contains_key("other"));
    }

    #[test]
    fn nested_paths_do_not_both_apply() {
        let twin = json!({"deviceId": "d1"});
        let all = vec![
            configuration(
                "outer",
                "*",
                20,
                1,
                json!({"properties.desired.a": {"b": 1, "c": 2}}),
            ),
            configuration("inner", "*", 10, 1, json!({"properties.desired.a.b": 5})),
        ];
        let assignment = assign(&all, false, &twin);
        assert_eq!(assignment.owners.len(), 1);
        assert_eq!(assignment.statuses["inner"], ConfigurationStatus::Targeted);
    }

    #[test]
    fn targets_parse_the_three_forms() {
        assert!(compile_target("").expect("empty").0.is_none());
        assert!(!compile_target("tags.x = 1").expect("devices").1);
        assert!(
            compile_target("FROM devices.modules WHERE moduleId = 'm'")
                .expect("modules")
                .1
        );
        assert!(compile_target("tags.x = ").is_err());
        assert!(compile_content(Some(json!({"tags.x": 1}).as_object().expect("object"))).is_err());
    }

    #[test]
    fn paths_become_nested_patches() {
        let mut patch = Map::new();
        insert_path(&mut patch, "a.b.c", json!(1));
        insert_path(&mut patch, "a.d", Value::Null);
        insert_path(&mut patch, "e", json!("x"));
        assert_eq!(
            Value::Object(patch),
            json!({"a": {"b": {"c": 1}, "d": null}, "e": "x"})
        );
    }
}
