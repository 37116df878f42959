//! The redb backend: conformance, persistence, group commit and open errors.

use std::path::Path;

use twinhub_store::{Batch, OpenError, RedbStore, Store, Table, conformance};

fn open(path: &Path) -> RedbStore {
    match RedbStore::open(path) {
        Ok(store) => store,
        Err(error) => panic!("open {}: {error}", path.display()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_passes_conformance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("store.redb"));
    conformance::run(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_survive_close_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    {
        let store = open(&path);
        let mut batch = Batch::new();
        batch
            .put(Table::Registry, "device-1", "identity")
            .put(Table::Sessions, "device-1", "session")
            .put(Table::Settings, "policy", "settings")
            .put(Table::Registry, "device-2", "gone");
        assert_eq!(store.commit(batch).await, Ok(()));
        let mut removal = Batch::new();
        removal.delete(Table::Registry, "device-2");
        assert_eq!(store.commit(removal).await, Ok(()));
    }
    let store = open(&path);
    assert_eq!(
        store.load(Table::Registry),
        Ok(vec![(b"device-1".to_vec(), b"identity".to_vec())])
    );
    assert_eq!(
        store.get(Table::Sessions, b"device-1"),
        Ok(Some(b"session".to_vec()))
    );
    assert_eq!(
        store.get(Table::Settings, b"policy"),
        Ok(Some(b"settings".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_write_transactions() {
    const COMMITS: usize = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("store.redb"));
    assert_eq!(store.commit_groups(), 0);

    let handles: Vec<_> = (0..COMMITS)
        .map(|index| {
            let mut batch = Batch::new();
            batch.put(Table::Registry, format!("key-{index:03}"), "value");
            tokio::spawn(store.commit(batch))
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.expect("commit task"), Ok(()));
    }

    let groups = store.commit_groups();
    assert!(groups >= 1, "no write transaction was counted");
    assert!(
        groups < COMMITS as u64,
        "{COMMITS} concurrent commits took {groups} write transactions"
    );
    assert_eq!(
        store.load(Table::Registry).map(|rows| rows.len()),
        Ok(COMMITS)
    );
}

#[test]
fn second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let _first = open(&path);
    match RedbStore::open(&path) {
        Err(OpenError::AlreadyOpen { path: reported }) => assert_eq!(reported, path),
        Err(other) => panic!("expected AlreadyOpen, got {other}"),
        Ok(_) => panic!("the file was opened twice"),
    }
}

#[test]
fn a_file_that_is_not_a_store_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).expect("write garbage");
    match RedbStore::open(&path) {
        Err(OpenError::Database { path: reported, .. }) => assert_eq!(reported, path),
        Err(other) => panic!("expected a database error, got {other}"),
        Ok(_) => panic!("garbage was opened as a store"),
    }
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent").join("store.redb");
    assert!(matches!(
        RedbStore::open(&path),
        Err(OpenError::Database { .. })
    ));
}
