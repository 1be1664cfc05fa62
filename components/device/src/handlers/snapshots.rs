//! Snapshots: take one of a stopped device (its image and its `/data`
//! directory, kept on its node), list and read them, restore a device from
//! one of its own, delete one. Each is an operation carried out by the
//! node's agent (answered 202; `GET /operations/:id` follows it); the
//! snapshot's row follows the operation's end (`followups`). A snapshot
//! outlives its device until deleted, and is seen by whoever may see the
//! device's owner's devices.
//!
//! A running device is snapshotted too: its agent freezes the container
//! (every process) for the commit and the copy of `/data`, so the copy is
//! of one instant, crash-consistent; a device on its way between running
//! and stopped is refused (409). A restore needs the device stopped.
//! Automatic snapshots, retention and the storage charge are in
//! `backups`.

use super::devices::{idempotency_key, visible as visible_device};
use super::{db as open_db, dispatch, followups, one_of, paged, uuid_query, Call};
use crate::domain::spec::DeviceName;
use crate::domain::status::{Desired, Observed};
use crate::error::{Error, Result};
use crate::repo::{self, snapshots::Snapshot};
use access::Caller;
use agent_protocol::messages::Operation as AgentOp;
use agent_protocol::spec::SnapshotId;
use platform::db::Db;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

pub use crate::domain::snapshot_policy::MAX_PER_DEVICE;
/// How long taking, restoring or deleting a snapshot may take: a commit of
/// the container and a copy of up to the device's whole storage.
pub const TIMEOUT_SECS: i32 = 1800;

/// A snapshot the caller sees (404 otherwise).
fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<Snapshot> {
    match repo::snapshots::find(db, id)? {
        Some(s) if caller.sees("device", s.row_ref()) => Ok(s),
        _ => Err(Error::NotFound("snapshot")),
    }
}

fn snapshot_id(id: Uuid) -> Result<SnapshotId> {
    Ok(SnapshotId::parse(&id.to_string())
        .map_err(|e| platform::Problem::internal(e.to_string()))?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TakeInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Why a device cannot be snapshotted or restored now, if it cannot.
fn must_be_stopped(desired: Desired, observed: Observed, what: &str) -> Result<()> {
    match (desired, observed) {
        (Desired::Stopped, Observed::Stopped) => Ok(()),
        (Desired::Deleted, _) | (_, Observed::Deleted) => {
            Err(Error::Conflict("the device is deleted".into()))
        }
        (_, o) => Err(Error::Conflict(format!(
            "the device is {}: stop it first, {what}",
            o.as_str()
        ))),
    }
}

/// What a request for an agent operation recorded.
pub(super) enum Recorded {
    New(Uuid, String),
    Repeat(Uuid),
}

/// 202 with the operation (and the snapshot, if any), its command published
/// once the transaction has committed.
pub(super) fn answer(
    call: &Call,
    recorded: Result<Recorded>,
    snapshot: Option<Uuid>,
) -> Result<Response> {
    let (op_id, node) = match recorded? {
        Recorded::New(op, node) => (op, Some(node)),
        Recorded::Repeat(op) => (op, None),
    };
    if let Some(node) = node {
        dispatch::publish_commands_after_commit(call.ctx, &node);
    }
    let db = open_db()?;
    let op = repo::operations::find(&db, op_id)?.ok_or(Error::NotFound("operation"))?;
    let mut v = serde_json::json!({"operation": op});
    if let Some(s) = snapshot {
        v["snapshot"] = serde_json::to_value(repo::snapshots::find(&db, s)?).expect("json");
    }
    Ok(platform::http::json(202, &v))
}

/// `POST /devices/:id/snapshots` (`device:control`): takes a snapshot of a
/// running or stopped device; 202 with the snapshot (`creating`) and its
/// operation.
pub fn take(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    let d = visible_device(&open_db()?, caller, id)?;
    // The body is optional: an empty one takes the defaults.
    let b: TakeInput = if call.req.body().is_empty() {
        TakeInput::default()
    } else {
        call.body()?
    };
    let name = match b.name.as_deref() {
        Some(n) => DeviceName::parse(n)?.as_str().to_string(),
        None => format!(
            "{} {}",
            d.name,
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
        ),
    };
    let description = b.description.unwrap_or_default();
    if description.chars().count() > 500 || description.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "description must be at most 500 characters on one line".into(),
        ));
    }
    let key = idempotency_key(call)?;
    let (op_id, snap) = (Uuid::new_v4(), Uuid::new_v4());
    let db = open_db()?;
    let recorded = db.transaction(|tx| {
        start_take(
            tx,
            &Taking {
                device: id,
                snapshot: snap,
                operation: op_id,
                requested_by: Some(caller.user_id),
                key: key.as_deref(),
                name: &name,
                description: &description,
                origin: "manual",
            },
        )
    });
    drop(db);
    let snapshot = match &recorded {
        Ok(Recorded::New(..)) => Some(snap),
        _ => None,
    };
    answer(call, recorded, snapshot)
}

/// A snapshot to take.
pub(super) struct Taking<'a> {
    pub device: Uuid,
    pub snapshot: Uuid,
    pub operation: Uuid,
    pub requested_by: Option<Uuid>,
    pub key: Option<&'a str>,
    pub name: &'a str,
    pub description: &'a str,
    pub origin: &'static str,
}

/// Why a device cannot be snapshotted now, if it cannot: it must be
/// running (the agent freezes it for the copy) or stopped, not on its way
/// between the two.
fn must_be_settled(desired: Desired, observed: Observed) -> Result<()> {
    match (desired, observed) {
        (Desired::Stopped, Observed::Stopped) | (Desired::Running, Observed::Running) => Ok(()),
        (Desired::Deleted, _) | (_, Observed::Deleted) => {
            Err(Error::Conflict("the device is deleted".into()))
        }
        (_, o) => Err(Error::Conflict(format!(
            "the device is {}: wait until it is running or stopped",
            o.as_str()
        ))),
    }
}

/// Records a snapshot being taken and queues its operation, in the
/// caller's transaction.
pub(super) fn start_take(tx: &Db, t: &Taking) -> Result<Recorded> {
    let d = repo::devices::lock(tx, t.device)?.ok_or(Error::NotFound("device"))?;
    must_be_settled(d.desired(), d.observed())?;
    let node = d
        .node_id
        .clone()
        .ok_or_else(|| Error::Conflict("the device has no node".into()))?;
    if repo::snapshots::count_live(tx, t.device)? >= MAX_PER_DEVICE {
        return Err(Error::Conflict(format!(
            "the device has {MAX_PER_DEVICE} snapshots: delete one first"
        )));
    }
    let q = followups::Queued {
        id: t.operation,
        kind: "snapshot",
        requested_by: t.requested_by,
        key: t.key,
        timeout_secs: TIMEOUT_SECS,
        op: AgentOp::Snapshot {
            device_id: followups::agent_device_id(t.device)?,
            snapshot_id: snapshot_id(t.snapshot)?,
            // Kept off the node too when the device is to be recovered from it.
            archive: d.recover_policy == "snapshot",
        },
    };
    if let Err(existing) = followups::queue(tx, &d, &node, q)? {
        return Ok(Recorded::Repeat(existing));
    }
    repo::snapshots::insert(
        tx,
        &repo::snapshots::NewSnapshot {
            id: t.snapshot,
            device: &d,
            node: &node,
            name: t.name,
            description: t.description,
            operation: t.operation,
            origin: t.origin,
        },
    )?;
    Ok(Recorded::New(t.operation, node))
}

/// Starts deleting a snapshot (its node's agent removes image and data),
/// in the caller's transaction.
pub(super) fn start_delete(
    tx: &Db,
    id: Uuid,
    operation: Uuid,
    requested_by: Option<Uuid>,
    key: Option<&str>,
) -> Result<Recorded> {
    let s = repo::snapshots::lock(tx, id)?.ok_or(Error::NotFound("snapshot"))?;
    match s.status.as_str() {
        "ready" | "failed" => {}
        "deleted" => return Err(Error::Conflict("the snapshot is deleted".into())),
        other => {
            return Err(Error::Conflict(format!(
                "the snapshot is {other}: wait for that to finish"
            )))
        }
    }
    let d = repo::devices::find(tx, s.device_id)?.ok_or(Error::NotFound("device"))?;
    let q = followups::Queued {
        id: operation,
        kind: "delete_snapshot",
        requested_by,
        key,
        timeout_secs: TIMEOUT_SECS,
        op: AgentOp::DeleteSnapshot {
            device_id: followups::agent_device_id(s.device_id)?,
            snapshot_id: snapshot_id(id)?,
        },
    };
    if let Err(existing) = followups::queue(tx, &d, &s.node_id, q)? {
        return Ok(Recorded::Repeat(existing));
    }
    repo::snapshots::deleting(tx, id, operation)?;
    Ok(Recorded::New(operation, s.node_id.clone()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreInput {
    snapshot_id: String,
}

/// `POST /devices/:id/restore` (`device:control`): puts one of the
/// device's own ready snapshots back (container and `/data`); the device
/// must be stopped, and stays stopped; 202 with the operation.
pub fn restore(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    visible_device(&open_db()?, caller, id)?;
    let b: RestoreInput = call.body()?;
    let snap = Uuid::parse_str(&b.snapshot_id)
        .map_err(|_| Error::Invalid("snapshot_id must be a UUID".into()))?;
    let key = idempotency_key(call)?;
    let op_id = Uuid::new_v4();
    let db = open_db()?;
    let recorded = db.transaction(|tx| {
        let d = repo::devices::lock(tx, id)?.ok_or(Error::NotFound("device"))?;
        let s = match repo::snapshots::lock(tx, snap)? {
            Some(s) if s.device_id == id && caller.sees("device", s.row_ref()) => s,
            _ => return Err(Error::NotFound("snapshot")),
        };
        if s.status != "ready" {
            return Err(Error::Conflict(format!(
                "the snapshot is {}, not ready",
                s.status
            )));
        }
        must_be_stopped(d.desired(), d.observed(), "then restore it")?;
        let node = d
            .node_id
            .clone()
            .filter(|n| *n == s.node_id)
            .ok_or_else(|| Error::Conflict("the snapshot is not on the device's node".into()))?;
        let q = followups::Queued {
            id: op_id,
            kind: "restore",
            requested_by: Some(caller.user_id),
            key: key.as_deref(),
            timeout_secs: TIMEOUT_SECS,
            op: AgentOp::Restore {
                device_id: followups::agent_device_id(id)?,
                snapshot_id: snapshot_id(snap)?,
                source_device_id: None,
            },
        };
        Ok(match followups::queue(tx, &d, &node, q)? {
            Ok(()) => Recorded::New(op_id, node),
            Err(existing) => Recorded::Repeat(existing),
        })
    });
    drop(db);
    answer(call, recorded, None)
}

/// `DELETE /snapshots/:id` (`device:control`): removes the snapshot's image
/// and data from its node; 202 with the snapshot (`deleting`) and the
/// operation. A snapshot that failed, or is already gone, needs no agent.
pub fn delete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "snapshot")?;
    visible(&open_db()?, caller, id)?;
    let key = idempotency_key(call)?;
    let op_id = Uuid::new_v4();
    let db = open_db()?;
    let recorded =
        db.transaction(|tx| start_delete(tx, id, op_id, Some(caller.user_id), key.as_deref()));
    drop(db);
    answer(call, recorded, Some(id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneInput {
    name: String,
    #[serde(default)]
    start: Option<bool>,
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /snapshots/:id/clone` (`device:create`): a new device for the
/// caller with the snapshot's device's spec and the snapshot's image and
/// `/data`, on the snapshot's node (where its files are). Answers like
/// `POST /devices` (202 with the `create` operation, quota reserved the
/// same way); the data is put in place as the new device's first-boot
/// step (`GET /devices/:id/provisioning`, `device.provisioned`).
pub fn clone(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "snapshot")?;
    let b: CloneInput = call.body()?;
    let db = open_db()?;
    let snap = visible(&db, caller, id)?;
    if snap.status != "ready" {
        return Err(Error::Conflict(format!(
            "the snapshot is {}, not ready",
            snap.status
        )));
    }
    let source = repo::devices::find(&db, snap.device_id)?.ok_or(Error::NotFound("device"))?;
    drop(db);
    let spec = serde_json::from_value::<crate::domain::spec::SpecInput>(source.spec.clone())
        .map_err(|e| platform::Problem::internal(format!("stored spec: {e}")))?
        .parse()?;
    let making = super::devices::Making {
        name: DeviceName::parse(&b.name)?,
        request: crate::domain::placement::Request::anywhere(spec.resources()),
        spec,
        tags: crate::domain::spec::parse_tags(&b.tags)?,
        start: b.start.unwrap_or(true),
        strategy: crate::domain::placement::Strategy::LeastLoaded,
        pin_node: Some(snap.node_id.clone()),
        template: None,
        steps: vec![crate::domain::template::Step {
            kind: "restore",
            input: serde_json::json!({"snapshot_id": snap.id, "source_device_id": snap.device_id}),
        }],
        lifecycle: Default::default(),
        pool: None,
        recover_policy: "none",
        snapshot_policy: None,
    };
    super::devices::make(call, making)
}

/// `GET /snapshots/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let s = visible(&open_db()?, caller, call.id("id", "snapshot")?)?;
    Ok(platform::http::json(200, &s))
}

/// `GET /snapshots?device_id=&status=&page=&per_page=`: the snapshots the
/// caller sees, newest first (deleted ones only with `status=deleted`).
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let filter = repo::snapshots::Filter {
        device_id: uuid_query(call, "device_id")?,
        status: status_query(call)?,
    };
    list_with(call, caller, &filter)
}

/// `GET /devices/:id/snapshots`: the device's snapshots, newest first.
pub fn of_device(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let d = visible_device(&open_db()?, caller, call.id("id", "device")?)?;
    let filter = repo::snapshots::Filter {
        device_id: Some(d.id),
        status: status_query(call)?,
    };
    list_with(call, caller, &filter)
}

/// The `status` filter of the lists.
fn status_query(call: &Call) -> Result<Option<String>> {
    one_of(
        call,
        "status",
        &["creating", "ready", "failed", "deleting", "deleted"],
    )
}

fn list_with(call: &Call, caller: &Caller, f: &repo::snapshots::Filter) -> Result<Response> {
    let page = call.page()?;
    let (items, total) = repo::snapshots::list(&open_db()?, &caller.filter("device"), f, page)?;
    Ok(paged(items, page, total))
}
