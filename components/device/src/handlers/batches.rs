//! Batch operations: one action over many devices (by id or by a filter
//! within the caller's data scope), or N devices made from a template, as
//! one batch with a result per device. The batch checks what it may (the
//! action's permission, each device, the template) when it is made; its
//! items then run a bounded number at a time, each as the ordinary
//! operation of its action, for the batch's requester. The first items
//! start with the request; later ones as earlier ones finish (after an
//! agent's report, and by the `device.batches.advance` job).

use super::devices::{act, make_for, Actor, Making, Owner};
use super::{db as open_db, paged, platform_wide, Call};
use crate::domain::batch::{item_name, BatchAction, BatchInput, Targets, MAX_ITEMS};
use crate::domain::device_ops::{ApkUrl, DeviceOp, Sha256Hex, ShellCommand};
use crate::domain::spec::{parse_tags, DeviceName};
use crate::error::{Error, Result};
use crate::repo::{self, batches::ItemRef};
use access::Caller;
use platform::db::Db;
use platform::http::{Ctx, Page};
use spin_sdk::http::Response;
use uuid::Uuid;

/// A batch the caller sees (404 otherwise).
fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<repo::batches::Batch> {
    match repo::batches::find(db, id)? {
        Some(b) if caller.sees("device", b.row_ref()) => Ok(b),
        _ => Err(Error::NotFound("batch")),
    }
}

/// A batch with its items.
fn view(db: &Db, id: Uuid) -> Result<serde_json::Value> {
    let b = repo::batches::find(db, id)?.ok_or(Error::NotFound("batch"))?;
    let items = repo::batches::items(db, id)?;
    let mut v = serde_json::to_value(&b).expect("batch serializes");
    let done = b.succeeded + b.failed;
    v["progress"] = (i64::from(done) * 100 / i64::from(b.total.max(1))).into();
    v["running"] = items
        .iter()
        .filter(|i| i.status == "running")
        .count()
        .into();
    v["items"] = serde_json::to_value(items).expect("items serialize");
    Ok(v)
}

/// The devices a filter finds within the caller's scope (at most 1000).
fn filtered(db: &Db, caller: &Caller, f: &crate::domain::batch::FilterInput) -> Result<Vec<Uuid>> {
    const STATUSES: &[&str] = &[
        "creating", "booting", "running", "stopped", "failed", "unknown",
    ];
    if let Some(s) = &f.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::Invalid(format!(
                "filter.status must be one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let tag = match &f.tag {
        Some(t) => Some(parse_tags(std::slice::from_ref(t))?.remove(0)),
        None => None,
    };
    if f.q.as_ref().is_some_and(|q| q.chars().count() > 100) {
        return Err(Error::Invalid(
            "filter.q must be at most 100 characters".into(),
        ));
    }
    let filter = repo::devices::Filter {
        status: f.status.clone(),
        tag,
        q: f.q.clone().filter(|q| !q.trim().is_empty()),
        sort: ("d.created_at", false),
        ..Default::default()
    };
    let page = Page {
        page: 1,
        per_page: MAX_ITEMS as i64,
    };
    let (found, total) = repo::devices::list(db, &caller.filter("device"), &filter, page)?;
    if total > MAX_ITEMS as i64 {
        return Err(Error::Invalid(format!(
            "the filter finds {total} devices; a batch takes at most {MAX_ITEMS}"
        )));
    }
    if found.is_empty() {
        return Err(Error::Invalid("no device matches the filter".into()));
    }
    Ok(found.into_iter().map(|d| d.id).collect())
}

/// `POST /batches`: checks and records the batch, starts its first items,
/// and answers 202 with it.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: BatchInput = call.body()?;
    let batch = input.parse()?;
    let permission = batch.action.permission();
    if !caller.can(permission) {
        return Err(Error::Forbidden(format!(
            "a {} batch needs {permission}",
            batch.action.as_str()
        )));
    }
    let db = open_db()?;
    // One entry per item; devices the caller does not see fail at once.
    let (devices, unseen): (Vec<Option<Uuid>>, Vec<usize>) = match &batch.targets {
        Targets::Create {
            count, template, ..
        } => {
            super::templates::visible(&db, caller, *template)?;
            (vec![None; *count as usize], Vec::new())
        }
        Targets::Ids(ids) => {
            let mut unseen = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let seen = repo::devices::find(&db, *id)?.is_some_and(|d| {
                    caller.sees("device", d.row_ref()) && d.desired_status != "deleted"
                });
                if !seen {
                    unseen.push(i);
                }
            }
            (ids.iter().copied().map(Some).collect(), unseen)
        }
        Targets::Filter(f) => (
            filtered(&db, caller, f)?.into_iter().map(Some).collect(),
            Vec::new(),
        ),
    };
    let key = super::devices::idempotency_key(call)?;
    let id = Uuid::new_v4();
    let inserted = db.transaction(|tx| {
        let inserted = repo::batches::insert(
            tx,
            &repo::batches::NewBatch {
                id,
                action: batch.action.as_str(),
                requested_by: caller.user_id,
                tenant: caller.tenant_id,
                department: caller.department_id,
                input: &batch.input,
                concurrency: batch.concurrency,
                devices: &devices,
                key: key.as_deref(),
            },
        )?;
        if let Err(existing) = inserted {
            // A retried request: the batch it made first.
            return Ok::<_, Error>(Err(existing));
        }
        for seq in &unseen {
            repo::batches::finish_item(
                tx,
                ItemRef::Seq(id, *seq as i32),
                false,
                Some((
                    "not_found",
                    "no such device, or not one the requester may see",
                )),
            )?;
        }
        Ok(Ok(()))
    })?;
    drop(db);
    if let Err(existing) = inserted {
        return Ok(platform::http::json(200, &view(&open_db()?, existing)?));
    }
    advance(call.ctx, id);
    Ok(platform::http::json(202, &view(&open_db()?, id)?))
}

/// `GET /batches/:id`: the batch, its progress and every item's result.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = open_db()?;
    let b = visible(&db, caller, call.id("id", "batch")?)?;
    Ok(platform::http::json(200, &view(&db, b.id)?))
}

/// `GET /batches?page=&per_page=`: the batches the caller sees, newest
/// first (without their items).
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let scope = if platform_wide(caller, "device") {
        access::RowFilter::All
    } else {
        caller.filter("device")
    };
    let (items, total) = repo::batches::list(&open_db()?, &scope, page)?;
    Ok(paged(items, page, total))
}

/// `POST /internal/batches/advance` (scheduler): starts the next items of
/// every running batch, as room frees up.
pub fn advance_job(call: &Call) -> Result<Response> {
    let ids = repo::batches::running(&open_db()?, 50)?;
    let mut started = 0;
    for id in &ids {
        started += advance(call.ctx, *id);
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"batches": ids.len(), "started": started}),
    ))
}

/// Starts running batches' next items after an agent's report finished
/// some (a cheap look when no batch runs); failures are left to the job.
pub fn advance_running(ctx: &Ctx) {
    let Ok(db) = open_db() else { return };
    let Ok(ids) = repo::batches::running(&db, 50) else {
        return;
    };
    drop(db);
    for id in ids {
        advance(ctx, id);
    }
}

/// Starts as many of a batch's pending items as its concurrency allows;
/// how many it started. Each item's failure to start is its result.
pub fn advance(ctx: &Ctx, id: Uuid) -> usize {
    match try_advance(ctx, id) {
        Ok(n) => n,
        Err(e) => {
            let p: platform::Problem = e.into();
            eprintln!(
                "{}",
                serde_json::json!({"level": "warn", "request_id": ctx.request_id, "msg": "batch advance deferred", "batch": id, "cause": p.internal})
            );
            0
        }
    }
}

fn try_advance(ctx: &Ctx, id: Uuid) -> Result<usize> {
    let db = open_db()?;
    // Items whose operation ended before they recorded it end now.
    for (seq, ok, code, error) in repo::batches::ended_unrecorded(&db, id)? {
        let err = code.as_deref().zip(error.as_deref());
        repo::batches::finish_item(&db, ItemRef::Seq(id, seq), ok, err)?;
    }
    let claimed = db.transaction(|tx| Ok::<_, Error>(repo::batches::claim(tx, id)?))?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let b = repo::batches::find(&db, id)?.ok_or(Error::NotFound("batch"))?;
    drop(db);
    let action = BatchAction::parse(&b.action)?;
    for (seq, device) in &claimed {
        let key = format!("batch-{id}-{seq}");
        let started = start_item(ctx, &b, action, *seq, *device, &key);
        let db = open_db()?;
        match started {
            Ok((op, made)) => {
                db.transaction(|tx| {
                    // Under the operation's row lock: an end that comes
                    // meanwhile either sees the item's operation, or has
                    // already happened and is read here.
                    let now = repo::operations::lock(tx, op.id)?.unwrap_or(op);
                    repo::batches::started(tx, id, *seq, now.id, made)?;
                    if now.status != "running" {
                        let err = now.error_code.as_deref().zip(now.error.as_deref());
                        repo::batches::finish_item(
                            tx,
                            ItemRef::Seq(id, *seq),
                            now.status == "succeeded",
                            err,
                        )?;
                    }
                    Ok::<_, Error>(())
                })?;
            }
            Err(e) => {
                let p: platform::Problem = e.into();
                if p.status >= 500 {
                    // Not the item's fault: it is tried again after a minute.
                    eprintln!(
                        "{}",
                        serde_json::json!({"level": "warn", "request_id": ctx.request_id, "msg": "batch item deferred", "batch": id, "seq": seq, "cause": p.internal})
                    );
                    continue;
                }
                db.transaction(|tx| {
                    let err = (p.code, p.message.as_str());
                    let finished =
                        repo::batches::finish_item(tx, ItemRef::Seq(id, *seq), false, Some(err))?;
                    if let (Some(_), Some(device), BatchAction::InstallApk) =
                        (finished, device, action)
                    {
                        super::followups::apk_not_started(tx, (id, *seq), *device, &b, err)?;
                    }
                    Ok::<_, Error>(())
                })?;
            }
        }
    }
    Ok(claimed.len())
}

/// Starts one item as its action's ordinary operation; the operation and,
/// for a create, the device made.
fn start_item(
    ctx: &Ctx,
    b: &repo::batches::Batch,
    action: BatchAction,
    seq: i32,
    device: Option<Uuid>,
    key: &str,
) -> Result<(repo::operations::Operation, Option<Uuid>)> {
    let text = |k: &str| b.input[k].as_str().unwrap_or_default().to_string();
    let on = || device.ok_or_else(|| platform::Problem::internal("a batch item without a device"));
    match action {
        BatchAction::Create => {
            let template_id = Uuid::parse_str(&text("template_id"))
                .map_err(|_| platform::Problem::internal("stored batch input"))?;
            let db = open_db()?;
            let t = repo::templates::find(&db, template_id)?.ok_or(Error::NotFound("template"))?;
            drop(db);
            let t = t.input().parse()?;
            let name = DeviceName::parse(&item_name(&text("name_prefix"), seq as usize + 1))?;
            let making = Making {
                name,
                request: crate::domain::placement::Request::anywhere(t.spec.resources()),
                tags: t.tags.clone(),
                start: b.input["start"].as_bool().unwrap_or(true),
                strategy: super::devices::default_strategy(),
                pin_node: None,
                template: Some(template_id),
                steps: t.provision_plan(),
                lifecycle: super::devices::template_defaults(&t, Default::default()),
                pool: None,
                recover_policy: "none",
                snapshot_policy: t.snapshot_policy,
                spec: t.spec,
            };
            let owner = Owner {
                user: b.requested_by,
                tenant: b.tenant_id,
                department: b.department_id,
            };
            let (op, _) = make_for(ctx, &owner, making, Some(key))?;
            let made = op.device_id;
            Ok((op, made))
        }
        BatchAction::Lifecycle(a) => Ok((
            act(ctx, Actor::Batch(b.requested_by), on()?, a, Some(key), None)?,
            None,
        )),
        BatchAction::InstallApk | BatchAction::Shell => {
            let op = if action == BatchAction::Shell {
                DeviceOp::Shell {
                    command: ShellCommand::parse(&text("command"))?,
                    timeout_ms: b.input["timeout_ms"].as_u64(),
                }
            } else {
                DeviceOp::InstallApk {
                    url: ApkUrl::parse(&text("url"))?,
                    sha256: Sha256Hex::parse(&text("sha256"))?,
                }
            };
            let d = repo::devices::find(&open_db()?, on()?)?.ok_or(Error::NotFound("device"))?;
            let op_id = super::device_ops::record(ctx, b.requested_by, &d, op, Some(key))?;
            let op =
                repo::operations::find(&open_db()?, op_id)?.ok_or(Error::NotFound("operation"))?;
            Ok((op, None))
        }
    }
}
