//! The durable store behind twinhub: atomic, durable batches of puts and deletes over a few named
//! tables, full-table loads at start-up and point reads.
//!
//! Values (and keys) are opaque bytes: what they mean is the caller's business. [`RedbStore`] is
//! the embedded backend (one redb file, group commit); [`MemoryStore`] has the same semantics in
//! memory for other crates' tests; [`conformance::run`] checks any backend against the contract.

pub mod conformance;
mod memory;
mod redb_store;

use std::future::Future;
use std::pin::Pin;

pub use memory::MemoryStore;
pub use redb_store::{OpenError, RedbStore};

/// A named table of the store; each backend keeps one physical table per variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Device and module identities.
    Registry,
    /// Persistent MQTT session state.
    Sessions,
    /// Hub-wide settings.
    Settings,
    /// Automatic device management configurations.
    Configurations,
    /// Scheduled jobs.
    Jobs,
    /// Per-device records of scheduled jobs.
    DeviceJobs,
    /// Metadata of hosted firmware packages (their bytes are files beside the store).
    Firmware,
}

impl Table {
    /// Every table, in declaration order (so `Table::ALL[t as usize] == t`).
    pub const ALL: [Table; 7] = [
        Table::Registry,
        Table::Sessions,
        Table::Settings,
        Table::Configurations,
        Table::Jobs,
        Table::DeviceJobs,
        Table::Firmware,
    ];

    /// The table's stable on-disk name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Registry => "registry",
            Table::Sessions => "sessions",
            Table::Settings => "settings",
            Table::Configurations => "configurations",
            Table::Jobs => "jobs",
            Table::DeviceJobs => "device-jobs",
            Table::Firmware => "firmware",
        }
    }
}

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`, replacing any previous value.
    Put {
        /// The table written.
        table: Table,
        /// The row's key.
        key: Vec<u8>,
        /// The row's new value.
        value: Vec<u8>,
    },
    /// Removes `key`; removing an absent key is not an error.
    Delete {
        /// The table written.
        table: Table,
        /// The row's key.
        key: Vec<u8>,
    },
}

impl Op {
    /// Bytes of key and value carried by this operation.
    fn payload_len(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
        }
    }
}

/// Operations applied atomically, in order: a later operation on the same key wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends a put of `key` = `value` in `table`.
    pub fn put(
        &mut self,
        table: Table,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(Op::Put {
            table,
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Appends a delete of `key` in `table`.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete {
            table,
            key: key.into(),
        });
        self
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The operations, in application order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Consumes the batch into its operations, in application order.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Bytes of keys and values carried by the batch (bounds the size of a commit group).
    fn payload_len(&self) -> usize {
        self.ops.iter().map(Op::payload_len).sum()
    }
}

/// Why a batch was not made durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The store was shut down before the batch was submitted; nothing was written.
    #[error("the store is shut down")]
    Closed,
    /// The backend failed; the batch must be assumed not durable.
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Why a read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The backend failed to read.
    #[error("storage failure: {0}")]
    Storage(String),
}

/// One row of a table: its key and its value.
pub type Row = (Vec<u8>, Vec<u8>);

/// Resolves once a committed batch is durable, or with the reason it is not.
pub type CommitFuture = Pin<Box<dyn Future<Output = Result<(), CommitError>> + Send>>;

/// A durable key-value store over the tables of [`Table`].
///
/// Object-safe so backends can be swapped at run time (`Arc<dyn Store>`).
///
/// Contract (checked by [`conformance::run`]):
/// - A batch is submitted when [`Store::commit`] is called, not when its future is polled, so the
///   order of `commit` calls is the order in which batches are applied, and dropping the future
///   does not withdraw the batch.
/// - A batch is applied atomically: a reader sees all of it or none of it.
/// - Reads remain available after [`Store::shutdown`], until the store is dropped.
pub trait Store: Send + Sync + 'static {
    /// Applies the batch atomically. The future resolves Ok only once the batch is durable on disk.
    fn commit(&self, batch: Batch) -> CommitFuture;
    /// Visits every row of a table in key order, one at a time, so a caller can work on rows
    /// while later ones are still being read. `visit` must not call back into the store.
    fn scan(&self, table: Table, visit: &mut dyn FnMut(Row)) -> Result<(), LoadError>;
    /// Every row of a table in key order (used once at start-up).
    fn load(&self, table: Table) -> Result<Vec<Row>, LoadError> {
        let mut rows = Vec::new();
        self.scan(table, &mut |row| rows.push(row))?;
        Ok(rows)
    }
    /// Point read.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError>;
    /// Stops accepting batches, finishes and acknowledges every batch already submitted, then returns.
    ///
    /// Calling it again is a no-op; later commits resolve to [`CommitError::Closed`].
    fn shutdown(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_each_table_at_its_discriminant() {
        for (position, table) in Table::ALL.iter().enumerate() {
            assert_eq!(*table as usize, position);
        }
    }

    #[test]
    fn table_names_are_distinct() {
        let mut names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Table::ALL.len());
    }

    #[test]
    fn batch_records_ops_in_order() {
        let mut batch = Batch::new();
        assert!(batch.is_empty());
        batch
            .put(Table::Registry, "k", b"v".to_vec())
            .delete(Table::Settings, vec![1, 2]);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.payload_len(), 1 + 1 + 2);
        assert_eq!(
            batch.into_ops(),
            vec![
                Op::Put {
                    table: Table::Registry,
                    key: b"k".to_vec(),
                    value: b"v".to_vec()
                },
                Op::Delete {
                    table: Table::Settings,
                    key: vec![1, 2]
                },
            ]
        );
    }
}
