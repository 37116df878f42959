//! Queries over twins: the fleet-wide reads behind `POST /devices/query`, job targets and
//! configuration target conditions. Queries see every write acknowledged before they started,
//! because they read the same in-memory records the writes publish.

use std::ops::Bound;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twinhub_query::{Collection, Condition, IndexKey, KeyRange, Query};

use super::index::PathIndex;
use super::{Entry, Hub, HubError, IdentityKey};

/// How a condition is answered from indexes: one index yields candidates in key order, the
/// others only filter them.
struct Plan {
    driver: (Arc<PathIndex>, KeyRange),
    filters: Vec<(Arc<PathIndex>, KeyRange)>,
}

/// What the items of a page are, as IoT Hub labels them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemType {
    Twin,
    DeviceJob,
    Raw,
}

/// One page of results and, when more may follow, the token that continues it.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
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

/// Identities are scanned in chunks so the registry lock is never held while documents are built.
const SCAN_CHUNK: usize = 1024;

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
        let (driver, driver_range) = &plan.driver;
        for key in driver.keys_in(driver_range, after) {
            if !plan
                .filters
                .iter()
                .all(|(index, range)| index.contains(range, &key))
            {
                continue;
            }
            let Some(entry) = self.entry(&key).filter(|e| !e.is_deleted()) else {
                continue;
            };
            if !visit(&key, &entry) {
                return;
            }
        }
    }

    /// The indexes to answer `condition` from: the one selecting the fewest twins drives, the
    /// others filter. `None` when no index applies.
    fn plan(&self, condition: &Condition, modules: bool) -> Option<Plan> {
        let terms = condition.index_terms();
        if terms.is_empty() {
            return None;
        }
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
        let driver = usable.next()?;
        Some(Plan {
            driver,
            filters: usable.collect(),
        })
    }

    /// The indexes of `paths`, filled by one scan of the collection for those that are new.
    fn indexes_for(&self, modules: bool, paths: &[Vec<String>]) -> Vec<Option<Arc<PathIndex>>> {
        self.0.indexes.get_or_create(modules, paths, |visit| {
            self.scan(modules, None, |key, entry| {
                visit(key, &entry.record());
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
        self.matching(condition, modules, false, |key, _| keys.push(key.clone()));
        keys
    }

    /// Visits, in key order, every twin matching `condition` with its document (with
    /// `$metadata` when `metadata` is set or the condition reads it).
    fn matching(
        &self,
        condition: &Condition,
        modules: bool,
        metadata: bool,
        mut visit: impl FnMut(&IdentityKey, Value),
    ) {
        let metadata = metadata || condition.reads_metadata();
        self.candidates(condition, modules, None, |key, entry| {
            let doc = entry.document(metadata);
            if condition.matches(&doc) {
                visit(key, doc);
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
        self.matching(condition, modules, false, |_, _| count += 1);
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
                    .and_then(|entry| index.value_of(&entry.record()).cloned())
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
            return Ok(self.keyed_page(query, max_items, &token, item_type));
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
                        query.reads_metadata() || query.is_select_star(),
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
            items: rows[offset..end].to_vec(),
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
    ) -> Page {
        let modules = query.collection() == Collection::DevicesModules;
        let remaining_top = query.top().map(|top| top.saturating_sub(token.emitted));
        let page_size = remaining_top.map_or(max_items, |r| r.min(max_items));
        let mut items = Vec::new();
        let mut last_key = None;
        let mut more = false;
        if page_size > 0 {
            let condition = query.condition();
            // Rendered once per twin: with `$metadata` when the condition or the row needs it.
            let metadata =
                condition.reads_metadata() || query.is_select_star() || query.reads_metadata();
            self.candidates(condition, modules, token.after.as_ref(), |key, entry| {
                let doc = entry.document(metadata);
                if !condition.is_everything() && !condition.matches(&doc) {
                    return true;
                }
                if items.len() == page_size {
                    more = true;
                    return false;
                }
                items.push(if query.is_select_star() {
                    doc
                } else {
                    query.project(&doc)
                });
                last_key = Some(key.clone());
                true
            });
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
        Page {
            items,
            continuation,
            item_type,
        }
    }
}
