//! What a device remembers across reboots and process restarts: the operation in progress, so
//! that the runner can report the truth when it comes back.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::schema::FirmwareTarget;

/// The device-management state that survives a reboot. Its fields are private: the runner owns
/// the meaning; stores only keep it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedState {
    /// A reboot that was started and has not been reported as finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reboot: Option<PendingRestart>,
    /// A factory reset that was started and has not been reported as finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) factory_reset: Option<PendingRestart>,
    /// The firmware update in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) firmware: Option<FirmwareJob>,
    /// The last desired firmware that failed; it is not retried until the back end changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failed_firmware: Option<FirmwareTarget>,
}

/// A reboot or factory reset between its start and the device coming back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PendingRestart {
    pub(crate) started: String,
    /// Why the action failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Which pattern started a firmware update; they report under different properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum FirmwareKind {
    /// Desired `firmware` (the ADM configuration pattern).
    Desired,
    /// The `firmwareUpdate` method (the legacy pattern).
    Method,
}

/// The step a firmware update had reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum FirmwarePhase {
    Downloading,
    Verifying,
    Applying,
    Rebooting,
}

/// A firmware update in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FirmwareJob {
    pub(crate) kind: FirmwareKind,
    pub(crate) target: FirmwareTarget,
    pub(crate) previous_version: String,
    pub(crate) phase: FirmwarePhase,
    pub(crate) started: String,
    /// Why the reboot into the new firmware failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reboot_error: Option<String>,
}

/// Why state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the state file failed.
    #[error("device-management state {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// The state file is not what this crate writes.
    #[error("device-management state {path} is not valid: {source}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The parse failure.
        source: serde_json::Error,
    },
    /// The blocking writer task did not finish.
    #[error("the device-management state writer stopped: {0}")]
    Writer(String),
}

/// Where a device keeps its [`PersistedState`].
pub trait StateStore: Send + Sync + 'static {
    /// The saved state, or the default when nothing was saved yet.
    fn load(&self) -> impl Future<Output = Result<PersistedState, StateError>> + Send;
    /// Replaces the saved state; durable when the future resolves.
    fn save(&self, state: &PersistedState) -> impl Future<Output = Result<(), StateError>> + Send;
}

/// State kept in memory: survives virtual reboots and restarts of [`crate::run`] within one
/// process (clones share it), not the process. For simulated devices.
#[derive(Clone, Debug, Default)]
pub struct MemoryState {
    state: Arc<Mutex<PersistedState>>,
}

impl MemoryState {
    /// Empty state.
    pub fn new() -> MemoryState {
        MemoryState::default()
    }

    /// A copy of what is stored.
    pub fn snapshot(&self) -> PersistedState {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl StateStore for MemoryState {
    async fn load(&self) -> Result<PersistedState, StateError> {
        Ok(self.snapshot())
    }

    async fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state.clone();
        Ok(())
    }
}

/// The file [`FileState`] keeps its state in.
pub const STATE_FILE_NAME: &str = "dm-state.json";

/// State in `<dir>/dm-state.json`, replaced atomically (temporary file, fsync, rename, fsync of
/// the directory), so a crash leaves either the old or the new state. For real devices.
#[derive(Clone, Debug)]
pub struct FileState {
    dir: PathBuf,
}

impl FileState {
    /// State in `dir`, which is created on the first save.
    pub fn new(dir: impl Into<PathBuf>) -> FileState {
        FileState { dir: dir.into() }
    }

    /// The state file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE_NAME)
    }
}

impl StateStore for FileState {
    async fn load(&self) -> Result<PersistedState, StateError> {
        let path = self.path();
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(PersistedState::default())
            }
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    async fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
            path: self.path(),
            source,
        })?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, STATE_FILE_NAME, &bytes))
            .await
            .map_err(|error| StateError::Writer(error.to_string()))?
    }
}

/// Writes `dir/name` so that readers see the old or the new contents, never a mix.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let target = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, &target).map_err(io(&target))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedState {
        PersistedState {
            reboot: Some(PendingRestart {
                started: "2024-01-01T00:00:00Z".into(),
                error: None,
            }),
            firmware: Some(FirmwareJob {
                kind: FirmwareKind::Desired,
                target: FirmwareTarget {
                    version: "2.0".into(),
                    uri: "https://h/p".into(),
                    sha256: "0".repeat(64),
                    size: Some(10),
                },
                previous_version: "1.0".into(),
                phase: FirmwarePhase::Applying,
                started: "2024-01-01T00:00:00Z".into(),
                reboot_error: None,
            }),
            ..PersistedState::default()
        }
    }

    #[tokio::test]
    async fn file_state_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileState::new(dir.path().join("nested"));
        assert_eq!(
            store.load().await.expect("loads"),
            PersistedState::default()
        );
        store.save(&sample()).await.expect("saves");
        assert_eq!(store.load().await.expect("loads"), sample());
        store.save(&PersistedState::default()).await.expect("saves");
        assert_eq!(
            store.load().await.expect("loads"),
            PersistedState::default()
        );
    }

    #[tokio::test]
    async fn file_state_replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileState::new(dir.path());
        // A temporary left by a crash mid-write must not be mistaken for state.
        std::fs::write(dir.path().join(".dm-state.json.tmp"), b"{garbage").expect("writes");
        store.save(&sample()).await.expect("saves");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![STATE_FILE_NAME.to_owned()]);
        assert_eq!(store.load().await.expect("loads"), sample());
    }

    #[tokio::test]
    async fn corrupt_state_is_an_error_not_a_silent_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE_NAME), b"{not json").expect("writes");
        let error = FileState::new(dir.path())
            .load()
            .await
            .expect_err("corrupt");
        assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
    }

    #[tokio::test]
    async fn memory_state_clones_share_the_state() {
        let store = MemoryState::new();
        store.clone().save(&sample()).await.expect("saves");
        assert_eq!(store.load().await.expect("loads"), sample());
    }
}
