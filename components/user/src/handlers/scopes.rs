//! Data scopes and field permissions of roles. Changing either recomputes
//! the access of every holder of the role in the same transaction.

use super::roles::{readable, refresh_holders, rules_changeable};
use super::{audit, db, publish_after_commit, scope_grantable, uuid_query, Call};
use crate::domain::access::ScopeKind;
use crate::domain::role::{DataScopeInput, FieldPermissionInput};
use crate::error::{Error, Result};
use crate::repo;
use platform::db::{Db, DbError};
use spin_sdk::http::Response;
use uuid::Uuid;

/// `GET /data-scopes/types`: the scope kinds and what they mean.
pub fn types(_call: &Call) -> Result<Response> {
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": [
            {"scope": "all", "meaning": "every row; for members of a tenant, every row of their tenant"},
            {"scope": "tenant", "meaning": "every row of the caller's tenant"},
            {"scope": "department", "meaning": "rows of the caller's department"},
            {"scope": "department_tree", "meaning": "rows of the caller's department and the departments below it"},
            {"scope": "self", "meaning": "only the caller's own rows"},
            {"scope": "custom", "meaning": "rows of the listed departments"},
        ]}),
    ))
}

fn role_param(call: &Call) -> Result<Uuid> {
    uuid_query(call, "role_id")?.ok_or_else(|| Error::Invalid("role_id is required".into()))
}

/// A rule of a role the caller cannot see is "not found" as the rule itself.
fn not_found_as(e: Error, what: &'static str) -> Error {
    match e {
        Error::NotFound(_) => Error::NotFound(what),
        e => e,
    }
}

fn unique(e: DbError) -> Error {
    match e {
        DbError::Unique(_) => {
            Error::Conflict("the role has a rule for this resource already".into())
        }
        e => e.into(),
    }
}

/// `GET /data-scopes?role_id=`.
pub fn list_scopes(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = db()?;
    let role = readable(&db, caller, role_param(call)?)?;
    let items = repo::roles::data_scopes(&db, &[role.id])?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}

/// `GET /data-scopes/:id`.
pub fn get_scope(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = db()?;
    let s = repo::roles::find_data_scope(&db, call.id("id", "data scope")?)?
        .ok_or(Error::NotFound("data scope"))?;
    readable(&db, caller, s.role_id).map_err(|_| Error::NotFound("data scope"))?;
    Ok(platform::http::json(200, &s))
}

fn check_departments(db: &Db, tenant: Option<Uuid>, ids: &[Uuid]) -> Result<()> {
    for d in ids {
        match repo::org::find_department(db, *d)? {
            Some((dep, _)) if tenant.is_none() || dep.tenant_id == tenant => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "department {d} is not one of the role's tenant"
                )))
            }
        }
    }
    Ok(())
}

/// `POST /data-scopes`: creates a data scope.
pub fn create_scope(call: &Call) -> Result<Response> {
    put_scope(call, false)
}

/// `PUT /data-scopes/:id`: replaces a data scope.
pub fn replace_scope(call: &Call) -> Result<Response> {
    put_scope(call, true)
}

fn put_scope(call: &Call, replace: bool) -> Result<Response> {
    let caller = call.caller()?;
    let input: DataScopeInput = call.body()?;
    let kind = input.parse()?;
    let existing = if replace {
        Some(call.id("id", "data scope")?)
    } else {
        None
    };
    let db = db()?;
    let scope = db.transaction(|tx| {
        let (role_id, before) = match existing {
            Some(id) => {
                let s =
                    repo::roles::find_data_scope(tx, id)?.ok_or(Error::NotFound("data scope"))?;
                if input.role_id.is_some_and(|r| r != s.role_id) {
                    return Err(Error::Invalid(
                        "a data scope cannot move to another role".into(),
                    ));
                }
                (s.role_id, Some(s))
            }
            None => (
                input
                    .role_id
                    .ok_or_else(|| Error::Invalid("role_id is required".into()))?,
                None,
            ),
        };
        let role = rules_changeable(tx, caller, role_id).map_err(|e| {
            if existing.is_some() {
                not_found_as(e, "data scope")
            } else {
                e
            }
        })?;
        if !scope_grantable(caller, &input.resource, kind) {
            return Err(Error::Forbidden(format!(
                "scope {} on {} is wider than yours",
                input.scope, input.resource
            )));
        }
        if kind == ScopeKind::Custom {
            check_departments(tx, role.tenant_id, &input.department_ids)?;
        }
        let id = repo::roles::upsert_data_scope(
            tx,
            existing,
            role_id,
            &input.resource,
            kind,
            &input.department_ids,
        )
        .map_err(unique)?;
        refresh_holders(tx, role_id)?;
        let after = repo::roles::find_data_scope(tx, id)?.ok_or(Error::NotFound("data scope"))?;
        let mut entry = audit(
            call,
            if replace {
                "data_scope.update"
            } else {
                "data_scope.create"
            },
            "data_scope",
            id,
            role.tenant_id,
        )
        .after(&after);
        if let Some(b) = &before {
            entry = entry.before(b);
        }
        repo::audit::record(tx, &entry)?;
        Ok::<_, Error>(after)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(
        if replace { 200 } else { 201 },
        &scope,
    ))
}

/// `DELETE /data-scopes/:id`.
pub fn delete_scope(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "data scope")?;
    let db = db()?;
    db.transaction(|tx| {
        let s = repo::roles::find_data_scope(tx, id)?.ok_or(Error::NotFound("data scope"))?;
        let role =
            rules_changeable(tx, caller, s.role_id).map_err(|e| not_found_as(e, "data scope"))?;
        repo::roles::delete_data_scope(tx, id)?;
        refresh_holders(tx, s.role_id)?;
        repo::audit::record(
            tx,
            &audit(call, "data_scope.delete", "data_scope", id, role.tenant_id).before(&s),
        )?;
        Ok::<_, Error>(())
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}

/// `GET /field-permissions?role_id=`.
pub fn list_fields(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = db()?;
    let role = readable(&db, caller, role_param(call)?)?;
    let items = repo::roles::field_permissions(&db, &[role.id])?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}

/// `GET /field-permissions/:id`.
pub fn get_fields(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = db()?;
    let f = repo::roles::find_field_permission(&db, call.id("id", "field permission")?)?
        .ok_or(Error::NotFound("field permission"))?;
    readable(&db, caller, f.role_id).map_err(|_| Error::NotFound("field permission"))?;
    Ok(platform::http::json(200, &f))
}

/// `POST /field-permissions`: creates a field permission.
pub fn create_fields(call: &Call) -> Result<Response> {
    put_fields(call, false)
}

/// `PUT /field-permissions/:id`: replaces a field permission.
pub fn replace_fields(call: &Call) -> Result<Response> {
    put_fields(call, true)
}

fn put_fields(call: &Call, replace: bool) -> Result<Response> {
    let caller = call.caller()?;
    let input: FieldPermissionInput = call.body()?;
    input.parse()?;
    let existing = if replace {
        Some(call.id("id", "field permission")?)
    } else {
        None
    };
    let db = db()?;
    let fields = db.transaction(|tx| {
        let (role_id, before) = match existing {
            Some(id) => {
                let f = repo::roles::find_field_permission(tx, id)?
                    .ok_or(Error::NotFound("field permission"))?;
                if input.role_id.is_some_and(|r| r != f.role_id) {
                    return Err(Error::Invalid(
                        "a field permission cannot move to another role".into(),
                    ));
                }
                (f.role_id, Some(f))
            }
            None => (
                input
                    .role_id
                    .ok_or_else(|| Error::Invalid("role_id is required".into()))?,
                None,
            ),
        };
        let role = rules_changeable(tx, caller, role_id).map_err(|e| {
            if existing.is_some() {
                not_found_as(e, "field permission")
            } else {
                e
            }
        })?;
        let id = repo::roles::upsert_field_permission(
            tx,
            existing,
            role_id,
            &input.resource,
            &input.hidden,
            &input.masked,
        )
        .map_err(unique)?;
        refresh_holders(tx, role_id)?;
        let after = repo::roles::find_field_permission(tx, id)?
            .ok_or(Error::NotFound("field permission"))?;
        let mut entry = audit(
            call,
            if replace {
                "field_permission.update"
            } else {
                "field_permission.create"
            },
            "field_permission",
            id,
            role.tenant_id,
        )
        .after(&after);
        if let Some(b) = &before {
            entry = entry.before(b);
        }
        repo::audit::record(tx, &entry)?;
        Ok::<_, Error>(after)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(
        if replace { 200 } else { 201 },
        &fields,
    ))
}

/// `DELETE /field-permissions/:id`.
pub fn delete_fields(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "field permission")?;
    let db = db()?;
    db.transaction(|tx| {
        let f = repo::roles::find_field_permission(tx, id)?
            .ok_or(Error::NotFound("field permission"))?;
        let role = rules_changeable(tx, caller, f.role_id)
            .map_err(|e| not_found_as(e, "field permission"))?;
        repo::roles::delete_field_permission(tx, id)?;
        refresh_holders(tx, f.role_id)?;
        repo::audit::record(
            tx,
            &audit(
                call,
                "field_permission.delete",
                "field_permission",
                id,
                role.tenant_id,
            )
            .before(&f),
        )?;
        Ok::<_, Error>(())
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}
