//! Operations asked for by commands, and the ledger that makes them
//! idempotent: the same operation id always gets the same result, and the
//! action behind it happens once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::agent::Shared;
use crate::engine::{ContainerInfo, EngineError};
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::protocol::{Command, CommandResult, DesiredDevice, Operation, RunState};
use crate::reconcile;
use crate::spec::{self, DeviceId, DevicePath, SnapshotId, LABEL_ADB_PORT, LABEL_NODE};

const MAX_APK_BYTES: usize = 1 << 30;
const MAX_FILE_BYTES: usize = 64 << 20;
const MAX_SCREENSHOT_BYTES: usize = 32 << 20;

/// Results of finished operations, kept on disk so they survive a restart.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    inflight: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<CommandResult>>>>,
}

impl Ledger {
    /// Opens the ledger under `data_root/.agent/ops`, dropping entries older than a week.
    pub fn open(data_root: &Path) -> std::io::Result<Self> {
        let dir = data_root.join(".agent").join("ops");
        std::fs::create_dir_all(&dir)?;
        let week = Duration::from_secs(7 * 24 * 3600);
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > week);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
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
        if let Some(r) = self.load(op).await {
            return (r, true);
        }
        let cell = self
            .inflight
            .lock()
            .await
            .entry(op.to_owned())
            .or_default()
            .clone();
        let mut ran = false;
        let result = cell
            .get_or_init(|| async {
                ran = true;
                let r = f.await;
                let tmp = self.dir.join(format!(".{op}.tmp"));
                let data = serde_json::to_vec(&r).expect("result serializes");
                // Write then rename, so a crash never leaves half a result.
                if let Err(e) = async {
                    tokio::fs::write(&tmp, data).await?;
                    tokio::fs::rename(&tmp, self.path(op)).await
                }
                .await
                {
                    tracing::error!(error = %e, op, "cannot persist operation result");
                }
                r
            })
            .await
            .clone();
        self.inflight.lock().await.remove(op);
        (result, !ran)
    }

    async fn load(&self, op: &str) -> Option<CommandResult> {
        let data = tokio::fs::read(self.path(op)).await.ok()?;
        serde_json::from_slice(&data).ok()
    }
}

/// Runs one authenticated command through the ledger.
pub async fn run_command(shared: &Arc<Shared>, cmd: Command) -> CommandResult {
    let op_id = cmd.operation_id.to_string();
    let (result, duplicate) = shared
        .ledger
        .run(&op_id, async {
            Metrics::inc(&shared.metrics.commands);
            let started = Instant::now();
            let r = execute(shared, cmd.op).await;
            tracing::info!(op = %op_id, ok = r.is_ok(), ms = started.elapsed().as_millis() as u64, "operation finished");
            match r {
                Ok(output) => CommandResult { operation_id: op_id.clone(), ok: true, output, error_code: None, error: None },
                Err(e) => CommandResult {
                    operation_id: op_id.clone(),
                    ok: false,
                    output: serde_json::Value::Null,
                    error_code: Some(e.code().to_owned()),
                    error: Some(e.to_string()),
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

async fn execute(shared: &Arc<Shared>, op: Operation) -> Result<serde_json::Value, AgentError> {
    match op {
        Operation::Create { device } => create(shared, device).await,
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
            wait_ready(shared, &device_id).await
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
        } => snapshot(shared, &device_id, &snapshot_id).await,
        Operation::Restore {
            device_id,
            snapshot_id,
        } => restore(shared, &device_id, &snapshot_id).await,
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
            content_base64,
        } => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(content_base64.as_bytes())
                .map_err(|e| AgentError::InvalidArgument(format!("content_base64: {e}")))?;
            if data.len() > MAX_FILE_BYTES {
                return Err(AgentError::InvalidArgument(format!(
                    "file larger than {MAX_FILE_BYTES} bytes"
                )));
            }
            let c = running(shared, &device_id).await?;
            push_bytes(shared, &c, &path, &data).await?;
            Ok(json!({"path": path, "bytes": data.len()}))
        }
        Operation::PullFile { device_id, path } => {
            let c = running(shared, &device_id).await?;
            let tar = shared
                .engine
                .download_tar(&c.name, path.as_str(), MAX_FILE_BYTES + 4096)
                .await?;
            let data = first_file_in_tar(&tar)?;
            Ok(
                json!({"path": path, "bytes": data.len(), "content_base64": base64::engine::general_purpose::STANDARD.encode(&data)}),
            )
        }
    }
}

async fn create(
    shared: &Arc<Shared>,
    device: DesiredDevice,
) -> Result<serde_json::Value, AgentError> {
    device.spec.validate()?;
    let id = device.device_id.clone();
    let applied = shared
        .desired
        .lock()
        .expect("desired lock")
        .upsert(device.clone());
    if !applied {
        tracing::info!(device = %id, "create with an older generation ignored");
    }
    reconcile::reconcile_device(shared, &id).await?;
    if device.state == RunState::Running {
        wait_ready(shared, &id).await
    } else {
        Ok(json!({"device_id": id, "status": "stopped"}))
    }
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
    let image_id = shared
        .engine
        .commit(&c.name, &repo, snap.as_str(), &labels)
        .await?;
    // A commit misses the bind-mounted /data, so the data directory is copied too.
    let data = spec::device_dir(&shared.cfg.data_root, id).join("data");
    copy_tree(&data, &dir.join("data")).await?;
    let out = json!({
        "device_id": id,
        "snapshot_id": snap,
        "image": format!("{repo}:{snap}"),
        "image_id": image_id,
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

async fn restore(
    shared: &Arc<Shared>,
    id: &DeviceId,
    snap: &SnapshotId,
) -> Result<serde_json::Value, AgentError> {
    let dir = snapshot_dir(&shared.cfg.data_root, id, snap);
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

async fn download(url: &str, max: usize) -> Result<Vec<u8>, AgentError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(AgentError::InvalidArgument(
            "url must be http or https".into(),
        ));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| AgentError::Download(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| AgentError::Download(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(AgentError::Download(format!(
            "server answered {}",
            resp.status()
        )));
    }
    let mut data = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| AgentError::Download(e.to_string()))?
    {
        if data.len() + chunk.len() > max {
            return Err(AgentError::Download(format!("larger than {max} bytes")));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

async fn install_apk(
    shared: &Arc<Shared>,
    id: &DeviceId,
    url: &str,
    sha256: &str,
) -> Result<serde_json::Value, AgentError> {
    let expected = sha256.to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AgentError::InvalidArgument(
            "sha256 must be 64 hex digits".into(),
        ));
    }
    running(shared, id).await?;
    let data = download(url, MAX_APK_BYTES).await?;
    let actual = hex::encode(Sha256::digest(&data));
    if actual != expected {
        // Refused before anything reaches the device.
        return Err(AgentError::ChecksumMismatch { expected, actual });
    }
    let lock = shared.device_lock(id);
    let _g = lock.lock().await;
    let c = running(shared, id).await?;
    let path = DevicePath::parse(&format!("/data/local/tmp/cloudphone-{}.apk", &actual[..16]))?;
    push_bytes(shared, &c, &path, &data).await?;
    let out = shared
        .engine
        .exec(
            &c.name,
            &["pm", "install", "-r", path.as_str()],
            Duration::from_secs(300),
            64 << 10,
        )
        .await;
    let _ = shared
        .engine
        .exec(
            &c.name,
            &["rm", "-f", path.as_str()],
            Duration::from_secs(10),
            1024,
        )
        .await;
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.exit_code != Some(0) || !text.contains("Success") {
        return Err(AgentError::DeviceCommand {
            what: "pm install",
            detail: text,
        });
    }
    Ok(json!({"device_id": id, "sha256": actual, "bytes": data.len()}))
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
    use super::*;

    #[tokio::test]
    async fn the_ledger_runs_an_operation_once_and_repeats_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let result = |n: u32| CommandResult {
            operation_id: "op".into(),
            ok: true,
            output: json!({"n": n}),
            error_code: None,
            error: None,
        };
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
