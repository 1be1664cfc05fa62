//! Roles and the permission catalogue. A tenant's administrators manage their
//! tenant's roles; system roles (no tenant) are visible everywhere and
//! changed only by platform staff. Nobody can put into a role a permission
//! they do not hold themselves, so roles cannot be used to escalate.

use super::{
    acting_tenant, audit, db, grantable, paged, platform_wide, publish_after_commit, search_query,
    Call,
};
use crate::domain::role::{
    parse_permissions, CreatePermission, CreateRole, PermissionSet, Role, RolePatch,
};
use crate::error::{Error, Result};
use crate::repo;
use access::Caller;
use platform::db::{Db, DbError};
use platform::events::catalogue::USER_UPDATED;
use spin_sdk::http::Response;
use std::collections::BTreeSet;
use uuid::Uuid;

/// A role the caller may see: a system role or one of their tenant's.
pub fn readable(db: &Db, caller: &Caller, id: Uuid) -> Result<Role> {
    match repo::roles::find(db, id)? {
        Some(r) if r.tenant_id.is_none() || caller.in_reach("role", r.tenant_id) => Ok(r),
        _ => Err(Error::NotFound("role")),
    }
}

/// A role the caller may change: their tenant's, or any for platform staff.
/// It is locked until the transaction ends, so its holders cannot change
/// while its grants do.
pub fn changeable(db: &Db, caller: &Caller, id: Uuid) -> Result<Role> {
    repo::roles::lock(db, id)?;
    let r = readable(db, caller, id)?;
    if r.tenant_id.is_none() && !platform_wide(caller, "role") {
        return Err(Error::Forbidden(
            "system roles are changed by platform staff".into(),
        ));
    }
    Ok(r)
}

/// A role whose data scopes and field rules the caller may change: one they
/// could grant entirely and do not hold themselves (nobody widens their own
/// view or lifts their own field masks).
pub fn rules_changeable(db: &Db, caller: &Caller, id: Uuid) -> Result<Role> {
    let r = changeable(db, caller, id)?;
    if let Some(p) = r.permissions.iter().find(|p| !grantable(caller, p)) {
        return Err(Error::Forbidden(format!(
            "the role grants {p}, which you do not hold"
        )));
    }
    if !caller.is_platform_admin() && repo::users::holds(db, caller.user_id, id)? {
        return Err(Error::Forbidden(
            "you cannot change the rules of a role you hold".into(),
        ));
    }
    Ok(r)
}

fn check_grantable(caller: &Caller, perms: &BTreeSet<String>) -> Result<()> {
    match perms.iter().find(|p| !grantable(caller, p)) {
        Some(p) => Err(Error::Forbidden(format!(
            "you cannot grant {p}, which you do not hold"
        ))),
        None => Ok(()),
    }
}

/// Recomputes the access of everyone holding a role (its grants changed).
pub fn refresh_holders(db: &Db, role: Uuid) -> Result<usize> {
    let holders = repo::snapshot::holders_of_role(db, role)?;
    Ok(repo::snapshot::emit_all(db, &holders, &USER_UPDATED)?)
}

fn conflict(e: DbError, what: &str) -> Error {
    match e {
        DbError::Unique(_) => Error::Conflict(format!("{what} already exists")),
        e => e.into(),
    }
}

/// `GET /roles?q=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let tenant = if platform_wide(caller, "role") {
        Err(())
    } else {
        Ok(caller.tenant_id)
    };
    let (items, total) = repo::roles::list(&db()?, tenant, search_query(call)?.as_deref(), page)?;
    Ok(paged(items, page, total))
}

/// `GET /roles/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let role = readable(&db()?, caller, call.id("id", "role")?)?;
    Ok(platform::http::json(200, &role))
}

/// `POST /roles`.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let body: CreateRole = call.body()?;
    let (new, asked) = body.parse()?;
    let tenant = acting_tenant(caller, "role", asked)?;
    if tenant.is_none() && !platform_wide(caller, "role") {
        return Err(Error::Forbidden(
            "system roles are created by platform staff".into(),
        ));
    }
    check_grantable(caller, &new.permissions)?;
    let db = db()?;
    let role = db.transaction(|tx| {
        if let Some(t) = tenant {
            repo::org::find_tenant(tx, t)?
                .ok_or_else(|| Error::Invalid("tenant_id names no tenant".into()))?;
        }
        let id = repo::roles::insert(tx, tenant, &new)
            .map_err(|e| conflict(e, "a role with this code"))?;
        let role = repo::roles::find(tx, id)?.ok_or(Error::NotFound("role"))?;
        repo::audit::record(
            tx,
            &audit(call, "role.create", "role", id, tenant).after(&role),
        )?;
        Ok::<_, Error>(role)
    })?;
    Ok(platform::http::json(201, &role))
}

/// `PATCH /roles/:id`: name and description.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "role")?;
    let (name, description) = call.body::<RolePatch>()?.parse()?;
    let db = db()?;
    let role = db.transaction(|tx| {
        let before = changeable(tx, caller, id)?;
        repo::roles::update(
            tx,
            id,
            name.as_ref().map(|n| n.as_str()),
            description.as_deref(),
        )?;
        let after = repo::roles::find(tx, id)?.ok_or(Error::NotFound("role"))?;
        repo::audit::record(
            tx,
            &audit(call, "role.update", "role", id, after.tenant_id)
                .before(&before)
                .after(&after),
        )?;
        Ok::<_, Error>(after)
    })?;
    Ok(platform::http::json(200, &role))
}

/// `DELETE /roles/:id`: only roles nobody holds.
pub fn delete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "role")?;
    let db = db()?;
    db.transaction(|tx| {
        let before = changeable(tx, caller, id)?;
        if before.is_system {
            return Err(Error::Conflict("built-in roles cannot be deleted".into()));
        }
        let n = repo::roles::holder_count(tx, id)?;
        if n > 0 {
            return Err(Error::Conflict(format!(
                "the role is held by {n} users: take it away first"
            )));
        }
        repo::roles::delete(tx, id)?;
        repo::audit::record(
            tx,
            &audit(call, "role.delete", "role", id, before.tenant_id).before(&before),
        )?;
        Ok(())
    })?;
    Ok(platform::http::no_content())
}

/// `PUT /roles/:id/permissions`: replaces the permissions; every holder's
/// access is recomputed and sent to `auth` in the same transaction.
pub fn set_permissions(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "role")?;
    let perms = parse_permissions(call.body::<PermissionSet>()?.permissions)?;
    let db = db()?;
    let role = db.transaction(|tx| {
        let before = changeable(tx, caller, id)?;
        let old: BTreeSet<String> = before.permissions.iter().cloned().collect();
        let changed: BTreeSet<String> = old.symmetric_difference(&perms).cloned().collect();
        check_grantable(caller, &changed)?;
        repo::roles::set_permissions(tx, id, &perms)?;
        refresh_holders(tx, id)?;
        let after = repo::roles::find(tx, id)?.ok_or(Error::NotFound("role"))?;
        repo::audit::record(
            tx,
            &audit(call, "role.permissions", "role", id, after.tenant_id)
                .before(&before.permissions)
                .after(&after.permissions),
        )?;
        Ok::<_, Error>(after)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(200, &role))
}

/// `GET /permissions?resource=&page=&per_page=`.
pub fn list_permissions(call: &Call) -> Result<Response> {
    let page = call.page()?;
    let resource = call.query("resource").filter(|r| r.len() <= 48);
    let (items, total) = repo::roles::permissions(&db()?, resource.as_deref(), page)?;
    Ok(paged(items, page, total))
}

fn platform_only(caller: &Caller) -> Result<()> {
    if platform_wide(caller, "permission") {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "the permission catalogue is changed by platform staff".into(),
        ))
    }
}

/// `POST /permissions`: a custom permission (platform staff).
pub fn create_permission(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    platform_only(caller)?;
    let (code, resource, action, description) = call.body::<CreatePermission>()?.parse()?;
    let db = db()?;
    let p = db.transaction(|tx| {
        repo::roles::insert_permission(tx, &code, &resource, &action, &description)
            .map_err(|e| conflict(e, "this permission"))?;
        let p = repo::roles::find_permission(tx, &code)?.ok_or(Error::NotFound("permission"))?;
        repo::audit::record(
            tx,
            &audit(call, "permission.create", "permission", &code, None).after(&p),
        )?;
        Ok::<_, Error>(p)
    })?;
    Ok(platform::http::json(201, &p))
}

/// `DELETE /permissions/:code`: a custom permission no role grants.
pub fn delete_permission(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    platform_only(caller)?;
    let code = call.params.get("code").to_string();
    let db = db()?;
    db.transaction(|tx| {
        let p = repo::roles::find_permission(tx, &code)?.ok_or(Error::NotFound("permission"))?;
        if p.is_system {
            return Err(Error::Conflict(
                "built-in permissions cannot be deleted".into(),
            ));
        }
        if repo::roles::roles_granting(tx, &code)? > 0 {
            return Err(Error::Conflict("roles still grant this permission".into()));
        }
        repo::roles::delete_permission(tx, &code)?;
        repo::audit::record(
            tx,
            &audit(call, "permission.delete", "permission", &code, None).before(&p),
        )?;
        Ok(())
    })?;
    Ok(platform::http::no_content())
}
