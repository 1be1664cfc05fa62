//! Users administration: list with search, filters and paging, create,
//! read, change, delete, lock and unlock, role assignment, passwords. Every
//! read applies the caller's data scope for `user` (an invisible user is a
//! 404, never a 403, so ids of other tenants reveal nothing) and field rules;
//! every change is audited and emits its `user.*` event in its transaction.

use super::{
    acting_tenant, audit, db, grantable, outranks, paged, present, publish_after_commit,
    scope_grantable, search_query, uuid_query, Call,
};
use crate::domain::access::ScopeKind;
use crate::domain::profile::{
    check_password, CreateUser, Identity, PasswordSet, Profile, ProfilePatch, RoleAssignment,
    UserFilter,
};
use crate::error::{Error, Result};
use crate::repo::{self, users::row_ref};
use access::Caller;
use platform::db::Db;
use platform::events::catalogue::{
    USER_CREATED, USER_DELETED, USER_LOCKED, USER_ROLES_CHANGED, USER_UPDATED,
};
use spin_sdk::http::Response;
use std::collections::BTreeSet;
use uuid::Uuid;

fn visible(db: &Db, caller: &Caller, id: Uuid, lock: bool) -> Result<Profile> {
    let p = if lock {
        repo::users::lock(db, id)?
    } else {
        repo::users::find(db, id)?
    };
    match p {
        Some(p) if caller.sees("user", row_ref(&p)) => Ok(p),
        _ => Err(Error::NotFound("user")),
    }
}

fn view(caller: &Caller, p: &Profile) -> serde_json::Value {
    present(caller, "user", Some(p.id), p)
}

/// `GET /users?q=&status=&tenant_id=&department_id=&role=&sort=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let filter = UserFilter {
        q: search_query(call)?,
        status: super::one_of(call, "status", &["active", "locked", "deleted"])?,
        tenant_id: uuid_query(call, "tenant_id")?,
        department_id: uuid_query(call, "department_id")?,
        role: call
            .query("role")
            .filter(|r| !r.is_empty() && r.len() <= 64),
    };
    let sort = super::one_of(
        call,
        "sort",
        &[
            "created_at",
            "-created_at",
            "email",
            "-email",
            "display_name",
        ],
    )?
    .unwrap_or_default();
    // Searching or sorting by a field one may not see would reveal it.
    let rule = caller.access.fields("user");
    let restricted = |f: &str| rule.hidden.contains(f) || rule.masked.contains(f);
    let sort_field = sort.trim_start_matches('-');
    if !sort_field.is_empty() && restricted(sort_field) {
        return Err(Error::Forbidden(format!(
            "you may not sort by {sort_field}"
        )));
    }
    let searchable: Vec<&'static str> = [
        ("email", "u.email"),
        ("display_name", "u.display_name"),
        ("phone", "coalesce(u.phone, '')"),
    ]
    .into_iter()
    .filter(|(f, _)| !restricted(f))
    .map(|(_, c)| c)
    .collect();
    let db = db()?;
    let (items, total) = repo::users::list(
        &db,
        &caller.filter("user"),
        &filter,
        &searchable,
        &sort,
        page,
    )?;
    let items: Vec<_> = items.iter().map(|p| view(caller, p)).collect();
    Ok(paged(items, page, total))
}

/// `GET /users/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "user")?;
    let p = visible(&db()?, caller, id, false)?;
    Ok(platform::http::json(200, &view(caller, &p)))
}

/// Checks that the caller may hand out (or take away) these roles: each must
/// exist, belong to the target's tenant or be a system role, grant no
/// permission the caller lacks and no data scope wider than the caller's.
/// The roles are locked (shared) so that a concurrent change of their grants
/// waits and then sees the new holder.
fn check_roles(db: &Db, caller: &Caller, tenant: Option<Uuid>, ids: &BTreeSet<Uuid>) -> Result<()> {
    let ids: Vec<Uuid> = ids.iter().copied().collect();
    repo::roles::lock_shared(db, &ids)?;
    let roles = repo::roles::find_many(db, &ids)?;
    let usable = roles
        .iter()
        .filter(|r| r.tenant_id.is_none() || r.tenant_id == tenant)
        .count();
    if roles.len() != ids.len() || usable != ids.len() {
        return Err(Error::Invalid(
            "role_ids name a role that does not exist".into(),
        ));
    }
    for r in &roles {
        if let Some(p) = r.permissions.iter().find(|p| !grantable(caller, p)) {
            return Err(Error::Forbidden(format!(
                "role {} grants {p}, which you do not hold",
                r.code
            )));
        }
    }
    for s in repo::roles::data_scopes(db, &ids)? {
        let kind = ScopeKind::parse(&s.scope).unwrap_or(ScopeKind::All);
        if !scope_grantable(caller, &s.resource, kind) {
            return Err(Error::Forbidden(format!(
                "a role gives scope {} on {}, wider than yours",
                s.scope, s.resource
            )));
        }
    }
    Ok(())
}

fn check_department(db: &Db, tenant: Option<Uuid>, dept: Option<Uuid>) -> Result<()> {
    if let Some(d) = dept {
        match repo::org::find_department(db, d)? {
            Some((d, _)) if d.tenant_id == tenant => {}
            _ => {
                return Err(Error::Invalid(
                    "department_id names no department of the user's tenant".into(),
                ))
            }
        }
    }
    Ok(())
}

/// Sets a password in `auth` (service chaining). A new user's identity
/// snapshot goes along, so they can log in before `user.created` arrives.
fn set_credentials(
    call: &Call,
    id: Uuid,
    email: &str,
    password: &str,
    identity: Option<(&Identity, i64)>,
) -> Result<()> {
    let mut body = serde_json::json!({"user_id": id, "email": email, "password": password});
    if let Some((identity, version)) = identity {
        body["identity"] = serde_json::to_value(identity).expect("identity serializes");
        body["version"] = version.into();
    }
    let resp = platform::http::chain(
        call.ctx,
        spin_sdk::http::Method::Put,
        "http://auth.spin.internal/api/v1/auth/internal/credentials",
        Some(&body),
    )?;
    match *resp.status() {
        200 | 201 | 204 => Ok(()),
        409 => Err(Error::Conflict("email is already registered".into())),
        s => Err(Error::Upstream(format!("auth credentials answered {s}"))),
    }
}

/// `POST /users`: creates a user in the caller's tenant (platform staff may
/// name one), with roles the caller may hand out and an initial password.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let body: CreateUser = call.body()?;
    let tenant = acting_tenant(caller, "user", body.tenant_id)?;
    let (new, password) = body.parse(tenant, caller.user_id)?;
    let roles: BTreeSet<Uuid> = new.role_ids.iter().copied().collect();
    let db = db()?;
    let (profile, identity) = db.transaction(|tx| {
        if let Some(t) = tenant {
            let t = repo::org::lock_tenant(tx, t)?
                .ok_or_else(|| Error::Invalid("tenant_id names no tenant".into()))?;
            if t.max_users
                .is_some_and(|max| t.user_count >= i64::from(max))
            {
                return Err(Error::Conflict(format!(
                    "tenant user limit {} reached",
                    t.max_users.unwrap_or(0)
                )));
            }
        }
        check_department(tx, tenant, new.department_id)?;
        check_roles(tx, caller, tenant, &roles)?;
        repo::users::insert(tx, &new)?
            .ok_or_else(|| Error::Conflict("email is already registered".into()))?;
        let identity = repo::snapshot::emit(tx, new.id, &USER_CREATED)?;
        let p = repo::users::find(tx, new.id)?.ok_or(Error::NotFound("user"))?;
        repo::audit::record(
            tx,
            &audit(call, "user.create", "user", p.id, p.tenant_id).after(&p),
        )?;
        Ok((p, identity))
    })?;
    publish_after_commit(call, &db);
    drop(db);
    // The profile is committed; the password lives in `auth`. If this step
    // fails, the administrator sets it with PUT /users/:id/password.
    if let Err(e) = set_credentials(
        call,
        profile.id,
        &profile.email,
        &password,
        Some((&identity, profile.version)),
    ) {
        if matches!(e, Error::Conflict(_)) {
            // `auth` holds the email for another account (one still being
            // registered or deleted): undo the profile rather than leave one
            // nobody can sign in to.
            let db = super::db()?;
            db.transaction(|tx| {
                repo::users::set_status(tx, profile.id, "deleted")?;
                repo::snapshot::emit(tx, profile.id, &USER_DELETED)?;
                repo::audit::record(
                    tx,
                    &audit(
                        call,
                        "user.create_undone",
                        "user",
                        profile.id,
                        profile.tenant_id,
                    ),
                )?;
                Ok::<_, Error>(())
            })?;
            publish_after_commit(call, &db);
        }
        return Err(e);
    }
    Ok(platform::http::json(201, &view(caller, &profile)))
}

/// `PATCH /users/:id`: display name, phone, metadata, department.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "user")?;
    let change = call.body::<ProfilePatch>()?.parse(false)?;
    let db = db()?;
    let profile = db.transaction(|tx| {
        let before = visible(tx, caller, id, true)?;
        if id == caller.user_id && change.department_id.is_some() {
            return Err(Error::Forbidden(
                "you cannot move yourself to another department".into(),
            ));
        }
        if id != caller.user_id {
            outranks(tx, caller, id)?;
        }
        if let Some(d) = change.department_id {
            check_department(tx, before.tenant_id, d)?;
        }
        repo::users::update(tx, id, &change)?;
        repo::snapshot::emit(tx, id, &USER_UPDATED)?;
        let after = repo::users::find(tx, id)?.ok_or(Error::NotFound("user"))?;
        repo::audit::record(
            tx,
            &audit(call, "user.update", "user", id, after.tenant_id)
                .before(&before)
                .after(&after),
        )?;
        Ok::<_, Error>(after)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(200, &view(caller, &profile)))
}

/// `DELETE /users/:id`: marks the user deleted (their email can register
/// again); `auth` drops their credentials and sessions on `user.deleted`.
pub fn delete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "user")?;
    if id == caller.user_id {
        return Err(Error::Conflict("you cannot delete yourself".into()));
    }
    let db = db()?;
    db.transaction(|tx| {
        let before = visible(tx, caller, id, true)?;
        outranks(tx, caller, id)?;
        repo::users::set_status(tx, id, "deleted")?;
        repo::snapshot::emit(tx, id, &USER_DELETED)?;
        repo::audit::record(
            tx,
            &audit(call, "user.delete", "user", id, before.tenant_id).before(&before),
        )?;
        Ok::<_, Error>(())
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}

/// `POST /users/:id/lock`: a locked user cannot log in, and their sessions
/// end (`auth` revokes them on `user.locked`).
pub fn lock(call: &Call) -> Result<Response> {
    set_locked(call, true)
}

/// `POST /users/:id/unlock`.
pub fn unlock(call: &Call) -> Result<Response> {
    set_locked(call, false)
}

fn set_locked(call: &Call, locked: bool) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "user")?;
    if id == caller.user_id {
        return Err(Error::Conflict("you cannot lock or unlock yourself".into()));
    }
    let db = db()?;
    let profile = db.transaction(|tx| {
        let before = visible(tx, caller, id, true)?;
        outranks(tx, caller, id)?;
        let status = if locked { "locked" } else { "active" };
        if before.status != status {
            repo::users::set_status(tx, id, status)?;
            repo::snapshot::emit(tx, id, if locked { &USER_LOCKED } else { &USER_UPDATED })?;
            let action = if locked { "user.lock" } else { "user.unlock" };
            repo::audit::record(tx, &audit(call, action, "user", id, before.tenant_id))?;
        }
        repo::users::find(tx, id)?.ok_or(Error::NotFound("user"))
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(200, &view(caller, &profile)))
}

/// `PUT /users/:id/roles`: replaces the roles a user holds. The caller must
/// be able to grant every role added and every role removed.
pub fn set_roles(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "user")?;
    let body: RoleAssignment = call.body()?;
    if body.role_ids.len() > 20 {
        return Err(Error::Invalid("role_ids must have at most 20 roles".into()));
    }
    if id == caller.user_id {
        return Err(Error::Forbidden("you cannot change your own roles".into()));
    }
    let wanted: BTreeSet<Uuid> = body.role_ids.into_iter().collect();
    let db = db()?;
    let profile = db.transaction(|tx| {
        let before = visible(tx, caller, id, true)?;
        outranks(tx, caller, id)?;
        let held: BTreeSet<Uuid> = before.roles.iter().map(|r| r.id).collect();
        let changed: BTreeSet<Uuid> = held.symmetric_difference(&wanted).copied().collect();
        if changed.is_empty() {
            return Ok(before);
        }
        check_roles(tx, caller, before.tenant_id, &changed)?;
        let wanted: Vec<Uuid> = wanted.iter().copied().collect();
        repo::users::set_roles(tx, id, &wanted)?;
        repo::snapshot::emit(tx, id, &USER_ROLES_CHANGED)?;
        let after = repo::users::find(tx, id)?.ok_or(Error::NotFound("user"))?;
        repo::audit::record(
            tx,
            &audit(call, "user.roles", "user", id, after.tenant_id)
                .before(&before.roles)
                .after(&after.roles),
        )?;
        Ok::<_, Error>(after)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(200, &view(caller, &profile)))
}

/// `PUT /users/:id/password`: an administrator sets a user's password.
pub fn set_password(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "user")?;
    let body: PasswordSet = call.body()?;
    check_password(&body.password)?;
    if id == caller.user_id {
        return Err(Error::Conflict(
            "change your own password with POST /api/v1/auth/password".into(),
        ));
    }
    let db = db()?;
    let p = visible(&db, caller, id, false)?;
    outranks(&db, caller, id)?;
    drop(db);
    set_credentials(call, id, &p.email, &body.password, None)?;
    repo::audit::record(
        &super::db()?,
        &audit(call, "user.password", "user", id, p.tenant_id),
    )?;
    Ok(platform::http::no_content())
}
