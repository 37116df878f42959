//! The firmware-update state machine, shared by the ADM pattern (desired `firmware`, reported
//! `firmware`) and the legacy method pattern (reported `iothubDM.firmwareUpdate`):
//! download → verify → apply → (ADM only) reboot, and on any failure error → rollback.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::actions::Actions;
use crate::download::{Fetch, FetchRequest, Progress, hash_file, remove_file};
use crate::link::{Report, Reporter};
use crate::runner::Shared;
use crate::schema::{FirmwareStatus, LegacyFirmwareStatus, dm_patch, firmware_patch, now};
use crate::state::{FirmwareJob, FirmwareKind, FirmwarePhase, StateStore};

/// A running firmware update, polled by the device's event loop next to its other work.
pub(crate) type JobFuture = Pin<Box<dyn Future<Output = JobOutcome> + Send>>;

/// How a firmware job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobOutcome {
    /// Done (succeeded, or failed and rolled back); the device stays connected.
    Finished,
    /// The new firmware is installed; the device must reboot into it.
    Reboot,
}

/// The legacy pattern's reported sub-property.
const LEGACY_PROPERTY: &str = "firmwareUpdate";

/// Where a failure happened: only one at or after `Apply` touched the installed firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Download,
    Apply,
}

struct Failure {
    stage: Stage,
    reason: String,
}

impl Failure {
    fn download(reason: impl Into<String>) -> Failure {
        Failure {
            stage: Stage::Download,
            reason: reason.into(),
        }
    }
}

/// One firmware update with what it needs to run on its own.
pub(crate) struct Job<F, A, S, R> {
    shared: Arc<Shared<F, A, S>>,
    reporter: Reporter<R>,
    record: FirmwareJob,
}

impl<F: Fetch, A: Actions, S: StateStore, R: Report> Job<F, A, S, R> {
    pub(crate) fn new(
        shared: Arc<Shared<F, A, S>>,
        reporter: Reporter<R>,
        record: FirmwareJob,
    ) -> Self {
        Job {
            shared,
            reporter,
            record,
        }
    }

    /// Downloads (resuming), verifies, installs; the record is already persisted.
    pub(crate) async fn run(mut self) -> JobOutcome {
        match self.execute().await {
            Ok(outcome) => outcome,
            Err(failure) => {
                self.fail(failure).await;
                JobOutcome::Finished
            }
        }
    }

    /// After a restart in the `applying` or `rebooting` phase: reports the truth, which is the
    /// new version if it is installed, otherwise a rollback.
    pub(crate) async fn reconcile_after_restart(mut self) {
        let version = self.record.target.version.clone();
        let reason = match (&self.record.reboot_error, self.installed_version().await) {
            (Some(error), _) => format!("Reboot failed: {error}"),
            (None, Ok(installed)) if installed == version => {
                self.succeed().await;
                return;
            }
            (None, Ok(installed)) => {
                format!("Firmware {version} is not running after the update (found {installed})")
            }
            (None, Err(error)) => format!("Cannot read the firmware version: {error}"),
        };
        self.fail(Failure {
            stage: Stage::Apply,
            reason,
        })
        .await;
    }

    async fn execute(&mut self) -> Result<JobOutcome, Failure> {
        let package = self.package_path();
        let target = self.record.target.clone();
        self.report_progress(
            FirmwareStatus::Downloading,
            LegacyFirmwareStatus::Downloading,
            format!("Downloading firmware {}", target.version),
        )
        .await;
        let request = FetchRequest {
            uri: &target.uri,
            dest: &package,
            expected_size: target.size,
            max_bytes: self.shared.options.max_package_bytes,
            rate_limit: self.shared.actions.download_rate_limit(),
        };
        let progress = DownloadProgress {
            reporter: &self.reporter,
            kind: self.record.kind,
            step: u64::from(self.shared.options.progress_step_percent.clamp(1, 100)),
            last_reported: AtomicU64::new(0),
        };
        self.shared
            .fetcher
            .fetch(&request, &progress)
            .await
            .map_err(|error| Failure::download(format!("Download failed: {error}")))?;

        self.persist_phase(FirmwarePhase::Verifying).await?;
        self.report_progress(
            FirmwareStatus::Verifying,
            LegacyFirmwareStatus::Downloading,
            "Verifying package".to_owned(),
        )
        .await;
        if let Err(reason) = self.verify(&package).await {
            // A package that failed verification is never kept, resumed or applied.
            let _ = remove_file(&package).await;
            return Err(Failure::download(reason));
        }
        if self.record.kind == FirmwareKind::Method {
            self.reporter
                .report(dm_patch(
                    LEGACY_PROPERTY,
                    json!({
                        "status": LegacyFirmwareStatus::DownloadComplete.as_str(),
                        "downloadCompleteTime": now(),
                    }),
                ))
                .await;
        }

        self.persist_phase(FirmwarePhase::Applying).await?;
        let version = self.record.target.version.clone();
        self.report_progress(
            FirmwareStatus::Applying,
            LegacyFirmwareStatus::Applying,
            format!("Applying firmware {version}"),
        )
        .await;
        let installed = self
            .shared
            .actions
            .install_firmware(&package, &version)
            .await;
        let _ = remove_file(&package).await;
        installed.map_err(|error| Failure {
            stage: Stage::Apply,
            reason: format!("Apply failed: {error}"),
        })?;

        match self.record.kind {
            FirmwareKind::Desired => {
                self.persist_phase(FirmwarePhase::Rebooting).await?;
                self.reporter
                    .report(firmware_patch(json!({
                        "fwUpdateStatus": FirmwareStatus::Rebooting.as_str(),
                        "fwUpdateSubstatus": format!("Rebooting into firmware {version}"),
                    })))
                    .await;
                Ok(JobOutcome::Reboot)
            }
            FirmwareKind::Method => {
                self.succeed().await;
                Ok(JobOutcome::Finished)
            }
        }
    }

    /// Checks size and SHA-256; a legacy request without a check value learns its version
    /// from the digest.
    async fn verify(&mut self, package: &std::path::Path) -> Result<(), String> {
        let (size, digest) = hash_file(package)
            .await
            .map_err(|error| format!("Verification failed: {error}"))?;
        let target = &mut self.record.target;
        if let Some(expected) = target.size
            && expected != size
        {
            return Err(format!(
                "Size mismatch: expected {expected} bytes, got {size}"
            ));
        }
        if target.sha256.is_empty() {
            target.sha256.clone_from(&digest);
        } else if target.sha256 != digest {
            return Err(format!(
                "Checksum mismatch: expected SHA-256 {}, got {digest}",
                target.sha256
            ));
        }
        if target.version.is_empty() {
            target.version = format!("sha256-{}", &digest[..12]);
        }
        Ok(())
    }

    /// Where the package is (partially) stored: named by its digest, so a resumed download
    /// continues the same package and never another one.
    fn package_path(&self) -> PathBuf {
        let name = if self.record.target.sha256.is_empty() {
            "package"
        } else {
            &self.record.target.sha256
        };
        self.shared.download_dir.join(format!("{name}.bin"))
    }

    async fn persist_phase(&mut self, phase: FirmwarePhase) -> Result<(), Failure> {
        self.record.phase = phase;
        let record = self.record.clone();
        let stage = if phase == FirmwarePhase::Applying || phase == FirmwarePhase::Rebooting {
            Stage::Apply
        } else {
            Stage::Download
        };
        self.shared
            .state
            .update(|state| state.firmware = Some(record))
            .await
            .map_err(|error| Failure {
                stage,
                reason: format!("Cannot save the update's progress: {error}"),
            })
    }

    async fn report_progress(
        &self,
        status: FirmwareStatus,
        legacy: LegacyFirmwareStatus,
        substatus: String,
    ) {
        let patch = match self.record.kind {
            FirmwareKind::Desired => firmware_patch(json!({
                "fwUpdateStatus": status.as_str(),
                "fwUpdateSubstatus": substatus,
            })),
            FirmwareKind::Method => {
                let mut fields = json!({ "status": legacy.as_str() });
                if legacy == LegacyFirmwareStatus::Applying {
                    fields["startedApplyingImage"] = json!(now());
                }
                dm_patch(LEGACY_PROPERTY, fields)
            }
        };
        self.reporter.report(patch).await;
    }

    async fn installed_version(&self) -> Result<String, String> {
        self.shared
            .actions
            .firmware_version()
            .await
            .map_err(|error| error.to_string())
    }

    async fn succeed(&mut self) {
        let version = self.record.target.version.clone();
        let end = now();
        let firmware = json!({
            "currentFwVersion": version,
            "pendingFwVersion": "",
            "fwUpdateStatus": FirmwareStatus::Current.as_str(),
            "fwUpdateSubstatus": format!("Updated to firmware {version}"),
            "lastFwUpdateEndTime": end,
        });
        let patch = match self.record.kind {
            FirmwareKind::Desired => firmware_patch(firmware),
            FirmwareKind::Method => {
                let mut patch = dm_patch(
                    LEGACY_PROPERTY,
                    json!({
                        "status": LegacyFirmwareStatus::ApplyComplete.as_str(),
                        "lastFirmwareUpdate": end,
                        "error": null,
                    }),
                );
                // The ADM view must not keep claiming the old version.
                patch["firmware"] = json!({ "currentFwVersion": version });
                patch
            }
        };
        self.reporter.report(patch).await;
        self.clear(false).await;
    }

    /// Reports the failure, rolls back when the installed firmware was touched, and reports
    /// what runs afterwards.
    async fn fail(&mut self, failure: Failure) {
        tracing::warn!(reason = %failure.reason, "firmware update failed");
        let previous = self.record.previous_version.clone();
        let rollback = match failure.stage {
            Stage::Apply => self
                .shared
                .actions
                .rollback_firmware(&previous)
                .await
                .map_err(|error| error.to_string()),
            Stage::Download => Ok(()),
        };
        match self.record.kind {
            FirmwareKind::Desired => {
                self.reporter
                    .report(firmware_patch(json!({
                        "fwUpdateStatus": FirmwareStatus::Error.as_str(),
                        "fwUpdateSubstatus": failure.reason,
                    })))
                    .await;
                let current = self.installed_version().await.unwrap_or(previous.clone());
                let fields = match rollback {
                    Ok(()) => json!({
                        "currentFwVersion": current,
                        "pendingFwVersion": "",
                        "fwUpdateStatus": FirmwareStatus::RolledBack.as_str(),
                        "fwUpdateSubstatus": format!("Rolled back to: {previous}"),
                        "lastFwUpdateEndTime": now(),
                    }),
                    Err(error) => json!({
                        "currentFwVersion": current,
                        "pendingFwVersion": "",
                        "fwUpdateSubstatus":
                            format!("{}; rollback to {previous} failed: {error}", failure.reason),
                        "lastFwUpdateEndTime": now(),
                    }),
                };
                self.reporter.report(firmware_patch(fields)).await;
            }
            FirmwareKind::Method => {
                let (status, code) = match failure.stage {
                    Stage::Download => (LegacyFirmwareStatus::DownloadFailed, "DownloadFailed"),
                    Stage::Apply => (LegacyFirmwareStatus::ApplyFailed, "ApplyFailed"),
                };
                let message = match rollback {
                    Ok(()) => failure.reason,
                    Err(error) => format!("{}; rollback failed: {error}", failure.reason),
                };
                self.reporter
                    .report(dm_patch(
                        LEGACY_PROPERTY,
                        json!({
                            "status": status.as_str(),
                            "error": { "code": code, "message": message },
                        }),
                    ))
                    .await;
            }
        }
        self.clear(true).await;
    }

    /// Forgets the job; a failed desired update is remembered so that it is not retried until
    /// the back end asks again.
    async fn clear(&self, failed: bool) {
        let failed_target = (failed && self.record.kind == FirmwareKind::Desired)
            .then(|| self.record.target.clone());
        let saved = self
            .shared
            .state
            .update(|state| {
                state.firmware = None;
                state.failed_firmware = failed_target;
            })
            .await;
        if let Err(error) = saved {
            tracing::warn!(%error, "cannot save the end of a firmware update");
        }
    }
}

/// Reports download progress in whole steps (e.g. every 25%), so that a download costs a few
/// reports whatever its size.
struct DownloadProgress<'a, R> {
    reporter: &'a Reporter<R>,
    kind: FirmwareKind,
    step: u64,
    last_reported: AtomicU64,
}

impl<R: Report> Progress for DownloadProgress<'_, R> {
    async fn progress(&self, downloaded: u64, total: Option<u64>) {
        let Some(total) = total.filter(|total| *total > 0) else {
            return;
        };
        if self.kind != FirmwareKind::Desired {
            return;
        }
        let percent = downloaded.saturating_mul(100) / total;
        let reached = percent.min(100) / self.step * self.step;
        if reached == 0 || self.last_reported.fetch_max(reached, Ordering::Relaxed) >= reached {
            return;
        }
        self.reporter
            .report(firmware_patch(json!({
                "fwUpdateSubstatus": format!("downloaded {reached}%"),
            })))
            .await;
    }
}

/// The reported `firmware` object when an update starts.
pub(crate) fn start_patch(record: &FirmwareJob) -> Value {
    match record.kind {
        FirmwareKind::Desired => firmware_patch(json!({
            "pendingFwVersion": record.target.version,
            "fwUpdateStatus": FirmwareStatus::Downloading.as_str(),
            "fwUpdateSubstatus": format!("Starting update to firmware {}", record.target.version),
            "lastFwUpdateStartTime": record.started,
        })),
        FirmwareKind::Method => dm_patch(
            LEGACY_PROPERTY,
            json!({
                "status": LegacyFirmwareStatus::Waiting.as_str(),
                "fwPackageUri": record.target.uri,
                "error": null,
                "startedWaitingTime": record.started,
            }),
        ),
    }
}

/// The legacy pattern's report of a request refused before it started.
pub(crate) fn legacy_refusal(uri: &str, code: &str, message: &str) -> Value {
    dm_patch(
        LEGACY_PROPERTY,
        json!({
            "status": LegacyFirmwareStatus::DownloadFailed.as_str(),
            "fwPackageUri": uri,
            "error": { "code": code, "message": message },
        }),
    )
}
