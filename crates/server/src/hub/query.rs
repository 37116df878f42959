//! Queries over twins: the fleet-wide reads behind `POST /devices/query`, job targets and
//! configuration target conditions. Queries see every write acknowledged before they started,
//! because they read the same in-memory records the writes publish.

use std::borrow::Cow;
use std::ops::Bound;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use twinhub_query::{Collection, Condition, IndexKey, KeyRange, Query};

use super::index::PathIndex;
use super::{Entry, Hub, HubError, IdentityKey};
use crate::shape::DocumentParts;

/// How a condition is answered without reading every twin: one source yields candidates in key
/// order, the indexes filter them.
pub(super) struct Plan {
    pub(super) driver: Driver,
    filters: Vec<(Arc<PathIndex>, KeyRange)>,
}

/// Where a plan's candidates come from.
pub(super) enum Driver {
    /// The twins whose value at an indexed path has a key in the range.
    Index(Arc<PathIndex>, KeyRange),
    /// The twins whose device id is in the range, read from the registry's own key order.
    DeviceIds(KeyRange),
}

/// What the items of a page are, as IoT Hub labels them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemType {
    Twin,
    DeviceJob,
    Raw,
}

/// One page of results, each item rendered as JSON, and, when more may follow, the token that
/// continues it.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Box<RawValue>>,
    pub continuation: Option<String>,
    pub item_type: ItemType,
}

/// Where the next page starts. Plain filters page by identity key, so a page boundary is stable
/// while twins change (no duplicates, no skipped unchanged twins); ordered and aggregated
/// results are computed whole and paged by position.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Continuation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<IdentityKey>,
    #[serde(default)]
    emitted: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
}

impl Continuation {
    fn decode(token: Option<&str>) -> Result<Self, HubError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(Self::default());
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| HubError::InvalidArgument("the continuation token is not valid".into()))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| HubError::InvalidArgument("the continuation token is not valid".into()))
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Identities are read in chunks (from the registry, or from the index that drives a query) so
/// no lock is held while documents are built and a large selection is never copied whole. Tests
/// use small chunks so their fleets cross chunk boundaries.
const SCAN_CHUNK: usize = if cfg!(test) { 16 } else { 1024 };

impl Hub {
    /// Identities of one kind (devices, or modules) in key order, from just after `after`.
    fn scan(
        &self,
        modules: bool,
        after: Option<&IdentityKey>,
        mut visit: impl FnMut(&IdentityKey, &Arc<Entry>) -> bool,
    ) {
        let mut cursor = after.cloned();
        loop {
            let chunk: Vec<(IdentityKey, Arc<Entry>)> = {
                let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
                let lower = match &cursor {
                    Some(key) => Bound::Excluded(key.clone()),
                    None => Bound::Unbounded,
                };
                entries
                    .range((lower, Bound::Unbounded))
                    .filter(|(k, _)| k.module_id.is_some() == modules)
                    .take(SCAN_CHUNK)
                    .map(|(k, e)| (k.clone(), Arc::clone(e)))
                    .collect()
            };
            let Some((last, _)) = chunk.last() else {
                return;
            };
            cursor = Some(last.clone());
            let full = chunk.len() == SCAN_CHUNK;
            for (key, entry) in &chunk {
                if entry.is_deleted() {
                    continue;
                }
                if !visit(key, entry) {
                    return;
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Visits, in key order from just after `after`, every twin the condition may match: the
    /// twins an index selects when the condition allows one, else every twin. The visitor
    /// still has to check the condition; it returns false to stop.
    fn candidates(
        &self,
        condition: &Condition,
        modules: bool,
        after: Option<&IdentityKey>,
        mut visit: impl FnMut(&IdentityKey, &Arc<Entry>) -> bool,
    ) {
        let Some(plan) = self.plan(condition, modules) else {
            self.scan(modules, after, visit);
            return;
        };
        let mut cursor = after.cloned();
        loop {
            let keys = match &plan.driver {
                Driver::Index(index, range) => index.keys_in(range, cursor.as_ref(), SCAN_CHUNK),
                Driver::DeviceIds(range) => {
                    self.keys_with_device_ids(range, modules, cursor.as_ref())
                }
            };
            let more = matches!(plan.driver, Driver::Index(..)) && keys.len() == SCAN_CHUNK;
            for key in &keys {
                if !plan
                    .filters
                    .iter()
                    .all(|(index, range)| index.contains(range, key))
                {
                    continue;
                }
                let Some(entry) = self.entry(key).filter(|e| !e.is_deleted()) else {
                    continue;
                };
                if !visit(key, &entry) {
                    return;
                }
            }
            if !more {
                return;
            }
            cursor = keys.last().cloned();
        }
    }

    /// The keys of twins (devices, or modules) whose device id lies in `range`, after `after`,
    /// in key order. Device ids are strings, so keys of other types select nothing.
    fn keys_with_device_ids(
        &self,
        range: &KeyRange,
        modules: bool,
        after: Option<&IdentityKey>,
    ) -> Vec<IdentityKey> {
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        // Deleted twins are left to `candidates`, which skips them for every driver.
        let wanted = |key: &IdentityKey| {
            key.module_id.is_some() == modules && after.is_none_or(|after| key > after)
        };
        let first_of = |device_id: &str| IdentityKey {
            device_id: device_id.to_owned(),
            module_id: None,
        };
        match range {
            KeyRange::OneOf(ids) => ids
                .iter()
                .filter_map(|id| match id {
                    IndexKey::String(id) => Some(id),
                    _ => None,
                })
                .flat_map(|id| {
                    entries
                        .range(first_of(id)..)
                        .take_while(move |(key, _)| key.device_id == **id)
                        .map(|(key, _)| key)
                })
                .filter(|key| wanted(key))
                .cloned()
                .collect(),
            KeyRange::Between { .. } => {
                let Some((
                    Bound::Included(IndexKey::String(lowest))
                    | Bound::Excluded(IndexKey::String(lowest)),
                    upper,
                )) = range.as_interval()
                else {
                    return Vec::new();
                };
                let below_upper = |key: &IndexKey| match &upper {
                    Bound::Included(upper) => key <= upper,
                    Bound::Excluded(upper) => key < upper,
                    Bound::Unbounded => true,
                };
                entries
                    .range(first_of(&lowest)..)
                    .map(|(key, _)| (key, IndexKey::String(key.device_id.as_str().into())))
                    .take_while(|(_, id)| below_upper(id))
                    .filter(|(key, id)| range.contains(id) && wanted(key))
                    .map(|(key, _)| key.clone())
                    .collect()
            }
        }
    }

    /// How to answer `condition`: a list of device ids drives when the condition has one, else
    /// the index selecting the fewest twins (or, without any, a range of device ids); the other
    /// indexes filter. `None` when neither applies.
    pub(super) fn plan(&self, condition: &Condition, modules: bool) -> Option<Plan> {
        let terms = condition.index_terms();
        if terms.is_empty() {
            return None;
        }
        let (device_ids, terms): (Vec<_>, Vec<_>) = terms.into_iter().partition(
            |term| matches!(&term.path[..], [only] if only.eq_ignore_ascii_case("deviceId")),
        );
        let paths: Vec<Vec<String>> = terms.iter().map(|t| t.path.clone()).collect();
        let indexes = self.indexes_for(modules, &paths);
        let mut usable: Vec<(usize, Arc<PathIndex>, KeyRange)> = terms
            .into_iter()
            .zip(indexes)
            .filter_map(|(term, index)| {
                let index = index?;
                Some((index.count(&term.range), index, term.range))
            })
            .collect();
        usable.sort_by_key(|(count, _, _)| *count);
        let mut usable = usable.into_iter().map(|(_, index, range)| (index, range));
        // A list of device ids is as selective as a condition gets; a range of them (such as
        // `STARTSWITH`) drives only when no index can.
        let driver = match device_ids.into_iter().next() {
            Some(term) if matches!(term.range, KeyRange::OneOf(_)) => Driver::DeviceIds(term.range),
            device_ids => match usable.next() {
                Some((index, range)) => Driver::Index(index, range),
                None => Driver::DeviceIds(device_ids?.range),
            },
        };
        Some(Plan {
            driver,
            filters: usable.collect(),
        })
    }

    /// The indexes of `paths`, filled by one scan of the collection for those that are new.
    fn indexes_for(&self, modules: bool, paths: &[Vec<String>]) -> Vec<Option<Arc<PathIndex>>> {
        self.0.indexes.get_or_create(modules, paths, |visit| {
            self.scan(modules, None, |key, entry| {
                if let Err(e) = entry.with_twin(|twin| visit(key, &twin)) {
                    tracing::error!(identity = %key, error = %e, "twin left out of an index");
                }
                true
            });
        })
    }

    /// The device (or module) twins matching a condition, in key order.
    pub fn query_identities(&self, condition: &Condition, modules: bool) -> Vec<IdentityKey> {
        let mut keys = Vec::new();
        if condition.is_everything() {
            self.scan(modules, None, |key, _| {
                keys.push(key.clone());
                true
            });
            return keys;
        }
        self.matching(condition, modules, DocumentParts::NONE, |key, _| {
            keys.push(key.clone());
        });
        keys
    }

    /// Visits, in key order, every twin matching `condition` with its document (with
    /// `$metadata` when `metadata` is set or the condition reads it).
    fn matching(
        &self,
        condition: &Condition,
        modules: bool,
        parts: DocumentParts,
        mut visit: impl FnMut(&IdentityKey, Value),
    ) {
        let parts = parts.union(DocumentParts::read_by(condition));
        self.candidates(condition, modules, None, |key, entry| {
            match entry.document(parts) {
                Ok(doc) if condition.matches(&doc) => visit(key, doc),
                Ok(_) => {}
                Err(e) => tracing::error!(identity = %key, error = %e, "twin left out of a query"),
            }
            true
        });
    }

    /// Counts the twins a query's condition matches (configuration metrics).
    pub(crate) fn count_matching(&self, query: &Query) -> u64 {
        let modules = query.collection() == Collection::DevicesModules;
        let condition = query.condition();
        if condition.is_everything() {
            return self.collection_size(modules);
        }
        let mut count = 0;
        self.matching(condition, modules, DocumentParts::NONE, |_, _| count += 1);
        count
    }

    /// Answers a `COUNT()` grouped by one path over every twin from that path's index, without
    /// reading twins. `None` when the query is not of that form or the index cannot answer it
    /// (a twin with a null, array or object value there).
    fn counted_from_index(&self, query: &Query) -> Option<Vec<Value>> {
        let path = query.counted_group_path()?;
        if !query.condition().is_everything() {
            return None;
        }
        let modules = query.collection() == Collection::DevicesModules;
        let index = self.indexes_for(modules, &[path]).pop().flatten()?;
        let (counts, other) = index.counts();
        if other > 0 {
            return None;
        }
        let total = self.collection_size(modules);
        let keyed: u64 = counts.iter().map(|(_, n, _)| n).sum();
        let undefined = total.saturating_sub(keyed);
        let groups: Vec<(Option<Value>, u64)> = counts
            .into_iter()
            .map(|(key, n, first)| {
                // The first twin may have changed since the counts were taken; its spelling
                // only counts while it still has this key.
                let spelled = self
                    .entry(&first)
                    .and_then(|entry| {
                        entry
                            .with_twin(|twin| index.value_of(&twin).map(Cow::into_owned))
                            .ok()
                            .flatten()
                    })
                    .filter(|value| IndexKey::of(value).as_ref() == Some(&key))
                    .unwrap_or_else(|| key.to_value());
                (Some(spelled), n)
            })
            .chain((undefined > 0).then_some((None, undefined)))
            .collect();
        Some(query.rows_from_group_counts(groups))
    }

    /// How many twins (devices, or modules) exist now.
    fn collection_size(&self, modules: bool) -> u64 {
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|(k, e)| k.module_id.is_some() == modules && !e.is_deleted())
            .count() as u64
    }

    /// Runs one page of a query.
    pub fn query_page(
        &self,
        query: &Query,
        max_items: usize,
        continuation: Option<&str>,
    ) -> Result<Page, HubError> {
        let token = Continuation::decode(continuation)?;
        let max_items = max_items.max(1);
        let item_type = match query.collection() {
            _ if !query.is_select_star() => ItemType::Raw,
            Collection::DevicesJobs => ItemType::DeviceJob,
            Collection::Devices | Collection::DevicesModules => ItemType::Twin,
        };
        let keyed = query.collection() != Collection::DevicesJobs
            && !query.is_aggregate()
            && !query.has_order_by();
        if keyed {
            return self.keyed_page(query, max_items, &token, item_type);
        }
        let rows = match query.collection() {
            Collection::DevicesJobs => query.execute(self.device_job_documents().iter()),
            _ if query.is_total_count() => query.rows_from_total_count(self.count_matching(query)),
            collection => match self.counted_from_index(query) {
                Some(rows) => rows,
                None => {
                    let mut docs = Vec::new();
                    self.matching(
                        query.condition(),
                        collection == Collection::DevicesModules,
                        DocumentParts::all(query.reads_metadata() || query.is_select_star()),
                        |_, doc| docs.push(doc),
                    );
                    query.execute(docs.iter())
                }
            },
        };
        let offset = token.offset.unwrap_or(0).min(rows.len());
        let end = offset.saturating_add(max_items).min(rows.len());
        let continuation = (end < rows.len()).then(|| {
            Continuation {
                offset: Some(end),
                ..Default::default()
            }
            .encode()
        });
        Ok(Page {
            items: rows[offset..end]
                .iter()
                .map(rendered)
                .collect::<Result<_, _>>()?,
            continuation,
            item_type,
        })
    }

    fn keyed_page(
        &self,
        query: &Query,
        max_items: usize,
        token: &Continuation,
        item_type: ItemType,
    ) -> Result<Page, HubError> {
        let modules = query.collection() == Collection::DevicesModules;
        let remaining_top = query.top().map(|top| top.saturating_sub(token.emitted));
        let page_size = remaining_top.map_or(max_items, |r| r.min(max_items));
        let mut items = Vec::new();
        let mut last_key = None;
        let mut more = false;
        let mut failure = None;
        if page_size > 0 {
            let condition = query.condition();
            let select_star = query.is_select_star();
            // A JSON document is built only for what reads one: the condition (only the members
            // it reads) and projections. `SELECT *` rows are rendered straight from the twin,
            // always with `$metadata`.
            let needs_document = !condition.is_everything() || !select_star;
            let parts = if select_star {
                DocumentParts::read_by(condition)
            } else {
                DocumentParts::all(query.reads_metadata())
            };
            self.candidates(condition, modules, token.after.as_ref(), |key, entry| {
                let presence = entry.presence();
                let page_full = items.len() == page_size;
                let candidate = entry.with_twin(|twin| {
                    let document = needs_document.then(|| twin.document(&presence, parts));
                    if let Some(document) = &document
                        && !condition.matches(document)
                    {
                        return Candidate::NoMatch;
                    }
                    if page_full {
                        return Candidate::PastThePage;
                    }
                    Candidate::Row(match &document {
                        Some(document) if !select_star => rendered(&query.project(document)),
                        _ => twin.to_json(&presence).map_err(|e| rendering_failed(&e)),
                    })
                });
                match candidate {
                    Ok(Candidate::NoMatch) => true,
                    Ok(Candidate::PastThePage) => {
                        more = true;
                        false
                    }
                    Ok(Candidate::Row(Ok(row))) => {
                        items.push(row);
                        last_key = Some(key.clone());
                        true
                    }
                    Ok(Candidate::Row(Err(e))) | Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            });
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let emitted = token.emitted + items.len();
        let top_reached = query.top().is_some_and(|top| emitted >= top);
        let continuation = (more && !top_reached).then(|| {
            Continuation {
                after: last_key,
                emitted,
                offset: None,
            }
            .encode()
        });
        Ok(Page {
            items,
            continuation,
            item_type,
        })
    }
}

/// What a page makes of one candidate twin.
enum Candidate {
    NoMatch,
    /// A match after the page is full: another page follows.
    PastThePage,
    Row(Result<Box<RawValue>, HubError>),
}

/// One result row as the JSON the page carries.
fn rendered(row: &impl Serialize) -> Result<Box<RawValue>, HubError> {
    serde_json::value::to_raw_value(row).map_err(|e| rendering_failed(&e))
}

fn rendering_failed(error: &serde_json::Error) -> HubError {
    HubError::Rendering(error.to_string())
}
