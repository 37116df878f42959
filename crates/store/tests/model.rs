//! Property: any sequence of batches leaves both backends equal to a `BTreeMap` model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use twinhub_store::{Batch, MemoryStore, Op, RedbStore, Store, Table};

type Model = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

fn table() -> impl Strategy<Value = Table> {
    prop::sample::select(Table::ALL.to_vec())
}

/// Short keys over a tiny alphabet, so batches often touch the same rows.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 255]), 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (table(), key(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(table, key, value)| Op::Put { table, key, value }),
        (table(), key()).prop_map(|(table, key)| Op::Delete { table, key }),
    ]
}

fn batches() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 0..6), 0..8)
}

fn apply_to_model(model: &mut Model, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put { table, key, value } => {
                model.insert((*table, key.clone()), value.clone());
            }
            Op::Delete { table, key } => {
                model.remove(&(*table, key.clone()));
            }
        }
    }
}

fn to_batch(ops: &[Op]) -> Batch {
    let mut batch = Batch::new();
    for op in ops {
        match op {
            Op::Put { table, key, value } => batch.put(*table, key.clone(), value.clone()),
            Op::Delete { table, key } => batch.delete(*table, key.clone()),
        };
    }
    batch
}

/// Submits every batch before awaiting any, then compares each table with the model.
fn check_against_model(store: &dyn Store, batches: &[Vec<Op>]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let pending: Vec<_> = batches
        .iter()
        .map(|ops| store.commit(to_batch(ops)))
        .collect();
    for outcome in pending {
        prop_assert_eq!(runtime.block_on(outcome), Ok(()));
    }
    let mut model = Model::new();
    for ops in batches {
        apply_to_model(&mut model, ops);
    }
    for table in Table::ALL {
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .filter(|((row_table, _), _)| *row_table == table)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect();
        for (key, value) in &expected {
            prop_assert_eq!(store.get(table, key), Ok(Some(value.clone())));
        }
        prop_assert_eq!(store.load(table), Ok(expected));
    }
    Ok(())
}

proptest! {
    #[test]
    fn memory_store_matches_model(batches in batches()) {
        check_against_model(&MemoryStore::new(), &batches)?;
    }
}

proptest! {
    // Each case creates and fsyncs a fresh file, so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn redb_store_matches_model(batches in batches()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("open");
        check_against_model(&store, &batches)?;
    }
}
