//! Quotas: limits and usage per user, and the reservation API other
//! components use (`internal/quotas/...`) so that concurrent device
//! creations never exceed a limit: reserve (idempotent per key, expiring if
//! not confirmed), commit, release.

use super::{audit, db, paged, publish_after_commit, uuid_query, Call};
use crate::domain::quota::{GrantRequest, LimitsPatch, Quota, ReserveRequest, UsageReport};
use crate::error::{Error, Result};
use crate::repo::{self, quotas::Reserved};
use access::Caller;
use platform::db::Db;
use spin_sdk::http::Response;
use uuid::Uuid;

/// A user's quota, if the caller may see the user (the quota follows its
/// user's tenant and department).
fn visible(db: &Db, caller: &Caller, user: Uuid) -> Result<Quota> {
    match repo::users::find(db, user)? {
        Some(p) if caller.sees("quota", repo::users::row_ref(&p)) => {
            repo::quotas::get(db, user)?.ok_or(Error::NotFound("quota"))
        }
        _ => Err(Error::NotFound("quota")),
    }
}

/// `GET /me/quota`.
pub fn mine(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let q = repo::quotas::get(&db()?, caller.user_id)?.ok_or(Error::NotFound("quota"))?;
    Ok(platform::http::json(200, &q))
}

/// `GET /quotas?user_id=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let user = uuid_query(call, "user_id")?;
    let (items, total) = repo::quotas::list(&db()?, &caller.filter("quota"), user, page)?;
    Ok(paged(items, page, total))
}

/// `GET /quotas/:user_id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let q = visible(&db()?, caller, call.id("user_id", "quota")?)?;
    Ok(platform::http::json(200, &q))
}

/// `PATCH /quotas/:user_id`: new limits (not one's own, unless platform staff).
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let user = call.id("user_id", "quota")?;
    let limits: LimitsPatch = call.body()?;
    limits.check()?;
    if user == caller.user_id && !super::platform_wide(caller, "quota") {
        return Err(Error::Forbidden("you cannot change your own quota".into()));
    }
    let db = db()?;
    let q = db.transaction(|tx| {
        let before = visible(tx, caller, user)?;
        repo::quotas::set_limits(tx, user, &limits)?;
        let after = repo::quotas::get(tx, user)?.ok_or(Error::NotFound("quota"))?;
        repo::audit::record(
            tx,
            &audit(call, "quota.update", "quota", user, after.tenant_id)
                .before(&before.limits)
                .after(&after.limits),
        )?;
        Ok::<_, Error>(after)
    })?;
    Ok(platform::http::json(200, &q))
}

/// `POST /internal/quotas/reservations`: 201 with a new reservation, 200
/// with the one made before under the same key, 409 `quota_exceeded`.
pub fn reserve(call: &Call) -> Result<Response> {
    let req: ReserveRequest = call.body()?;
    let ttl = req.check()?;
    let db = db()?;
    let outcome = db.transaction(|tx| {
        repo::quotas::reserve(tx, req.user_id, &req.idempotency_key, &req.resources, ttl)?
            .ok_or(Error::NotFound("user"))
    })?;
    match outcome {
        Reserved::Granted(r) => Ok(platform::http::json(201, &r)),
        Reserved::Existing(r) => Ok(platform::http::json(200, &r)),
        Reserved::Inactive => Err(Error::Conflict(
            "the user cannot hold resources: locked, deleted or in a suspended tenant".into(),
        )),
        Reserved::Refused(why) => {
            publish_after_commit(call, &db);
            Err(Error::QuotaExceeded(why))
        }
    }
}

/// `POST /internal/quotas/reservations/:id/commit`: the resources are now
/// held (the device exists). Repeating it changes nothing.
pub fn commit(call: &Call) -> Result<Response> {
    let id = call.id("id", "reservation")?;
    let db = db()?;
    let r = db.transaction(|tx| {
        let r = repo::quotas::lock_reservation(tx, id)?.ok_or(Error::NotFound("reservation"))?;
        match r.status.as_str() {
            "pending" => repo::quotas::settle(tx, &r, "committed", 1)?,
            "committed" => {}
            s => return Err(Error::Conflict(format!("the reservation is {s}"))),
        }
        repo::quotas::lock_reservation(tx, id)?.ok_or(Error::NotFound("reservation"))
    })?;
    Ok(platform::http::json(200, &r))
}

/// `POST /internal/quotas/reservations/:id/release`: gives the resources
/// back (a pending reservation is dropped, a committed one stops being
/// held). Repeating it changes nothing.
pub fn release(call: &Call) -> Result<Response> {
    let id = call.id("id", "reservation")?;
    let db = db()?;
    let r = db.transaction(|tx| {
        let r = repo::quotas::lock_reservation(tx, id)?.ok_or(Error::NotFound("reservation"))?;
        match r.status.as_str() {
            "pending" => repo::quotas::settle(tx, &r, "released", 0)?,
            "committed" => repo::quotas::settle(tx, &r, "released", -1)?,
            _ => {}
        }
        repo::quotas::lock_reservation(tx, id)?.ok_or(Error::NotFound("reservation"))
    })?;
    Ok(platform::http::json(200, &r))
}

/// `POST /internal/quotas/expire` (scheduler): expires unconfirmed reservations.
pub fn expire(_call: &Call) -> Result<Response> {
    let n = repo::quotas::expire_due(&db()?)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"expired": n}),
    ))
}

/// `POST /internal/quotas/usage`: minutes of use, counted once per key.
pub fn report_usage(call: &Call) -> Result<Response> {
    let report: UsageReport = call.body()?;
    report.check()?;
    let db = db()?;
    let fresh = db.transaction(|tx| {
        repo::quotas::add_minutes(tx, report.user_id, report.minutes, &report.idempotency_key)?
            .ok_or(Error::NotFound("user"))
    })?;
    publish_after_commit(call, &db);
    let q = repo::quotas::get(&db, report.user_id)?.ok_or(Error::NotFound("quota"))?;
    Ok(platform::http::json(if fresh { 201 } else { 200 }, &q))
}

/// `POST /internal/quotas/roll` (scheduler): the daily and monthly resets.
pub fn roll(_call: &Call) -> Result<Response> {
    let db = db()?;
    let (days, months) =
        db.transaction(|tx| Ok::<_, Error>(repo::quotas::roll_periods(tx, None)?))?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"daily_reset": days, "monthly_reset": months}),
    ))
}

/// `POST /internal/quotas/grants` (billing): `{user_id, idempotency_key,
/// resources}`: a pending grant (limits unchanged until it is activated);
/// 201, or 200 with the grant made before under the same key.
pub fn grant(call: &Call) -> Result<Response> {
    let req: GrantRequest = call.body()?;
    req.check()?;
    let db = db()?;
    let (g, made) = db.transaction(|tx| {
        repo::quota_grants::make(tx, req.user_id, &req.idempotency_key, &req.resources)?
            .ok_or(Error::NotFound("user"))
    })?;
    Ok(platform::http::json(if made { 201 } else { 200 }, &g))
}

/// `POST /internal/quotas/grants/:id/activate` (billing): the grant's
/// amounts are added to the user's limits; repeating it changes nothing;
/// 409 for a revoked grant.
pub fn activate_grant(call: &Call) -> Result<Response> {
    let id = call.id("id", "grant")?;
    let db = db()?;
    let g = db.transaction(|tx| {
        let g = repo::quota_grants::lock(tx, id)?.ok_or(Error::NotFound("grant"))?;
        match g.status.as_str() {
            "pending" => repo::quota_grants::settle(tx, &g, "active", 1)?,
            "active" => {}
            s => return Err(Error::Conflict(format!("the grant is {s}"))),
        }
        repo::quota_grants::lock(tx, id)?.ok_or(Error::NotFound("grant"))
    })?;
    Ok(platform::http::json(200, &g))
}

/// `POST /internal/quotas/grants/:id/revoke` (billing): a pending grant is
/// dropped, an active one's amounts are taken off the limits (never below
/// zero); repeating it changes nothing.
pub fn revoke_grant(call: &Call) -> Result<Response> {
    let id = call.id("id", "grant")?;
    let db = db()?;
    let g = db.transaction(|tx| {
        let g = repo::quota_grants::lock(tx, id)?.ok_or(Error::NotFound("grant"))?;
        match g.status.as_str() {
            "pending" => repo::quota_grants::settle(tx, &g, "revoked", 0)?,
            "active" => repo::quota_grants::settle(tx, &g, "revoked", -1)?,
            _ => {}
        }
        repo::quota_grants::lock(tx, id)?.ok_or(Error::NotFound("grant"))
    })?;
    Ok(platform::http::json(200, &g))
}
