//! Warm pools: per template, devices made and booted ahead of demand and
//! owned by nobody, so that a create from the template answers at once
//! with a running device. Operators set a pool's size; the replenish job
//! makes up the number (and removes what is beyond it, or failed); a
//! create takes a running pooled device for the caller, with the same
//! quota as any create, or falls back to making one when the pool is empty.

use super::devices::{act, make_for, Actor, Making, Owner};
use super::{db as open_db, dispatch, Call};
use crate::domain::status::{Action, Observed};
use crate::error::{Error, Result};
use crate::repo::{self, operations::NewOperation, operations::Operation, pools::NOBODY};
use events::catalogue::DEVICE_CREATED;
use platform::http::Ctx;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

/// Most devices one pool keeps.
pub const MAX_SIZE: i32 = 100;
/// Most devices one replenish run makes for one pool.
const MAKE_PER_RUN: usize = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPool {
    size: i32,
}

/// A pool's state: its size and the devices waiting in it by status.
fn view(template: Uuid) -> Result<serde_json::Value> {
    let db = open_db()?;
    let size = repo::pools::find(&db, template)?.map_or(0, |p| p.size);
    let waiting = repo::pools::waiting(&db, template)?;
    let ready = waiting
        .iter()
        .filter(|d| d.observed() == Observed::Running)
        .count();
    Ok(serde_json::json!({
        "template_id": template, "size": size, "ready": ready, "waiting": waiting.len(),
        "devices": waiting.iter().map(|d| serde_json::json!({"id": d.id, "observed_status": d.observed_status, "node_id": d.node_id})).collect::<Vec<_>>(),
    }))
}

/// `PUT /templates/:id/pool` (`node:manage`): how many devices the
/// template's pool keeps ready (0-100; 0 empties it).
pub fn set(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "template")?;
    let b: SetPool = call.body()?;
    if !(0..=MAX_SIZE).contains(&b.size) {
        return Err(Error::Invalid(format!("size must be from 0 to {MAX_SIZE}")));
    }
    let db = open_db()?;
    super::templates::visible(&db, caller, id)?;
    repo::pools::set(&db, id, b.size, caller.user_id)?;
    drop(db);
    Ok(platform::http::json(200, &view(id)?))
}

/// `GET /templates/:id/pool` (`node:read`).
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "template")?;
    super::templates::visible(&open_db()?, caller, id)?;
    Ok(platform::http::json(200, &view(id)?))
}

/// Gives the caller a running device from the template's pool, as a
/// finished `create` operation; `None` when none is ready (the caller then
/// makes one). Quota is reserved first, as for any create, and released
/// when the pool turns out empty.
pub fn take(call: &Call, template: Uuid, m: &Making) -> Result<Option<Operation>> {
    let caller = call.caller()?;
    let spec = serde_json::to_value(&m.spec).expect("spec serializes");
    if !repo::pools::has_ready(&open_db()?, template, &spec)? {
        return Ok(None);
    }
    let key = super::devices::idempotency_key(call)?;
    // The tenant's device limit holds for pooled devices as for any other.
    let tenant_max = match caller.tenant_id {
        Some(t) => dispatch::tenant_max_devices(call.ctx, t)?,
        None => None,
    };
    let op_id = Uuid::new_v4();
    let owner = caller.user_id;
    let device_claim =
        dispatch::reserve(call.ctx, owner, &format!("pool:{op_id}"), &m.spec.quota())?;
    let run_claim = match dispatch::reserve(
        call.ctx,
        owner,
        &format!("pool:{op_id}:run"),
        &serde_json::json!({"concurrent_devices": 1}),
    ) {
        Ok(r) => r,
        Err(e) => {
            dispatch::settle_all(call.ctx, &[device_claim.id], false);
            return Err(e);
        }
    };
    let claims = [device_claim.id, run_claim.id];
    let db = open_db()?;
    let taken = db.transaction(|tx| {
        if let (Some(t), Some(max)) = (caller.tenant_id, tenant_max) {
            repo::devices::lock_tenant(tx, t)?;
            if repo::devices::count_in_tenant(tx, t)? >= max {
                return Err(Error::QuotaExceeded(format!(
                    "the tenant's device limit {max} is reached"
                )));
            }
        }
        // A device first, so that an empty pool leaves nothing behind.
        let Some(d) = repo::pools::take_one(tx, template, &spec)? else {
            return Ok::<_, Error>(None);
        };
        let inserted = repo::operations::insert(
            tx,
            &NewOperation {
                id: op_id,
                kind: "create",
                device: None,
                node: None,
                requested_by: Some(owner),
                owner: Some(owner),
                tenant: caller.tenant_id,
                department: caller.department_id,
                generation: None,
                idempotency_key: key.as_deref(),
                timeout_secs: 60,
            },
        )?;
        if let Err(existing) = inserted {
            // The device goes back to waiting: this transaction changes nothing else.
            return Ok(Some(Err(existing)));
        }
        repo::pools::assign(
            tx,
            d.id,
            &repo::pools::Taker {
                owner,
                tenant: caller.tenant_id,
                department: caller.department_id,
                owner_copy: repo::owners::find(tx, owner)?,
                name: m.name.as_str(),
                tags: &m.tags,
            },
        )?;
        repo::claims::reserved(tx, device_claim.id, d.id, owner, "device")?;
        repo::claims::reserved(tx, run_claim.id, d.id, owner, "run")?;
        if m.recover_policy != "none" {
            repo::recoveries::set_policy(tx, d.id, m.recover_policy)?;
        }
        // Metering: from now on the device runs for its user.
        repo::runs::close(tx, d.id, "assigned")?;
        let d = repo::devices::find(tx, d.id)?.ok_or(Error::NotFound("device"))?;
        repo::runs::open(tx, d.id, owner, d.tenant_id, d.node_id.as_deref(), &d.spec)?;
        // Its session, and its idle clock, start with its user.
        repo::lifecycle::start_session(tx, d.id)?;
        super::policy::apply(tx, d.id, &m.lifecycle)?;
        super::policy::recompute(tx, d.id)?;
        if let Some(p) = &m.snapshot_policy {
            repo::snapshot_policies::put(tx, d.id, p)?;
        }
        tx.execute(
            "UPDATE operations SET device_id = $2, node_id = $3, generation = $4 WHERE id = $1",
            &[
                spin_sdk::pg4::ParameterValue::Uuid(op_id.to_string()),
                spin_sdk::pg4::ParameterValue::Uuid(d.id.to_string()),
                d.node_id.clone().map_or(
                    spin_sdk::pg4::ParameterValue::DbNull,
                    spin_sdk::pg4::ParameterValue::Str,
                ),
                spin_sdk::pg4::ParameterValue::Int64(d.generation),
            ],
        )?;
        let result = serde_json::json!({"device_id": d.id, "status": "running", "from_pool": true});
        repo::operations::finish(tx, op_id, true, Some(&result), None)?;
        let d = repo::devices::find(tx, d.id)?.ok_or(Error::NotFound("device"))?;
        platform::outbox::enqueue(
            tx,
            &DEVICE_CREATED,
            &d.id.to_string(),
            d.version,
            &d.event(None),
        )?;
        Ok(Some(Ok(())))
    });
    let outcome = match taken {
        Ok(o) => o,
        Err(e) => {
            drop(db);
            dispatch::settle_all(call.ctx, &claims, false);
            return Err(e);
        }
    };
    super::publish_after_commit(call, &db);
    drop(db);
    match outcome {
        None => {
            // Emptied meanwhile: the caller makes one.
            dispatch::settle_all(call.ctx, &claims, false);
            Ok(None)
        }
        Some(Err(existing)) => {
            dispatch::settle_all(call.ctx, &claims, false);
            Ok(repo::operations::find(&open_db()?, existing)?)
        }
        Some(Ok(())) => {
            dispatch::settle_all(call.ctx, &claims, true);
            Ok(repo::operations::find(&open_db()?, op_id)?)
        }
    }
}

/// `POST /internal/pools/replenish` (scheduler): every pool gets back to
/// its size (at most ten new devices a run each); devices beyond it, and
/// pooled devices that failed, are deleted.
pub fn replenish(call: &Call) -> Result<Response> {
    let pools = repo::pools::all(&open_db()?)?;
    let (mut made, mut removed) = (0, 0);
    for pool in &pools {
        if !repo::pools::lease(&open_db()?, pool.template_id)? {
            continue;
        }
        let outcome = replenish_one(call.ctx, pool);
        repo::pools::unlease(&open_db()?, pool.template_id)?;
        let (m, r) = outcome?;
        made += m;
        removed += r;
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"pools": pools.len(), "made": made, "removed": removed}),
    ))
}

fn replenish_one(ctx: &Ctx, pool: &repo::pools::Pool) -> Result<(usize, usize)> {
    let db = open_db()?;
    let waiting = repo::pools::waiting(&db, pool.template_id)?;
    let template = repo::templates::find(&db, pool.template_id)?;
    drop(db);
    // Failed devices, and ones made with an older spec of the template,
    // go; the others count.
    let spec = template
        .as_ref()
        .and_then(|t| t.input().parse().ok())
        .map(|t| serde_json::to_value(&t.spec).expect("spec serializes"));
    let (failed, live): (Vec<_>, Vec<_>) = waiting
        .iter()
        .partition(|d| d.observed() == Observed::Failed || spec.as_ref() != Some(&d.spec));
    let size = if template.is_some() {
        pool.size as usize
    } else {
        0
    };
    let excess: Vec<_> = failed
        .iter()
        .chain(live.iter().rev().take(live.len().saturating_sub(size)))
        .map(|d| d.id)
        .collect();
    let mut removed = 0;
    for id in &excess {
        match act(
            ctx,
            Actor::Pool(pool.template_id),
            *id,
            Action::Delete,
            Some(&format!("pool-trim-{id}")),
            None,
        ) {
            Ok(_) => removed += 1,
            Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let Some(stored) = template else {
        return Ok((0, removed));
    };
    let t = stored.input().parse()?;
    let missing = size.saturating_sub(live.len()).min(MAKE_PER_RUN);
    let mut made = 0;
    for _ in 0..missing {
        let making = Making {
            name: crate::domain::spec::DeviceName::parse(&format!(
                "pool {}",
                &pool.template_id.simple().to_string()[..8]
            ))?,
            request: crate::domain::placement::Request::anywhere(t.spec.resources()),
            spec: t.spec.clone(),
            tags: t.tags.clone(),
            start: true,
            strategy: super::devices::default_strategy(),
            pin_node: None,
            template: Some(pool.template_id),
            steps: t.provision_plan(),
            lifecycle: Default::default(),
            pool: Some(pool.template_id),
            recover_policy: "none",
            // Given when a user takes it, not while it waits.
            snapshot_policy: None,
        };
        let nobody = Owner {
            user: NOBODY,
            tenant: None,
            department: None,
        };
        match make_for(ctx, &nobody, making, None) {
            Ok(_) => made += 1,
            // No room on any node now: the next run tries again.
            Err(Error::NoCapacity(_)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok((made, removed))
}
