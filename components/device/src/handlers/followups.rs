//! Operations that carry work on: recording an operation with the agent's
//! command (one transaction, the command published after commit), and what
//! follows when an operation finishes — a device's next first-boot step
//! (its template's apps, properties and commands, one at a time), a
//! snapshot becoming ready, failed, restored or deleted.

use crate::domain::device_ops::{ApkUrl, DeviceOp, Sha256Hex, ShellCommand};
use crate::domain::status::{Desired, Observed};
use crate::error::{Error, Result};
use crate::repo::{self, devices::Device, operations::NewOperation, operations::Operation};
use agent_protocol::messages::{Command, Operation as AgentOp};
use agent_protocol::spec::{DeviceId, OperationId, SnapshotId};
use events::catalogue::{
    EventType, APK_INSTALLED, APK_INSTALL_FAILED, APK_INSTALL_STARTED, APK_UNINSTALLED,
    APK_UNINSTALL_FAILED, DEVICE_PROVISIONED, SNAPSHOT_CREATED, SNAPSHOT_DELETED, SNAPSHOT_FAILED,
    SNAPSHOT_RESTORED,
};
use events::payload::ApkOperation;
use platform::db::Db;
use uuid::Uuid;

fn internal(e: agent_protocol::spec::SpecError) -> platform::Problem {
    platform::Problem::internal(e.to_string())
}

/// The agent's id of a device.
pub fn agent_device_id(id: Uuid) -> Result<DeviceId> {
    Ok(DeviceId::parse(&id.to_string()).map_err(internal)?)
}

/// An operation on a device to record with its command.
pub struct Queued<'a> {
    /// Its id.
    pub id: Uuid,
    /// Its kind.
    pub kind: &'a str,
    /// Who asked (none for the platform's own steps).
    pub requested_by: Option<Uuid>,
    /// The caller's idempotency key.
    pub key: Option<&'a str>,
    /// Seconds until it fails with `timeout`.
    pub timeout_secs: i32,
    /// What the agent does.
    pub op: AgentOp,
}

/// Records an operation on a device of `node` and queues its command, in
/// the caller's transaction; `Err(existing)` for a repeated idempotency key
/// (nothing is queued then).
pub fn queue(tx: &Db, d: &Device, node: &str, q: Queued) -> Result<Result<(), Uuid>> {
    let inserted = repo::operations::insert(
        tx,
        &NewOperation {
            id: q.id,
            kind: q.kind,
            device: Some(d.id),
            node: Some(node),
            requested_by: q.requested_by,
            owner: Some(d.owner_id),
            tenant: d.tenant_id,
            department: d.department_id,
            generation: None,
            idempotency_key: q.key,
            timeout_secs: q.timeout_secs,
        },
    )?;
    if let Err(existing) = inserted {
        return Ok(Err(existing));
    }
    if let (Some(by), AgentOp::InstallApk { sha256, .. }) = (q.requested_by, &q.op) {
        // A user's install: `app` follows it by the device and the file.
        let started = ApkOperation {
            operation_id: Some(q.id),
            device_id: d.id,
            owner_id: Some(d.owner_id),
            tenant_id: d.tenant_id,
            requested_by: Some(by),
            sha256: Some(sha256.clone()),
            package: None,
            error_code: None,
            error: None,
        };
        platform::outbox::enqueue(tx, &APK_INSTALL_STARTED, &q.id.to_string(), 1, &started)?;
    }
    let command = Command {
        operation_id: OperationId::parse(&q.id.to_string()).map_err(internal)?,
        op: q.op,
    };
    repo::commands::queue(
        tx,
        node,
        q.id,
        &serde_json::to_value(&command).expect("command serializes"),
    )?;
    Ok(Ok(()))
}

/// What [`provision_next`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Provisioning {
    /// A step's command was queued for this node.
    Started(String),
    /// No step is pending or running: the first boot's work is done.
    Done,
    /// A step runs, or the device does not run now (it goes on when it does).
    Waiting,
    /// A stored step could not be made into a command: it failed, the rest
    /// were skipped, and `device.provisioned` says why.
    Failed,
}

/// Starts a device's next first-boot step, when none runs and the device
/// can take it: a restore (a clone's data) once the device exists on its
/// node, running or stopped; the other steps once it runs.
pub fn provision_next(tx: &Db, device: Uuid) -> Result<Provisioning> {
    let Some(d) = repo::devices::lock(tx, device)? else {
        return Ok(Provisioning::Waiting);
    };
    let Some(node) = d
        .node_id
        .clone()
        .filter(|_| d.desired() != Desired::Deleted)
    else {
        return Ok(Provisioning::Waiting);
    };
    let Some(step) = repo::templates::next_step(tx, device)? else {
        let steps = repo::templates::steps(tx, device)?;
        return Ok(if steps.iter().any(|s| s.status == "running") {
            Provisioning::Waiting
        } else {
            Provisioning::Done
        });
    };
    let (desired, observed) = (d.desired(), d.observed());
    let can = match step.kind.as_str() {
        "restore" => matches!(observed, Observed::Running | Observed::Stopped),
        _ => desired == Desired::Running && observed == Observed::Running,
    };
    if !can {
        return Ok(Provisioning::Waiting);
    }
    let made = step_command(&step, device);
    let (kind, timeout_secs, agent_op) = match made {
        Ok(m) => m,
        Err(e) => {
            // Never an error for the report that brought the device up: the
            // step fails, and the device says why.
            let p: platform::Problem = e.into();
            let why = format!("step {} cannot run: {}", step.seq, p.message);
            repo::templates::fail_step(tx, device, step.seq, &why)?;
            provisioned(tx, device, Some(&why))?;
            return Ok(Provisioning::Failed);
        }
    };
    let id = Uuid::new_v4();
    let queued = queue(
        tx,
        &d,
        &node,
        Queued {
            id,
            kind,
            requested_by: None,
            key: None,
            timeout_secs,
            op: agent_op,
        },
    )?;
    if queued.is_ok() {
        repo::templates::step_running(tx, device, step.seq, id)?;
    }
    Ok(Provisioning::Started(node))
}

/// The operation kind, deadline and agent command of a stored first-boot
/// step; stored steps were parsed from a template, and parsing them again
/// keeps one rule.
fn step_command(
    step: &repo::templates::Step,
    device: Uuid,
) -> Result<(&'static str, i32, AgentOp)> {
    let text = |k: &str| step.input[k].as_str().unwrap_or_default().to_string();
    let bad = |what: &str| platform::Problem::internal(format!("stored step: {what}"));
    // Stored steps were parsed from a template; parsing again keeps one rule.
    Ok(match step.kind.as_str() {
        "restore" => (
            "restore",
            super::snapshots::TIMEOUT_SECS,
            AgentOp::Restore {
                device_id: agent_device_id(device)?,
                snapshot_id: SnapshotId::parse(&text("snapshot_id"))
                    .map_err(|_| bad("snapshot id"))?,
                source_device_id: Some(
                    DeviceId::parse(&text("source_device_id")).map_err(|_| bad("device id"))?,
                ),
            },
        ),
        kind => {
            let op = match kind {
                "install_apk" => DeviceOp::InstallApk {
                    url: ApkUrl::parse(&text("url"))?,
                    sha256: Sha256Hex::parse(&text("sha256"))?,
                },
                _ => DeviceOp::Shell {
                    command: ShellCommand::parse(&text("command"))?,
                    timeout_ms: None,
                },
            };
            let (kind, timeout) = (op.kind(), op.timeout_secs());
            (kind, timeout, op.into_agent(agent_device_id(device)?).0)
        }
    })
}

/// `apk.installed`, `.install_failed`, `.uninstalled` or
/// `.uninstall_failed` for a user's install or uninstall that ended, naming
/// the file or package its command carried.
fn apk_finished(tx: &Db, op: &Operation, ok: bool, error: Option<(&str, &str)>) -> Result<()> {
    let Some(device) = op.device_id else {
        return Ok(());
    };
    let (mut sha256, mut package) = (None, None);
    if let Some(body) = repo::commands::body_of(tx, op.id)? {
        match serde_json::from_value::<Command>(body).map(|c| c.op) {
            Ok(AgentOp::InstallApk { sha256: s, .. }) => sha256 = Some(s),
            Ok(AgentOp::UninstallApk { package: p, .. }) => package = Some(p.as_str().to_owned()),
            _ => {}
        }
    }
    let event: &EventType = match (op.kind.as_str(), ok) {
        ("install_apk", true) => &APK_INSTALLED,
        ("install_apk", false) => &APK_INSTALL_FAILED,
        (_, true) => &APK_UNINSTALLED,
        (_, false) => &APK_UNINSTALL_FAILED,
    };
    let payload = ApkOperation {
        operation_id: Some(op.id),
        device_id: device,
        owner_id: op.owner_id,
        tenant_id: op.tenant_id,
        requested_by: op.requested_by,
        sha256,
        package,
        error_code: error.map(|(c, _)| c.to_string()),
        error: error.map(|(_, m)| m.to_string()),
    };
    platform::outbox::enqueue(tx, event, &op.id.to_string(), 2, &payload)?;
    Ok(())
}

/// `apk.install_failed` for a batch's install that could not start on its
/// device (no operation was made: the device does not run, or is gone).
pub fn apk_not_started(
    tx: &Db,
    at: (Uuid, i32),
    device: Uuid,
    b: &repo::batches::Batch,
    error: (&str, &str),
) -> Result<()> {
    let payload = ApkOperation {
        operation_id: None,
        device_id: device,
        owner_id: None,
        tenant_id: b.tenant_id,
        requested_by: Some(b.requested_by),
        sha256: b.input["sha256"].as_str().map(str::to_string),
        package: None,
        error_code: Some(error.0.to_string()),
        error: Some(error.1.to_string()),
    };
    let aggregate = format!("{}:{}", at.0, at.1);
    platform::outbox::enqueue(tx, &APK_INSTALL_FAILED, &aggregate, 1, &payload)?;
    Ok(())
}

/// What follows an operation's end, in its transaction; returns the node
/// of a command it queued (to publish after commit).
pub fn operation_finished(
    tx: &Db,
    op: &Operation,
    ok: bool,
    output: Option<&serde_json::Value>,
    error: Option<(&str, &str)>,
) -> Result<Option<String>> {
    // A batch's item is the operation's result.
    repo::batches::finish_item(tx, repo::batches::ItemRef::Operation(op.id), ok, error)?;
    if op.requested_by.is_some() && matches!(op.kind.as_str(), "install_apk" | "uninstall_apk") {
        apk_finished(tx, op, ok, error)?;
        return Ok(None);
    }
    let error = error.map(|(code, message)| format!("{code}: {message}"));
    let error = error.as_deref();
    let step = match op.kind.as_str() {
        // First-boot steps are installs and shell commands the platform asked for.
        "install_apk" | "shell" | "restore" if op.requested_by.is_none() => {
            repo::templates::step_finished(tx, op.id, ok, error)?
        }
        _ => None,
    };
    if let Some(device) = step {
        if ok && op.kind == "restore" {
            restored_from(tx, output)?;
        }
        let outcome = if ok {
            provision_next(tx, device)?
        } else {
            Provisioning::Done
        };
        return Ok(match outcome {
            Provisioning::Started(node) => Some(node),
            Provisioning::Done => {
                provisioned(tx, device, (!ok).then(|| error.unwrap_or("a step failed")))?;
                None
            }
            Provisioning::Waiting | Provisioning::Failed => None,
        });
    }
    if op.kind == "recover" && !ok {
        // What the recovery record says came back did not.
        repo::recoveries::failed(tx, op.id, error.unwrap_or("the recover operation failed"))?;
        return Ok(None);
    }
    if !matches!(op.kind.as_str(), "snapshot" | "restore" | "delete_snapshot") {
        return Ok(None);
    }
    match repo::snapshots::operation_finished(tx, op.id, ok, output, error)? {
        Some(repo::snapshots::Finished::Taken(s)) => {
            archive_taken(tx, s.id, ok, output)?;
            let t = if ok {
                &SNAPSHOT_CREATED
            } else {
                &SNAPSHOT_FAILED
            };
            platform::outbox::enqueue(tx, t, &s.id.to_string(), s.version, &s.event())?;
        }
        Some(repo::snapshots::Finished::Deleted(s)) if ok => {
            repo::archives::drop_chunks(tx, s.id)?;
            platform::outbox::enqueue(
                tx,
                &SNAPSHOT_DELETED,
                &s.id.to_string(),
                s.version,
                &s.event(),
            )?;
        }
        Some(repo::snapshots::Finished::Deleted(_)) => {}
        None if ok && op.kind == "restore" => restored_from(tx, output)?,
        None => {}
    }
    Ok(None)
}

/// Seals the archive a snapshot's result names (`archive`: bytes, sha256,
/// chunks), or records why there is none (`archive_error`); a failed
/// snapshot keeps nothing uploaded.
fn archive_taken(
    tx: &Db,
    snapshot: Uuid,
    ok: bool,
    output: Option<&serde_json::Value>,
) -> Result<()> {
    let out = output.filter(|_| ok);
    let claimed = out.map(|o| &o["archive"]).and_then(|a| {
        let sha256 = a["sha256"].as_str()?;
        let ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        Some(repo::archives::Claimed {
            bytes: i64::try_from(a["bytes"].as_u64()?).ok()?,
            sha256: ok.then_some(sha256)?,
            chunks: i32::try_from(a["chunks"].as_u64()?).ok()?,
        })
    });
    match (claimed, out.and_then(|o| o["archive_error"].as_str())) {
        (Some(c), _) => {
            repo::archives::seal(tx, snapshot, &c)?;
        }
        (None, Some(why)) => repo::archives::fail(tx, snapshot, &format!("archive: {why}"))?,
        (None, None) => repo::archives::drop_chunks(tx, snapshot)?,
    }
    Ok(())
}

/// Counts a restore of the snapshot a restore's output names, with its event.
fn restored_from(tx: &Db, output: Option<&serde_json::Value>) -> Result<()> {
    let snap = output
        .and_then(|o| o["snapshot_id"].as_str())
        .and_then(|s| Uuid::parse_str(s).ok());
    if let Some(id) = snap {
        repo::snapshots::restored(tx, id)?;
        if let Some(s) = repo::snapshots::find(tx, id)? {
            platform::outbox::enqueue(
                tx,
                &SNAPSHOT_RESTORED,
                &s.id.to_string(),
                s.version,
                &s.event(),
            )?;
        }
    }
    Ok(())
}

/// `device.provisioned`, with the failed step's error as its reason.
fn provisioned(tx: &Db, device: Uuid, failure: Option<&str>) -> Result<()> {
    let d = repo::devices::find(tx, device)?.ok_or(Error::NotFound("device"))?;
    let mut payload = d.event(None);
    payload.reason = failure.map(|f| format!("a first-boot step failed: {f}"));
    platform::outbox::enqueue(
        tx,
        &DEVICE_PROVISIONED,
        &device.to_string(),
        d.version,
        &payload,
    )?;
    Ok(())
}
