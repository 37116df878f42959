//! The embedded backend: one redb file, one writer thread that group-commits pending batches.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::{Batch, CommitError, CommitFuture, LoadError, Op, Row, Store, Table};

/// At most this many batches share one write transaction, so acknowledgements stay prompt.
const MAX_GROUP_BATCHES: usize = 1024;
/// A group stops growing once its keys and values reach this many bytes.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// redb's page cache. The hub keeps every record in memory and reads the store only at start-up,
/// so redb's default (1 GiB) would mostly hold copies of what the hub already has.
const PAGE_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// A table opened for reading; every table maps byte keys to byte values.
type ReadOnlyBytesTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Why [`RedbStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process, or another `RedbStore` of this process, has the file open.
    #[error("store file {path} is already open elsewhere")]
    AlreadyOpen {
        /// The store file.
        path: PathBuf,
    },
    /// redb could not open, check or initialise the file.
    #[error("cannot open store file {path}: {source}")]
    Database {
        /// The store file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
}

/// A batch waiting for the writer, with the channel its outcome is reported on.
struct Submission {
    batch: Batch,
    ack: oneshot::Sender<Result<(), CommitError>>,
}

/// The redb-backed [`Store`]; see the crate documentation and `docs/store-format.md`.
pub struct RedbStore {
    db: Arc<Database>,
    /// `None` once shut down. Commits share the read lock; shutdown takes the write lock, so no
    /// batch can slip in after the writer has been told to stop.
    submissions: RwLock<Option<Sender<Submission>>>,
    /// Held for the whole join, so a second `shutdown` also waits for the writer to finish.
    writer: Mutex<Option<JoinHandle<()>>>,
    commit_groups: Arc<AtomicU64>,
}

impl RedbStore {
    /// Opens (creating if absent) the store file at `path` with every table, and starts the writer.
    ///
    /// The parent directory must exist. The file is integrity-checked on open, so a damaged file
    /// is reported as an error rather than trusted.
    pub fn open(path: &Path) -> Result<RedbStore, OpenError> {
        let db = open_database(path)?;
        let db = Arc::new(db);
        let commit_groups = Arc::new(AtomicU64::new(0));
        let (sender, receiver) = std::sync::mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("twinhub-store-writer".to_owned())
            .spawn({
                let db = Arc::clone(&db);
                let commit_groups = Arc::clone(&commit_groups);
                move || run_writer(&db, &receiver, &commit_groups)
            })
            .map_err(OpenError::WriterThread)?;
        tracing::info!(path = %path.display(), "store opened");
        Ok(RedbStore {
            db,
            submissions: RwLock::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            commit_groups,
        })
    }

    /// Number of write transactions committed so far by the writer (one per group of batches).
    pub fn commit_groups(&self) -> u64 {
        self.commit_groups.load(Ordering::Relaxed)
    }

    /// Runs `read` on `table` within a fresh read transaction (a consistent snapshot).
    fn read<T>(
        &self,
        table: Table,
        read: impl FnOnce(&ReadOnlyBytesTable) -> Result<T, redb::Error>,
    ) -> Result<T, LoadError> {
        let outcome = self
            .db
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(|txn| txn.open_table(definition(table)).map_err(redb::Error::from))
            .and_then(|handle| read(&handle));
        outcome
            .map_err(|error| LoadError::Storage(format!("reading table {}: {error}", table.name())))
    }
}

fn open_database(path: &Path) -> Result<Database, OpenError> {
    let as_open_error = |error: redb::Error| match error {
        redb::Error::DatabaseAlreadyOpen => OpenError::AlreadyOpen {
            path: path.to_owned(),
        },
        source => OpenError::Database {
            path: path.to_owned(),
            source,
        },
    };
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .set_cache_size(PAGE_CACHE_BYTES)
        .create(path)
        .map_err(|error| as_open_error(error.into()))?;
    create_tables(&db).map_err(as_open_error)?;
    Ok(db)
}

/// Creates any table missing from the file, so reads never meet an absent table.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    for table in Table::ALL {
        txn.open_table(definition(table))?;
    }
    txn.commit()?;
    Ok(())
}

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

impl Store for RedbStore {
    fn commit(&self, batch: Batch) -> CommitFuture {
        let (ack, outcome) = oneshot::channel();
        let submitted = match &*self
            .submissions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(sender) => sender.send(Submission { batch, ack }).is_ok(),
            None => false,
        };
        if !submitted {
            return Box::pin(std::future::ready(Err(CommitError::Closed)));
        }
        Box::pin(async move {
            outcome.await.unwrap_or_else(|_| {
                Err(CommitError::Storage(
                    "the store writer stopped before acknowledging the batch".to_owned(),
                ))
            })
        })
    }

    fn scan(&self, table: Table, visit: &mut dyn FnMut(Row)) -> Result<(), LoadError> {
        self.read(table, |handle| {
            for row in handle.iter()? {
                let (key, value) = row?;
                visit((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(())
        })
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError> {
        self.read(table, |handle| {
            Ok(ReadableTable::get(handle, key)?.map(|value| value.value().to_vec()))
        })
    }

    fn shutdown(&self) {
        // Dropping the only sender lets the writer drain the queue and then stop.
        drop(
            self.submissions
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = writer.take() {
            if handle.join().is_err() {
                tracing::error!("the store writer thread panicked");
            } else {
                tracing::info!("store writer stopped");
            }
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The writer loop: block for a batch, gather those already queued, commit them together, ack.
fn run_writer(db: &Database, submissions: &Receiver<Submission>, commit_groups: &AtomicU64) {
    while let Ok(first) = submissions.recv() {
        let group = gather_group(first, submissions);
        let outcome = write_group(db, &group).map_err(|error| {
            tracing::error!(%error, batches = group.len(), "store commit failed");
            CommitError::Storage(error.to_string())
        });
        if outcome.is_ok() {
            commit_groups.fetch_add(1, Ordering::Relaxed);
        }
        for submission in group {
            // A committer that dropped its future no longer wants the outcome; the batch stands.
            let _ = submission.ack.send(outcome.clone());
        }
    }
}

/// `first` plus every batch already queued, within the group bounds, in submission order.
fn gather_group(first: Submission, submissions: &Receiver<Submission>) -> Vec<Submission> {
    let mut bytes = first.batch.payload_len();
    let mut group = vec![first];
    while group.len() < MAX_GROUP_BATCHES && bytes < MAX_GROUP_BYTES {
        match submissions.try_recv() {
            Ok(next) => {
                bytes += next.batch.payload_len();
                group.push(next);
            }
            Err(_) => break,
        }
    }
    group
}

/// Applies every batch of the group in one write transaction and commits it with an fsync.
fn write_group(db: &Database, group: &[Submission]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut tables = Table::ALL
            .iter()
            .map(|table| txn.open_table(definition(*table)))
            .collect::<Result<Vec<_>, _>>()?;
        for op in group.iter().flat_map(|submission| submission.batch.ops()) {
            match op {
                Op::Put { table, key, value } => {
                    tables[*table as usize].insert(key.as_slice(), value.as_slice())?;
                }
                Op::Delete { table, key } => {
                    tables[*table as usize].remove(key.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}
