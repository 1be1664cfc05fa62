//! The control plane's side of the agent protocol (docs/agent-protocol.md,
//! version 2): every request an agent makes is signed with its node's
//! secret ([`verify`], the `Guard::Agent` of these routes), the desired
//! state it pulls is signed back, a pushed file's contents are served to
//! the node that pushes it, and its reports (heartbeats, device
//! statuses, command results) arrive here over HTTP in signed batches. Each
//! message is checked on its own (signature, node, version) and applied in
//! its own transaction, idempotently: a retried batch changes nothing twice,
//! and an older report never overwrites a newer one.

use super::{db, dispatch, followups, lifecycle, Call};
use crate::domain::device_ops;
use crate::domain::status::{NodeStatus, Observed};
use crate::error::{Error, Result};
use crate::repo::{self, nodes::Capacity};
use agent_protocol::messages::{
    self as proto, CommandResult, DesiredDevice, DesiredState, DeviceStatusChange, Envelope,
    Heartbeat, ObservedDevice, Registration, Reports, RunState, HEADER_NODE, HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
};
use agent_protocol::spec::{self as pspec, DeviceId, NodeId};
use events::catalogue::NODE_STATUS_CHANGED;
use platform::db::Db;
use platform::http::Ctx;
use platform::router::Params;
use platform::Problem;
use spin_sdk::http::{Request, Response};
use uuid::Uuid;

/// How far an agent's signing time may be from ours.
const MAX_SKEW_SECS: i64 = 300;

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.header(name).and_then(|v| v.as_str())
}

/// Checks an agent's request: the node header names the node in the path,
/// the timestamp is fresh, and the signature over the method, path,
/// timestamp and body verifies under the node's secret. 401 otherwise,
/// with nothing said about which part failed.
pub fn verify(_ctx: &Ctx, req: &Request, params: &Params) -> std::result::Result<String, Problem> {
    let refused = || Problem::unauthenticated("agent request not signed by its node");
    let node = params.get("node_id");
    let (Some(claimed), Some(ts), Some(sig)) = (
        header(req, HEADER_NODE),
        header(req, HEADER_TIMESTAMP),
        header(req, HEADER_SIGNATURE),
    ) else {
        return Err(refused());
    };
    if claimed != node || node.is_empty() {
        return Err(refused());
    }
    let sent = chrono::DateTime::parse_from_rfc3339(ts).map_err(|_| refused())?;
    if (chrono::Utc::now() - sent.with_timezone(&chrono::Utc))
        .num_seconds()
        .abs()
        > MAX_SKEW_SECS
    {
        return Err(refused());
    }
    let db = Db::open()?;
    let secret = dispatch::node_secret(&db, node)
        .map_err(Problem::from)?
        .ok_or_else(refused)?;
    drop(db);
    let method = platform::router::method_name(req.method());
    let input = proto::http_signing_input("request", method, req.path(), node, ts, req.body());
    if !secret.verify(input.as_bytes(), sig) {
        return Err(refused());
    }
    Ok(node.to_string())
}

/// `GET /agent/nodes/:node_id/desired-state`: every device the node should
/// have, with its generation and spec, signed for the agent.
pub fn desired_state(call: &Call) -> Result<Response> {
    let node = call.agent()?.to_string();
    let db = db()?;
    let mut devices = Vec::new();
    for row in repo::devices::desired_on_node(&db, &node)? {
        let spec: crate::domain::spec::Spec = serde_json::from_value(row.spec)
            .map_err(|e| Problem::internal(format!("stored spec of {}: {e}", row.id)))?;
        devices.push(DesiredDevice {
            device_id: DeviceId::parse(&row.id.to_string())
                .map_err(|e| Problem::internal(e.to_string()))?,
            generation: row.generation as u64,
            state: if row.desired == "running" {
                RunState::Running
            } else {
                RunState::Stopped
            },
            spec: agent_spec(&spec, row.gpu.as_deref())?,
        });
    }
    let state = DesiredState {
        node_id: NodeId::parse(&node).map_err(|e| Problem::internal(e.to_string()))?,
        devices,
    };
    let body = serde_json::to_vec(&state).expect("desired state serializes");
    let secret =
        dispatch::node_secret(&db, &node)?.ok_or(Error::BadSignature("the node has no secret"))?;
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let input = proto::http_signing_input("response", "GET", call.req.path(), &node, &ts, &body);
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header(HEADER_TIMESTAMP, ts)
        .header(HEADER_SIGNATURE, secret.sign(input.as_bytes()))
        .body(body)
        .build())
}

/// `GET /agent/nodes/:node_id/operations/:operation_id/content`: the file
/// a `push_file` operation writes, as raw bytes, to the node the operation
/// was sent to and only while it runs; 404 otherwise (another node's
/// operation, a finished one, an unknown id), so an agent fails the push
/// with `payload_expired`. The response is not signed: the agent checks the
/// bytes against the length and sha256 in the command, which the node's
/// secret signed, and which bind the contents themselves, whoever answers.
pub fn operation_content(call: &Call) -> Result<Response> {
    let node = call.agent()?.to_string();
    let gone = || Error::NotFound("operation content");
    let op = Uuid::parse_str(call.params.get("operation_id")).map_err(|_| gone())?;
    let content = repo::contents::for_running(&db()?, op, &node)?.ok_or_else(gone)?;
    Ok(platform::http::bytes(
        200,
        "application/octet-stream",
        content,
    ))
}

/// The snapshot and chunk number of an archive route; 404 for ids and
/// numbers no archive has.
fn archive_chunk_params(call: &Call) -> Result<(Uuid, i32)> {
    let gone = || Error::NotFound("snapshot archive chunk");
    let snap = Uuid::parse_str(call.params.get("snapshot_id")).map_err(|_| gone())?;
    let seq = call
        .params
        .get("seq")
        .parse::<i32>()
        .ok()
        .filter(|n| (0..1 << 20).contains(n))
        .ok_or_else(gone)?;
    Ok((snap, seq))
}

/// `PUT /agent/nodes/:node_id/snapshots/:snapshot_id/archive/:seq`: one
/// chunk (1 byte to 4 MiB) of the archive of a snapshot the node is taking;
/// 204. The same chunk again replaces it. 404 for a snapshot not being
/// taken on that node; the snapshot's result then says whether the chunks
/// add up to the archive it names.
pub fn put_archive_chunk(call: &Call) -> Result<Response> {
    let node = call.agent()?.to_string();
    let (snap, seq) = archive_chunk_params(call)?;
    let body = platform::http::raw_body_within(
        call.req,
        proto::ARCHIVE_CHUNK_BYTES,
        "application/octet-stream",
    )?;
    if body.is_empty() {
        return Err(Error::Invalid("a chunk is at least 1 byte".into()));
    }
    match repo::archives::store_chunk(&db()?, snap, &node, seq, body.to_vec())? {
        repo::archives::Upload::Stored => Ok(platform::http::no_content()),
        repo::archives::Upload::NotTaking => Err(Error::NotFound("snapshot being taken")),
    }
}

/// `GET /agent/nodes/:node_id/snapshots/:snapshot_id/archive/:seq`: one
/// chunk of a kept snapshot archive, to the node the snapshot's device is
/// placed on (it is being made there from the snapshot); 404 otherwise.
/// Not signed: the agent checks the whole archive against the sha256 in
/// its signed command.
pub fn get_archive_chunk(call: &Call) -> Result<Response> {
    let node = call.agent()?.to_string();
    let (snap, seq) = archive_chunk_params(call)?;
    let data = repo::archives::chunk_for_node(&db()?, snap, &node, seq)?
        .ok_or(Error::NotFound("snapshot archive chunk"))?;
    Ok(platform::http::bytes(200, "application/octet-stream", data))
}

/// The spec the agent runs: redroid's settings from the device's spec.
/// `gpu` is the render node of the GPU slot the device holds, if any.
pub fn agent_spec(s: &crate::domain::spec::Spec, gpu: Option<&str>) -> Result<pspec::DeviceSpec> {
    use crate::domain::spec::GpuMode;
    let spec = pspec::DeviceSpec {
        image: pspec::ImageRef::parse(&s.image).map_err(|e| Problem::internal(e.to_string()))?,
        display: pspec::Display {
            width: s.display.width as u32,
            height: s.display.height as u32,
            dpi: s.display.dpi as u32,
            fps: s.display.fps as u32,
        },
        gpu: pspec::Gpu {
            mode: match s.gpu_mode {
                GpuMode::Guest => pspec::GpuMode::Guest,
                GpuMode::Host => pspec::GpuMode::Host,
                GpuMode::Auto => pspec::GpuMode::Auto,
            },
            node: gpu.filter(|_| s.needs_gpu()).map(str::to_string),
        },
        resources: pspec::Resources {
            cpu_millis: s.cpu_cores as u32 * 1000,
            memory_mb: s.memory_mb as u32,
            pids: 4096,
        },
        extra_boot_args: s.extra_boot_args(),
    };
    spec.validate()
        .map_err(|e| Problem::internal(format!("a stored spec the agent refuses: {e}")))?;
    Ok(spec)
}

fn capacity(c: &proto::Capacity) -> Capacity {
    Capacity {
        cpu_millis: i64::from(c.cpus) * 1000,
        memory_mb: c.memory_mb as i64,
        disk_gb: (c.disk_mb / 1024) as i64,
        max_devices: c.max_devices as i32,
        gpus: c.gpus.len() as i32,
    }
}

/// What a registration (or the one inside a heartbeat) may say: its own
/// node, an address a client can use, bounded version and labels.
fn check_registration(reg: &Registration, node: &str) -> std::result::Result<(), String> {
    let text = |what: &str, v: &str, max: usize, empty_ok: bool| {
        if (!empty_ok && v.is_empty())
            || v.len() > max
            || v.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            Err(format!(
                "{what} must be 1 to {max} characters without spaces"
            ))
        } else {
            Ok(())
        }
    };
    if reg.node_id.as_str() != node {
        return Err("the registration names another node".into());
    }
    text("address", &reg.address, 255, false)?;
    text("agent_version", &reg.agent_version, 64, false)?;
    if reg.labels.len() > 32 {
        return Err("at most 32 labels".into());
    }
    if reg.capacity.gpus.len() > 16 {
        return Err("at most 16 gpus".into());
    }
    for g in &reg.capacity.gpus {
        let ok = g.len() <= 64
            && g.strip_prefix("/dev/dri/").is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !ok {
            return Err(format!("gpu {g:?} must be a /dev/dri/ render node"));
        }
    }
    for (k, v) in &reg.labels {
        text("a label name", k, 63, false)?;
        if v.len() > 255 || v.chars().any(char::is_control) {
            return Err("a label value must be at most 255 characters".into());
        }
    }
    Ok(())
}

/// Records a registration or heartbeat's node data, with its status event.
fn record_node(
    tx: &Db,
    node: &str,
    reg: &Registration,
    usage: Option<serde_json::Value>,
    heartbeat: bool,
) -> Result<()> {
    let change = repo::nodes::record_report(
        tx,
        node,
        &repo::nodes::Report {
            address: &reg.address,
            capacity: capacity(&reg.capacity),
            usage,
            agent_version: &reg.agent_version,
            gpu_devices: &reg.capacity.gpus,
            heartbeat,
        },
    )?;
    if let Some((before, after)) = change {
        node_status_event(tx, node, &before, &after)?;
    }
    Ok(())
}

/// Enqueues `node.status_changed`.
pub fn node_status_event(tx: &Db, node: &str, before: &str, after: &str) -> Result<()> {
    let version = repo::nodes::find(tx, node)?.map_or(0, |n| n.version);
    platform::outbox::enqueue(
        tx,
        &NODE_STATUS_CHANGED,
        node,
        version,
        &events::payload::Node {
            id: node.to_string(),
            status: after.to_string(),
            previous_status: Some(before.to_string()),
        },
    )?;
    Ok(())
}

/// `POST /agent/nodes/:node_id/register`.
pub fn register(call: &Call) -> Result<Response> {
    let node = call.agent()?.to_string();
    let reg: Registration = call.body()?;
    check_registration(&reg, &node).map_err(Error::Invalid)?;
    let db = db()?;
    db.transaction(|tx| record_node(tx, &node, &reg, None, false))?;
    publish_after(call, &db);
    Ok(platform::http::no_content())
}

fn publish_after(call: &Call, db: &Db) {
    super::publish_after_commit(call, db);
}

/// What one message did.
enum Applied {
    Ok,
    /// Applied, and it queued commands for the node (a first-boot step).
    Queued,
    Refused(String),
}

/// `POST /agent/nodes/:node_id/reports`: a batch of signed messages. 200
/// with how many were applied and refused; a message is refused for good
/// (bad signature, another node, another protocol version, a malformed
/// body), everything else is applied, idempotently.
pub fn reports(call: &Call) -> Result<Response> {
    let node = call.agent()?.to_string();
    let reports: Reports = platform::http::body_within(call.req, proto::MAX_REPORT_BYTES)?;
    if reports.messages.len() > proto::MAX_REPORT_MESSAGES {
        return Err(Error::Invalid(format!(
            "at most {} messages per report",
            proto::MAX_REPORT_MESSAGES
        )));
    }
    let db = db()?;
    let secret =
        dispatch::node_secret(&db, &node)?.ok_or(Error::BadSignature("the node has no secret"))?;
    let (mut applied, mut refused, mut queued) = (0, Vec::new(), false);
    for env in &reports.messages {
        let outcome = match env.authenticate(&secret, &node) {
            Err(e) => Applied::Refused(e.to_string()),
            Ok(()) => apply(&db, &node, env)?,
        };
        match outcome {
            Applied::Ok => applied += 1,
            Applied::Queued => {
                applied += 1;
                queued = true;
            }
            Applied::Refused(why) => refused.push(serde_json::json!({"id": env.id, "reason": why})),
        }
    }
    if !refused.is_empty() {
        eprintln!(
            "{}",
            serde_json::json!({"level": "warn", "request_id": call.ctx.request_id, "node": node, "msg": "agent messages refused", "refused": refused})
        );
    }
    publish_after(call, &db);
    drop(db);
    if queued {
        dispatch::publish_commands_after_commit(call.ctx, &node);
    }
    if applied > 0 {
        // Items of running batches whose operations just ended make room
        // for the next ones.
        super::batches::advance_running(call.ctx);
    }
    // Released quota of devices whose deletion the agent confirmed is
    // settled by `user`; nothing else here talks to another component.
    Ok(platform::http::json(
        200,
        &serde_json::json!({"applied": applied, "refused": refused}),
    ))
}

fn apply(db: &Db, node: &str, env: &Envelope) -> Result<Applied> {
    macro_rules! parse {
        ($t:ty) => {
            match serde_json::from_value::<$t>(env.body.clone()) {
                Ok(v) => v,
                Err(e) => return Ok(Applied::Refused(format!("{} body: {e}", env.kind))),
            }
        };
    }
    match env.kind.as_str() {
        "heartbeat" => {
            let hb = parse!(Heartbeat);
            if let Err(why) = check_registration(&hb.node, node) {
                return Ok(Applied::Refused(why));
            }
            let usage = serde_json::to_value(&hb.usage).ok();
            db.transaction(|tx| record_node(tx, node, &hb.node, usage, true))?;
            let mut queued = false;
            for d in &hb.devices {
                queued |= observe(db, node, d, &env.sent_at)?;
            }
            if queued {
                return Ok(Applied::Queued);
            }
        }
        "device_status" => {
            let change = parse!(DeviceStatusChange);
            if observe(db, node, &change.device, &env.sent_at)? {
                return Ok(Applied::Queued);
            }
        }
        "command_result" => {
            let result = parse!(CommandResult);
            let applied = command_result(db, node, &result)?;
            // A restart answers once the phone has booted again: that is
            // also what the phone is, as of this message, so a status the
            // agent observed while it was booting (sent earlier, arriving
            // later) does not show it booting after the restart succeeded.
            if let Some(seen) = restarted(&result) {
                if observe(db, node, &seen, &env.sent_at)? {
                    return Ok(Applied::Queued);
                }
            }
            return Ok(applied);
        }
        other => return Ok(Applied::Refused(format!("unknown kind {other}"))),
    }
    Ok(Applied::Ok)
}

/// Applies one observed device (from a heartbeat or a status change);
/// returns whether it queued a command (a device that came up runs its
/// next first-boot step).
fn observe(db: &Db, node: &str, d: &ObservedDevice, sent_at: &str) -> Result<bool> {
    let Ok(id) = Uuid::parse_str(&d.device_id) else {
        return Ok(false);
    };
    let Some(status) = Observed::from_agent(match d.status {
        proto::DeviceStatus::Creating => "creating",
        proto::DeviceStatus::Booting => "booting",
        proto::DeviceStatus::Ready => "ready",
        proto::DeviceStatus::Stopped => "stopped",
        proto::DeviceStatus::Failed => "failed",
        proto::DeviceStatus::Removed => "removed",
    }) else {
        return Ok(false);
    };
    db.transaction(|tx| {
        let o = repo::devices::Observation {
            status,
            container_id: d.container_id.as_deref(),
            adb_port: d.adb_port.map(i32::from),
            reason: d.reason.as_deref(),
            generation: d.generation.map(|g| g as i64),
            sent_at,
        };
        let Some((before, after)) = repo::devices::observe(tx, node, id, &o)? else {
            return Ok::<_, Error>(false);
        };
        lifecycle::observed_changed(tx, &before, &after)?;
        if before.observed_status == after.observed_status {
            // Same status, newer generation: a waiting operation may be done.
            lifecycle::finish_waiting(tx, &after)?;
            return Ok(false);
        }
        // A device that came up (or, for a clone, exists) runs its next
        // first-boot step.
        if matches!(after.observed(), Observed::Running | Observed::Stopped) {
            let next = followups::provision_next(tx, id)?;
            return Ok(matches!(next, followups::Provisioning::Started(_)));
        }
        Ok(false)
    })
}

/// Finishes the operation a command result answers (once). A result for
/// an operation of another node is refused: a node answers only for the
/// commands sent to it.
/// The phone a successful `restart` result says is up again.
fn restarted(r: &CommandResult) -> Option<ObservedDevice> {
    let out = &r.output;
    if !r.ok || out["status"] != "ready" || out.get("device_id").is_none() {
        return None;
    }
    // Only a restart answers `ready` without changing the desired state;
    // creates and starts are seen through their own status reports.
    if out.get("restarted") != Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    Some(ObservedDevice {
        device_id: out["device_id"].as_str()?.to_string(),
        status: proto::DeviceStatus::Ready,
        container_id: out["container_id"].as_str().map(str::to_string),
        adb_port: out["adb_port"].as_u64().and_then(|p| u16::try_from(p).ok()),
        spec_hash: None,
        generation: None,
        reason: None,
    })
}

fn command_result(db: &Db, node: &str, r: &CommandResult) -> Result<Applied> {
    let Ok(op) = Uuid::parse_str(&r.operation_id) else {
        return Ok(Applied::Refused(
            "the operation id is not one this control plane made".into(),
        ));
    };
    db.transaction(|tx| {
        let Some(o) = repo::operations::find(tx, op)? else {
            return Ok::<_, Error>(Applied::Ok);
        };
        if o.node_id.as_deref() != Some(node) {
            return Ok(Applied::Refused(format!(
                "operation {op} was not sent to this node"
            )));
        }
        if o.status != "running" {
            return Ok(Applied::Ok);
        }
        // Lifecycle operations finish when the device is seen in the state
        // they asked for (the agent's result may come before its status);
        // a failed result ends them at once.
        let lifecycle_op = matches!(
            o.kind.as_str(),
            "create" | "start" | "stop" | "delete" | "recover"
        );
        if r.ok && lifecycle_op {
            repo::operations::progress(tx, op, 90)?;
            return Ok(Applied::Ok);
        }
        let outcome = if r.ok {
            // Device operations record the agent's output, or what is read
            // from it (`packages`, `properties`).
            device_ops::recorded_result(&o.kind, &r.output)
                .map(Some)
                .map_err(|(code, message)| (code.to_string(), message))
        } else {
            Err((
                r.error_code.clone().unwrap_or_else(|| "agent_error".into()),
                r.error.clone().unwrap_or_default(),
            ))
        };
        let next = match &outcome {
            Ok(output) => {
                let output = output.as_ref().filter(|v| !v.is_null());
                repo::operations::finish(tx, op, true, output, None)?;
                followups::operation_finished(tx, &o, true, output, None)?
            }
            Err((code, message)) => {
                repo::operations::finish(tx, op, false, None, Some((code, message)))?;
                followups::operation_finished(tx, &o, false, None, Some((code, message)))?
            }
        };
        // A pushed file's contents are not kept once the push has an answer.
        repo::contents::delete(tx, op)?;
        Ok(if next.is_some() {
            Applied::Queued
        } else {
            Applied::Ok
        })
    })
}

/// Marks the devices of nodes that went silent `unknown`, with the nodes'
/// events, in the caller's transaction.
pub fn nodes_went_silent(db: &Db, nodes: &[String]) -> Result<usize> {
    let mut n = 0;
    for node in nodes {
        node_status_event(
            db,
            node,
            NodeStatus::Online.as_str(),
            NodeStatus::Unreachable.as_str(),
        )?;
        for id in repo::devices::on_node(db, node)? {
            if let Some((before, after)) = repo::devices::set_observed(
                db,
                id,
                Observed::Unknown,
                Some("its node stopped reporting"),
            )? {
                lifecycle::observed_changed(db, &before, &after)?;
                n += 1;
            }
        }
    }
    Ok(n)
}
