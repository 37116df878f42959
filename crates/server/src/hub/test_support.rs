//! What the hub's own tests share: a hub on an in-memory store.

use std::sync::Arc;

use twinhub_store::MemoryStore;

use crate::hub::{Hub, HubSettings, JobLimits};
use crate::metrics::Metrics;

/// A hub over an empty in-memory store, with its start-up writes done.
pub(crate) async fn open_hub() -> Hub {
    let settings = HubSettings {
        hostname: "hub.test".into(),
        sas_skew_secs: 300,
        max_modules_per_device: 50,
        max_configurations: 100,
        configuration_twins_per_second: 1000,
        jobs: JobLimits::default(),
    };
    let (hub, startup) = Hub::open(
        settings,
        Arc::new(MemoryStore::new()),
        None,
        Arc::new(Metrics::default()),
    )
    .expect("the hub opens");
    if let Some(batch) = startup {
        hub.commit_startup(batch).await.expect("startup writes");
    }
    hub
}
