//! The identity registry: devices and modules, their keys, status and etags.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use twinhub_core::identity::{
    self, AuthType, Authentication, DeviceStatus, Identity, SymmetricKey, X509Thumbprint,
};
use twinhub_core::ids;
use twinhub_core::time::Timestamp;
use twinhub_core::twin::Twin;
use twinhub_store::{Batch, Table};

use super::{Entry, Hub, HubError, IdentityKey, IfMatch, Presence, Record, encode_record};

/// The writable fields of an identity, as a create or update request gives them.
#[derive(Clone, Debug)]
pub struct IdentitySpec {
    pub key: IdentityKey,
    pub status: DeviceStatus,
    pub status_reason: Option<String>,
    pub auth_type: AuthType,
    /// `None` or empty: the hub generates a key.
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
    pub primary_thumbprint: Option<String>,
    pub secondary_thumbprint: Option<String>,
    pub iot_edge: bool,
    pub device_scope: Option<String>,
    pub parent_scopes: Vec<String>,
    pub managed_by: Option<String>,
}

impl IdentitySpec {
    /// A SAS device with generated keys, as a back end creates one when it passes nothing else.
    pub fn sas_device(device_id: impl Into<String>) -> Self {
        Self {
            key: IdentityKey::device(device_id),
            status: DeviceStatus::Enabled,
            status_reason: None,
            auth_type: AuthType::Sas,
            primary_key: None,
            secondary_key: None,
            primary_thumbprint: None,
            secondary_thumbprint: None,
            iot_edge: false,
            device_scope: None,
            parent_scopes: Vec::new(),
            managed_by: None,
        }
    }

    fn validate(&self) -> Result<(), HubError> {
        ids::validate_device_id(&self.key.device_id)
            .map_err(|e| HubError::InvalidArgument(format!("invalid deviceId: {e}")))?;
        if let Some(module_id) = &self.key.module_id {
            ids::validate_module_id(module_id)
                .map_err(|e| HubError::InvalidArgument(format!("invalid moduleId: {e}")))?;
        }
        if let Some(reason) = &self.status_reason
            && reason.chars().count() > 128
        {
            return Err(HubError::InvalidArgument(
                "statusReason is longer than 128 characters".into(),
            ));
        }
        Ok(())
    }

    /// Resolves keys and thumbprints into what is stored, generating what is missing.
    /// The identity this spec creates at `now`.
    pub(crate) fn new_identity(&self, now: Timestamp) -> Result<Identity, HubError> {
        Ok(Identity {
            device_id: self.key.device_id.clone(),
            module_id: self.key.module_id.clone(),
            generation_id: identity::generate_generation_id(now),
            etag_version: 1,
            status: self.status,
            status_reason: self.status_reason.clone(),
            status_updated: now,
            authentication: self.authentication()?,
            iot_edge: self.iot_edge,
            device_scope: self.device_scope.clone(),
            parent_scopes: self.parent_scopes.clone(),
            managed_by: self.managed_by.clone(),
        })
    }

    fn authentication(&self) -> Result<Authentication, HubError> {
        let key = |given: &Option<String>, which: &str| -> Result<String, HubError> {
            match given.as_deref().map(str::trim) {
                None | Some("") => Ok(identity::generate_symmetric_key()),
                Some(k) => {
                    identity::validate_symmetric_key(k).map_err(|e| {
                        HubError::InvalidArgument(format!("invalid {which} symmetric key: {e}"))
                    })?;
                    Ok(k.to_owned())
                }
            }
        };
        let thumbprint =
            |given: &Option<String>, which: &str| -> Result<Option<String>, HubError> {
                match given.as_deref().map(str::trim) {
                    None | Some("") => Ok(None),
                    Some(t) => identity::normalize_thumbprint(t).map(Some).ok_or_else(|| {
                        HubError::InvalidArgument(format!(
                            "invalid {which} thumbprint: expected 40 or 64 hexadecimal characters"
                        ))
                    }),
                }
            };
        let symmetric_key = match self.auth_type {
            AuthType::Sas => SymmetricKey {
                primary_key: key(&self.primary_key, "primary")?,
                secondary_key: key(&self.secondary_key, "secondary")?,
            },
            _ => SymmetricKey {
                primary_key: String::new(),
                secondary_key: String::new(),
            },
        };
        let x509_thumbprint = X509Thumbprint {
            primary: thumbprint(&self.primary_thumbprint, "primary")?,
            secondary: thumbprint(&self.secondary_thumbprint, "secondary")?,
        };
        if self.auth_type == AuthType::SelfSigned && x509_thumbprint.primary.is_none() {
            return Err(HubError::InvalidArgument(
                "a selfSigned device needs a primaryThumbprint".into(),
            ));
        }
        Ok(Authentication {
            auth_type: self.auth_type,
            symmetric_key,
            x509_thumbprint,
        })
    }
}

/// Counts for `GET /statistics/devices`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegistryStatistics {
    pub total: u64,
    pub enabled: u64,
    pub disabled: u64,
}

/// The result of one entry of a bulk registry operation.
#[derive(Debug)]
pub struct BulkOutcome {
    pub key: IdentityKey,
    pub result: Result<(), HubError>,
}

impl Hub {
    /// Creates a device or module; fails if it exists.
    pub async fn create_identity(&self, spec: IdentitySpec) -> Result<Arc<Record>, HubError> {
        spec.validate()?;
        let structure = self.0.structure.lock().await;
        let record = self.new_record(&spec)?;
        let mut batch = Batch::new();
        let bytes = encode_record(&record)?;
        batch.put(Table::Registry, spec.key.store_key(), bytes.clone());
        self.0
            .store
            .commit(batch)
            .await
            .map_err(HubError::storage)?;
        let entry = Entry::new(bytes.into_boxed_slice(), &record);
        self.0
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.key.clone(), entry);
        self.0.indexes.record_change(&spec.key, Some(&record));
        let record = Arc::new(record);
        self.count_registered();
        drop(structure);
        self.reconcile_after_write(&spec.key).await;
        Ok(self.entry(&spec.key).map_or(record, |e| e.record()))
    }

    /// Checks that `spec` may be created now and builds its record.
    fn new_record(&self, spec: &IdentitySpec) -> Result<Record, HubError> {
        if let Some(existing) = self.entry(&spec.key).filter(|e| !e.is_deleted()) {
            drop(existing);
            return Err(match &spec.key.module_id {
                Some(_) => HubError::ModuleAlreadyExists(spec.key.clone()),
                None => HubError::DeviceAlreadyExists(spec.key.device_id.clone()),
            });
        }
        if spec.key.module_id.is_some() {
            self.existing(&IdentityKey::device(spec.key.device_id.clone()))?;
            let modules = self.module_keys(&spec.key.device_id).len();
            if modules >= self.0.settings.max_modules_per_device {
                return Err(HubError::TooManyModules(
                    self.0.settings.max_modules_per_device,
                ));
            }
        }
        let now = Timestamp::now();
        Ok(Record {
            identity: spec.new_identity(now)?,
            twin: Twin::new(now),
            configurations: Default::default(),
            configured_paths: Default::default(),
        })
    }

    /// Replaces the writable fields of an existing identity.
    pub async fn update_identity(
        &self,
        spec: IdentitySpec,
        if_match: &IfMatch,
    ) -> Result<Arc<Record>, HubError> {
        spec.validate()?;
        let entry = self.existing(&spec.key)?;
        let _write = entry.write.lock().await;
        if entry.is_deleted() {
            return Err(Self::not_found(&spec.key));
        }
        let current = entry.record();
        if_match.check(&current.identity.etag())?;
        let mut record = (*current).clone();
        let now = Timestamp::now();
        let identity = &mut record.identity;
        if identity.status != spec.status {
            identity.status_updated = now;
        }
        identity.status = spec.status;
        identity.status_reason = spec.status_reason.clone();
        identity.authentication = spec.authentication()?;
        identity.iot_edge = spec.iot_edge;
        identity.device_scope = spec.device_scope.clone();
        identity.parent_scopes = spec.parent_scopes.clone();
        if spec.managed_by.is_some() {
            identity.managed_by = spec.managed_by.clone();
        }
        identity.etag_version += 1;
        let credentials_changed = identity.authentication != current.identity.authentication
            || identity.status == DeviceStatus::Disabled;
        let record = self.persist(&entry, record).await?;
        if credentials_changed {
            // A disabled device, or one whose keys were rotated, must authenticate again.
            self.0
                .sessions
                .close_identity(&spec.key, "identity disabled or credentials changed");
            if spec.key.module_id.is_none() && record.identity.status == DeviceStatus::Disabled {
                for module in self.module_keys(&spec.key.device_id) {
                    self.0.sessions.close_identity(&module, "device disabled");
                }
            }
        }
        self.count_registered();
        Ok(record)
    }

    /// Deletes a device (with its modules) or a module.
    pub async fn delete_identity(
        &self,
        key: &IdentityKey,
        if_match: &IfMatch,
    ) -> Result<(), HubError> {
        let _structure = self.0.structure.lock().await;
        let entry = self.existing(key)?;
        let _write = entry.write.lock().await;
        if_match.check(&entry.record().identity.etag())?;
        let mut doomed = vec![key.clone()];
        if key.module_id.is_none() {
            doomed.extend(self.module_keys(&key.device_id));
        }
        let mut batch = Batch::new();
        for k in &doomed {
            batch.delete(Table::Registry, k.store_key());
        }
        self.0.sessions.forget(&doomed, &mut batch);
        self.0
            .store
            .commit(batch)
            .await
            .map_err(HubError::storage)?;
        {
            let mut entries = self.0.entries.write().unwrap_or_else(|e| e.into_inner());
            for k in &doomed {
                if let Some(e) = entries.remove(k) {
                    e.deleted.store(true, Ordering::Release);
                }
            }
        }
        for k in &doomed {
            self.0.indexes.record_change(k, None);
        }
        for k in &doomed {
            self.0.sessions.close_identity(k, "identity deleted");
        }
        self.count_registered();
        Ok(())
    }

    pub fn get_identity(&self, key: &IdentityKey) -> Result<(Arc<Record>, Presence), HubError> {
        let entry = self.existing(key)?;
        Ok((entry.record(), entry.presence()))
    }

    /// Up to `top` devices in id order.
    pub fn list_devices(&self, top: usize) -> Vec<(Arc<Record>, Presence)> {
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|(k, _)| k.module_id.is_none())
            .take(top)
            .map(|(_, e)| (e.record(), e.presence()))
            .collect()
    }

    pub fn list_modules(&self, device_id: &str) -> Result<Vec<(Arc<Record>, Presence)>, HubError> {
        self.existing(&IdentityKey::device(device_id))?;
        Ok(self
            .module_keys(device_id)
            .iter()
            .filter_map(|k| self.entry(k))
            .map(|e| (e.record(), e.presence()))
            .collect())
    }

    fn module_keys(&self, device_id: &str) -> Vec<IdentityKey> {
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        let start = IdentityKey::module(device_id, "");
        entries
            .range(start..)
            .take_while(|(k, _)| k.device_id == device_id && k.module_id.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn registry_statistics(&self) -> RegistryStatistics {
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut stats = RegistryStatistics::default();
        for (_, entry) in entries.iter().filter(|(k, _)| k.module_id.is_none()) {
            stats.total += 1;
            match entry.record().identity.status {
                DeviceStatus::Enabled => stats.enabled += 1,
                DeviceStatus::Disabled => stats.disabled += 1,
            }
        }
        stats
    }

    pub fn connected_device_count(&self) -> u64 {
        self.0.sessions.connected_devices()
    }

    /// Creates many identities with one durable write. Each spec succeeds or fails on its own.
    pub async fn create_identities(&self, specs: Vec<IdentitySpec>) -> Vec<BulkOutcome> {
        let structure = self.0.structure.lock().await;
        let mut outcomes = Vec::with_capacity(specs.len());
        let mut accepted = Vec::new();
        let mut batch = Batch::new();
        for spec in specs {
            let built = spec.validate().and_then(|()| self.new_record(&spec));
            match built.and_then(|record| encode_record(&record).map(|bytes| (record, bytes))) {
                Ok((record, bytes))
                    if !accepted
                        .iter()
                        .any(|(k, _, _): &(IdentityKey, Record, Vec<u8>)| *k == spec.key) =>
                {
                    batch.put(Table::Registry, spec.key.store_key(), bytes.clone());
                    accepted.push((spec.key.clone(), record, bytes));
                    outcomes.push(BulkOutcome {
                        key: spec.key,
                        result: Ok(()),
                    });
                }
                Ok(_) => {
                    let err = HubError::InvalidArgument(
                        "the same id appears twice in one bulk request".into(),
                    );
                    outcomes.push(BulkOutcome {
                        key: spec.key,
                        result: Err(err),
                    });
                }
                Err(err) => outcomes.push(BulkOutcome {
                    key: spec.key,
                    result: Err(err),
                }),
            }
        }
        if accepted.is_empty() {
            return outcomes;
        }
        if let Err(e) = self.0.store.commit(batch).await {
            let message = e.to_string();
            for outcome in outcomes.iter_mut().filter(|o| o.result.is_ok()) {
                outcome.result = Err(HubError::Storage(message.clone()));
            }
            return outcomes;
        }
        let keys: Vec<IdentityKey> = accepted.iter().map(|(key, _, _)| key.clone()).collect();
        {
            let mut entries = self.0.entries.write().unwrap_or_else(|e| e.into_inner());
            for (key, record, bytes) in &accepted {
                entries.insert(
                    key.clone(),
                    Entry::new(bytes.clone().into_boxed_slice(), record),
                );
            }
        }
        for (key, record, _) in &accepted {
            self.0.indexes.record_change(key, Some(record));
        }
        self.count_registered();
        drop(structure);
        for key in &keys {
            self.reconcile_after_write(key).await;
        }
        outcomes
    }

    fn count_registered(&self) {
        let n = self
            .0
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        self.0.metrics.devices_registered.set(n as i64);
    }

    /// Marks an identity connected or disconnected and stamps its activity.
    pub(crate) fn set_connected(&self, key: &IdentityKey, connected: bool) {
        if let Some(entry) = self.entry(key) {
            let now = Timestamp::now();
            entry.update_presence(|p| {
                if p.connected != connected {
                    p.state_updated = now;
                }
                p.connected = connected;
                p.last_activity = now;
            });
        }
    }

    pub(crate) fn touch(&self, key: &IdentityKey) {
        if let Some(entry) = self.entry(key) {
            entry.update_presence(|p| p.last_activity = Timestamp::now());
        }
    }
}
