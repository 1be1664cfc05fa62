//! Device lifecycle policy at the edges: the policy fields of create and
//! PATCH, client heartbeats, forced release, the lifecycle job, and the
//! due time every write keeps (`domain::lifecycle` holds the rules).
//!
//! Every write that can bring a device's next due instant earlier
//! recomputes `lifecycle_due_at` in its own transaction: a policy change,
//! a lifecycle action (`devices::act`), an observed status change, the
//! job's own warnings. A client heartbeat only moves the idle deadline
//! later, so it is one UPDATE that leaves the due time alone; the job then
//! looks a little early, finds nothing due and moves it on. The job reads
//! only due rows (`repo::lifecycle::claim_due`), never every device.

use super::devices::{self, idempotency_key, visible, Actor};
use super::{db as open_db, platform_wide, Call};
use crate::domain::lifecycle::{self, rfc3339, Cause, Expiry, Settings, Timeout, Warning};
use crate::domain::status::Action;
use crate::error::{Error, Result};
use crate::repo::{self, devices::Device, lifecycle::PolicyChange};
use access::Caller;
use events::catalogue::{
    EventType, DEVICE_EXPIRED, DEVICE_EXPIRING, DEVICE_IDLE_STOPPED, DEVICE_IDLE_WARNING,
    DEVICE_RELEASED, DEVICE_SESSION_ENDED,
};
use platform::db::Db;
use platform::http::Ctx;
use spin_sdk::http::Response;
use uuid::Uuid;

/// Devices one run of the job takes at most.
const BATCH: i64 = 100;
/// How long a device the job claimed is not due for another run (a run
/// that dies leaves it due again after this).
const LEASE_SECS: i64 = 60;

fn secs_var(name: &str, default: i64) -> i64 {
    platform::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &i64| *n >= 0)
        .unwrap_or(default)
}

/// The deployment's lifecycle settings (Spin variables `device_expiry_warning_secs`,
/// `device_expiry_grace_secs`, `device_idle_warning_secs`).
pub fn settings() -> Settings {
    let d = Settings::default();
    Settings {
        expiry_warning_secs: secs_var("device_expiry_warning_secs", d.expiry_warning_secs),
        expiry_grace_secs: secs_var("device_expiry_grace_secs", d.expiry_grace_secs),
        idle_warning_secs: secs_var("device_idle_warning_secs", d.idle_warning_secs),
    }
}

/// The shortest idle timeout or session length users may set (Spin
/// variable `device_min_timeout_secs`, default 60).
fn min_timeout_secs() -> i64 {
    secs_var("device_min_timeout_secs", 60)
}

/// The lifecycle fields of a create or PATCH body: absent leaves a field,
/// null clears it.
#[derive(Debug, Default)]
pub struct PolicyInput {
    /// `idle_timeout_secs`.
    pub idle_timeout_secs: Option<Option<i64>>,
    /// `max_session_secs`.
    pub max_session_secs: Option<Option<i64>>,
    /// `expires_at` (RFC 3339).
    pub expires_at: Option<Option<String>>,
}

/// Parses the lifecycle fields: timeouts by anyone who may change the
/// device, the expiry only by administrators (`device:admin`; 403 first).
pub fn parse(caller: &Caller, input: PolicyInput) -> Result<PolicyChange> {
    if input.expires_at.is_some() && !caller.can("device:admin") {
        return Err(Error::Forbidden(
            "setting expires_at needs device:admin".into(),
        ));
    }
    let min = min_timeout_secs();
    let timeout = |field: &str, v: Option<Option<i64>>| -> Result<Option<Option<i32>>> {
        v.map(|o| {
            o.map(|s| Timeout::parse(field, s, min).map(Timeout::secs))
                .transpose()
        })
        .transpose()
    };
    let now = chrono::Utc::now().naive_utc();
    Ok(PolicyChange {
        idle_timeout_secs: timeout("idle_timeout_secs", input.idle_timeout_secs)?,
        max_session_secs: timeout("max_session_secs", input.max_session_secs)?,
        expires_at: input
            .expires_at
            .map(|o| {
                o.map(|raw| Expiry::parse(&raw, now).map(Expiry::at))
                    .transpose()
            })
            .transpose()?,
    })
}

/// Applies a parsed policy change and recomputes the due time (inside the
/// write's transaction).
pub fn apply(tx: &Db, id: Uuid, change: &PolicyChange) -> Result<()> {
    if change.is_empty() {
        return Ok(());
    }
    repo::lifecycle::set_policy(tx, id, change)?;
    recompute(tx, id)
}

/// Recomputes and stores a device's next due time (inside the write's
/// transaction).
pub fn recompute(tx: &Db, id: Uuid) -> Result<()> {
    if let Some(d) = repo::devices::find(tx, id)? {
        let next = lifecycle::next_due(&d.lifecycle_state(), &settings());
        repo::lifecycle::set_due(tx, id, next)?;
    }
    Ok(())
}

/// What an observed status change means for the lifecycle: a device seen
/// starting to run starts its session's clocks; idle and session rules
/// apply only while it runs, so the due time is recomputed either way.
pub fn observed_changed(tx: &Db, before: &Device, after: &Device) -> Result<()> {
    let recorded = before.lifecycle.session_started_at.is_some();
    if lifecycle::session_starts(before.observed(), after.observed(), recorded) {
        repo::lifecycle::start_session(tx, after.id)?;
    }
    recompute(tx, after.id)
}

/// Under a lifecycle action's row lock (`devices::act`): a start of an
/// expired device is refused, and an action of the rules' own must still be
/// due, so that overlapping job runs, or a heartbeat that came meanwhile,
/// never make it happen twice or wrongly.
pub fn check_action(tx: &Db, d: &Device, action: Action, cause: Option<Cause>) -> Result<()> {
    let now = repo::lifecycle::now(tx)?;
    if action == Action::Start {
        lifecycle::may_start(&d.lifecycle_state(), now)?;
        refuse_if_suspended(tx, d.owner_id)?;
    }
    if cause == Some(Cause::BalanceExhausted) && !repo::suspensions::suspended(tx, d.owner_id)? {
        return Err(Error::Conflict(
            "the owner's balance is no longer suspended".into(),
        ));
    }
    if let Some(c) = cause.filter(|c| c.scheduled()) {
        if lifecycle::plan(&d.lifecycle_state(), &settings(), now).action != Some(c) {
            return Err(Error::Conflict(
                "the lifecycle action is no longer due".into(),
            ));
        }
    }
    Ok(())
}

/// `402 balance_exhausted` when the owner's balance is suspended (billing's
/// exhaustion policy): no phone of theirs starts.
pub fn refuse_if_suspended(db: &Db, owner: Uuid) -> Result<()> {
    if repo::suspensions::suspended(db, owner)? {
        return Err(Error::Problem(platform::Problem::new(
            402,
            "balance_exhausted",
            "the owner's balance ran out and stayed unpaid past its grace period: pay what is owed to start phones again",
        )));
    }
    Ok(())
}

/// At the end of a lifecycle action's transaction: the new due time, and
/// the event of its cause, if it has one.
pub fn acted(tx: &Db, id: Uuid, cause: Option<Cause>, by: Option<Uuid>) -> Result<()> {
    recompute(tx, id)?;
    let Some(cause) = cause else {
        return Ok(());
    };
    let event = match cause {
        Cause::Expired => &DEVICE_EXPIRED,
        Cause::SessionEnded => &DEVICE_SESSION_ENDED,
        Cause::Idle => &DEVICE_IDLE_STOPPED,
        Cause::GraceOver | Cause::Released => &DEVICE_RELEASED,
        // `balance.suspended` told the owner; `device.stopped` follows.
        Cause::BalanceExhausted => return Ok(()),
    };
    let by = if cause == Cause::Released { by } else { None };
    enqueue(tx, id, event, by)
}

/// Enqueues a lifecycle event with the device as it is now.
fn enqueue(tx: &Db, id: Uuid, event: &EventType, released_by: Option<Uuid>) -> Result<()> {
    let d = repo::devices::find(tx, id)?.ok_or(Error::NotFound("device"))?;
    let payload = events::payload::DeviceLifecycle {
        device: d.event(None),
        lifecycle: event_lifecycle(&d, &settings(), released_by),
    };
    platform::outbox::enqueue(tx, event, &id.to_string(), d.version, &payload)?;
    Ok(())
}

fn event_lifecycle(
    d: &Device,
    s: &Settings,
    released_by: Option<Uuid>,
) -> events::payload::Lifecycle {
    let state = d.lifecycle_state();
    let l = &d.lifecycle;
    events::payload::Lifecycle {
        expires_at: l.expires_at.map(rfc3339),
        delete_at: state.delete_at(s).map(rfc3339),
        idle_timeout_secs: l.idle_timeout_secs.map(i64::from),
        idle_deadline: state.idle_deadline().map(rfc3339),
        last_client_heartbeat_at: l.last_client_heartbeat_at.map(rfc3339),
        max_session_secs: l.max_session_secs.map(i64::from),
        session_started_at: l.session_started_at.map(rfc3339),
        released_by,
    }
}

/// Adds a device's lifecycle to its JSON: the policy, the client's last
/// heartbeat, the session's start and the deadlines that follow; the next
/// lifecycle check only for platform staff.
pub fn view(caller: &Caller, d: &Device, v: &mut serde_json::Value) {
    let state = d.lifecycle_state();
    let l = &d.lifecycle;
    let t = |x: Option<chrono::NaiveDateTime>| serde_json::json!(x.map(rfc3339));
    v["expires_at"] = t(l.expires_at);
    v["idle_timeout_secs"] = serde_json::json!(l.idle_timeout_secs);
    v["max_session_secs"] = serde_json::json!(l.max_session_secs);
    v["last_client_heartbeat_at"] = t(l.last_client_heartbeat_at);
    v["session_started_at"] = t(l.session_started_at);
    v["idle_deadline"] = t(state.idle_deadline());
    v["session_ends_at"] = t(state.session_ends_at());
    if platform_wide(caller, "device") {
        v["next_lifecycle_check"] = t(l.due_at);
    }
}

/// `POST /devices/:id/heartbeat` (`device:control`): a console or API
/// client says the device is in use. One UPDATE; answers the deadlines it
/// now has. 409 when the device is not running (see
/// `lifecycle::takes_heartbeats`).
pub fn heartbeat(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    let db = open_db()?;
    let d = visible(&db, caller, id)?;
    if !lifecycle::takes_heartbeats(d.desired(), d.observed()) {
        return Err(Error::Conflict("the device is not running".into()));
    }
    let d = repo::lifecycle::heartbeat(&db, id)?.ok_or(Error::NotFound("device"))?;
    let state = d.lifecycle_state();
    let t = |x: Option<chrono::NaiveDateTime>| serde_json::json!(x.map(rfc3339));
    Ok(platform::http::json(
        200,
        &serde_json::json!({
            "device_id": d.id,
            "last_client_heartbeat_at": t(d.lifecycle.last_client_heartbeat_at),
            "idle_timeout_secs": d.lifecycle.idle_timeout_secs,
            "idle_deadline": t(state.idle_deadline()),
            "session_ends_at": t(state.session_ends_at()),
            "expires_at": t(d.lifecycle.expires_at),
        }),
    ))
}

/// `POST /devices/:id/release` (`device:admin`): an administrator takes
/// the device back: deleted now, as a `delete` operation (202), its quota
/// released, with `device.released`.
pub fn release(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    let key = idempotency_key(call)?;
    let op = devices::act(
        call.ctx,
        Actor::User(caller),
        id,
        Action::Delete,
        key.as_deref(),
        Some(Cause::Released),
    )?;
    Ok(platform::http::json(
        202,
        &serde_json::to_value(&op).expect("operation serializes"),
    ))
}

/// What the job did for one device.
#[derive(Default)]
struct Done {
    warnings: usize,
    stopped: usize,
    deleted: usize,
}

/// `POST /internal/devices/lifecycle` (scheduler): claims the devices whose
/// due time has come and does what is due: warnings first (their events
/// and marks in one transaction), then the action through the same path as
/// a user's stop or delete (`devices::act`: operation, agent command,
/// quota), which re-checks under its lock that it is still due and writes
/// the cause's event and the next due time. One device's failure is
/// logged, never stops the others.
pub fn job(call: &Call) -> Result<Response> {
    let s = settings();
    let ids = repo::lifecycle::claim_due(&open_db()?, BATCH, LEASE_SECS)?;
    let (mut total, mut failed) = (Done::default(), 0);
    // Phones of owners whose balance is suspended are stopped.
    let unpaid = repo::suspensions::running_devices(&open_db()?, BATCH)?;
    for id in &unpaid {
        let cause = Cause::BalanceExhausted;
        match devices::act(
            call.ctx,
            Actor::System,
            *id,
            cause.action(),
            None,
            Some(cause),
        ) {
            Ok(_) => total.stopped += 1,
            Err(Error::Conflict(_) | Error::NotFound(_)) => {}
            Err(e) => {
                failed += 1;
                let p: platform::Problem = e.into();
                eprintln!(
                    "{}",
                    serde_json::json!({"level": "warn", "request_id": call.ctx.request_id, "msg": "a phone of a suspended balance was not stopped yet", "device": id, "cause": p.internal})
                );
            }
        }
    }
    for id in &ids {
        match process(call.ctx, *id, &s) {
            Ok(d) => {
                total.warnings += d.warnings;
                total.stopped += d.stopped;
                total.deleted += d.deleted;
            }
            Err(e) => {
                failed += 1;
                let p: platform::Problem = e.into();
                eprintln!(
                    "{}",
                    serde_json::json!({"level": "warn", "request_id": call.ctx.request_id, "msg": "lifecycle of a device deferred", "device": id, "cause": p.internal})
                );
            }
        }
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"claimed": ids.len(), "warnings": total.warnings, "stopped": total.stopped,
                            "deleted": total.deleted, "failed": failed}),
    ))
}

/// Does what is due for one claimed device.
fn process(ctx: &Ctx, id: Uuid, s: &Settings) -> Result<Done> {
    let db = open_db()?;
    let (warned, action) = db.transaction(|tx| {
        let Some(d) = repo::devices::lock(tx, id)? else {
            return Ok::<_, Error>((0, None));
        };
        let now = repo::lifecycle::now(tx)?;
        let plan = lifecycle::plan(&d.lifecycle_state(), s, now);
        for w in &plan.warnings {
            repo::lifecycle::mark_warned(tx, id, *w)?;
            let event = match w {
                Warning::Expiry => &DEVICE_EXPIRING,
                Warning::Idle => &DEVICE_IDLE_WARNING,
            };
            enqueue(tx, id, event, None)?;
        }
        if plan.action.is_none() {
            repo::lifecycle::set_due(tx, id, plan.next)?;
        }
        Ok((plan.warnings.len(), plan.action))
    })?;
    platform::outbox::publish_after_commit(&db, &ctx.request_id);
    drop(db);
    let mut done = Done {
        warnings: warned,
        ..Done::default()
    };
    let Some(cause) = action else {
        return Ok(done);
    };
    match devices::act(ctx, Actor::System, id, cause.action(), None, Some(cause)) {
        Ok(_) if cause.action() == Action::Delete => done.deleted += 1,
        Ok(_) => done.stopped += 1,
        // Changed meanwhile (deleted, stopped, a heartbeat): nothing is
        // due any more, or something else is; the due time says which.
        Err(Error::Conflict(_) | Error::NotFound(_)) => {
            open_db()?.transaction(|tx| recompute(tx, id))?;
        }
        Err(e) => return Err(e),
    }
    Ok(done)
}
