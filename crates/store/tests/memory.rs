//! The shared behavioural suite against the in-memory backend.

use twinhub_store::{MemoryStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_conformance() {
    conformance::run(&MemoryStore::new()).await;
}
