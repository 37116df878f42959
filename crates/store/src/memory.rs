//! An in-memory [`Store`] with the same semantics as the durable backends, for tests.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{Batch, CommitError, CommitFuture, LoadError, Op, Row, Store, Table};

/// A [`Store`] kept in memory: "durable" means applied. For tests of other crates.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tables: [BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()],
    closed: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation completes under the lock without panicking, so a poisoned lock still
        // guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn commit(&self, batch: Batch) -> CommitFuture {
        let outcome = {
            let mut state = self.state();
            if state.closed {
                Err(CommitError::Closed)
            } else {
                for op in batch.into_ops() {
                    match op {
                        Op::Put { table, key, value } => {
                            state.tables[table as usize].insert(key, value);
                        }
                        Op::Delete { table, key } => {
                            state.tables[table as usize].remove(&key);
                        }
                    }
                }
                Ok(())
            }
        };
        Box::pin(std::future::ready(outcome))
    }

    fn scan(&self, table: Table, visit: &mut dyn FnMut(Row)) -> Result<(), LoadError> {
        for (key, value) in &self.state().tables[table as usize] {
            visit((key.clone(), value.clone()));
        }
        Ok(())
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError> {
        Ok(self.state().tables[table as usize].get(key).cloned())
    }

    fn shutdown(&self) {
        self.state().closed = true;
    }
}
