//! The device runner: connects, reconciles what was in progress when the device went down,
//! reports, and serves the patterns until told to stop.

use std::future::Future;
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use twinhub_device::DeviceConfig;

use crate::actions::Actions;
use crate::download::{Fetch, LazyFetcher};
use crate::firmware::{Job, JobFuture, JobOutcome, legacy_refusal, start_patch};
use crate::link::{Connect, Event, MethodCall, Report, Reporter, Session, TwinSnapshot};
use crate::schema::{
    DEFAULT_CONFIGURATION_PROPERTY, DM_PROPERTY, FACTORY_RESET_METHOD, FIRMWARE_PROPERTY,
    FIRMWARE_UPDATE_METHOD, FirmwareStatus, FirmwareTarget, LegacyRequest, REBOOT_METHOD, dm_patch,
    firmware_patch, has_https_scheme, is_sha256_hex, merge, now,
};
use crate::sdk::SdkConnector;
use crate::state::{
    FirmwareJob, FirmwareKind, FirmwarePhase, PendingRestart, PersistedState, StateError,
    StateStore,
};

/// How the runner behaves; [`Options::default`] suits most devices.
#[derive(Clone, Debug)]
pub struct Options {
    /// Desired properties applied through [`Actions::apply_configuration`] and reported with
    /// the configuration status shape. Default: `telemetryConfig`.
    pub configuration_properties: Vec<String>,
    /// Where this device keeps (partial) firmware packages; it must be the device's own.
    /// Default: `<temp dir>/twinhub-dm/<device id>`.
    pub download_dir: Option<PathBuf>,
    /// Attempts per download before the update fails; each resumes where the last stopped.
    pub download_attempts: u32,
    /// Pause between download attempts.
    pub download_retry_delay: Duration,
    /// The largest package accepted, in bytes.
    pub max_package_bytes: u64,
    /// Download progress is reported each time it crosses a multiple of this many percent.
    pub progress_step_percent: u8,
    /// Connection attempts (after a start or a reboot) before [`run`] gives up.
    pub connect_attempts: u32,
    /// First pause between connection attempts; it doubles up to a minute.
    pub reconnect_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            configuration_properties: vec![DEFAULT_CONFIGURATION_PROPERTY.to_owned()],
            download_dir: None,
            download_attempts: 5,
            download_retry_delay: Duration::from_secs(2),
            max_package_bytes: 1 << 30,
            progress_step_percent: 25,
            connect_attempts: 6,
            reconnect_delay: Duration::from_secs(1),
        }
    }
}

/// Why [`run`] stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The hub could not be reached.
    #[error("cannot connect to the hub after {attempts} attempts: {message}")]
    Connect {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        message: String,
    },
    /// The device-management state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs the device-management patterns for the device `config` describes until `shutdown`
/// resolves (then it disconnects and returns `Ok`).
///
/// On every (re)connection it first reports the truth about what was in progress (see the crate
/// documentation), then the firmware it runs, then applies desired `firmware` and configuration
/// properties; afterwards it serves the methods `reboot`, `factoryReset` and `firmwareUpdate`
/// and desired-property changes. Reboots and factory resets close the connection, call
/// [`Actions::reboot`], and connect again.
pub async fn run<A: Actions, S: StateStore>(
    config: DeviceConfig,
    actions: A,
    state: S,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let download_dir = options
        .download_dir
        .clone()
        .unwrap_or_else(|| default_download_dir(&config.device_id));
    let fetcher = LazyFetcher::new(
        config.clone(),
        options.download_attempts,
        options.download_retry_delay,
    );
    let engine = Engine::new(
        SdkConnector::new(config),
        fetcher,
        actions,
        state,
        options,
        download_dir,
    )
    .await?;
    engine.run(shutdown).await
}

/// `<temp dir>/twinhub-dm/<device id>`, with characters unusable in file names replaced.
fn default_download_dir(device_id: &str) -> PathBuf {
    let mut name: String = device_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.chars().all(|c| c == '.') {
        name = format!("device{name}").replace('.', "_");
    }
    std::env::temp_dir().join("twinhub-dm").join(name)
}

/// The persisted state and the store behind it; every change is saved before it is relied on.
pub(crate) struct StateCell<S> {
    store: S,
    current: tokio::sync::Mutex<PersistedState>,
}

impl<S: StateStore> StateCell<S> {
    async fn load(store: S) -> Result<StateCell<S>, StateError> {
        let current = store.load().await?;
        Ok(StateCell {
            store,
            current: tokio::sync::Mutex::new(current),
        })
    }

    /// A copy of the state.
    pub(crate) async fn get(&self) -> PersistedState {
        self.current.lock().await.clone()
    }

    /// Changes the state with `change` and saves it; on a failed save the change is undone.
    pub(crate) async fn update(
        &self,
        change: impl FnOnce(&mut PersistedState),
    ) -> Result<(), StateError> {
        let mut current = self.current.lock().await;
        let mut next = current.clone();
        change(&mut next);
        if next == *current {
            return Ok(());
        }
        self.store.save(&next).await?;
        *current = next;
        Ok(())
    }

    /// Saves `next` unconditionally, for when the stored copy may be gone although the one in
    /// memory is unchanged.
    pub(crate) async fn rewrite(&self, next: PersistedState) -> Result<(), StateError> {
        let mut current = self.current.lock().await;
        self.store.save(&next).await?;
        *current = next;
        Ok(())
    }
}

/// What a device's runner shares with its firmware job.
pub(crate) struct Shared<F, A, S> {
    pub(crate) fetcher: F,
    pub(crate) actions: A,
    pub(crate) state: StateCell<S>,
    pub(crate) options: Options,
    pub(crate) download_dir: PathBuf,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Shutdown,
    /// The connection is gone; connect again.
    Reconnect,
    /// Reboot (after a `reboot`, a factory reset or a firmware install), then connect again.
    Restart,
}

/// The runner over any connector; tests drive it with a fake one.
pub(crate) struct Engine<C, F, A, S> {
    connector: C,
    shared: Arc<Shared<F, A, S>>,
}

impl<C: Connect, F: Fetch, A: Actions, S: StateStore> Engine<C, F, A, S> {
    pub(crate) async fn new(
        connector: C,
        fetcher: F,
        actions: A,
        state: S,
        options: Options,
        download_dir: PathBuf,
    ) -> Result<Self, RunError> {
        Ok(Engine {
            connector,
            shared: Arc::new(Shared {
                fetcher,
                actions,
                state: StateCell::load(state).await?,
                options,
                download_dir,
            }),
        })
    }

    pub(crate) async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RunError> {
        let mut shutdown = pin!(shutdown);
        loop {
            let session = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                session = self.connect() => session?,
            };
            match self.serve(session, shutdown.as_mut()).await? {
                Exit::Shutdown => return Ok(()),
                Exit::Reconnect => {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(self.shared.options.reconnect_delay) => {}
                    }
                }
                Exit::Restart => {
                    let rebooted = tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        rebooted = self.shared.actions.reboot() => rebooted,
                    };
                    if let Err(error) = rebooted {
                        tracing::warn!(%error, "reboot failed");
                        self.record_restart_error(error.to_string()).await?;
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<C::Session, RunError> {
        let attempts = self.shared.options.connect_attempts.max(1);
        let mut delay = self.shared.options.reconnect_delay;
        let mut attempt = 1;
        loop {
            match self.connector.connect().await {
                Ok(session) => return Ok(session),
                Err(error) if attempt >= attempts => {
                    return Err(RunError::Connect {
                        attempts,
                        message: error.to_string(),
                    });
                }
                Err(error) => {
                    tracing::info!(%error, attempt, "connecting failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                    attempt += 1;
                }
            }
        }
    }

    /// Remembers why the restart failed, so that the next session reports it.
    async fn record_restart_error(&self, error: String) -> Result<(), RunError> {
        self.shared
            .state
            .update(|state| {
                if let Some(pending) = state.factory_reset.as_mut() {
                    pending.error = Some(error);
                } else if let Some(pending) = state.reboot.as_mut() {
                    pending.error = Some(error);
                } else if let Some(job) = state.firmware.as_mut() {
                    job.reboot_error = Some(error);
                }
            })
            .await?;
        Ok(())
    }

    async fn serve(
        &self,
        mut session: C::Session,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<Exit, RunError> {
        let twin = match session.twin().await {
            Ok(twin) => twin,
            Err(error) => {
                tracing::warn!(%error, "reading the twin failed; reconnecting");
                session.close().await;
                return Ok(Exit::Reconnect);
            }
        };
        let mut device = Device {
            shared: Arc::clone(&self.shared),
            reporter: Reporter::seeded(session.reporter(), &twin.reported),
            desired: Map::new(),
            desired_version: twin.desired_version,
            job: None,
        };
        device.start(twin).await?;
        loop {
            let step = tokio::select! {
                biased;
                () = &mut shutdown => Step::Shutdown,
                outcome = poll_job(&mut device.job) => Step::Job(outcome),
                event = session.next_event() => Step::Event(event),
            };
            let exit = match step {
                Step::Shutdown => Some(Exit::Shutdown),
                Step::Job(outcome) => {
                    device.job = None;
                    match outcome {
                        JobOutcome::Reboot => Some(Exit::Restart),
                        JobOutcome::Finished => {
                            device.on_firmware(false).await?;
                            None
                        }
                    }
                }
                Step::Event(Event::Desired {
                    version,
                    patch,
                    full,
                }) => {
                    device.on_desired(version, patch, full).await?;
                    None
                }
                Step::Event(Event::Method(call)) => device.on_method(call).await?,
                Step::Event(Event::Resync) => match session.twin().await {
                    Ok(twin) => {
                        device.reporter.resend().await;
                        device
                            .on_desired(twin.desired_version, twin.desired, true)
                            .await?;
                        None
                    }
                    Err(error) => {
                        tracing::warn!(%error, "re-reading the twin failed; reconnecting");
                        Some(Exit::Reconnect)
                    }
                },
                Step::Event(Event::Closed) => Some(Exit::Reconnect),
            };
            if let Some(exit) = exit {
                // An interrupted download resumes after the restart; its record says where.
                device.job = None;
                session.close().await;
                return Ok(exit);
            }
        }
    }
}

enum Step {
    Shutdown,
    Job(JobOutcome),
    Event(Event),
}

/// The running job's outcome; never resolves without one.
async fn poll_job(job: &mut Option<JobFuture>) -> JobOutcome {
    match job {
        Some(job) => job.await,
        None => std::future::pending().await,
    }
}

/// One session's view of the device.
struct Device<F, A, S, R> {
    shared: Arc<Shared<F, A, S>>,
    reporter: Reporter<R>,
    /// The desired properties as last seen (merged from notifications).
    desired: Map<String, Value>,
    desired_version: i64,
    /// The firmware update in progress. Not `Sync`, so every method that awaits takes
    /// `&mut self`: that keeps the runner's future `Send`.
    job: Option<JobFuture>,
}

impl<F: Fetch, A: Actions, S: StateStore, R: Report> Device<F, A, S, R> {
    /// Reconciles the persisted state, reports the defaults and applies the desired properties.
    async fn start(&mut self, twin: TwinSnapshot) -> Result<(), RunError> {
        let state = self.shared.state.get().await;
        let wiped = state.factory_reset.is_some();
        let current = self.firmware_version().await;
        let mut defaults = Map::new();
        defaults.insert(
            FIRMWARE_PROPERTY.to_owned(),
            json!({ "currentFwVersion": current, "pendingFwVersion": "" }),
        );
        let mut dm = Map::new();
        if let Some(reset) = &state.factory_reset {
            dm.insert(
                "factoryReset".to_owned(),
                finished(reset, "reset", "lastFactoryReset"),
            );
            // A reset device starts from default reported properties.
            defaults[FIRMWARE_PROPERTY]["fwUpdateStatus"] = json!(FirmwareStatus::Current.as_str());
            defaults[FIRMWARE_PROPERTY]["fwUpdateSubstatus"] = json!("");
        }
        if let Some(reboot) = &state.reboot {
            dm.insert(
                "reboot".to_owned(),
                finished(reboot, "rebooted", "lastReboot"),
            );
        }
        if !dm.is_empty() {
            defaults.insert(DM_PROPERTY.to_owned(), Value::Object(dm));
        }
        let resumed = match &state.firmware {
            Some(job) => match job.phase {
                FirmwarePhase::Downloading | FirmwarePhase::Verifying => {
                    let resumed_job = job.clone();
                    if job.kind == FirmwareKind::Desired {
                        defaults[FIRMWARE_PROPERTY]["pendingFwVersion"] = json!(job.target.version);
                    }
                    Some(resumed_job)
                }
                FirmwarePhase::Applying | FirmwarePhase::Rebooting => None,
            },
            None => None,
        };
        let patch = if wiped {
            replacement(&strip_metadata(&twin.reported), &defaults)
        } else {
            Value::Object(defaults)
        };
        self.shared
            .state
            .update(|state| {
                state.reboot = None;
                state.factory_reset = None;
            })
            .await?;
        self.reporter.report(patch).await;

        if let Some(job) = state.firmware.clone()
            && matches!(
                job.phase,
                FirmwarePhase::Applying | FirmwarePhase::Rebooting
            )
        {
            Job::new(Arc::clone(&self.shared), self.reporter.clone(), job)
                .reconcile_after_restart()
                .await;
        }
        if let Some(job) = resumed {
            self.start_job(job, false);
        }
        self.desired = strip_metadata(&twin.desired);
        self.on_firmware(false).await?;
        let names = self.shared.options.configuration_properties.clone();
        for name in names {
            if let Some(value) = self.desired.get(&name).cloned() {
                let already = !wiped
                    && twin.reported.get(&name).is_some_and(|reported| {
                        reported.get("status") == Some(&json!("Success"))
                            && reported.get("appliedConfig") == Some(&value)
                    });
                self.apply_configuration(&name, &value, already).await;
            }
        }
        Ok(())
    }

    async fn firmware_version(&mut self) -> String {
        match self.shared.actions.firmware_version().await {
            Ok(version) => version,
            Err(error) => {
                tracing::warn!(%error, "cannot read the firmware version");
                "unknown".to_owned()
            }
        }
    }

    /// A desired-properties change: a patch, or with `full` the whole document.
    async fn on_desired(
        &mut self,
        version: i64,
        patch: Map<String, Value>,
        full: bool,
    ) -> Result<(), RunError> {
        if !full && version <= self.desired_version {
            return Ok(());
        }
        let before = self.desired.clone();
        if full {
            self.desired = strip_metadata(&patch);
        } else {
            merge(&mut self.desired, &strip_metadata(&patch));
        }
        self.desired_version = self.desired_version.max(version);
        let changed = |name: &str| {
            if full {
                before.get(name) != self.desired.get(name)
            } else {
                patch.contains_key(name)
            }
        };
        let firmware_changed = changed(FIRMWARE_PROPERTY);
        let configuration: Vec<(String, Value)> = self
            .shared
            .options
            .configuration_properties
            .iter()
            .filter(|name| changed(name))
            .filter_map(|name| Some((name.clone(), self.desired.get(name)?.clone())))
            .collect();
        if firmware_changed {
            self.on_firmware(true).await?;
        }
        for (name, value) in configuration {
            self.apply_configuration(&name, &value, false).await;
        }
        Ok(())
    }

    /// Acts on desired `firmware`. `explicit`: the back end just wrote it, so a target that
    /// failed before is tried again.
    async fn on_firmware(&mut self, explicit: bool) -> Result<(), RunError> {
        let Some(value) = self.desired.get(FIRMWARE_PROPERTY).filter(|v| !v.is_null()) else {
            return Ok(());
        };
        let target = FirmwareTarget::from_desired(value);
        let state = self.shared.state.get().await;
        if self.job.is_some() {
            let same = matches!((&target, &state.firmware), (Ok(t), Some(job)) if job.target == *t);
            if explicit && !same {
                self.reporter
                    .report(firmware_patch(json!({
                        "fwUpdateSubstatus": "Firmware update already running",
                    })))
                    .await;
            }
            return Ok(());
        }
        let target = match target {
            Ok(target) => target,
            Err(reason) => {
                if explicit {
                    self.report_firmware_error(&reason).await;
                }
                return Ok(());
            }
        };
        let current = self.firmware_version().await;
        if target.version == current {
            let reported_current = self
                .reporter
                .reported(&[FIRMWARE_PROPERTY, "fwUpdateStatus"])
                == Some(json!(FirmwareStatus::Current.as_str()));
            if !explicit && reported_current {
                return Ok(());
            }
            self.reporter
                .report(firmware_patch(json!({
                    "currentFwVersion": current,
                    "pendingFwVersion": "",
                    "fwUpdateStatus": FirmwareStatus::Current.as_str(),
                    "fwUpdateSubstatus": "Firmware already up to date",
                })))
                .await;
            return Ok(());
        }
        if !explicit && state.failed_firmware.as_ref() == Some(&target) {
            return Ok(());
        }
        if let Err(reason) = target.validate() {
            self.report_firmware_error(&reason).await;
            self.shared
                .state
                .update(|state| state.failed_firmware = Some(target))
                .await?;
            return Ok(());
        }
        let record = FirmwareJob {
            kind: FirmwareKind::Desired,
            target,
            previous_version: current,
            phase: FirmwarePhase::Downloading,
            started: now(),
            reboot_error: None,
        };
        self.begin_job(record).await
    }

    async fn report_firmware_error(&mut self, reason: &str) {
        self.reporter
            .report(firmware_patch(json!({
                "pendingFwVersion": "",
                "fwUpdateStatus": FirmwareStatus::Error.as_str(),
                "fwUpdateSubstatus": reason,
            })))
            .await;
    }

    /// Persists and announces a new firmware job, then starts it.
    async fn begin_job(&mut self, record: FirmwareJob) -> Result<(), RunError> {
        let saved = record.clone();
        self.shared
            .state
            .update(|state| {
                state.firmware = Some(saved);
                state.failed_firmware = None;
            })
            .await?;
        self.reporter.report(start_patch(&record)).await;
        self.start_job(record, true);
        Ok(())
    }

    fn start_job(&mut self, record: FirmwareJob, fresh: bool) {
        let shared = Arc::clone(&self.shared);
        let reporter = self.reporter.clone();
        self.job = Some(Box::pin(async move {
            if fresh && record.target.sha256.is_empty() {
                // An unnamed legacy package must not resume some other package's bytes.
                let stale = shared.download_dir.join("package.bin");
                let _ = crate::download::remove_file(&stale).await;
            }
            Job::new(shared, reporter, record).run().await
        }));
    }

    /// Applies one configuration property and reports Pending → Success | Failed. `quiet`: the
    /// twin already reports it applied, so only a failure is reported.
    async fn apply_configuration(&mut self, name: &str, value: &Value, quiet: bool) {
        if value.is_null() {
            return;
        }
        if !quiet {
            let pending = self.reporter.replacing(&[name, "pendingConfig"], value);
            self.reporter
                .report(json!({ name: { "status": "Pending", "pendingConfig": pending } }))
                .await;
        }
        let patch = match self.shared.actions.apply_configuration(name, value).await {
            Ok(()) if quiet => return,
            Ok(()) => json!({ name: {
                "status": "Success",
                "appliedConfig": self.reporter.replacing(&[name, "appliedConfig"], value),
                "pendingConfig": null,
                "error": null,
            }}),
            Err(error) => json!({ name: {
                "status": "Failed",
                "pendingConfig": null,
                "error": error.to_string(),
            }}),
        };
        self.reporter.report(patch).await;
    }

    /// Handles a direct method; `Some` ends the session.
    async fn on_method(&mut self, call: MethodCall) -> Result<Option<Exit>, RunError> {
        match call.name.as_str() {
            REBOOT_METHOD | FACTORY_RESET_METHOD if self.firmware_applying().await => {
                call.respond(
                    409,
                    json!({"message": "A firmware update is being applied; try again later"}),
                )
                .await;
                Ok(None)
            }
            REBOOT_METHOD => self.reboot(call).await,
            FACTORY_RESET_METHOD => self.factory_reset(call).await,
            FIRMWARE_UPDATE_METHOD => {
                self.legacy_firmware_update(call).await?;
                Ok(None)
            }
            name => {
                let message = format!("Method {name} is not implemented by this device");
                call.respond(404, json!({ "message": message })).await;
                Ok(None)
            }
        }
    }

    async fn firmware_applying(&mut self) -> bool {
        self.job.is_some()
            && self.shared.state.get().await.firmware.is_some_and(|job| {
                matches!(
                    job.phase,
                    FirmwarePhase::Applying | FirmwarePhase::Rebooting
                )
            })
    }

    async fn reboot(&mut self, call: MethodCall) -> Result<Option<Exit>, RunError> {
        call.respond(200, json!("Reboot started")).await;
        let pending = PendingRestart {
            started: now(),
            error: None,
        };
        if let Err(error) = self
            .shared
            .state
            .update(|state| state.reboot = Some(pending))
            .await
        {
            self.report_restart_failure("reboot", &error.to_string())
                .await;
            return Ok(None);
        }
        self.reporter
            .report(dm_patch(
                "reboot",
                json!({ "status": "rebooting", "error": null }),
            ))
            .await;
        Ok(Some(Exit::Restart))
    }

    async fn factory_reset(&mut self, call: MethodCall) -> Result<Option<Exit>, RunError> {
        call.respond(200, json!("Factory reset started")).await;
        let pending = PendingRestart {
            started: now(),
            error: None,
        };
        let marker = pending.clone();
        if let Err(error) = self
            .shared
            .state
            .update(|state| state.factory_reset = Some(marker))
            .await
        {
            self.report_restart_failure("factoryReset", &error.to_string())
                .await;
            return Ok(None);
        }
        self.reporter
            .report(dm_patch(
                "factoryReset",
                json!({ "status": "resetting", "error": null }),
            ))
            .await;
        // The reset forgets any update in progress, its partial package included.
        self.job = None;
        if let Err(error) = tokio::fs::remove_dir_all(&self.shared.download_dir).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, "cannot remove partial firmware downloads");
        }
        if let Err(error) = self.shared.actions.factory_reset().await {
            self.shared
                .state
                .update(|state| state.factory_reset = None)
                .await?;
            self.report_restart_failure("factoryReset", &error.to_string())
                .await;
            return Ok(None);
        }
        // Whatever the reset wiped, the device remembers only that it was reset. Written even
        // when it equals what is in memory: the wipe may have deleted the state file itself.
        self.shared
            .state
            .rewrite(PersistedState {
                factory_reset: Some(pending),
                ..PersistedState::default()
            })
            .await?;
        Ok(Some(Exit::Restart))
    }

    async fn report_restart_failure(&mut self, name: &str, error: &str) {
        let (time_field, reason) = if name == "reboot" {
            ("lastReboot", "reboot")
        } else {
            ("lastFactoryReset", "factory reset")
        };
        tracing::warn!(%error, "{reason} failed");
        self.reporter
            .report(dm_patch(
                name,
                json!({ "status": "failed", "error": error, time_field: now() }),
            ))
            .await;
    }

    async fn legacy_firmware_update(&mut self, call: MethodCall) -> Result<(), RunError> {
        let request = match LegacyRequest::from_payload(&call.payload) {
            Ok(request) => request,
            Err(message) => {
                call.respond(400, json!({ "message": message })).await;
                return Ok(());
            }
        };
        if self.job.is_some() {
            call.respond(409, json!({"message": "Firmware update already running"}))
                .await;
            return Ok(());
        }
        call.respond(200, json!("FirmwareUpdate started")).await;
        if !has_https_scheme(&request.uri) {
            self.reporter
                .report(legacy_refusal(
                    &request.uri,
                    "InsecurePackageUri",
                    "Insecure package URI",
                ))
                .await;
            return Ok(());
        }
        if request.sha256.as_deref().is_some_and(|s| !is_sha256_hex(s)) {
            self.reporter
                .report(legacy_refusal(
                    &request.uri,
                    "InvalidCheckValue",
                    "fwPackageCheckValue must be 64 hex digits of SHA-256",
                ))
                .await;
            return Ok(());
        }
        let record = FirmwareJob {
            kind: FirmwareKind::Method,
            target: FirmwareTarget {
                version: request.version.unwrap_or_default(),
                uri: request.uri,
                sha256: request.sha256.unwrap_or_default(),
                size: request.size,
            },
            previous_version: self.firmware_version().await,
            phase: FirmwarePhase::Downloading,
            started: now(),
            reboot_error: None,
        };
        self.begin_job(record).await
    }
}

/// The reported status object of a reboot or reset that finished (or failed).
fn finished(pending: &PendingRestart, done: &str, time_field: &str) -> Value {
    match &pending.error {
        None => json!({ "status": done, time_field: now(), "error": null }),
        Some(error) => json!({ "status": "failed", time_field: now(), "error": error }),
    }
}

/// `document` without `$version`, `$metadata` and other `$` keys.
fn strip_metadata(document: &Map<String, Value>) -> Map<String, Value> {
    document
        .iter()
        .filter(|(key, _)| !key.starts_with('$'))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The merge patch that turns `old` into exactly `new`: keys only in `old` become `null`.
pub(crate) fn replacement(old: &Map<String, Value>, new: &Map<String, Value>) -> Value {
    let mut patch = Map::new();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in new {
        let replaced = match (old.get(key), value) {
            (Some(Value::Object(old)), Value::Object(new)) => replacement(old, new),
            _ => value.clone(),
        };
        patch.insert(key.clone(), replaced);
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A factory reset may wipe the directory holding the state file while the state in
    /// memory already says "reset pending": the marker must be written again all the same.
    #[tokio::test]
    async fn state_survives_a_wipe_of_its_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::state::FileState::new(dir.path());
        let cell = StateCell::load(store.clone()).await.expect("loads");
        let marker = PendingRestart {
            started: now(),
            error: None,
        };
        let reset = PersistedState {
            factory_reset: Some(marker),
            ..PersistedState::default()
        };
        cell.rewrite(reset.clone()).await.expect("saves");
        std::fs::remove_file(store.path()).expect("the wipe deletes the state file");
        cell.update(|state| *state = reset.clone())
            .await
            .expect("no change");
        assert!(
            !store.path().exists(),
            "update skips a save that changes nothing in memory"
        );
        cell.rewrite(reset.clone()).await.expect("saves again");
        assert_eq!(store.load().await.expect("reads back"), reset);
    }

    #[test]
    fn replacement_nulls_what_is_gone_at_every_depth() {
        let old = json!({"a": {"x": 1, "y": 2}, "b": 1})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let new = json!({"a": {"x": 3}, "c": {"z": 1}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            replacement(&old, &new),
            json!({"b": null, "a": {"y": null, "x": 3}, "c": {"z": 1}})
        );
        let mut merged = old.clone();
        if let Value::Object(patch) = replacement(&old, &new) {
            merge(&mut merged, &patch);
        }
        assert_eq!(Value::Object(merged), Value::Object(new));
    }

    /// Small JSON objects: scalars and nested objects, no nulls (reported values never hold
    /// them; a null in a patch means removal).
    fn json_object() -> impl Strategy<Value = Map<String, Value>> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect()))
        });
        prop::collection::btree_map("[a-d]", value, 0..4).prop_map(|map| map.into_iter().collect())
    }

    proptest! {
        #[test]
        fn a_replacement_patch_turns_any_document_into_exactly_the_new_one(
            old in json_object(),
            new in json_object(),
        ) {
            let mut merged = old.clone();
            if let Value::Object(patch) = replacement(&old, &new) {
                merge(&mut merged, &patch);
            }
            prop_assert_eq!(merged, new);
        }
    }

    #[test]
    fn default_download_dirs_are_safe_names() {
        assert!(default_download_dir("a/b").ends_with("twinhub-dm/a_b"));
        assert!(default_download_dir("..").ends_with("twinhub-dm/device__"));
    }
}
