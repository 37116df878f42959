//! The behavioural suite every [`Store`] backend must pass.
//!
//! This is test support: it reports a violation by panicking (`assert!`), so call it from a test.
//! It must run inside a tokio runtime (it spawns the commit futures as tasks).

use tokio::task::JoinHandle;

use crate::{Batch, CommitError, Row, Store, Table};

/// Runs the whole suite against `store`, which must be empty and is left shut down.
///
/// # Panics
///
/// On any violation of the [`Store`] contract, and when called outside a tokio runtime.
pub async fn run(store: &dyn Store) {
    starts_empty(store);
    put_get_overwrite_delete(store).await;
    tables_are_separate(store).await;
    ops_within_a_batch_apply_in_order(store).await;
    empty_batch_commits(store).await;
    batches_apply_in_submission_order(store).await;
    dropped_commit_future_still_commits(store).await;
    load_returns_rows_in_key_order(store).await;
    readers_see_a_batch_whole_or_not_at_all(store).await;
    concurrent_committers_are_all_acknowledged(store).await;
    shutdown_finishes_submitted_batches_then_refuses(store).await;
}

/// A batch built by `build`.
fn batch(build: impl FnOnce(&mut Batch) -> &mut Batch) -> Batch {
    let mut built = Batch::new();
    build(&mut built);
    built
}

async fn commit(store: &dyn Store, batch: Batch) {
    let outcome = store.commit(batch).await;
    assert_eq!(outcome, Ok(()), "commit failed");
}

fn get(store: &dyn Store, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    match store.get(table, key) {
        Ok(value) => value,
        Err(error) => panic!("get failed: {error}"),
    }
}

fn load(store: &dyn Store, table: Table) -> Vec<Row> {
    match store.load(table) {
        Ok(rows) => rows,
        Err(error) => panic!("load failed: {error}"),
    }
}

/// Rows of `table` whose key starts with `prefix`.
fn load_prefixed(store: &dyn Store, table: Table, prefix: &[u8]) -> Vec<Row> {
    load(store, table)
        .into_iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .collect()
}

async fn join_all(handles: Vec<JoinHandle<Result<(), CommitError>>>) {
    for handle in handles {
        match handle.await {
            Ok(outcome) => assert_eq!(outcome, Ok(()), "concurrent commit failed"),
            Err(error) => panic!("commit task failed: {error}"),
        }
    }
}

fn starts_empty(store: &dyn Store) {
    for table in Table::ALL {
        assert!(load(store, table).is_empty(), "{table:?} is not empty");
        assert_eq!(get(store, table, b"absent"), None);
    }
}

async fn put_get_overwrite_delete(store: &dyn Store) {
    let table = Table::Registry;
    commit(store, batch(|b| b.put(table, "basic", "one"))).await;
    assert_eq!(get(store, table, b"basic"), Some(b"one".to_vec()));

    commit(store, batch(|b| b.put(table, "basic", "two"))).await;
    assert_eq!(get(store, table, b"basic"), Some(b"two".to_vec()));

    commit(store, batch(|b| b.delete(table, "basic"))).await;
    assert_eq!(get(store, table, b"basic"), None);

    // Deleting an absent key is not an error.
    commit(store, batch(|b| b.delete(table, "basic"))).await;

    // Empty keys and values, and arbitrary bytes, are ordinary data.
    commit(
        store,
        batch(|b| {
            b.put(table, Vec::new(), Vec::new())
                .put(table, vec![0, 255, 128], vec![255; 3])
        }),
    )
    .await;
    assert_eq!(get(store, table, b""), Some(Vec::new()));
    assert_eq!(get(store, table, &[0, 255, 128]), Some(vec![255; 3]));
    commit(
        store,
        batch(|b| b.delete(table, Vec::new()).delete(table, vec![0, 255, 128])),
    )
    .await;
    assert!(load(store, table).is_empty());
}

async fn tables_are_separate(store: &dyn Store) {
    let mut everywhere = Batch::new();
    for table in Table::ALL {
        everywhere.put(table, "shared", table.name());
    }
    commit(store, everywhere).await;
    for table in Table::ALL {
        assert_eq!(
            get(store, table, b"shared"),
            Some(table.name().as_bytes().to_vec())
        );
    }
    commit(store, batch(|b| b.delete(Table::Sessions, "shared"))).await;
    assert_eq!(get(store, Table::Sessions, b"shared"), None);
    assert!(get(store, Table::Registry, b"shared").is_some());
    assert!(get(store, Table::Settings, b"shared").is_some());

    let mut cleanup = Batch::new();
    for table in Table::ALL {
        cleanup.delete(table, "shared");
    }
    commit(store, cleanup).await;
}

async fn ops_within_a_batch_apply_in_order(store: &dyn Store) {
    let table = Table::Settings;
    commit(
        store,
        batch(|b| {
            b.put(table, "put-then-delete", "x")
                .delete(table, "put-then-delete")
                .delete(table, "delete-then-put")
                .put(table, "delete-then-put", "kept")
                .put(table, "put-twice", "first")
                .put(table, "put-twice", "second")
        }),
    )
    .await;
    assert_eq!(get(store, table, b"put-then-delete"), None);
    assert_eq!(
        get(store, table, b"delete-then-put"),
        Some(b"kept".to_vec())
    );
    assert_eq!(get(store, table, b"put-twice"), Some(b"second".to_vec()));
}

async fn empty_batch_commits(store: &dyn Store) {
    commit(store, Batch::new()).await;
}

async fn batches_apply_in_submission_order(store: &dyn Store) {
    let table = Table::Settings;
    // Both batches are submitted before either is awaited; the later submission must win.
    let first = store.commit(batch(|b| b.put(table, "ordered", "first")));
    let second = store.commit(batch(|b| b.put(table, "ordered", "second")));
    assert_eq!(second.await, Ok(()));
    assert_eq!(first.await, Ok(()));
    assert_eq!(get(store, table, b"ordered"), Some(b"second".to_vec()));
}

async fn dropped_commit_future_still_commits(store: &dyn Store) {
    let table = Table::Settings;
    drop(store.commit(batch(|b| b.put(table, "dropped-future", "kept"))));
    // The later batch is acknowledged only after every earlier one is applied.
    commit(store, batch(|b| b.put(table, "after-dropped", "kept"))).await;
    assert_eq!(get(store, table, b"dropped-future"), Some(b"kept".to_vec()));
}

async fn load_returns_rows_in_key_order(store: &dyn Store) {
    let table = Table::Registry;
    let keys: [&[u8]; 8] = [
        b"order-b",
        b"order-a\xff",
        b"order-",
        b"order-a",
        b"order-\x00",
        b"order-aa",
        b"order-\xff",
        b"order-B",
    ];
    let mut shuffled = Batch::new();
    for (index, key) in keys.iter().enumerate() {
        shuffled.put(table, *key, index.to_string());
    }
    commit(store, shuffled).await;

    let mut expected: Vec<Row> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| (key.to_vec(), index.to_string().into_bytes()))
        .collect();
    expected.sort();
    assert_eq!(load(store, table), expected);
    let mut scanned = Vec::new();
    store
        .scan(table, &mut |row| scanned.push(row))
        .expect("scan succeeds");
    assert_eq!(
        scanned, expected,
        "scan visits the rows load returns, in order"
    );

    let mut cleanup = Batch::new();
    for key in keys {
        cleanup.delete(table, key);
    }
    commit(store, cleanup).await;
    assert!(load(store, table).is_empty());
}

async fn readers_see_a_batch_whole_or_not_at_all(store: &dyn Store) {
    let table = Table::Sessions;
    let handles: Vec<_> = (0..64u32)
        .map(|round| {
            let value = round.to_string();
            let pair = batch(|b| {
                b.put(table, "pair-left", value.clone())
                    .put(table, "pair-right", value)
            });
            tokio::spawn(store.commit(pair))
        })
        .collect();
    let check = || {
        let rows = load_prefixed(store, table, b"pair-");
        match rows.as_slice() {
            [] => {}
            [(_, left), (_, right)] => assert_eq!(left, right, "a batch was seen half-applied"),
            other => panic!("unexpected rows {other:?}"),
        }
    };
    while !handles.iter().all(JoinHandle::is_finished) {
        check();
        tokio::task::yield_now().await;
    }
    join_all(handles).await;
    check();
    let rows = load_prefixed(store, table, b"pair-");
    assert_eq!(
        rows,
        vec![
            (b"pair-left".to_vec(), b"63".to_vec()),
            (b"pair-right".to_vec(), b"63".to_vec())
        ]
    );
}

async fn concurrent_committers_are_all_acknowledged(store: &dyn Store) {
    const COMMITTERS: usize = 256;
    let table = Table::Registry;
    let handles: Vec<_> = (0..COMMITTERS)
        .map(|index| {
            let row = batch(|b| b.put(table, format!("concurrent-{index:04}"), index.to_string()));
            tokio::spawn(store.commit(row))
        })
        .collect();
    join_all(handles).await;
    for index in 0..COMMITTERS {
        let key = format!("concurrent-{index:04}");
        assert_eq!(
            get(store, table, key.as_bytes()),
            Some(index.to_string().into_bytes())
        );
    }
    assert_eq!(
        load_prefixed(store, table, b"concurrent-").len(),
        COMMITTERS
    );
}

async fn shutdown_finishes_submitted_batches_then_refuses(store: &dyn Store) {
    const PENDING: usize = 32;
    let table = Table::Settings;
    let pending: Vec<_> = (0..PENDING)
        .map(|index| {
            store.commit(batch(|b| {
                b.put(table, format!("pending-{index:02}"), "kept")
            }))
        })
        .collect();
    store.shutdown();
    for outcome in pending {
        assert_eq!(
            outcome.await,
            Ok(()),
            "a batch submitted before shutdown failed"
        );
    }
    assert_eq!(load_prefixed(store, table, b"pending-").len(), PENDING);

    let refused = store.commit(batch(|b| b.put(table, "after-shutdown", "lost")));
    assert_eq!(refused.await, Err(CommitError::Closed));
    assert_eq!(get(store, table, b"after-shutdown"), None);

    store.shutdown();
    let refused_again = store.commit(Batch::new());
    assert_eq!(refused_again.await, Err(CommitError::Closed));
}
