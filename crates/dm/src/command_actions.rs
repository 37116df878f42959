//! Actions of a real device: shell commands from configuration, run with a timeout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::actions::{ActionError, Actions};
use crate::state::write_atomically;

/// The file, inside the state directory, holding the installed firmware version.
pub const FIRMWARE_VERSION_FILE: &str = "firmware-version";
/// The directory, inside the state directory, where applied configuration is written.
pub const CONFIGURATION_DIR: &str = "config";

/// Most bytes of a failed command's standard error kept in the error.
const STDERR_LIMIT: usize = 2048;

/// How a [`CommandActions`] device acts. Commands are run with `sh -c`; their arguments arrive
/// as `$1`, `$2`, … (never spliced into the command text) and in `TWINHUB_*` variables.
#[derive(Clone, Debug)]
pub struct CommandConfig {
    /// Reboots the device, e.g. `systemctl reboot`.
    pub reboot: String,
    /// Extra factory-reset step run before the state directory is emptied; no arguments,
    /// `TWINHUB_STATE_DIR` in the environment.
    pub factory_reset: Option<String>,
    /// Installs a package: `$1` (`TWINHUB_FW_PATH`) is the verified file, `$2`
    /// (`TWINHUB_FW_VERSION`) the version it installs.
    pub install_firmware: String,
    /// Restores firmware `$1` (`TWINHUB_FW_VERSION`) after a failed update; `None` when installs
    /// are atomic and a failed one leaves the previous firmware in place.
    pub rollback_firmware: Option<String>,
    /// Applies configuration: `$1` (`TWINHUB_CONFIG_NAME`) is the property name, `$2`
    /// (`TWINHUB_CONFIG_PATH`) the JSON file it was written to. `None`: writing the file is all.
    pub apply_configuration: Option<String>,
    /// The device's state directory: holds `firmware-version` and `config/`, and is emptied by
    /// a factory reset (except `firmware-version`: a reset does not downgrade firmware).
    pub state_dir: PathBuf,
    /// The version reported while `firmware-version` does not exist.
    pub initial_firmware_version: String,
    /// The longest any command may run before it is killed.
    pub timeout: Duration,
    /// How long to wait, after the reboot command succeeded, for the process to be killed by
    /// the reboot; if it is still alive then, the reboot failed. Zero: the command's success is
    /// the reboot.
    pub reboot_grace: Duration,
}

impl CommandConfig {
    /// A configuration with the given commands and state directory and the default limits
    /// (commands: 5 minutes; reboot grace: 2 minutes; initial version `0.0.0`).
    pub fn new(
        reboot: impl Into<String>,
        install_firmware: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> CommandConfig {
        CommandConfig {
            reboot: reboot.into(),
            factory_reset: None,
            install_firmware: install_firmware.into(),
            rollback_firmware: None,
            apply_configuration: None,
            state_dir: state_dir.into(),
            initial_firmware_version: "0.0.0".to_owned(),
            timeout: Duration::from_secs(300),
            reboot_grace: Duration::from_secs(120),
        }
    }
}

/// A real device's actions: the commands of a [`CommandConfig`].
#[derive(Clone, Debug)]
pub struct CommandActions {
    config: CommandConfig,
}

impl CommandActions {
    /// Actions running `config`'s commands.
    pub fn new(config: CommandConfig) -> CommandActions {
        CommandActions { config }
    }

    fn version_file(&self) -> PathBuf {
        self.config.state_dir.join(FIRMWARE_VERSION_FILE)
    }

    async fn write_version(&self, version: &str) -> Result<(), ActionError> {
        let dir = self.config.state_dir.clone();
        let contents = format!("{version}\n");
        tokio::task::spawn_blocking(move || {
            write_atomically(&dir, FIRMWARE_VERSION_FILE, contents.as_bytes())
        })
        .await
        .map_err(|error| ActionError::Failed(format!("writing the firmware version: {error}")))?
        .map_err(|error| ActionError::Failed(error.to_string()))
    }

    /// Runs `command` under `sh -c` with positional `args` and `env`.
    async fn run(
        &self,
        command: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), ActionError> {
        let mut child = Command::new("sh");
        child
            .arg("-c")
            .arg(command)
            // `$0` of the script; the real arguments follow as `$1`, `$2`, ….
            .arg("twinhub-dm")
            .args(args)
            .envs(env.iter().copied())
            .env("TWINHUB_STATE_DIR", &self.config.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = child.spawn().map_err(|source| ActionError::Spawn {
            command: command.to_owned(),
            source,
        })?;
        let output = tokio::time::timeout(self.config.timeout, child.wait_with_output())
            .await
            .map_err(|_| ActionError::Timeout {
                command: command.to_owned(),
                timeout: self.config.timeout,
            })?
            .map_err(|source| ActionError::Spawn {
                command: command.to_owned(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let cut = (0..=STDERR_LIMIT.min(stderr.len()))
            .rev()
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(0);
        Err(ActionError::CommandFailed {
            command: command.to_owned(),
            status: output.status.to_string(),
            stderr: stderr[..cut].to_owned(),
        })
    }
}

impl Actions for CommandActions {
    async fn reboot(&self) -> Result<(), ActionError> {
        self.run(&self.config.reboot, &[], &[]).await?;
        if self.config.reboot_grace.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(self.config.reboot_grace).await;
        Err(ActionError::Failed(format!(
            "the reboot command succeeded but the device was still running {:?} later",
            self.config.reboot_grace
        )))
    }

    async fn factory_reset(&self) -> Result<(), ActionError> {
        if let Some(command) = &self.config.factory_reset {
            self.run(command, &[], &[]).await?;
        }
        empty_directory(&self.config.state_dir, &[FIRMWARE_VERSION_FILE]).await
    }

    async fn install_firmware(&self, package: &Path, version: &str) -> Result<(), ActionError> {
        let path = package.to_string_lossy();
        self.run(
            &self.config.install_firmware,
            &[&path, version],
            &[("TWINHUB_FW_PATH", &path), ("TWINHUB_FW_VERSION", version)],
        )
        .await?;
        self.write_version(version).await
    }

    async fn firmware_version(&self) -> Result<String, ActionError> {
        let path = self.version_file();
        match tokio::fs::read_to_string(&path).await {
            Ok(contents) => match contents.trim() {
                "" => Ok(self.config.initial_firmware_version.clone()),
                version => Ok(version.to_owned()),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(self.config.initial_firmware_version.clone())
            }
            Err(source) => Err(ActionError::Io { path, source }),
        }
    }

    async fn rollback_firmware(&self, previous: &str) -> Result<(), ActionError> {
        if let Some(command) = &self.config.rollback_firmware {
            self.run(command, &[previous], &[("TWINHUB_FW_VERSION", previous)])
                .await?;
        }
        self.write_version(previous).await
    }

    async fn apply_configuration(&self, name: &str, value: &Value) -> Result<(), ActionError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ActionError::Failed(format!(
                "configuration name {name:?} is not usable as a file name"
            )));
        }
        let dir = self.config.state_dir.join(CONFIGURATION_DIR);
        let file_name = format!("{name}.json");
        let path = dir.join(&file_name);
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|error| ActionError::Failed(error.to_string()))?;
        tokio::task::spawn_blocking(move || write_atomically(&dir, &file_name, &bytes))
            .await
            .map_err(|error| ActionError::Failed(format!("writing configuration: {error}")))?
            .map_err(|error| ActionError::Failed(error.to_string()))?;
        if let Some(command) = &self.config.apply_configuration {
            let path = path.to_string_lossy();
            self.run(
                command,
                &[name, &path],
                &[
                    ("TWINHUB_CONFIG_NAME", name),
                    ("TWINHUB_CONFIG_PATH", &path),
                ],
            )
            .await?;
        }
        Ok(())
    }
}

/// Removes everything inside `dir` except the entries named in `keep`.
async fn empty_directory(dir: &Path, keep: &[&str]) -> Result<(), ActionError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ActionError::Io { path, source }
    };
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io(dir)(source)),
    };
    while let Some(entry) = entries.next_entry().await.map_err(io(dir))? {
        if keep.iter().any(|name| entry.file_name() == *name) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().await.map_err(io(&path))?.is_dir();
        let removed = if is_dir {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        };
        removed.map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(dir: &Path) -> CommandActions {
        let mut config = CommandConfig::new(
            "echo rebooting > \"$TWINHUB_STATE_DIR/rebooted\"",
            "cp \"$1\" \"$TWINHUB_STATE_DIR/installed-$2\"",
            dir,
        );
        config.reboot_grace = Duration::ZERO;
        config.timeout = Duration::from_secs(5);
        CommandActions::new(config)
    }

    #[tokio::test]
    async fn install_passes_path_and_version_and_records_the_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let actions = actions(dir.path());
        assert_eq!(actions.firmware_version().await.expect("version"), "0.0.0");
        let package = dir.path().join("package.bin");
        std::fs::write(&package, b"firmware").expect("writes");
        actions
            .install_firmware(&package, "2.0")
            .await
            .expect("installs");
        assert_eq!(
            std::fs::read(dir.path().join("installed-2.0")).expect("copied"),
            b"firmware"
        );
        assert_eq!(actions.firmware_version().await.expect("version"), "2.0");
        actions.rollback_firmware("1.0").await.expect("rolls back");
        assert_eq!(actions.firmware_version().await.expect("version"), "1.0");
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = CommandConfig::new("true", "echo 'disk full' >&2; exit 3", dir.path());
        config.timeout = Duration::from_secs(5);
        let error = CommandActions::new(config)
            .install_firmware(Path::new("/nonexistent"), "2.0")
            .await
            .expect_err("fails");
        match error {
            ActionError::CommandFailed { stderr, .. } => assert_eq!(stderr, "disk full"),
            other => panic!("unexpected {other}"),
        }
    }

    #[tokio::test]
    async fn a_command_running_too_long_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = CommandConfig::new("sleep 10", "true", dir.path());
        config.timeout = Duration::from_millis(100);
        let error = CommandActions::new(config)
            .reboot()
            .await
            .expect_err("times out");
        assert!(matches!(error, ActionError::Timeout { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_reboot_that_leaves_the_process_alive_fails_after_the_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = CommandConfig::new("true", "true", dir.path());
        config.reboot_grace = Duration::from_millis(20);
        let error = CommandActions::new(config)
            .reboot()
            .await
            .expect_err("still alive");
        assert!(error.to_string().contains("still running"), "{error}");
        let reboots = actions(dir.path());
        reboots.reboot().await.expect("reboots");
        assert!(dir.path().join("rebooted").exists());
    }

    #[tokio::test]
    async fn factory_reset_empties_the_state_dir_but_keeps_the_firmware_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let actions = actions(dir.path());
        actions
            .apply_configuration(
                "telemetryConfig",
                &serde_json::json!({"sendFrequency": "5m"}),
            )
            .await
            .expect("applies");
        assert!(dir.path().join("config/telemetryConfig.json").exists());
        std::fs::write(dir.path().join("data"), b"x").expect("writes");
        actions.rollback_firmware("1.5").await.expect("records");
        actions.factory_reset().await.expect("resets");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(FIRMWARE_VERSION_FILE)]);
        assert_eq!(actions.firmware_version().await.expect("version"), "1.5");
    }

    #[tokio::test]
    async fn configuration_names_must_be_safe_file_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = actions(dir.path())
            .apply_configuration("../escape", &Value::Null)
            .await
            .expect_err("rejected");
        assert!(error.to_string().contains("not usable"), "{error}");
    }
}
