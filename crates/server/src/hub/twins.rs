//! Twin reads and writes: the service's tags/desired updates and the device's reported patches.

use std::sync::Arc;

use serde_json::{Map, Value};
use twinhub_core::time::Timestamp;
use twinhub_core::twin::ServiceUpdate;

use super::{Hub, HubError, IdentityKey, IfMatch, Record};

impl Hub {
    /// Applies a service-side update (tags and/or desired, patch or replace). Connected devices
    /// subscribed to desired patches are notified, and configurations re-evaluated for the twin,
    /// before this returns.
    pub async fn update_twin(
        &self,
        key: &IdentityKey,
        update: ServiceUpdate,
        if_match: &IfMatch,
    ) -> Result<Arc<Record>, HubError> {
        let written = self.write_twin(key, update, if_match).await?;
        self.reconcile_after_write(key).await;
        Ok(self.entry(key).map_or(written, |e| e.record()))
    }

    async fn write_twin(
        &self,
        key: &IdentityKey,
        update: ServiceUpdate,
        if_match: &IfMatch,
    ) -> Result<Arc<Record>, HubError> {
        let entry = self.existing(key)?;
        let _write = entry.write.lock().await;
        if entry.is_deleted() {
            return Err(Self::not_found(key));
        }
        let current = entry.record();
        if_match.check(&current.twin.etag())?;
        let mut record = (*current).clone();
        let notification = record.twin.apply_service_update(update, Timestamp::now())?;
        if record.twin.version == current.twin.version {
            return Ok(current);
        }
        let record = self.persist(&entry, record).await?;
        self.0.metrics.twin_updates.inc();
        if let Some(mut patch) = notification {
            let version = record.twin.desired.version();
            patch.insert("$version".into(), Value::from(version));
            self.0
                .sessions
                .notify_desired(key, version, &Value::Object(patch));
        }
        Ok(record)
    }

    /// Merges a device's reported patch; returns the new reported `$version`. Configurations
    /// whose targets read reported properties are re-evaluated for the twin.
    pub async fn patch_reported(
        &self,
        key: &IdentityKey,
        patch: &Map<String, Value>,
    ) -> Result<i64, HubError> {
        let version = self.write_reported(key, patch).await?;
        self.reconcile_after_write(key).await;
        Ok(version)
    }

    async fn write_reported(
        &self,
        key: &IdentityKey,
        patch: &Map<String, Value>,
    ) -> Result<i64, HubError> {
        let entry = self.existing(key)?;
        let _write = entry.write.lock().await;
        if entry.is_deleted() {
            return Err(Self::not_found(key));
        }
        let mut record = (*entry.record()).clone();
        record.twin.patch_reported(patch, Timestamp::now())?;
        let record = self.persist(&entry, record).await?;
        self.0.metrics.twin_updates.inc();
        Ok(record.twin.reported.version())
    }

    /// The twin as a device sees it: `{"desired": {..., "$version"}, "reported": {..., "$version"}}`.
    pub fn device_twin_document(&self, key: &IdentityKey) -> Result<Value, HubError> {
        let record = self.existing(key)?.record();
        self.0.metrics.twin_reads.inc();
        let mut doc = Map::new();
        doc.insert("desired".into(), record.twin.desired.to_json(false));
        doc.insert("reported".into(), record.twin.reported.to_json(false));
        Ok(Value::Object(doc))
    }

    /// Records the IoT Plug and Play model id a device announced when it connected.
    pub(crate) async fn set_model_id(
        &self,
        key: &IdentityKey,
        model_id: Option<String>,
    ) -> Result<(), HubError> {
        let entry = self.existing(key)?;
        if entry.record().twin.model_id == model_id {
            return Ok(());
        }
        let _write = entry.write.lock().await;
        let mut record = (*entry.record()).clone();
        record.twin.model_id = model_id;
        self.persist(&entry, record).await.map(drop)
    }
}
