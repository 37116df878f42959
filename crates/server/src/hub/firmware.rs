//! Firmware packages the hub hosts for devices to download. The bytes live in files under the
//! firmware directory (`DATA_DIR/firmware/<packageId>`), the metadata in the store's firmware table.
//!
//! A package is acknowledged only once both are durable: the upload streams into a temporary file
//! while hashing it, the file is fsync'd and renamed into place, the directory is fsync'd, and only
//! then is the metadata committed. Deleting commits the removal of the metadata first and removes
//! the file after. A crash can therefore leave a file without metadata (or a temporary file), which
//! the next start removes, but never metadata whose file was not complete.
//!
//! The durable steps of an upload and of a delete run in a spawned task, so a client that hangs up
//! mid-request cannot leave the file system and the store disagreeing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use twinhub_core::identity::AuthType;
use twinhub_core::time::Timestamp;
use twinhub_store::{Batch, Store, Table};

use super::{Hub, HubError, IdentityKey};

/// Where and how a hub hosts firmware packages.
#[derive(Clone, Debug)]
pub struct FirmwareSettings {
    /// The directory holding the package files (created when missing).
    pub dir: PathBuf,
    /// The largest package accepted, in bytes.
    pub max_size: u64,
    /// The HTTPS port devices reach the hub on, for the download URLs.
    pub https_port: u16,
}

/// A hosted package's metadata, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirmwarePackage {
    pub id: String,
    pub version: String,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, 64 lowercase hex digits.
    pub sha256: String,
    pub uploaded: Timestamp,
}

/// Longest package id and version.
const MAX_FIRMWARE_ID_LEN: usize = 128;

/// Temporary upload files are named `upload~<n>`: `~` cannot appear in a package id.
const UPLOAD_PREFIX: &str = "upload~";

/// The hub's firmware state, present once [`Hub::host_firmware`] has run.
pub(crate) struct Firmware {
    settings: FirmwareSettings,
    catalog: Mutex<Catalog>,
    /// Serialises renaming into place and removing files with the matching store commits, so a
    /// delete and a new upload of the same id cannot interleave.
    changes: tokio::sync::Mutex<()>,
    next_upload: AtomicU64,
}

#[derive(Default)]
struct Catalog {
    packages: BTreeMap<String, Arc<FirmwarePackage>>,
    /// Ids being uploaded: a second upload of one of them is refused at once.
    uploading: BTreeSet<String>,
}

impl Firmware {
    fn catalog(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.settings.dir.join(id)
    }

    /// Loads the metadata and brings the directory in line with it: temporary files and files
    /// without metadata are removed, metadata whose file is missing or of the wrong length is
    /// dropped (the returned batch deletes those rows).
    fn load(
        store: &dyn Store,
        settings: FirmwareSettings,
    ) -> Result<(Firmware, Option<Batch>), HubError> {
        let dir = &settings.dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            HubError::Storage(format!(
                "cannot create the firmware directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut packages = BTreeMap::new();
        for (key, value) in store.load(Table::Firmware).map_err(HubError::storage)? {
            let package: FirmwarePackage = serde_json::from_slice(&value).map_err(|e| {
                HubError::Storage(format!(
                    "firmware row {:?} is unreadable: {e}",
                    String::from_utf8_lossy(&key)
                ))
            })?;
            packages.insert(package.id.clone(), Arc::new(package));
        }
        let listing = std::fs::read_dir(dir)
            .map_err(|e| HubError::Storage(format!("cannot list {}: {e}", dir.display())))?;
        let mut present = BTreeSet::new();
        for entry in listing {
            let entry = entry.map_err(HubError::storage)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let expected = packages.get(&name).map(|p| p.size);
            let length = entry
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            if expected.is_some() && expected == length {
                present.insert(name);
                continue;
            }
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing a firmware file without matching metadata (left by an interrupted upload or delete)");
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the firmware file");
            }
        }
        let mut batch = Batch::new();
        packages.retain(|id, _| {
            let keep = present.contains(id);
            if !keep {
                tracing::error!(package = %id, "firmware package file is missing or damaged; forgetting the package");
                batch.delete(Table::Firmware, id.as_bytes().to_vec());
            }
            keep
        });
        let pending = (!batch.is_empty()).then_some(batch);
        Ok((
            Firmware {
                settings,
                catalog: Mutex::new(Catalog {
                    packages,
                    uploading: BTreeSet::new(),
                }),
                changes: tokio::sync::Mutex::new(()),
                next_upload: AtomicU64::new(0),
            },
            pending,
        ))
    }
}

/// Checks a package id: 1 to 128 characters of `[A-Za-z0-9._-]`, and not `.` or `..`, which name
/// directories.
fn validate_package_id(id: &str) -> Result<(), HubError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > MAX_FIRMWARE_ID_LEN || !id.chars().all(allowed) {
        return Err(HubError::InvalidArgument(format!(
            "the package id must be 1 to {MAX_FIRMWARE_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_' and '-', not {id:?}"
        )));
    }
    if id == "." || id == ".." {
        return Err(HubError::InvalidArgument(format!(
            "the package id {id:?} is reserved"
        )));
    }
    Ok(())
}

/// Checks a package version: 1 to 128 characters, none of them control characters.
fn validate_version(version: &str) -> Result<(), HubError> {
    if version.is_empty()
        || version.chars().count() > MAX_FIRMWARE_ID_LEN
        || version.chars().any(char::is_control)
    {
        return Err(HubError::InvalidArgument(format!(
            "the version must be 1 to {MAX_FIRMWARE_ID_LEN} printable characters"
        )));
    }
    Ok(())
}

/// Holds an id in the catalog's upload set; releases it when dropped.
struct Reservation {
    hub: Hub,
    id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(firmware) = self.hub.firmware() {
            firmware.catalog().uploading.remove(&self.id);
        }
    }
}

/// A temporary upload file, removed when dropped unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // A plain unlink: quick enough to do inline, and a drop cannot await.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn lowercase_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> HubError {
    HubError::Storage(format!("cannot {what} {}: {e}", path.display()))
}

/// Streams `body` into `file`, refusing more than `max_size` bytes; returns the length and SHA-256.
async fn receive<S, E>(
    file: &mut tokio::fs::File,
    path: &Path,
    body: S,
    max_size: u64,
) -> Result<(u64, String), HubError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut body = pin!(body);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            HubError::InvalidArgument(format!("the package could not be received: {e}"))
        })?;
        size = size.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if size > max_size {
            return Err(HubError::FirmwareTooLarge(max_size));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| io_error("write", path, &e))?;
    }
    file.flush()
        .await
        .map_err(|e| io_error("write", path, &e))?;
    file.sync_all()
        .await
        .map_err(|e| io_error("sync", path, &e))?;
    Ok((size, lowercase_hex(&hasher.finalize())))
}

async fn sync_dir(dir: &Path) -> Result<(), HubError> {
    let handle = tokio::fs::File::open(dir)
        .await
        .map_err(|e| io_error("open", dir, &e))?;
    handle
        .sync_all()
        .await
        .map_err(|e| io_error("sync", dir, &e))
}

impl Hub {
    /// Starts hosting firmware packages: loads their metadata, cleans the directory of leftovers
    /// of interrupted uploads and deletes, and remembers the settings. Once per hub.
    pub async fn host_firmware(&self, settings: FirmwareSettings) -> Result<(), HubError> {
        let (firmware, pending) = Firmware::load(self.0.store.as_ref(), settings)?;
        if let Some(batch) = pending {
            self.0
                .store
                .commit(batch)
                .await
                .map_err(HubError::storage)?;
        }
        self.0
            .firmware
            .set(firmware)
            .map_err(|_| HubError::InvalidArgument("firmware hosting is already set up".into()))
    }

    pub(crate) fn firmware(&self) -> Result<&Firmware, HubError> {
        self.0.firmware.get().ok_or(HubError::FirmwareNotHosted)
    }

    /// Every hosted package, by id.
    pub fn firmware_packages(&self) -> Result<Vec<Arc<FirmwarePackage>>, HubError> {
        Ok(self
            .firmware()?
            .catalog()
            .packages
            .values()
            .cloned()
            .collect())
    }

    /// One hosted package.
    pub fn firmware_package(&self, id: &str) -> Result<Arc<FirmwarePackage>, HubError> {
        self.firmware()?
            .catalog()
            .packages
            .get(id)
            .cloned()
            .ok_or_else(|| HubError::FirmwareNotFound(id.to_owned()))
    }

    /// Where devices download `id`: `https://<hostname>:<https port>/firmware/<id>/content`.
    pub fn firmware_url(&self, id: &str) -> Result<String, HubError> {
        let port = self.firmware()?.settings.https_port;
        let host = &self.settings().hostname;
        // An IPv6 literal needs brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(format!("https://{host}:{port}/firmware/{id}/content"))
    }

    /// Stores a new package from `body`, whose length the client may have declared. Answers after
    /// the bytes and the metadata are both durable. An existing id is refused before the body is
    /// read; a body longer than the limit is refused as soon as it is.
    pub async fn upload_firmware<S, E>(
        &self,
        id: &str,
        version: &str,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<Arc<FirmwarePackage>, HubError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let firmware = self.firmware()?;
        validate_package_id(id)?;
        validate_version(version)?;
        let max_size = firmware.settings.max_size;
        if declared_len.is_some_and(|len| len > max_size) {
            return Err(HubError::FirmwareTooLarge(max_size));
        }
        let reservation = {
            let mut catalog = firmware.catalog();
            if catalog.packages.contains_key(id) || !catalog.uploading.insert(id.to_owned()) {
                return Err(HubError::FirmwareAlreadyExists(id.to_owned()));
            }
            Reservation {
                hub: self.clone(),
                id: id.to_owned(),
            }
        };
        let number = firmware.next_upload.fetch_add(1, Ordering::Relaxed);
        let mut temp = TempFile {
            path: firmware
                .settings
                .dir
                .join(format!("{UPLOAD_PREFIX}{number}")),
            keep: false,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
            .await
            .map_err(|e| io_error("create", &temp.path, &e))?;
        let (size, sha256) = receive(&mut file, &temp.path, body, max_size).await?;
        drop(file);
        if size == 0 {
            return Err(HubError::InvalidArgument("the package is empty".into()));
        }
        let package = FirmwarePackage {
            id: id.to_owned(),
            version: version.to_owned(),
            size,
            sha256,
            uploaded: Timestamp::now(),
        };
        // From here the temporary file is the finishing task's to keep or remove.
        temp.keep = true;
        let temp_path = temp.path.clone();
        let hub = self.clone();
        tokio::spawn(async move {
            let outcome = hub.finish_upload(package, &temp_path).await;
            drop(reservation);
            outcome
        })
        .await
        .map_err(|e| HubError::Storage(format!("the upload did not finish: {e}")))?
    }

    /// Renames the received file into place and commits the metadata, in that order.
    async fn finish_upload(
        &self,
        package: FirmwarePackage,
        temp_path: &Path,
    ) -> Result<Arc<FirmwarePackage>, HubError> {
        let firmware = self.firmware()?;
        let mut temp = TempFile {
            path: temp_path.to_path_buf(),
            keep: false,
        };
        let value = serde_json::to_vec(&package).map_err(HubError::storage)?;
        let final_path = firmware.path_of(&package.id);
        let _changes = firmware.changes.lock().await;
        tokio::fs::rename(&temp.path, &final_path)
            .await
            .map_err(|e| io_error("move into place", &final_path, &e))?;
        temp.keep = true;
        let committed = async {
            sync_dir(&firmware.settings.dir).await?;
            let mut batch = Batch::new();
            batch.put(Table::Firmware, package.id.as_bytes().to_vec(), value);
            self.0.store.commit(batch).await.map_err(HubError::storage)
        }
        .await;
        if let Err(e) = committed {
            let _ = tokio::fs::remove_file(&final_path).await;
            return Err(e);
        }
        let package = Arc::new(package);
        firmware
            .catalog()
            .packages
            .insert(package.id.clone(), Arc::clone(&package));
        tracing::info!(package = %package.id, version = %package.version, size = package.size, "firmware package stored");
        Ok(package)
    }

    /// Removes a package: its metadata durably first, then its file.
    pub async fn delete_firmware(&self, id: &str) -> Result<(), HubError> {
        self.firmware_package(id)?;
        let hub = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { hub.finish_delete(&id).await })
            .await
            .map_err(|e| HubError::Storage(format!("the delete did not finish: {e}")))?
    }

    async fn finish_delete(&self, id: &str) -> Result<(), HubError> {
        let firmware = self.firmware()?;
        let _changes = firmware.changes.lock().await;
        if !firmware.catalog().packages.contains_key(id) {
            return Err(HubError::FirmwareNotFound(id.to_owned()));
        }
        let mut batch = Batch::new();
        batch.delete(Table::Firmware, id.as_bytes().to_vec());
        self.0
            .store
            .commit(batch)
            .await
            .map_err(HubError::storage)?;
        firmware.catalog().packages.remove(id);
        let path = firmware.path_of(id);
        if let Err(e) = tokio::fs::remove_file(&path).await {
            // The metadata is gone, so the file is a leftover the next start removes.
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a deleted firmware file");
        }
        tracing::info!(package = %id, "firmware package deleted");
        Ok(())
    }

    /// Opens a package's file for reading. A download that started before a delete keeps
    /// reading the file it opened.
    pub async fn open_firmware(
        &self,
        id: &str,
    ) -> Result<(Arc<FirmwarePackage>, tokio::fs::File), HubError> {
        let package = self.firmware_package(id)?;
        let path = self.firmware()?.path_of(id);
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok((package, file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(HubError::FirmwareNotFound(id.to_owned()))
            }
            Err(e) => Err(io_error("open", &path, &e)),
        }
    }

    /// The registered, certificate-authenticated identity whose thumbprint is this certificate's,
    /// for HTTPS requests that name no identity. [`Hub::authenticate_device`] still decides
    /// whether that identity may connect.
    pub(crate) fn identity_with_certificate(&self, certificate: &[u8]) -> Option<IdentityKey> {
        let (sha1, sha256) = crate::tls::thumbprints(certificate);
        let entries = self.0.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.iter().find_map(|(key, entry)| {
            let record = entry.record();
            let authentication = &record.identity.authentication;
            let registered = &authentication.x509_thumbprint;
            (authentication.auth_type == AuthType::SelfSigned
                && [&registered.primary, &registered.secondary]
                    .into_iter()
                    .flatten()
                    .any(|t| *t == sha1 || *t == sha256))
            .then(|| key.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids_follow_the_contract() {
        for id in ["a", "fw-1.2.3_rc", "A.b-C_d", &"x".repeat(128), "..."] {
            assert!(validate_package_id(id).is_ok(), "{id}");
        }
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "upload~1",
            "é",
            &"x".repeat(129),
        ] {
            assert!(validate_package_id(id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn versions_are_printable_and_bounded() {
        assert!(validate_version("1.2.3 (beta)").is_ok());
        assert!(validate_version("").is_err());
        assert!(validate_version("1\n2").is_err());
        assert!(validate_version(&"9".repeat(129)).is_err());
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(lowercase_hex(&[0x00, 0xab, 0x9f]), "00ab9f");
    }
}
