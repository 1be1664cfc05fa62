//! Failover: a device whose node stays unreachable (or is revoked) past
//! `failover_after_secs` and whose recover policy is `fresh` or `snapshot`
//! is made again on another node: `fresh` without the data it had on the
//! lost one, `snapshot` with the `/data` of its newest snapshot archived in
//! the control plane (fresh when it has none). Operators can recover any
//! device of a node that is not online. The device keeps its id and gets a
//! new generation on its new node; its GPU slot on the lost node is
//! released; the recovery is recorded with what was lost (and the snapshot
//! it came from), and `device.recovered` says so. A lost node that comes
//! back finds the device gone from its desired state and removes its
//! container, and its reports about it are ignored (they come from a node
//! that no longer has it).

use super::devices::{create_command, visible, Actor};
use super::{db as open_db, dispatch, Call};
use crate::domain::placement::{self, Strategy};
use crate::domain::spec::{Spec, SpecInput};
use crate::domain::status::{Desired, NodeStatus};
use crate::error::{Error, Result};
use crate::repo::{self, operations::NewOperation, operations::Operation};
use agent_protocol::messages::{ArchiveRef, Operation as AgentOp};
use agent_protocol::spec::SnapshotId;
use events::catalogue::DEVICE_RECOVERED;
use platform::http::Ctx;
use spin_sdk::http::Response;
use uuid::Uuid;

/// How long a node may be unreachable before its devices are recovered
/// (the variable `failover_after_secs`, default 300).
fn after_secs() -> i32 {
    platform::var("failover_after_secs")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &i32| *n > 0)
        .unwrap_or(300)
}

/// A recover policy as a request gives it: `none`, `fresh` or `snapshot`.
pub fn policy(raw: &str) -> Result<&'static str> {
    match raw {
        "none" => Ok("none"),
        "fresh" => Ok("fresh"),
        "snapshot" => Ok("snapshot"),
        _ => Err(Error::Invalid(
            "recover_policy must be none, fresh or snapshot".into(),
        )),
    }
}

/// The archive a recovered device's `/data` comes from, for the agent.
fn import_ref(a: &repo::archives::Archived) -> Result<ArchiveRef> {
    let internal = |e: String| platform::Problem::internal(format!("stored archive: {e}"));
    Ok(ArchiveRef {
        snapshot_id: SnapshotId::parse(&a.snapshot.to_string())
            .map_err(|e| internal(e.to_string()))?,
        bytes: u64::try_from(a.bytes).map_err(|e| internal(e.to_string()))?,
        sha256: a.sha256.clone(),
        chunks: u32::try_from(a.chunks).map_err(|e| internal(e.to_string()))?,
    })
}

/// Makes a device again on another node; the `recover` operation.
pub fn recover(ctx: &Ctx, actor: Actor, id: Uuid) -> Result<Operation> {
    let op_id = Uuid::new_v4();
    let (reason, by) = match actor {
        Actor::Operator(c) | Actor::User(c) => ("operator", Some(c.user_id)),
        _ => ("node_lost", None),
    };
    let db = open_db()?;
    let node = db.transaction(|tx| {
        let d = repo::devices::lock(tx, id)?.ok_or(Error::NotFound("device"))?;
        if d.desired() == Desired::Deleted {
            return Err(Error::Conflict("the device is deleted".into()));
        }
        let from = d
            .node_id
            .clone()
            .ok_or_else(|| Error::Conflict("the device has no node".into()))?;
        let lost = repo::nodes::find(tx, &from)?;
        if lost
            .as_ref()
            .and_then(|n| NodeStatus::parse(&n.status))
            .is_some_and(|s| s == NodeStatus::Online)
        {
            return Err(Error::Conflict(format!(
                "its node {from} is online: stop or drain it instead"
            )));
        }
        let spec: Spec = serde_json::from_value::<SpecInput>(d.spec.clone())
            .map_err(|e| platform::Problem::internal(format!("stored spec: {e}")))?
            .parse()?;
        let nodes = repo::nodes::lock_candidates(tx)?;
        let views: Vec<_> = nodes.iter().filter(|n| n.id != from).map(|n| n.view()).collect();
        let request = placement::Request::anywhere(spec.resources());
        let decision =
            placement::place(&views, &request, Strategy::LeastLoaded).map_err(Error::NoCapacity)?;
        let to = nodes
            .iter()
            .find(|n| n.id == decision.node_id)
            .expect("the decision names a candidate");
        // The lost node's GPU slot goes with it; the new node gives one.
        repo::gpus::release(tx, id)?;
        repo::runs::close(tx, id, "node_lost")?;
        // With its policy, it comes back with its newest archived snapshot's data.
        let archived = if d.recover_policy == "snapshot" {
            repo::archives::newest(tx, id)?
        } else {
            None
        };
        if archived.is_none() {
            // Its template's first-boot work is done again on the fresh data.
            repo::templates::reset_steps(tx, id)?;
        }
        let generation = repo::recoveries::moved(
            tx,
            id,
            &to.id,
            &to.address,
            &serde_json::to_value(&decision).expect("decision serializes"),
            &format!("recovered from {from}"),
        )?;
        let gpu = if spec.needs_gpu() {
            let got = repo::gpus::allocate(tx, &to.id, &to.gpu_devices, to.gpu_slots, id)?;
            Some(got.ok_or_else(|| Error::NoCapacity(format!("no free gpu slot on {}", to.id)))?)
        } else {
            None
        };
        let inserted = repo::operations::insert(
            tx,
            &NewOperation {
                id: op_id,
                kind: "recover",
                device: Some(id),
                node: Some(&to.id),
                requested_by: by,
                owner: Some(d.owner_id),
                tenant: d.tenant_id,
                department: d.department_id,
                generation: Some(generation),
                idempotency_key: None,
                timeout_secs: 600,
            },
        )?;
        debug_assert!(inserted.is_ok());
        let start = d.desired() == Desired::Running;
        let mut command = create_command(op_id, id, generation, start, &spec, gpu.as_deref())?;
        if let (AgentOp::Create { import, .. }, Some(a)) = (&mut command.op, &archived) {
            *import = Some(import_ref(a)?);
        }
        repo::commands::queue(
            tx,
            &to.id,
            op_id,
            &serde_json::to_value(&command).expect("command serializes"),
        )?;
        let since = lost
            .and_then(|n| n.last_heartbeat_at)
            .unwrap_or_else(|| "its last report".into());
        let lost_what = match &archived {
            Some(a) => format!(
                "what changed since snapshot {} of {} (its /data comes from that snapshot; \
                 changes outside /data and the snapshots kept on the lost node stay there)",
                a.snapshot, a.taken_at
            ),
            None if d.recover_policy == "snapshot" => format!(
                "its data on the lost node (its /data, apps installed, files; snapshots kept there) \
                 as of {since}: it had no archived snapshot"
            ),
            None => format!(
                "its data on the lost node (its /data, apps installed, files; snapshots kept there) as of {since}"
            ),
        };
        repo::recoveries::record(
            tx,
            &repo::recoveries::NewRecovery {
                device: id,
                from: &from,
                to: &to.id,
                reason,
                by,
                lost: &lost_what,
                operation: op_id,
                snapshot: archived.as_ref().map(|a| a.snapshot),
            },
        )?;
        let after = repo::devices::find(tx, id)?.ok_or(Error::NotFound("device"))?;
        let mut payload = after.event(Some(&d.observed_status));
        payload.reason = Some(format!("made again on another node: lost {lost_what}"));
        platform::outbox::enqueue(tx, &DEVICE_RECOVERED, &id.to_string(), after.version, &payload)?;
        Ok::<_, Error>(to.id.clone())
    })?;
    platform::outbox::publish_after_commit(&db, &ctx.request_id);
    drop(db);
    dispatch::publish_commands_after_commit(ctx, &node);
    repo::operations::find(&open_db()?, op_id)?.ok_or(Error::NotFound("operation"))
}

/// `POST /devices/:id/recover` (`node:manage`): makes the device again on
/// another node now, whatever its policy, when its node is not online;
/// 202 with the `recover` operation.
pub fn recover_now(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    visible(&open_db()?, caller, id)?;
    let op = recover(call.ctx, Actor::Operator(caller), id)?;
    Ok(platform::http::json(202, &op))
}

/// `GET /devices/:id/recoveries`: where the device was recovered from and
/// to, and what was lost, newest first.
pub fn recoveries(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = open_db()?;
    let d = visible(&db, caller, call.id("id", "device")?)?;
    let mut items = serde_json::to_value(repo::recoveries::of_device(&db, d.id)?).expect("json");
    // Node ids are for those who may read nodes, as in the device itself.
    if !caller.can("node:read") {
        for item in items.as_array_mut().into_iter().flatten() {
            item["from_node"] = serde_json::Value::Null;
            item["to_node"] = serde_json::Value::Null;
        }
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"device_id": d.id, "recover_policy": repo::recoveries::policy(&db, d.id)?,
                            "items": items}),
    ))
}

/// `POST /internal/devices/failover` (scheduler): recovers the devices
/// whose policy says so and whose node has been lost for long enough (at
/// most 50 a run; one that no node can take now waits for the next run).
pub fn job(call: &Call) -> Result<Response> {
    let due = repo::recoveries::due(&open_db()?, after_secs(), 50)?;
    let (mut recovered, mut waiting) = (0, 0);
    for id in &due {
        match recover(call.ctx, Actor::System, *id) {
            Ok(_) => recovered += 1,
            Err(Error::NoCapacity(_)) | Err(Error::Conflict(_)) => waiting += 1,
            // One device's trouble never holds up the others.
            Err(e) => {
                waiting += 1;
                let p: platform::Problem = e.into();
                eprintln!(
                    "{}",
                    serde_json::json!({"level": "warn", "request_id": call.ctx.request_id, "msg": "recovery failed", "device": id, "cause": p.internal.unwrap_or(p.message)})
                );
            }
        }
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"due": due.len(), "recovered": recovered, "waiting": waiting}),
    ))
}
