//! Internal endpoints: the scheduler's jobs (node liveness, operation
//! deadlines (and what follows a timed-out one) and payloads, the command relay, quota claims a crash left
//! unsettled), and billing's feed of run intervals.

use super::{agent, db, dispatch, followups, lifecycle, Call};
use crate::domain::device_ops;
use crate::error::{Error, Result};
use crate::repo;
use spin_sdk::http::Response;

/// Heartbeats a node may miss before it is unreachable.
const MISSED_HEARTBEATS: i32 = 3;

fn heartbeat_secs() -> i32 {
    platform::var("node_heartbeat_secs")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &i32| *n > 0)
        .unwrap_or(5)
}

/// `POST /internal/nodes/liveness` (scheduler): nodes silent for three
/// heartbeat intervals become `unreachable`, their devices `unknown`.
pub fn liveness(call: &Call) -> Result<Response> {
    let db = db()?;
    // One transaction: nobody sees a node unreachable whose devices still
    // read as running.
    let (silent, devices) = db.transaction(|tx| {
        let silent = repo::nodes::mark_unreachable(tx, heartbeat_secs() * MISSED_HEARTBEATS)?;
        let devices = agent::nodes_went_silent(tx, &silent)?;
        Ok::<_, Error>((silent, devices))
    })?;
    super::publish_after_commit(call, &db);
    Ok(platform::http::json(
        200,
        &serde_json::json!({"unreachable": silent, "devices_unknown": devices}),
    ))
}

/// `POST /internal/operations/expire` (scheduler): running operations past
/// their deadline fail with `timeout` (a push's file is deleted then), and
/// finished operations lose their payload (files, screenshots, logs, shell
/// output) after the payload window.
pub fn expire_operations(call: &Call) -> Result<Response> {
    let db = db()?;
    let (expired, nodes) = db.transaction(|tx| {
        let expired = repo::operations::expire_due(tx)?;
        let mut nodes = std::collections::BTreeSet::new();
        for op in &expired {
            repo::contents::delete(tx, op.id)?;
            let why = ("timeout", "the operation did not finish in time");
            nodes.extend(followups::operation_finished(
                tx,
                op,
                false,
                None,
                Some(why),
            )?);
        }
        Ok::<_, Error>((expired, nodes))
    })?;
    super::publish_after_commit(call, &db);
    for node in &nodes {
        dispatch::publish_commands_after_commit(call.ctx, node);
    }
    let payloads = repo::operations::expire_payloads(&db, device_ops::PAYLOAD_WINDOW_SECS)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"expired": expired.len(), "payloads_expired": payloads}),
    ))
}

/// `POST /internal/commands/relay` (scheduler): publishes commands a crash
/// left unsent, and again those of running operations that got no answer
/// within 30 s (at most five sends).
pub fn relay(_call: &Call) -> Result<Response> {
    let sent = dispatch::publish_commands(None, 30)?;
    // Commands of finished operations are kept a week for operators, then dropped.
    let pruned = repo::commands::prune(&db()?, 7)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"sent": sent, "pruned": pruned}),
    ))
}

/// `POST /internal/claims/settle` (scheduler): quota claims left between
/// states by a crash for a minute are committed (the device still wants
/// them) or released.
pub fn settle_claims(call: &Call) -> Result<Response> {
    let pending = repo::claims::unsettled(&db()?, 60, 100)?;
    let (mut committed, mut released) = (0, 0);
    for (reservation, _device, state, wanted) in pending {
        let commit = state == "reserved" && wanted;
        if dispatch::settle(call.ctx, reservation, commit).is_ok() {
            if commit {
                committed += 1;
            } else {
                released += 1;
            }
        }
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"committed": committed, "released": released}),
    ))
}

/// `POST /internal/devices/reconcile` (scheduler): finishes operations whose
/// device already reached what they wait for (a status that arrived before
/// the operation's command was recorded).
pub fn reconcile(_call: &Call) -> Result<Response> {
    let db = db()?;
    let ids = db.all(
        "SELECT DISTINCT device_id FROM operations WHERE status = 'running' AND device_id IS NOT NULL LIMIT 500",
        &[],
        |r| platform::db::col::<uuid::Uuid>(r, 0, "operations.device_id"),
    )?;
    for id in &ids {
        db.transaction(|tx| {
            if let Some(d) = repo::devices::find(tx, *id)? {
                lifecycle::finish_waiting(tx, &d)?;
            }
            Ok::<_, Error>(())
        })?;
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"checked": ids.len()}),
    ))
}

/// `GET /internal/runs?after=&limit=` (billing): run intervals after a
/// position, in position order; the one source metering reads.
pub fn runs(call: &Call) -> Result<Response> {
    let after = platform::http::int_query(call.req, "after", 0, i64::MAX)?;
    let limit = platform::http::int_query(call.req, "limit", 200, 1000)?.max(1);
    let items = repo::runs::ended_after(&db()?, after, limit)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}
