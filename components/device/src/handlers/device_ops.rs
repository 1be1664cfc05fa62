//! Operations inside a running phone, carried out by its node's agent:
//! shell, logcat, screenshot, push and pull a file, install and uninstall
//! an APK, the package list and the properties. Each is an operation, like
//! the lifecycle actions: the operation and the agent's command (and a
//! pushed file's contents, which the agent fetches over signed HTTP) commit
//! in one transaction, the command is published after the commit, and the
//! agent's `command_result` finishes the operation. The request then waits
//! up to `wait` seconds (default 10, at most 30) and answers 200 with the
//! finished operation (succeeded or failed), or 202 with the operation
//! still running, to follow at `GET /operations/:id`. A screenshot or a
//! pull that succeeded in time answers with the PNG or the file itself.
//!
//! Checks come in one order: the device must be one the caller sees (404
//! otherwise, whatever the input), then the input (400, nothing written),
//! then the device must be running (409).

use super::devices::{idempotency_key, visible};
use super::operations::{wait_for, MAX_WAIT_SECS};
use super::{db as open_db, dispatch, followups, Call};
use crate::domain::device_ops::{self as ops, DeviceOp};
use crate::error::{Error, Result};
use crate::repo::{self, devices::Device, operations::Operation};
use base64::Engine as _;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

/// How long a request waits for its operation when it does not say.
const DEFAULT_WAIT_SECS: i64 = 10;

/// What a request answers once its operation succeeded.
#[derive(Clone, Copy)]
enum Answer {
    /// The operation as JSON.
    Operation,
    /// The bytes of this base64 field of the result, with this content type.
    Bytes(&'static str, &'static str),
}

/// The device of the request's `:id`, if the caller sees it.
fn target(call: &Call) -> Result<Device> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    visible(&open_db()?, caller, id)
}

/// Records `op` on a device the caller sees, sends it to the device's node
/// and waits for it (see the module's documentation for the answers).
fn run(call: &Call, d: &Device, op: DeviceOp, answer: Answer) -> Result<Response> {
    let caller = call.caller()?;
    let wait = platform::http::int_query(call.req, "wait", DEFAULT_WAIT_SECS, MAX_WAIT_SECS)?;
    let key = idempotency_key(call)?;
    let id = record(call.ctx, caller.user_id, d, op, key.as_deref())?;
    Ok(respond(wait_for(caller, id, wait)?, answer))
}

/// Records `op` on a running device for `requested_by` (whose right to it
/// is checked by the caller) and its command, and publishes the command;
/// the operation's id (the earlier one for a repeated key).
pub fn record(
    ctx: &platform::http::Ctx,
    requested_by: Uuid,
    d: &Device,
    op: DeviceOp,
    key: Option<&str>,
) -> Result<Uuid> {
    ops::ready(d.desired(), d.observed()).map_err(Error::Conflict)?;
    let op_id = Uuid::new_v4();
    let (kind, timeout_secs) = (op.kind(), op.timeout_secs());
    // A push's file stays out of the command (and so out of Redis): the
    // agent fetches it over signed HTTP while the operation runs.
    let (agent_op, content) = op.into_agent(followups::agent_device_id(d.id)?);
    let db = open_db()?;
    let recorded = db.transaction(|tx| {
        // Under the device's lock, so a stop or delete cannot slip in between.
        let d = repo::devices::lock(tx, d.id)?.ok_or(Error::NotFound("device"))?;
        ops::ready(d.desired(), d.observed()).map_err(Error::Conflict)?;
        let node = d
            .node_id
            .clone()
            .ok_or_else(|| Error::Conflict("the device has no node".into()))?;
        let queued = followups::queue(
            tx,
            &d,
            &node,
            followups::Queued {
                id: op_id,
                kind,
                requested_by: Some(requested_by),
                key,
                timeout_secs,
                op: agent_op,
            },
        )?;
        if let Err(existing) = queued {
            // A repeated Idempotency-Key: the first request sent the command.
            return Ok::<_, Error>((existing, None));
        }
        if let Some(content) = content {
            repo::contents::store(tx, op_id, &node, content)?;
        }
        Ok((op_id, Some(node)))
    });
    drop(db);
    let (id, node) = recorded?;
    if let Some(node) = node {
        dispatch::publish_commands_after_commit(ctx, &node);
    }
    Ok(id)
}

/// 202 while it runs; once it succeeded, the bytes asked for (when the
/// result still holds them); otherwise the operation (200).
fn respond(op: Operation, answer: Answer) -> Response {
    if op.status == "running" {
        return platform::http::json(202, &op);
    }
    if let (Answer::Bytes(field, content_type), "succeeded") = (answer, op.status.as_str()) {
        let decoded = op
            .result
            .as_ref()
            .and_then(|r| r[field].as_str())
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .ok()
            });
        if let Some(bytes) = decoded {
            let mut resp = platform::http::bytes(200, content_type, bytes);
            resp.set_header("x-operation-id", op.id.to_string());
            return resp;
        }
    }
    platform::http::json(200, &op)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellInput {
    command: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `POST /devices/:id/shell` (`device:shell`): `sh -c <command>` inside
/// the phone; the result has `exit_code`, `stdout`, `stderr`, `truncated`
/// (output beyond 64 KiB is cut).
pub fn shell(call: &Call) -> Result<Response> {
    let d = target(call)?;
    let b: ShellInput = call.body()?;
    let op = DeviceOp::Shell {
        command: ops::ShellCommand::parse(&b.command)?,
        timeout_ms: ops::timeout_ms(b.timeout_ms)?,
    };
    run(call, &d, op, Answer::Operation)
}

/// `GET /devices/:id/logcat?lines=N`: the last `lines` (1-5000, default
/// 200) of logcat; the result has `text` and `truncated`.
pub fn logcat(call: &Call) -> Result<Response> {
    let d = target(call)?;
    let lines = ops::log_lines(call.query("lines").as_deref())?;
    run(call, &d, DeviceOp::Logcat { lines }, Answer::Operation)
}

/// `GET /devices/:id/screenshot`: the screen as `image/png`.
pub fn screenshot(call: &Call) -> Result<Response> {
    let d = target(call)?;
    run(
        call,
        &d,
        DeviceOp::Screenshot,
        Answer::Bytes("png_base64", "image/png"),
    )
}

/// `PUT /devices/:id/files?path=` (`device:shell`): writes the body
/// (`application/octet-stream`, at most 8 MiB) to `path`, creating its
/// directory; the result has `path` and `bytes`.
pub fn push_file(call: &Call) -> Result<Response> {
    let d = target(call)?;
    let path = ops::device_path(call.query("path").as_deref())?;
    let content =
        platform::http::raw_body_within(call.req, ops::MAX_PUSH_BYTES, "application/octet-stream")?
            .to_vec();
    run(
        call,
        &d,
        DeviceOp::PushFile { path, content },
        Answer::Operation,
    )
}

/// `GET /devices/:id/files?path=` (`device:shell`): the file as
/// `application/octet-stream`. The agent refuses files over 16 MiB, so that
/// its result fits in one report (docs/agent-protocol.md).
pub fn pull_file(call: &Call) -> Result<Response> {
    let d = target(call)?;
    let path = ops::device_path(call.query("path").as_deref())?;
    run(
        call,
        &d,
        DeviceOp::PullFile { path },
        Answer::Bytes("content_base64", "application/octet-stream"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallInput {
    url: String,
    sha256: String,
}

/// `POST /devices/:id/apps`: the agent downloads the APK at `url` (only
/// under its node's `apk_url_prefixes`), checks its `sha256` and installs
/// it; the result has `sha256` and `bytes`.
pub fn install_app(call: &Call) -> Result<Response> {
    let d = target(call)?;
    let b: InstallInput = call.body()?;
    let op = DeviceOp::InstallApk {
        url: ops::ApkUrl::parse(&b.url)?,
        sha256: ops::Sha256Hex::parse(&b.sha256)?,
    };
    run(call, &d, op, Answer::Operation)
}

/// `DELETE /devices/:id/apps/:package`: uninstalls a package.
pub fn uninstall_app(call: &Call) -> Result<Response> {
    let d = target(call)?;
    let package = ops::package(call.params.get("package"))?;
    run(
        call,
        &d,
        DeviceOp::UninstallApk { package },
        Answer::Operation,
    )
}

/// `GET /devices/:id/packages`: the installed packages; the result is
/// `{"packages": [...], "truncated"}`.
pub fn packages(call: &Call) -> Result<Response> {
    let d = target(call)?;
    run(call, &d, DeviceOp::Packages, Answer::Operation)
}

/// `GET /devices/:id/properties`: the system properties; the result is
/// `{"properties": {name: value}, "truncated"}`.
pub fn properties(call: &Call) -> Result<Response> {
    let d = target(call)?;
    run(call, &d, DeviceOp::Properties, Answer::Operation)
}
