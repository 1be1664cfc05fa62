//! Operations asked for by commands, and the ledger that makes them
//! idempotent: the same operation id always gets the same result, and the
//! action behind it happens once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch;

use crate::agent::Shared;
use crate::config::{ApkUrlPolicy, UrlRefused};
use crate::engine::{ContainerInfo, EngineError};
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::protocol::{Command, CommandResult, DesiredDevice, Operation, RunState};
use crate::reconcile;
use crate::spec::{
    self, DeviceId, DevicePath, OperationId, SnapshotId, LABEL_ADB_PORT, LABEL_NODE,
};

/// The largest APK `install_apk` downloads.
const MAX_APK_BYTES: u64 = 1 << 30;
const MAX_FILE_BYTES: usize = 64 << 20;
/// Largest file `pull_file` returns and largest screenshot: in base64, with
/// the envelope around it, the result must fit in one report request
/// (`MAX_REPORT_BYTES`, 24 MiB), since reports are how results travel.
const MAX_PULL_BYTES: usize = 16 << 20;
const MAX_SCREENSHOT_BYTES: usize = MAX_PULL_BYTES;
const MAX_APK_REDIRECTS: usize = 5;

/// How long a finished operation is remembered: a redelivery within this
/// time gets the recorded result, a later one runs as a new operation.
pub const RESULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How long a stored result keeps its payload (file contents, screenshots,
/// logs, shell output). Redeliveries come within seconds or minutes; after
/// this, a replay gets status, error and metadata only, marked
/// `payload_expired`, so device data does not sit on the host for a day.
pub const PAYLOAD_REPLAY_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How often the running agent sweeps the ledger (see [`Ledger::sweep`]).
pub const LEDGER_SWEEP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Output fields that carry device data rather than metadata about it.
const PAYLOAD_FIELDS: &[&str] = &["content_base64", "png_base64", "text", "stdout", "stderr"];

/// The result of an operation in flight, once its runner has it. The runner
/// holds the sender; a closed channel without a value means the runner was
/// cancelled (its task aborted) before it finished.
type InFlight = watch::Receiver<Option<CommandResult>>;

/// What a delivery of an operation does, decided under the in-flight lock.
enum Claim {
    /// This delivery inserted the in-flight entry and runs the work.
    Run(watch::Sender<Option<CommandResult>>),
    /// Another delivery is running it; wait for its result.
    Wait(InFlight),
    /// It finished before; here is the recorded result.
    Done(CommandResult),
}

/// What one sweep of the ledger did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Results (and leftover temporary files) removed.
    pub removed: usize,
    /// Results whose payload was dropped.
    pub expired: usize,
}

/// Results of finished operations, kept on disk so they survive a restart.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    inflight: tokio::sync::Mutex<HashMap<String, InFlight>>,
}

impl Ledger {
    /// Opens the ledger under `data_root/.agent/ops` and sweeps it once.
    pub fn open(data_root: &Path) -> std::io::Result<Self> {
        let dir = data_root.join(".agent").join("ops");
        std::fs::create_dir_all(&dir)?;
        let report = sweep_dir(&dir, SystemTime::now())?;
        if report != SweepReport::default() {
            tracing::info!(
                removed = report.removed,
                expired = report.expired,
                "swept the operation ledger"
            );
        }
        Ok(Self {
            dir,
            inflight: Default::default(),
        })
    }

    fn path(&self, op: &str) -> PathBuf {
        self.dir.join(format!("{op}.json"))
    }

    /// Runs `f` once per operation id; later calls with the same id, also
    /// while the first is still running, get the same result. The flag says
    /// whether this call was a duplicate.
    pub async fn run<F>(&self, op: &str, f: F) -> (CommandResult, bool)
    where
        F: std::future::Future<Output = CommandResult>,
    {
        let mut work = Some(f);
        loop {
            match self.claim(op).await {
                Claim::Done(r) => return (r, true),
                Claim::Wait(rx) => {
                    if let Some(r) = wait_for_result(rx).await {
                        return (r, true);
                    }
                    // The runner was cancelled without a result: claim again,
                    // so that exactly one of the waiting deliveries runs it.
                }
                Claim::Run(tx) => {
                    let f = work.take().expect("only one claim of a call runs the work");
                    let r = f.await;
                    self.persist(op, &r).await;
                    // Waiters get the result first; the entry goes only after
                    // the file is written, so a delivery that finds no entry
                    // finds the file.
                    tx.send_replace(Some(r.clone()));
                    self.inflight.lock().await.remove(op);
                    return (r, false);
                }
            }
        }
    }

    /// Decides, under the in-flight lock, whether this delivery runs the
    /// operation: the in-flight map first, then the result file, and only if
    /// both are empty does it insert the entry that makes it the runner. A
    /// look at the file outside the lock could miss a result written just
    /// after it and find the entry already gone, and run the work twice.
    async fn claim(&self, op: &str) -> Claim {
        let mut inflight = self.inflight.lock().await;
        if let Some(rx) = inflight.get(op) {
            if rx.has_changed().is_ok() || rx.borrow().is_some() {
                return Claim::Wait(rx.clone());
            }
            // A closed entry without a result belongs to a cancelled runner;
            // it is replaced below unless that runner still wrote the file.
        }
        if let Some(r) = self.load(op).await {
            inflight.remove(op);
            return Claim::Done(r);
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(op.to_owned(), rx);
        Claim::Run(tx)
    }

    async fn persist(&self, op: &str, r: &CommandResult) {
        let tmp = self.dir.join(format!(".{op}.tmp"));
        let data = serde_json::to_vec(r).expect("result serializes");
        // Write then rename, so a crash never leaves half a result.
        if let Err(e) = async {
            tokio::fs::write(&tmp, data).await?;
            tokio::fs::rename(&tmp, self.path(op)).await
        }
        .await
        {
            tracing::error!(error = %e, op, "cannot persist operation result");
        }
    }

    /// The recorded result; past the replay window without its payload, even
    /// if no sweep has removed it from the file yet.
    async fn load(&self, op: &str) -> Option<CommandResult> {
        let path = self.path(op);
        let data = tokio::fs::read(&path).await.ok()?;
        let mut r: CommandResult = serde_json::from_slice(&data).ok()?;
        let age = tokio::fs::metadata(&path)
            .await
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age > PAYLOAD_REPLAY_WINDOW {
            expire_payload(&mut r);
        }
        Some(r)
    }

    /// Removes results older than [`RESULT_RETENTION`] and drops the payload
    /// of results older than [`PAYLOAD_REPLAY_WINDOW`]; the agent runs this
    /// every [`LEDGER_SWEEP_INTERVAL`].
    pub async fn sweep(&self) -> std::io::Result<SweepReport> {
        self.sweep_at(SystemTime::now()).await
    }

    /// [`Ledger::sweep`] as if the time were `now`.
    pub async fn sweep_at(&self, now: SystemTime) -> std::io::Result<SweepReport> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || sweep_dir(&dir, now))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Waits for the runner's result; `None` if the runner was cancelled first.
async fn wait_for_result(mut rx: InFlight) -> Option<CommandResult> {
    loop {
        if let Some(r) = rx.borrow_and_update().clone() {
            return Some(r);
        }
        if rx.changed().await.is_err() {
            // Closed: a value sent just before the runner went still counts.
            return rx.borrow().clone();
        }
    }
}

/// Drops the payload fields of a result and marks it, keeping status, error
/// and the remaining (metadata) fields of the output.
fn expire_payload(r: &mut CommandResult) {
    if let Some(output) = r.output.as_object_mut() {
        for field in PAYLOAD_FIELDS {
            output.remove(*field);
        }
    }
    r.payload_expired = true;
}

fn sweep_dir(dir: &Path, now: SystemTime) -> std::io::Result<SweepReport> {
    let mut report = SweepReport::default();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let Some(modified) = entry.metadata().and_then(|m| m.modified()).ok() else {
            continue;
        };
        let age = now.duration_since(modified).unwrap_or_default();
        // Only temporary files start with a dot (operation ids start with a
        // letter or digit). They are renamed within moments; an old one is
        // left over from a crash and may hold a payload.
        let temporary = entry.file_name().to_string_lossy().starts_with('.');
        if age > RESULT_RETENTION || (temporary && age > PAYLOAD_REPLAY_WINDOW) {
            match std::fs::remove_file(&path) {
                Ok(()) => report.removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cannot remove an old operation result")
                }
            }
        } else if !temporary && age > PAYLOAD_REPLAY_WINDOW {
            match expire_file(&path, modified) {
                Ok(true) => report.expired += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cannot drop the payload of an operation result")
                }
            }
        }
    }
    Ok(report)
}

/// Rewrites one result without its payload; `false` if it had none left.
/// The file keeps its modification time, which is the result's age.
fn expire_file(path: &Path, modified: SystemTime) -> std::io::Result<bool> {
    let data = std::fs::read(path)?;
    let Ok(mut r) = serde_json::from_slice::<CommandResult>(&data) else {
        return Ok(false);
    };
    if r.payload_expired {
        return Ok(false);
    }
    expire_payload(&mut r);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.expire.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(
        &mut file,
        &serde_json::to_vec(&r).expect("result serializes"),
    )?;
    file.set_modified(modified)?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Runs one authenticated command through the ledger.
pub async fn run_command(shared: &Arc<Shared>, cmd: Command) -> CommandResult {
    let op_id = cmd.operation_id.to_string();
    let (result, duplicate) = shared
        .ledger
        .run(&op_id, async {
            Metrics::inc(&shared.metrics.commands);
            let started = Instant::now();
            let r = execute(shared, &cmd.operation_id, cmd.op).await;
            tracing::info!(op = %op_id, ok = r.is_ok(), ms = started.elapsed().as_millis() as u64, "operation finished");
            match r {
                Ok(output) => CommandResult { operation_id: op_id.clone(), ok: true, output, error_code: None, error: None, payload_expired: false },
                Err(e) => CommandResult {
                    operation_id: op_id.clone(),
                    ok: false,
                    output: serde_json::Value::Null,
                    error_code: Some(e.code().to_owned()),
                    error: Some(e.to_string()),
                    payload_expired: false,
                },
            }
        })
        .await;
    if duplicate {
        Metrics::inc(&shared.metrics.commands_deduplicated);
        tracing::info!(op = %op_id, "duplicate operation answered from the ledger");
    }
    shared.reconcile_now.notify_one();
    result
}

async fn execute(
    shared: &Arc<Shared>,
    operation_id: &OperationId,
    op: Operation,
) -> Result<serde_json::Value, AgentError> {
    match op {
        Operation::Create { device, import } => {
            if let Some(archive) = &import {
                // Before the device is taken in, so it is never made from an empty /data.
                crate::archive::import(shared, &device.device_id, archive).await?;
            }
            create(shared, device).await
        }
        Operation::Reset { device } => reset(shared, device).await,
        Operation::Start {
            device_id,
            generation,
        } => {
            set_state(shared, &device_id, generation, RunState::Running)?;
            reconcile::reconcile_device(shared, &device_id).await?;
            wait_ready(shared, &device_id).await
        }
        Operation::Stop {
            device_id,
            generation,
        } => {
            set_state(shared, &device_id, generation, RunState::Stopped)?;
            reconcile::reconcile_device(shared, &device_id).await?;
            Ok(json!({"device_id": device_id, "status": "stopped"}))
        }
        Operation::Restart { device_id } => {
            let c = running(shared, &device_id).await?;
            {
                let lock = shared.device_lock(&device_id);
                let _g = lock.lock().await;
                shared
                    .engine
                    .restart(&c.name, shared.cfg.stop_timeout)
                    .await?;
                shared.with_runtime(&device_id, |rt| {
                    rt.ready_container = None;
                    rt.booting_since = Some(Instant::now());
                });
            }
            let mut out = wait_ready(shared, &device_id).await?;
            out["restarted"] = json!(true);
            Ok(out)
        }
        Operation::Delete {
            device_id,
            generation,
        } => {
            shared
                .desired
                .lock()
                .expect("desired lock")
                .delete(&device_id, generation);
            let lock = shared.device_lock(&device_id);
            let _g = lock.lock().await;
            reconcile::remove_device(shared, &device_id).await?;
            Ok(json!({"device_id": device_id, "status": "removed"}))
        }
        Operation::Snapshot {
            device_id,
            snapshot_id,
            archive,
        } => {
            let mut out = snapshot(shared, &device_id, &snapshot_id).await?;
            if archive {
                // The snapshot stands on its node whatever becomes of its archive.
                let data =
                    snapshot_dir(&shared.cfg.data_root, &device_id, &snapshot_id).join("data");
                match crate::archive::upload(&shared.cfg, &data, &snapshot_id).await {
                    Ok(a) => out["archive"] = a,
                    Err(e) => {
                        tracing::warn!(device = %device_id, snapshot = %snapshot_id, error = %e, "snapshot archive upload failed");
                        out["archive_error"] = json!(e.to_string());
                    }
                }
            }
            Ok(out)
        }
        Operation::Restore {
            device_id,
            snapshot_id,
            source_device_id,
        } => {
            let source = source_device_id.as_ref().unwrap_or(&device_id);
            restore(shared, &device_id, source, &snapshot_id).await
        }
        Operation::DeleteSnapshot {
            device_id,
            snapshot_id,
        } => delete_snapshot(shared, &device_id, &snapshot_id).await,
        Operation::InstallApk {
            device_id,
            url,
            sha256,
        } => install_apk(shared, &device_id, &url, &sha256).await,
        Operation::UninstallApk { device_id, package } => {
            let c = running(shared, &device_id).await?;
            let out = shared
                .engine
                .exec(
                    &c.name,
                    &["pm", "uninstall", package.as_str()],
                    Duration::from_secs(60),
                    64 << 10,
                )
                .await?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.exit_code != Some(0) || !text.contains("Success") {
                return Err(AgentError::DeviceCommand {
                    what: "pm uninstall",
                    detail: text.trim().to_owned(),
                });
            }
            Ok(json!({"device_id": device_id, "package": package}))
        }
        Operation::Shell {
            device_id,
            command,
            timeout_ms,
            max_output_bytes,
        } => {
            let c = running(shared, &device_id).await?;
            let timeout = Duration::from_millis(timeout_ms.unwrap_or(30_000).clamp(1, 300_000));
            let cap = max_output_bytes.unwrap_or(64 << 10).min(1 << 20);
            let out = shared
                .engine
                .exec(&c.name, &["sh", "-c", &command], timeout, cap)
                .await?;
            Ok(json!({
                "exit_code": out.exit_code,
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
                "truncated": out.truncated,
            }))
        }
        Operation::Screenshot { device_id } => {
            let c = running(shared, &device_id).await?;
            let out = shared
                .engine
                .exec(
                    &c.name,
                    &["screencap", "-p"],
                    Duration::from_secs(30),
                    MAX_SCREENSHOT_BYTES,
                )
                .await?;
            if out.exit_code != Some(0) || out.truncated {
                return Err(AgentError::DeviceCommand {
                    what: "screencap",
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
            Ok(
                json!({"png_base64": base64::engine::general_purpose::STANDARD.encode(&out.stdout), "bytes": out.stdout.len()}),
            )
        }
        Operation::Logcat { device_id, lines } => {
            let c = running(shared, &device_id).await?;
            let n = lines.unwrap_or(200).clamp(1, 5000).to_string();
            let out = shared
                .engine
                .exec(
                    &c.name,
                    &["logcat", "-d", "-t", &n],
                    Duration::from_secs(30),
                    4 << 20,
                )
                .await?;
            Ok(json!({"text": String::from_utf8_lossy(&out.stdout), "truncated": out.truncated}))
        }
        Operation::PushFile {
            device_id,
            path,
            bytes,
            sha256,
        } => {
            if bytes > MAX_FILE_BYTES as u64 {
                return Err(AgentError::InvalidArgument(format!(
                    "file larger than {MAX_FILE_BYTES} bytes"
                )));
            }
            if !is_sha256_hex(&sha256) {
                return Err(AgentError::InvalidArgument(
                    "sha256 must be 64 lower-case hex digits".into(),
                ));
            }
            let c = running(shared, &device_id).await?;
            // The contents come over signed HTTP, not in the command, and
            // are checked against its length and digest before they reach
            // the device.
            let data = crate::agent::fetch_operation_content(
                &shared.cfg,
                operation_id.as_str(),
                bytes,
                &sha256,
            )
            .await?;
            push_bytes(shared, &c, &path, &data).await?;
            Ok(json!({"path": path, "bytes": data.len()}))
        }
        Operation::PullFile { device_id, path } => {
            let c = running(shared, &device_id).await?;
            let tar = shared
                .engine
                .download_tar(&c.name, path.as_str(), MAX_PULL_BYTES + 4096)
                .await?;
            let data = first_file_in_tar(&tar)?;
            if data.len() > MAX_PULL_BYTES {
                return Err(AgentError::InvalidArgument(format!(
                    "file larger than {MAX_PULL_BYTES} bytes"
                )));
            }
            Ok(
                json!({"path": path, "bytes": data.len(), "content_base64": base64::engine::general_purpose::STANDARD.encode(&data)}),
            )
        }
    }
}

/// Takes `device` into the local desired state once its spec is checked;
/// whether it was newer than the copy held.
fn adopt(shared: &Shared, device: &DesiredDevice) -> Result<bool, AgentError> {
    device.spec.validate()?;
    Ok(shared
        .desired
        .lock()
        .expect("desired lock")
        .upsert(device.clone()))
}

/// The answer of an operation that made `device`: once it boots, or at
/// once when it is to stay stopped.
async fn made(
    shared: &Arc<Shared>,
    device: &DesiredDevice,
) -> Result<serde_json::Value, AgentError> {
    if device.state == RunState::Running {
        wait_ready(shared, &device.device_id).await
    } else {
        Ok(json!({"device_id": device.device_id, "status": "stopped"}))
    }
}

async fn create(
    shared: &Arc<Shared>,
    device: DesiredDevice,
) -> Result<serde_json::Value, AgentError> {
    let id = device.device_id.clone();
    if !adopt(shared, &device)? {
        tracing::info!(device = %id, "create with an older generation ignored");
    }
    reconcile::reconcile_device(shared, &id).await?;
    made(shared, &device).await
}

/// A new phone: the container and `/data` are removed and the device made
/// again, empty, from `device`. A reset older than the desired state the
/// agent holds is refused (`cancelled`): a later change superseded it.
async fn reset(
    shared: &Arc<Shared>,
    device: DesiredDevice,
) -> Result<serde_json::Value, AgentError> {
    let id = device.device_id.clone();
    if !adopt(shared, &device)? {
        return Err(AgentError::NoLongerDesired(format!(
            "{id} (a newer change superseded the reset)"
        )));
    }
    {
        let lock = shared.device_lock(&id);
        let _g = lock.lock().await;
        let port = owned(shared, &id)
            .await?
            .and_then(|c| c.labels.get(LABEL_ADB_PORT)?.parse().ok());
        reconcile::remove_container(shared, &shared.container_name(&id)).await?;
        let ddir = spec::device_dir(&shared.cfg.data_root, &id);
        for gone in [ddir.join("data"), ddir.join("image-override.json")] {
            let r = if gone.is_dir() {
                tokio::fs::remove_dir_all(&gone).await
            } else {
                tokio::fs::remove_file(&gone).await
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        tokio::fs::create_dir_all(ddir.join("data")).await?;
        reconcile::create_device(shared, &device, port).await?;
    }
    made(shared, &device).await
}

fn set_state(
    shared: &Shared,
    id: &DeviceId,
    generation: u64,
    state: RunState,
) -> Result<(), AgentError> {
    let mut d = shared.desired.lock().expect("desired lock");
    let cur = d
        .devices
        .get(id)
        .cloned()
        .ok_or_else(|| AgentError::DeviceNotFound(id.to_string()))?;
    if generation >= cur.generation {
        d.upsert(DesiredDevice {
            generation,
            state,
            ..cur
        });
    }
    Ok(())
}

/// Whether `s` is a digest as the protocol writes them: 64 lower-case hex digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// This node's container of a device, if it exists.
async fn owned(shared: &Shared, id: &DeviceId) -> Result<Option<ContainerInfo>, AgentError> {
    let c = shared.engine.inspect(&shared.container_name(id)).await?;
    Ok(c.filter(|c| {
        c.labels.get(LABEL_NODE).map(String::as_str) == Some(shared.cfg.node_id.as_str())
    }))
}

async fn running(shared: &Shared, id: &DeviceId) -> Result<ContainerInfo, AgentError> {
    match owned(shared, id).await? {
        None => Err(AgentError::DeviceNotFound(id.to_string())),
        Some(c) if !c.running => Err(AgentError::NotRunning(id.to_string())),
        Some(c) => Ok(c),
    }
}

/// Waits until the device reports `sys.boot_completed=1`, or the boot timeout.
pub async fn wait_ready(
    shared: &Arc<Shared>,
    id: &DeviceId,
) -> Result<serde_json::Value, AgentError> {
    let deadline = Instant::now() + shared.cfg.boot_timeout;
    loop {
        if !shared
            .desired
            .lock()
            .expect("desired lock")
            .devices
            .contains_key(id)
        {
            return Err(AgentError::DeviceNotFound(format!(
                "{id} (no longer in the desired state)"
            )));
        }
        let c = owned(shared, id).await?;
        if let Some(c) = &c {
            if reconcile::probe_ready(shared, id, Some(c)).await {
                return Ok(json!({
                    "device_id": id,
                    "status": "ready",
                    "container_id": c.id,
                    "adb_port": c.labels.get(LABEL_ADB_PORT).and_then(|p| p.parse::<u16>().ok()),
                }));
            }
        }
        if Instant::now() >= deadline {
            return Err(AgentError::BootTimeout(
                id.to_string(),
                shared.cfg.boot_timeout,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn snapshot_dir(data_root: &Path, id: &DeviceId, snap: &SnapshotId) -> PathBuf {
    data_root
        .join("snapshots")
        .join(id.as_str())
        .join(snap.as_str())
}

fn snapshot_repo(shared: &Shared, id: &DeviceId) -> String {
    // Image names must be lower case; device ids and prefixes may not be.
    format!(
        "localhost/{}snapshot-{}",
        shared.cfg.container_name_prefix, id
    )
    .to_ascii_lowercase()
}

/// `cp -a` keeps owners, modes and links, which Android's per-app data needs.
async fn copy_tree(from: &Path, to: &Path) -> Result<(), AgentError> {
    if tokio::fs::metadata(to).await.is_ok() {
        tokio::fs::remove_dir_all(to).await?;
    }
    tokio::fs::create_dir_all(to).await?;
    let status = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .await?;
    if !status.success() {
        return Err(AgentError::Io(std::io::Error::other(format!(
            "cp -a {} {} failed with {status}",
            from.display(),
            to.display()
        ))));
    }
    Ok(())
}

/// Bytes of the regular files under `dir` (links not followed): what a
/// snapshot's data copy takes on disk, give or take block rounding.
async fn tree_bytes(dir: PathBuf) -> Result<u64, AgentError> {
    tokio::task::spawn_blocking(move || {
        let mut total = 0u64;
        let mut todo = vec![dir];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let meta = entry.file_type()?;
                if meta.is_dir() {
                    todo.push(entry.path());
                } else if meta.is_file() {
                    total += entry.metadata()?.len();
                }
            }
        }
        Ok::<_, std::io::Error>(total)
    })
    .await
    .map_err(|e| AgentError::Io(std::io::Error::other(e)))?
    .map_err(AgentError::Io)
}

async fn snapshot(
    shared: &Arc<Shared>,
    id: &DeviceId,
    snap: &SnapshotId,
) -> Result<serde_json::Value, AgentError> {
    let dir = snapshot_dir(&shared.cfg.data_root, id, snap);
    let marker = dir.join("complete.json");
    if let Ok(data) = tokio::fs::read(&marker).await {
        // Done before (perhaps by an agent that crashed before recording the result).
        return serde_json::from_slice(&data).map_err(|e| AgentError::Io(std::io::Error::other(e)));
    }
    let lock = shared.device_lock(id);
    let _g = lock.lock().await;
    let c = owned(shared, id)
        .await?
        .ok_or_else(|| AgentError::DeviceNotFound(id.to_string()))?;
    let repo = snapshot_repo(shared, id);
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(spec::LABEL_DEVICE.to_owned(), id.to_string());
    labels.insert(spec::LABEL_NODE.to_owned(), shared.cfg.node_id.to_string());
    labels.insert("io.cloudphone.snapshot-id".to_owned(), snap.to_string());
    // A running phone is frozen (every process, by the cgroup freezer) for
    // the commit and the copy, so the copy is of one instant: consistent as
    // after a power cut, which Android's storage survives. It is thawed
    // whatever happens.
    let paused = c.running;
    if paused {
        shared.engine.pause(&c.name).await?;
    }
    let taken = async {
        let image_id = shared
            .engine
            .commit(&c.name, &repo, snap.as_str(), &labels)
            .await?;
        // A commit misses the bind-mounted /data, so the data directory is copied too.
        let data = spec::device_dir(&shared.cfg.data_root, id).join("data");
        copy_tree(&data, &dir.join("data")).await?;
        Ok::<_, AgentError>(image_id)
    }
    .await;
    if paused {
        if let Err(e) = shared.engine.unpause(&c.name).await {
            tracing::error!(device = %id, error = %e, "could not thaw a device after its snapshot");
            return Err(e.into());
        }
    }
    let image_id = taken?;
    let data_bytes = tree_bytes(dir.join("data")).await?;
    let out = json!({
        "device_id": id,
        "snapshot_id": snap,
        "image": format!("{repo}:{snap}"),
        "image_id": image_id,
        "data_bytes": data_bytes,
        "paused": paused,
        "created_at": chrono::Utc::now().to_rfc3339(),
    });
    tokio::fs::write(&marker, serde_json::to_vec(&out).expect("json")).await?;
    Ok(out)
}

async fn delete_snapshot(
    shared: &Arc<Shared>,
    id: &DeviceId,
    snap: &SnapshotId,
) -> Result<serde_json::Value, AgentError> {
    let image = format!("{}:{snap}", snapshot_repo(shared, id));
    match shared.engine.remove_image(&image).await {
        Ok(()) | Err(EngineError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = snapshot_dir(&shared.cfg.data_root, id, snap);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(json!({"device_id": id, "snapshot_id": snap, "status": "deleted"}))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ImageOverride {
    image: String,
    spec_hash: String,
}

/// The image a restore put in place of the template image, while the spec is unchanged.
pub async fn image_override(data_root: &Path, id: &DeviceId, spec_hash: &str) -> Option<String> {
    let path = spec::device_dir(data_root, id).join("image-override.json");
    let data = tokio::fs::read(path).await.ok()?;
    let o: ImageOverride = serde_json::from_slice(&data).ok()?;
    (o.spec_hash == spec_hash).then_some(o.image)
}

/// Puts a snapshot of `source` (the device itself, or another one for a
/// clone) in place of device `id`'s container and data.
async fn restore(
    shared: &Arc<Shared>,
    id: &DeviceId,
    source: &DeviceId,
    snap: &SnapshotId,
) -> Result<serde_json::Value, AgentError> {
    let dir = snapshot_dir(&shared.cfg.data_root, source, snap);
    let marker: serde_json::Value = match tokio::fs::read(dir.join("complete.json")).await {
        Ok(d) => {
            serde_json::from_slice(&d).map_err(|e| AgentError::Io(std::io::Error::other(e)))?
        }
        Err(_) => return Err(AgentError::SnapshotNotFound(snap.to_string())),
    };
    let image = marker["image"].as_str().unwrap_or_default().to_owned();
    if !shared.engine.image_exists(&image).await? {
        return Err(AgentError::SnapshotNotFound(format!(
            "{snap} (image {image} is gone)"
        )));
    }
    let want = shared
        .desired
        .lock()
        .expect("desired lock")
        .devices
        .get(id)
        .cloned()
        .ok_or_else(|| AgentError::DeviceNotFound(id.to_string()))?;
    {
        let lock = shared.device_lock(id);
        let _g = lock.lock().await;
        let port = owned(shared, id)
            .await?
            .and_then(|c| c.labels.get(LABEL_ADB_PORT)?.parse().ok());
        reconcile::remove_container(shared, &shared.container_name(id)).await?;
        let ddir = spec::device_dir(&shared.cfg.data_root, id);
        copy_tree(&dir.join("data"), &ddir.join("data")).await?;
        let o = ImageOverride {
            image: image.clone(),
            spec_hash: want.spec.hash(),
        };
        tokio::fs::write(
            ddir.join("image-override.json"),
            serde_json::to_vec(&o).expect("json"),
        )
        .await?;
        reconcile::create_device(shared, &want, port).await?;
    }
    if want.state == RunState::Running {
        wait_ready(shared, id).await?;
    }
    Ok(json!({"device_id": id, "snapshot_id": snap, "image": image}))
}

/// Fetches `url`, which the policy has allowed, following only redirects
/// the policy allows as well.
/// The most bytes one ranged request asks for: `app` answers at most
/// 8 MiB a request, and each answer is written out as it arrives.
const APK_RANGE_BYTES: u64 = 8 << 20;

/// A client for APK downloads whose redirects stay inside the policy.
fn apk_client(policy: &ApkUrlPolicy) -> Result<reqwest::Client, AgentError> {
    let redirects = policy.clone();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_APK_REDIRECTS {
                attempt.error(format!("more than {MAX_APK_REDIRECTS} redirects"))
            } else if redirects.allows(attempt.url()) {
                attempt.follow()
            } else {
                let refused = UrlRefused::Redirect(attempt.url().to_string());
                attempt.error(refused)
            }
        }))
        .build()
        .map_err(|e| AgentError::Download(e.to_string()))
}

/// A reqwest failure as the agent reports it: a refused redirect is the
/// policy's refusal, not a network failure.
fn download_failed(e: reqwest::Error) -> AgentError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<UrlRefused>() {
            return AgentError::UrlRefused(refused.clone());
        }
        source = err.source();
    }
    AgentError::Download(error_chain(&e))
}

/// `bytes a-b/total` of a `Content-Range` header.
fn content_range(resp: &reqwest::Response) -> Option<(u64, u64, u64)> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

/// What a download wrote: its length and lower-case hex sha256.
#[derive(Debug, PartialEq, Eq)]
struct Fetched {
    bytes: u64,
    sha256: String,
}

/// Downloads `url` into `to` by `Range` requests of at most
/// [`APK_RANGE_BYTES`] (a server without ranges answers the whole file at
/// once), hashing as the bytes pass: what is in memory is one network
/// chunk, whatever the file's size. Fails past `max` bytes, or when an
/// answer is not the range asked for.
async fn download_to(
    url: reqwest::Url,
    policy: &ApkUrlPolicy,
    max: u64,
    to: &Path,
) -> Result<Fetched, AgentError> {
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt as _;
    let client = apk_client(policy)?;
    let mut file = tokio::fs::File::create(to).await?;
    let mut hash = sha2::Sha256::new();
    let mut pos = 0u64;
    loop {
        let last = pos + APK_RANGE_BYTES - 1;
        let mut resp = client
            .get(url.clone())
            .header(reqwest::header::RANGE, format!("bytes={pos}-{last}"))
            .send()
            .await
            .map_err(download_failed)?;
        let total = match resp.status().as_u16() {
            206 => match content_range(&resp) {
                Some((a, b, total)) if a == pos && b >= a && b < total => Some(total),
                _ => {
                    return Err(AgentError::Download(format!(
                        "asked for bytes {pos}-{last}, the server answered another range"
                    )))
                }
            },
            // The whole file, at the first request only.
            200 if pos == 0 => None,
            status => {
                return Err(AgentError::Download(format!("server answered {status}")));
            }
        };
        if total.is_some_and(|t| t > max) {
            return Err(AgentError::Download(format!("larger than {max} bytes")));
        }
        let start = pos;
        while let Some(chunk) = resp.chunk().await.map_err(download_failed)? {
            pos += chunk.len() as u64;
            if pos > max {
                return Err(AgentError::Download(format!("larger than {max} bytes")));
            }
            hash.update(&chunk);
            file.write_all(&chunk).await?;
        }
        match total {
            None => break,
            Some(t) if pos == t => break,
            Some(_) if pos == start => {
                return Err(AgentError::Download(
                    "the server answered an empty range".into(),
                ))
            }
            Some(_) => {}
        }
    }
    file.sync_all().await?;
    Ok(Fetched {
        bytes: pos,
        sha256: hex::encode(hash.finalize()),
    })
}

/// An error and its causes, as reqwest's own message leaves the cause out.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Where a device's APKs wait for `pm install`, inside `/data` (a
/// directory of the agent's own, so it can write there whatever user the
/// engine maps the device's users to).
const APK_DIR: &str = "cloudphone-apk";

/// The absolute URL of an `install_apk` command: a path (`/api/...`) is on
/// the control plane, as the agent reaches it.
fn apk_url(cfg: &crate::config::Config, url: &str) -> Result<String, AgentError> {
    if !url.starts_with('/') || url.starts_with("//") {
        return Ok(url.to_owned());
    }
    let base = reqwest::Url::parse(&cfg.control_plane_url)
        .map_err(|e| AgentError::InvalidArgument(format!("control_plane_url: {e}")))?;
    base.join(url)
        .map(String::from)
        .map_err(|e| AgentError::InvalidArgument(format!("url: {e}")))
}

/// A name for a download in progress no other download has.
fn staging_name(sha256: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{}-{n}.part", &sha256[..16], std::process::id())
}

async fn install_apk(
    shared: &Arc<Shared>,
    id: &DeviceId,
    url: &str,
    sha256: &str,
) -> Result<serde_json::Value, AgentError> {
    // The policy decides before anything else, so a refused URL is never connected to.
    let url = shared
        .cfg
        .apk_url_policy
        .check(&apk_url(&shared.cfg, url)?)?;
    let expected = sha256.to_ascii_lowercase();
    if !is_sha256_hex(&expected) {
        return Err(AgentError::InvalidArgument(
            "sha256 must be 64 hex digits".into(),
        ));
    }
    running(shared, id).await?;
    // Downloaded beside the devices' directories (the same file system, so
    // the verified file moves into the device with a rename), without the
    // device's lock: a long download holds nothing else up.
    let staging = shared.cfg.data_root.join("downloads");
    tokio::fs::create_dir_all(&staging).await?;
    let part = staging.join(staging_name(&expected));
    let fetched = download_to(url, &shared.cfg.apk_url_policy, MAX_APK_BYTES, &part).await;
    let fetched = match fetched {
        Ok(f) if f.sha256 == expected => f,
        other => {
            let _ = tokio::fs::remove_file(&part).await;
            // Refused before anything reaches the device.
            return Err(match other {
                Ok(f) => AgentError::ChecksumMismatch {
                    expected,
                    actual: f.sha256,
                },
                Err(e) => e,
            });
        }
    };
    let lock = shared.device_lock(id);
    let _g = lock.lock().await;
    let c = match running(shared, id).await {
        Ok(c) => c,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let dir = spec::device_dir(&shared.cfg.data_root, id)
        .join("data")
        .join(APK_DIR);
    let name = format!("{}.apk", &expected[..16]);
    let placed = async {
        tokio::fs::create_dir_all(&dir).await?;
        set_mode(&dir, 0o755).await?;
        set_mode(&part, 0o644).await?;
        tokio::fs::rename(&part, dir.join(&name)).await
    }
    .await;
    if let Err(e) = placed {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e.into());
    }
    let inside = format!("/data/{APK_DIR}/{name}");
    let out = shared
        .engine
        .exec(
            &c.name,
            &["pm", "install", "-r", &inside],
            Duration::from_secs(300),
            64 << 10,
        )
        .await;
    let _ = tokio::fs::remove_file(dir.join(&name)).await;
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.exit_code != Some(0) || !text.contains("Success") {
        return Err(AgentError::DeviceCommand {
            what: "pm install",
            detail: text,
        });
    }
    Ok(json!({"device_id": id, "sha256": fetched.sha256, "bytes": fetched.bytes}))
}

async fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await
}

async fn push_bytes(
    shared: &Shared,
    c: &ContainerInfo,
    path: &DevicePath,
    data: &[u8],
) -> Result<(), AgentError> {
    let (dir, file) = path.split();
    let mk = shared
        .engine
        .exec(
            &c.name,
            &["mkdir", "-p", dir],
            Duration::from_secs(10),
            1024,
        )
        .await?;
    if mk.exit_code != Some(0) {
        return Err(AgentError::DeviceCommand {
            what: "mkdir",
            detail: String::from_utf8_lossy(&mk.stderr).trim().to_owned(),
        });
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    builder.append_data(&mut header, file, data)?;
    let tar = builder.into_inner()?;
    shared
        .engine
        .upload_tar(&c.name, dir, Bytes::from(tar))
        .await?;
    Ok(())
}

fn first_file_in_tar(tar: &[u8]) -> Result<Vec<u8>, AgentError> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out)?;
            return Ok(out);
        }
    }
    Err(AgentError::InvalidArgument(
        "path is not a regular file".into(),
    ))
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Poll;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::spec::OperationId;

    fn result(n: u32) -> CommandResult {
        CommandResult {
            operation_id: "op".into(),
            ok: true,
            output: json!({"n": n}),
            error_code: None,
            error: None,
            payload_expired: false,
        }
    }

    /// Polls a future exactly once, so a test decides how far each party gets.
    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *f).poll(cx) {
                Poll::Ready(v) => Some(v),
                Poll::Pending => None,
            })
        })
        .await
    }

    /// A runtime with a single blocking thread: file operations (which tokio
    /// runs on blocking threads) then run one at a time in the order they
    /// were started, so a test can wait for those started before a point.
    fn with_one_blocking_thread<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn an_operation_delivered_twice_while_the_first_finishes_runs_once() {
        with_one_blocking_thread(delivered_twice_while_the_first_finishes());
    }

    async fn delivered_twice_while_the_first_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let runs = AtomicUsize::new(0);
        let work = |n: u32| {
            let runs = &runs;
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                result(n)
            }
        };
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let mut first = std::pin::pin!(ledger.run("op", async {
            started_tx.send(()).unwrap();
            finish_rx.await.unwrap();
            work(1).await
        }));
        // The first delivery claims the operation and is inside its work.
        tokio::select! {
            _ = &mut first => panic!("the first delivery finished before it was let go"),
            r = started_rx => r.unwrap(),
        }
        // The one blocking thread is kept busy, so that a file operation the
        // second delivery starts cannot finish within the step it gets.
        let (busy_tx, busy_rx) = tokio::sync::oneshot::channel();
        let (free_tx, free_rx) = std::sync::mpsc::channel::<()>();
        let busy = tokio::task::spawn_blocking(move || {
            busy_tx.send(()).unwrap();
            free_rx.recv().unwrap();
        });
        busy_rx.await.unwrap();
        // The second delivery gets exactly one step while the first is
        // running: this is where a check-then-run ledger started its look at
        // the result file, outside the in-flight lock.
        let mut second = std::pin::pin!(ledger.run("op", work(2)));
        assert!(poll_once(&mut second).await.is_none());
        // Every file operation started so far has finished once this no-op
        // has run after them on the one blocking thread: a look at the result
        // file made in that step found no file.
        free_tx.send(()).unwrap();
        busy.await.unwrap();
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        // The first finishes completely, the second not polled meanwhile:
        // result written, in-flight entry gone.
        finish_tx.send(()).unwrap();
        let (a, dup_a) = first.await;
        // Only now does the second continue; it must answer from the first run.
        let (b, dup_b) = second.await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the operation ran twice");
        assert_eq!(a.output, json!({"n": 1}));
        assert_eq!(b, a);
        assert!(!dup_a && dup_b);
        // A third delivery, after everything, reads the file.
        let (c, dup_c) = ledger.run("op", work(3)).await;
        assert_eq!((c, dup_c), (a, true));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_delivery_waiting_on_a_cancelled_run_runs_the_operation_itself() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let mut first = Box::pin(ledger.run("op", async {
            started_tx.send(()).unwrap();
            std::future::pending::<CommandResult>().await
        }));
        tokio::select! {
            _ = &mut first => unreachable!("the first delivery never finishes"),
            r = started_rx => r.unwrap(),
        }
        let mut second = std::pin::pin!(ledger.run("op", async { result(2) }));
        assert!(poll_once(&mut second).await.is_none());
        // The first delivery's task is aborted, as on shutdown or a crash.
        drop(first);
        let (b, dup_b) = second.await;
        assert_eq!(b.output, json!({"n": 2}));
        assert!(!dup_b, "the waiting delivery ran the operation");
        let (c, dup_c) = ledger.run("op", async { result(3) }).await;
        assert_eq!((c.output, dup_c), (json!({"n": 2}), true));
    }

    fn age_file(path: &Path, by: Duration) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    fn pull_result() -> CommandResult {
        CommandResult {
            operation_id: "op-pull".into(),
            ok: true,
            output: json!({"path": "/data/secret.txt", "bytes": 6, "content_base64": "c2VjcmV0"}),
            error_code: None,
            error: None,
            payload_expired: false,
        }
    }

    #[tokio::test]
    async fn a_result_replayed_after_the_replay_window_keeps_status_and_metadata_but_not_the_payload(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (fresh, _) = ledger.run("op-pull", async { pull_result() }).await;
        let wire = serde_json::to_value(&fresh).unwrap();
        assert!(
            wire.get("payload_expired").is_none(),
            "results inside the window look as before: {wire}"
        );
        let (again, dup) = ledger.run("op-pull", async { result(0) }).await;
        assert!(dup);
        assert_eq!(again, fresh, "inside the window a replay is exact");

        age_file(
            &ledger.path("op-pull"),
            PAYLOAD_REPLAY_WINDOW + Duration::from_secs(60),
        );
        let (late, dup) = ledger.run("op-pull", async { result(0) }).await;
        assert!(dup, "a late replay still does not run the operation");
        assert!(late.ok && late.payload_expired);
        assert_eq!(late.output, json!({"path": "/data/secret.txt", "bytes": 6}));
        let wire = serde_json::to_value(&late).unwrap();
        assert_eq!(wire["payload_expired"], true);
    }

    #[tokio::test]
    async fn the_sweep_drops_payloads_after_the_window_and_results_after_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        ledger.run("op-pull", async { pull_result() }).await;
        let failed = CommandResult {
            operation_id: "op-failed".into(),
            ok: false,
            output: serde_json::Value::Null,
            error_code: Some("not_running".into()),
            error: Some("device d1 is not running".into()),
            payload_expired: false,
        };
        ledger.run("op-failed", async { failed.clone() }).await;
        // A temporary file left by a crash mid-write.
        std::fs::write(
            ledger.dir.join(".op-crashed.tmp"),
            b"{\"stdout\":\"secret\"}",
        )
        .unwrap();
        let recorded = std::fs::metadata(ledger.path("op-pull"))
            .unwrap()
            .modified()
            .unwrap();
        let now = SystemTime::now();

        let report = ledger
            .sweep_at(now + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            report,
            SweepReport::default(),
            "nothing happens inside the window"
        );

        let report = ledger
            .sweep_at(now + PAYLOAD_REPLAY_WINDOW + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            report,
            SweepReport {
                removed: 1,
                expired: 2
            }
        );
        let raw = std::fs::read_to_string(ledger.path("op-pull")).unwrap();
        assert!(
            !raw.contains("c2VjcmV0"),
            "the payload is gone from the disk: {raw}"
        );
        let on_disk: CommandResult = serde_json::from_str(&raw).unwrap();
        assert!(on_disk.payload_expired && on_disk.ok);
        assert_eq!(
            on_disk.output,
            json!({"path": "/data/secret.txt", "bytes": 6})
        );
        let on_disk: CommandResult =
            serde_json::from_slice(&std::fs::read(ledger.path("op-failed")).unwrap()).unwrap();
        assert_eq!(on_disk.error, failed.error);
        assert_eq!(on_disk.error_code, failed.error_code);
        assert!(!ledger.dir.join(".op-crashed.tmp").exists());
        // Rewriting keeps the age, so the retention still counts from the operation.
        let modified = std::fs::metadata(ledger.path("op-pull"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(modified, recorded);
        let report = ledger
            .sweep_at(now + PAYLOAD_REPLAY_WINDOW + Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(
            report,
            SweepReport::default(),
            "an expired result is not rewritten again"
        );

        let report = ledger
            .sweep_at(now + RESULT_RETENTION + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            report,
            SweepReport {
                removed: 2,
                expired: 0
            }
        );
        // After the retention the id is forgotten and runs as a new operation.
        let (r, dup) = ledger.run("op-pull", async { result(7) }).await;
        assert_eq!((r.output, dup), (json!({"n": 7}), false));
    }

    #[tokio::test]
    async fn the_ledger_runs_an_operation_once_and_repeats_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (a, dup_a) = ledger.run("op", async { result(1) }).await;
        let (b, dup_b) = ledger.run("op", async { result(2) }).await;
        assert_eq!(a.output, json!({"n": 1}));
        assert_eq!(b.output, json!({"n": 1}));
        assert!(!dup_a && dup_b);
        // A new ledger on the same directory (an agent restart) still knows it.
        let again = Ledger::open(dir.path()).unwrap();
        let (c, dup_c) = again.run("op", async { result(3) }).await;
        assert_eq!(c.output, json!({"n": 1}));
        assert!(dup_c);
    }

    fn install(url: &str) -> Command {
        Command {
            operation_id: OperationId::parse("op-apk").unwrap(),
            op: Operation::InstallApk {
                device_id: DeviceId::parse("d1").unwrap(),
                url: url.into(),
                sha256: "0".repeat(64),
            },
        }
    }

    #[tokio::test]
    async fn an_apk_url_outside_the_allow_list_is_refused_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        // The fake agent's control plane, and so its only allowed prefix, is http://127.0.0.1:1.
        let (shared, _fake) = crate::testkit::shared_on_fake(dir.path());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!(
            "http://127.0.0.1:{}/app.apk",
            listener.local_addr().unwrap().port()
        );
        let r = run_command(&shared, install(&url)).await;
        assert_eq!(r.error_code.as_deref(), Some("url_not_allowed"), "{r:?}");
        assert_eq!(
            r.error.as_deref(),
            Some(
                format!("url {url} is not under an allowed apk download prefix (apk_url_prefixes)")
                    .as_str()
            )
        );
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the refused url was connected to"
        );

        let dir = tempfile::tempdir().unwrap();
        let (shared, _fake) = crate::testkit::shared_on_fake(dir.path());
        let r = run_command(&shared, install("http://user:pw@127.0.0.1:1/app.apk")).await;
        assert_eq!(r.error_code.as_deref(), Some("url_not_allowed"), "{r:?}");
        assert_eq!(
            r.error.as_deref(),
            Some("url must not carry a user name or password")
        );
    }

    /// A minimal HTTP server: answers every request with `reply(path)` and
    /// counts the connections it accepted.
    async fn http_server(reply: fn(u16, &str) -> String) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let _ = stream.write_all(reply(port, &path).as_bytes()).await;
                });
            }
        });
        (port, connections)
    }

    fn redirect(to: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn apk_downloads_follow_redirects_inside_the_allow_list_only() {
        let (outside, outside_connections) = http_server(|_, _| {
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil".into()
        })
        .await;
        let outside_url = format!("http://127.0.0.1:{outside}/evil.apk");
        // The outside port is passed through the path, as a `fn` cannot capture it.
        let (inside, _) = http_server(|port, path| match path {
            "/ok" => "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\napk".into(),
            "/hop" => redirect(&format!("http://127.0.0.1:{port}/ok")),
            "/userinfo" => redirect(&format!("http://user:pw@127.0.0.1:{port}/ok")),
            away => redirect(&format!(
                "http://127.0.0.1:{}/evil.apk",
                away.trim_start_matches("/away/")
            )),
        })
        .await;
        let policy = ApkUrlPolicy::parse(&[format!("http://127.0.0.1:{inside}/")]).unwrap();
        let get = |path: String| {
            let policy = policy.clone();
            async move {
                let url = policy
                    .check(&format!("http://127.0.0.1:{inside}{path}"))
                    .unwrap();
                let dir = tempfile::tempdir().unwrap();
                let to = dir.path().join("apk");
                download_to(url, &policy, 1024, &to)
                    .await
                    .map(|_| std::fs::read(&to).unwrap())
            }
        };

        assert_eq!(get("/hop".into()).await.unwrap(), b"apk");
        let err = get(format!("/away/{outside}")).await.unwrap_err();
        assert_eq!(err.code(), "url_not_allowed", "{err}");
        assert_eq!(
            err.to_string(),
            format!("redirect to {outside_url} refused: not under an allowed apk download prefix (apk_url_prefixes)")
        );
        let err = get("/userinfo".into()).await.unwrap_err();
        assert_eq!(err.code(), "url_not_allowed", "{err}");
        assert_eq!(outside_connections.load(Ordering::SeqCst), 0);
    }

    /// Serves `body` by `Range` (`bytes=a-b`, at most `cap` bytes an
    /// answer); `shift` moves every answered range, as a broken server would.
    async fn ranged_server(
        body: Arc<Vec<u8>>,
        cap: usize,
        shift: usize,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (body, counter) = (body.clone(), counter.clone());
                tokio::spawn(async move {
                    loop {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => head.push(buf[0]),
                            }
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        let range = head
                            .lines()
                            .find_map(|l| l.strip_prefix("range: bytes="))
                            .and_then(|r| r.trim().split_once('-'))
                            .map(|(a, b)| {
                                (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap())
                            })
                            .unwrap();
                        let first = range.0 + shift;
                        let last = range.1.min(first + cap - 1).min(body.len() - 1);
                        let part = &body[first..=last];
                        let head = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {first}-{last}/{}\r\n\r\n",
                            part.len(),
                            body.len()
                        );
                        if stream.write_all(head.as_bytes()).await.is_err()
                            || stream.write_all(part).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (port, requests)
    }

    #[tokio::test]
    async fn apk_downloads_go_by_range_into_a_file_and_a_misplaced_range_is_refused() {
        let body: Arc<Vec<u8>> = Arc::new((0..20_000_000u32).map(|i| (i % 251) as u8).collect());
        let (port, requests) = ranged_server(body.clone(), 5 << 20, 0).await;
        let policy = ApkUrlPolicy::parse(&[format!("http://127.0.0.1:{port}/")]).unwrap();
        let url = policy.check(&format!("http://127.0.0.1:{port}/f")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("apk");
        let got = download_to(url.clone(), &policy, 1 << 30, &to)
            .await
            .unwrap();
        assert_eq!(
            got,
            Fetched {
                bytes: body.len() as u64,
                sha256: agent_protocol::messages::sha256_hex(&body),
            }
        );
        assert_eq!(std::fs::read(&to).unwrap(), *body);
        // 20 MB in answers of at most 5 MiB.
        assert_eq!(requests.load(Ordering::SeqCst), 4);

        let err = download_to(url, &policy, 10 << 20, &to).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "download failed: larger than 10485760 bytes"
        );

        let (port, _) = ranged_server(body, 5 << 20, 1).await;
        let policy = ApkUrlPolicy::parse(&[format!("http://127.0.0.1:{port}/")]).unwrap();
        let url = policy.check(&format!("http://127.0.0.1:{port}/f")).unwrap();
        let err = download_to(url, &policy, 1 << 30, &to).await.unwrap_err();
        assert!(err.to_string().contains("answered another range"), "{err}");
    }

    #[test]
    fn a_path_is_on_the_control_plane() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config::with_defaults(
            crate::spec::NodeId::parse("n1").unwrap(),
            crate::protocol::NodeSecret::new(b"0123456789abcdef".to_vec()).unwrap(),
            "redis://127.0.0.1:1/",
            "http://10.0.0.1:3000",
            dir.path(),
        );
        assert_eq!(
            apk_url(&cfg, "/api/v1/app/files/x?expires=1&sig=ab").unwrap(),
            "http://10.0.0.1:3000/api/v1/app/files/x?expires=1&sig=ab"
        );
        assert_eq!(
            apk_url(&cfg, "https://cdn.example/a.apk").unwrap(),
            "https://cdn.example/a.apk"
        );
        assert_eq!(
            apk_url(&cfg, "//evil.example/a.apk").unwrap(),
            "//evil.example/a.apk"
        );
    }

    #[test]
    fn a_tar_with_one_file_yields_that_file() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "a.txt", &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        assert_eq!(first_file_in_tar(&tar).unwrap(), b"abc");
    }
}
