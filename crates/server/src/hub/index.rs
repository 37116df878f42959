//! Secondary indexes on twin property paths. An index is created the first time a query could
//! use it, filled by one scan, and from then on kept exact by every write, so selective queries
//! and grouped counts read candidate twins instead of every twin.
//!
//! Writes publish a record first and update the indexes after, both before they are
//! acknowledged: a query that starts after an acknowledged write sees it in every index. While
//! an index is being filled, writes queue their changes and the filling scan replays them, so a
//! twin written during the scan ends up with its newest value.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::{Map, Value};
use twinhub_query::{IndexKey, KeyRange};

use super::{IdentityKey, Record};
use crate::shape::TwinSource;

/// Most paths indexed at once per collection; a query on another path scans.
const MAX_INDEXES: usize = 32;

/// What one twin has at an indexed path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    Key(IndexKey),
    /// Defined, but null, an array or an object: not orderable, still counted.
    Other,
}

#[derive(Default)]
struct Entries {
    by_key: BTreeMap<IndexKey, BTreeSet<IdentityKey>>,
    other: BTreeSet<IdentityKey>,
    of: HashMap<IdentityKey, Slot>,
}

impl Entries {
    /// The set of twins of each distinct key in `range` (a `Between` range only of its own type).
    fn sets_in(&self, range: &KeyRange) -> Vec<&BTreeSet<IdentityKey>> {
        match range {
            KeyRange::OneOf(keys) => {
                let distinct: BTreeSet<&IndexKey> = keys.iter().collect();
                distinct
                    .into_iter()
                    .filter_map(|k| self.by_key.get(k))
                    .collect()
            }
            KeyRange::Between { .. } => range
                .as_interval()
                .map(|interval| self.by_key.range(interval).map(|(_, set)| set).collect())
                .unwrap_or_default(),
        }
    }

    fn set(&mut self, key: &IdentityKey, slot: Option<Slot>) {
        if let Some(old) = self.of.get(key) {
            if Some(old) == slot.as_ref() {
                return;
            }
            match old {
                Slot::Key(k) => {
                    if let Some(set) = self.by_key.get_mut(k) {
                        set.remove(key);
                        if set.is_empty() {
                            self.by_key.remove(k);
                        }
                    }
                }
                Slot::Other => {
                    self.other.remove(key);
                }
            }
        }
        match slot {
            Some(Slot::Key(k)) => {
                self.by_key
                    .entry(k.clone())
                    .or_default()
                    .insert(key.clone());
                self.of.insert(key.clone(), Slot::Key(k));
            }
            Some(Slot::Other) => {
                self.other.insert(key.clone());
                self.of.insert(key.clone(), Slot::Other);
            }
            None => {
                self.of.remove(key);
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// Changes made while the index is being filled, replayed in order when it is.
    pending: Option<Vec<(IdentityKey, Option<Slot>)>>,
    entries: Entries,
}

/// The index of one path in one collection (device twins or module twins).
pub(crate) struct PathIndex {
    path: Vec<String>,
    state: RwLock<State>,
    filled: OnceLock<()>,
}

impl PathIndex {
    fn new(path: Vec<String>) -> Self {
        Self {
            path,
            state: RwLock::new(State {
                pending: Some(Vec::new()),
                entries: Entries::default(),
            }),
            filled: OnceLock::new(),
        }
    }

    fn slot_of(&self, twin: &dyn TwinValues) -> Option<Slot> {
        let value = twin.value_at(&self.path)?;
        Some(IndexKey::of(&value).map_or(Slot::Other, Slot::Key))
    }

    fn record_change(&self, key: &IdentityKey, record: Option<&Record>) {
        let slot = record.and_then(|r| self.slot_of(r));
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match &mut state.pending {
            Some(pending) => pending.push((key.clone(), slot)),
            None => state.entries.set(key, slot),
        }
    }

    fn is_filled(&self) -> bool {
        self.filled.get().is_some()
    }

    /// Installs what a filling scan found, then replays the changes made meanwhile.
    fn finish_fill(&self, mut entries: Entries) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for (key, slot) in state.pending.take().unwrap_or_default() {
            entries.set(&key, slot);
        }
        state.entries = entries;
        drop(state);
        let _ = self.filled.set(());
    }

    /// How many twins have a key in `range`.
    pub(crate) fn count(&self, range: &KeyRange) -> usize {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .entries
            .sets_in(range)
            .iter()
            .map(|set| set.len())
            .sum()
    }

    /// The first `limit` twins, in key order, with a key in `range` and a key after `after`:
    /// a query reads a large selection a chunk at a time, without copying all of it.
    pub(crate) fn keys_in(
        &self,
        range: &KeyRange,
        after: Option<&IdentityKey>,
        limit: usize,
    ) -> Vec<IdentityKey> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let sets = state.entries.sets_in(range);
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys: Vec<IdentityKey> = sets
            .iter()
            .flat_map(|set| {
                set.range::<IdentityKey, _>((lower, Bound::Unbounded))
                    .take(limit)
                    .cloned()
            })
            .collect();
        if sets.len() > 1 {
            keys.sort_unstable();
            keys.truncate(limit);
        }
        keys
    }

    /// Whether the twin `key` has a key in `range`.
    pub(crate) fn contains(&self, range: &KeyRange, key: &IdentityKey) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match state.entries.of.get(key) {
            Some(Slot::Key(k)) => range.contains(k),
            _ => false,
        }
    }

    /// Per key: how many twins have it and the first of them in key order (whose spelling of
    /// the value a scan would show, `1` or `1.0`); and how many twins have a value that is not
    /// a key (null, array, object).
    pub(crate) fn counts(&self) -> (Vec<(IndexKey, u64, IdentityKey)>, u64) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let entries = &state.entries;
        let counts = entries
            .by_key
            .iter()
            .filter_map(|(k, set)| Some((k.clone(), set.len() as u64, set.first()?.clone())))
            .collect();
        (counts, entries.other.len() as u64)
    }

    /// The value `twin` has at this index's path.
    pub(crate) fn value_of<'t>(&self, twin: &'t dyn TwinValues) -> Option<Cow<'t, Value>> {
        twin.value_at(&self.path)
    }
}

/// A twin as indexes read it: decoded, or its stored text (filling an index reads every twin,
/// and reading one value from the text costs a fraction of decoding the twin).
pub(crate) trait TwinValues {
    /// The value at a document path, for the paths an index can serve: below `tags`,
    /// `properties.desired` or `properties.reported`, through objects only.
    fn value_at(&self, path: &[String]) -> Option<Cow<'_, Value>>;
}

/// The part of the twin an indexable path starts in, and the rest of the path.
enum Root {
    Tags,
    Desired,
    Reported,
}

fn split_root(path: &[String]) -> Option<(Root, &[String])> {
    match path {
        [tags, rest @ ..] if tags == "tags" => Some((Root::Tags, rest)),
        [properties, section, rest @ ..] if properties == "properties" => match section.as_str() {
            "desired" => Some((Root::Desired, rest)),
            "reported" => Some((Root::Reported, rest)),
            _ => None,
        },
        _ => None,
    }
}

impl TwinValues for Record {
    fn value_at(&self, path: &[String]) -> Option<Cow<'_, Value>> {
        let (root, rest) = split_root(path)?;
        let root: &Map<String, Value> = match root {
            Root::Tags => &self.twin.tags,
            Root::Desired => self.twin.desired.properties(),
            Root::Reported => self.twin.reported.properties(),
        };
        let (last, parents) = rest.split_last()?;
        let mut object = root;
        for segment in parents {
            object = object.get(segment)?.as_object()?;
        }
        object.get(last).map(Cow::Borrowed)
    }
}

impl TwinValues for TwinSource<'_> {
    fn value_at(&self, path: &[String]) -> Option<Cow<'_, Value>> {
        match self {
            TwinSource::Decoded(record) => record.value_at(path),
            TwinSource::Stored { twin, .. } => {
                let (root, rest) = split_root(path)?;
                let root = match root {
                    Root::Tags => twin.tags(),
                    Root::Desired => twin.desired().properties(),
                    Root::Reported => twin.reported().properties(),
                };
                if rest.is_empty() {
                    return None;
                }
                twinhub_core::twin::value_at(root, rest).map(Cow::Owned)
            }
        }
    }
}

/// Whether an index can serve `path` (see [`TwinValues::value_at`]); `$`-prefixed segments are the
/// document's own bookkeeping (`$metadata`, `$version`), not properties.
pub(crate) fn indexable(path: &[String]) -> bool {
    let rest = match path {
        [tags, rest @ ..] if tags == "tags" => rest,
        [properties, section, rest @ ..]
            if properties == "properties" && (section == "desired" || section == "reported") =>
        {
            rest
        }
        _ => return false,
    };
    !rest.is_empty() && rest.iter().all(|s| !s.is_empty() && !s.starts_with('$'))
}

/// Which collection (module twins or not) and which path an index covers.
type IndexId = (bool, Vec<String>);

/// Every index of the hub, per collection.
#[derive(Default)]
pub(crate) struct Indexes {
    by_path: RwLock<HashMap<IndexId, Arc<PathIndex>>>,
    /// Held while a scan fills indexes; a query needing an index being filled waits here.
    filling: Mutex<()>,
}

impl Indexes {
    /// Records that twin `key` now is `record` (`None`: deleted) in every index of its
    /// collection.
    pub(crate) fn record_change(&self, key: &IdentityKey, record: Option<&Record>) {
        let modules = key.module_id.is_some();
        let indexes: Vec<Arc<PathIndex>> = {
            let by_path = self.by_path.read().unwrap_or_else(|e| e.into_inner());
            if by_path.is_empty() {
                return;
            }
            by_path
                .iter()
                .filter(|((m, _), _)| *m == modules)
                .map(|(_, index)| Arc::clone(index))
                .collect()
        };
        for index in indexes {
            index.record_change(key, record);
        }
    }

    /// The filled indexes of `paths` (`None` for a path no index can serve, or when there is no
    /// room for another), creating and filling the missing ones with one call of `scan`, which
    /// must visit every twin of the collection as it is when called.
    pub(crate) fn get_or_create(
        &self,
        modules: bool,
        paths: &[Vec<String>],
        scan: impl FnOnce(&mut dyn FnMut(&IdentityKey, &dyn TwinValues)),
    ) -> Vec<Option<Arc<PathIndex>>> {
        let indexes: Vec<Option<Arc<PathIndex>>> = {
            let mut by_path = self.by_path.write().unwrap_or_else(|e| e.into_inner());
            paths
                .iter()
                .map(|path| {
                    if !indexable(path) {
                        return None;
                    }
                    let index_key = (modules, path.clone());
                    if let Some(index) = by_path.get(&index_key) {
                        return Some(Arc::clone(index));
                    }
                    if by_path.keys().filter(|(m, _)| *m == modules).count() >= MAX_INDEXES {
                        return None;
                    }
                    let index = Arc::new(PathIndex::new(path.clone()));
                    by_path.insert(index_key, Arc::clone(&index));
                    Some(index)
                })
                .collect()
        };
        if indexes.iter().flatten().any(|index| !index.is_filled()) {
            let _filling = self.filling.lock().unwrap_or_else(|e| e.into_inner());
            let unfilled: Vec<&Arc<PathIndex>> = indexes
                .iter()
                .flatten()
                .filter(|index| !index.is_filled())
                .collect();
            if !unfilled.is_empty() {
                let mut found: Vec<Entries> = unfilled.iter().map(|_| Entries::default()).collect();
                scan(&mut |key, twin| {
                    for (index, entries) in unfilled.iter().zip(found.iter_mut()) {
                        entries.set(key, index.slot_of(twin));
                    }
                });
                for (index, entries) in unfilled.into_iter().zip(found) {
                    index.finish_fill(entries);
                }
            }
        }
        indexes
    }
}

#[cfg(test)]
mod tests;
