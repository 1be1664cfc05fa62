//! Tenants. Platform staff create, change and delete them; a tenant's
//! members with `tenant:read` see only their own, and with `tenant:update`
//! may change only its name and contact. Suspending a tenant ends its users'
//! sessions (their snapshots say the tenant is inactive, and `auth` refuses
//! them tokens).

use super::{audit, db, paged, platform_wide, publish_after_commit, search_query, Call};
use crate::domain::org::{CreateTenant, Tenant, TenantPatch};
use crate::error::{Error, Result};
use crate::repo;
use access::Caller;
use platform::db::{Db, DbError};
use platform::events::catalogue::USER_UPDATED;
use spin_sdk::http::Response;
use uuid::Uuid;

fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<Tenant> {
    match repo::org::find_tenant(db, id)? {
        Some(t) if platform_wide(caller, "tenant") || caller.tenant_id == Some(t.id) => Ok(t),
        _ => Err(Error::NotFound("tenant")),
    }
}

fn platform_only(caller: &Caller) -> Result<()> {
    if platform_wide(caller, "tenant") {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "tenants are created and deleted by platform staff".into(),
        ))
    }
}

/// `GET /tenants?q=&status=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let status = super::one_of(call, "status", &["active", "suspended"])?;
    let only = if platform_wide(caller, "tenant") {
        None
    } else {
        Some(caller.tenant_id)
    };
    let (items, total) = repo::org::list_tenants(
        &db()?,
        only,
        search_query(call)?.as_deref(),
        status.as_deref(),
        page,
    )?;
    Ok(paged(items, page, total))
}

/// `GET /tenants/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let t = visible(&db()?, caller, call.id("id", "tenant")?)?;
    Ok(platform::http::json(200, &t))
}

/// `GET /internal/tenants/:id/limits` (device): whether the tenant is
/// active and how many devices it may have.
pub fn limits(call: &Call) -> Result<Response> {
    let id = call.id("id", "tenant")?;
    let t = repo::org::find_tenant(&db()?, id)?.ok_or(Error::NotFound("tenant"))?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"id": t.id, "active": t.status == "active", "max_devices": t.max_devices}),
    ))
}

/// `POST /tenants`.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    platform_only(caller)?;
    let new = call.body::<CreateTenant>()?.parse()?;
    let db = db()?;
    let t = db.transaction(|tx| {
        let id = repo::org::insert_tenant(tx, &new).map_err(|e| match e {
            DbError::Unique(_) => Error::Conflict("a tenant with this code already exists".into()),
            e => e.into(),
        })?;
        let t = repo::org::find_tenant(tx, id)?.ok_or(Error::NotFound("tenant"))?;
        repo::audit::record(
            tx,
            &audit(call, "tenant.create", "tenant", id, Some(id)).after(&t),
        )?;
        Ok::<_, Error>(t)
    })?;
    Ok(platform::http::json(201, &t))
}

/// `PATCH /tenants/:id`.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "tenant")?;
    let change = call.body::<TenantPatch>()?.parse()?;
    let platform = platform_wide(caller, "tenant");
    if !platform
        && (change.status.is_some()
            || change.max_users.is_some()
            || change.max_devices.is_some()
            || change.expires_at.is_some())
    {
        return Err(Error::Forbidden(
            "a tenant's status, limits and contract are changed by platform staff".into(),
        ));
    }
    let db = db()?;
    let t = db.transaction(|tx| {
        let before = visible(tx, caller, id)?;
        repo::org::update_tenant(tx, id, &change)?;
        let after = repo::org::find_tenant(tx, id)?.ok_or(Error::NotFound("tenant"))?;
        if after.status != before.status {
            // Every member's snapshot carries whether their tenant is active.
            let members = repo::users::ids_in_tenant(tx, id)?;
            repo::snapshot::emit_all(tx, &members, &USER_UPDATED)?;
        }
        repo::audit::record(
            tx,
            &audit(call, "tenant.update", "tenant", id, Some(id))
                .before(&before)
                .after(&after),
        )?;
        Ok::<_, Error>(after)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(200, &t))
}

/// `DELETE /tenants/:id`: only a tenant that never had users (suspend the others).
pub fn delete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    platform_only(caller)?;
    let id = call.id("id", "tenant")?;
    let db = db()?;
    db.transaction(|tx| {
        let before = visible(tx, caller, id)?;
        if repo::org::tenant_user_rows(tx, id)? > 0 {
            return Err(Error::Conflict(
                "a tenant with users cannot be deleted: suspend it".into(),
            ));
        }
        repo::org::delete_tenant(tx, id)?;
        repo::audit::record(
            tx,
            &audit(call, "tenant.delete", "tenant", id, Some(id)).before(&before),
        )?;
        Ok(())
    })?;
    Ok(platform::http::no_content())
}

/// `POST /internal/tenants/expire` (scheduler): suspends tenants whose
/// contract ended, ending their members' sessions like a manual suspension.
pub fn expire(call: &Call) -> Result<Response> {
    let db = db()?;
    let suspended = db.transaction(|tx| {
        let ids = repo::org::suspend_expired(tx)?;
        for id in &ids {
            let members = repo::users::ids_in_tenant(tx, *id)?;
            repo::snapshot::emit_all(tx, &members, &USER_UPDATED)?;
            repo::audit::record(tx, &audit(call, "tenant.expire", "tenant", id, Some(*id)))?;
        }
        Ok::<_, Error>(ids)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(
        200,
        &serde_json::json!({"suspended": suspended}),
    ))
}
