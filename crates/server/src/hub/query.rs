//! Queries over twins: the fleet-wide reads behind `POST /devices/query`, job targets and
//! configuration target conditions. Queries see every write acknowledged before they started,
//! because they read the same in-memory records the writes publish.

use std::ops::Bound;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twinhub_query::{Collection, Condition, Query};

use super::{Entry, Hub, HubError, IdentityKey};

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

    /// The device (or module) twins matching a condition, in key order.
    pub fn query_identities(&self, condition: &Condition, modules: bool) -> Vec<IdentityKey> {
        let mut keys = Vec::new();
        self.scan(modules, None, |key, entry| {
            if condition.is_everything() || condition.matches(&entry.document()) {
                keys.push(key.clone());
            }
            true
        });
        keys
    }

    /// Counts the twins a query's condition matches (configuration metrics).
    pub(crate) fn count_matching(&self, query: &Query) -> u64 {
        let modules = query.collection() == Collection::DevicesModules;
        let mut count = 0;
        self.scan(modules, None, |_, entry| {
            if query.condition().matches(&entry.document()) {
                count += 1;
            }
            true
        });
        count
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
            collection => {
                let mut docs = Vec::new();
                self.scan(
                    collection == Collection::DevicesModules,
                    None,
                    |_, entry| {
                        let doc = entry.document();
                        if query.condition().matches(&doc) {
                            docs.push(doc);
                        }
                        true
                    },
                );
                query.execute(docs.iter().map(Arc::as_ref))
            }
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
            self.scan(modules, token.after.as_ref(), |key, entry| {
                let doc = entry.document();
                if !query.condition().matches(&doc) {
                    return true;
                }
                if items.len() == page_size {
                    more = true;
                    return false;
                }
                items.push(query.project(&doc));
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
