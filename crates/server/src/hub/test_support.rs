//! What the hub's own tests share: a hub opened the way a server opens it.

use std::sync::Arc;

use twinhub_store::{MemoryStore, Store};

use crate::hub::{Hub, HubSettings, JobLimits};
use crate::metrics::Metrics;

/// A hub over an empty in-memory store, with its start-up writes done.
pub(crate) async fn open_hub() -> Hub {
    open_hub_with(Arc::new(MemoryStore::new()), JobLimits::default()).await
}

/// A hub over `store` with these job limits, with its start-up writes done.
pub(crate) async fn open_hub_with(store: Arc<dyn Store>, jobs: JobLimits) -> Hub {
    open_hub_with_settings(
        store,
        HubSettings {
            hostname: "hub.test".into(),
            sas_skew_secs: 300,
            max_modules_per_device: 50,
            max_configurations: 100,
            configuration_twins_per_second: 1000,
            jobs,
        },
    )
    .await
}

/// A hub over `store` with `settings`, with its start-up writes done.
pub(crate) async fn open_hub_with_settings(store: Arc<dyn Store>, settings: HubSettings) -> Hub {
    let (hub, startup) =
        Hub::open(settings, store, None, Arc::new(Metrics::default())).expect("the hub opens");
    if let Some(batch) = startup {
        hub.commit_startup(batch).await.expect("startup writes");
    }
    hub
}
