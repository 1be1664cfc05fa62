//! Roles, the permission catalogue, data scopes and field permissions.

use crate::domain::access::ScopeKind;
use crate::domain::role::{DataScope, FieldPermission, NewRole, Permission, Role};
use platform::db::{col, opt_uuid, strings, timestamp, uuid_array, uuids, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use std::collections::BTreeSet;
use uuid::Uuid;

const COLUMNS: &str = "r.id, r.tenant_id, r.code, r.name, r.description, r.is_system, r.version, \
     r.created_at, r.updated_at, \
     coalesce((SELECT array_agg(permission ORDER BY permission) FROM role_permissions WHERE role_id = r.id), '{}')";

fn role(r: &[DbValue]) -> Result<Role, DbError> {
    Ok(Role {
        id: col(r, 0, "roles.id")?,
        tenant_id: col(r, 1, "roles.tenant_id")?,
        code: col(r, 2, "roles.code")?,
        name: col(r, 3, "roles.name")?,
        description: col(r, 4, "roles.description")?,
        is_system: col(r, 5, "roles.is_system")?,
        version: col(r, 6, "roles.version")?,
        created_at: timestamp(r, 7, "roles.created_at")?,
        updated_at: timestamp(r, 8, "roles.updated_at")?,
        permissions: strings(r, 9, "role_permissions.permission")?,
    })
}

/// A role by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Role>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM roles r WHERE r.id = $1"),
        &[P::Uuid(id.to_string())],
        role,
    )
}

/// Locks roles against changes of their grants until the transaction ends
/// (assignments take this shared lock; changes of grants the exclusive one).
pub fn lock_shared(db: &Db, ids: &[Uuid]) -> Result<(), DbError> {
    db.query(
        "SELECT 1 FROM roles WHERE id = ANY($1::text[]::uuid[]) ORDER BY id FOR SHARE",
        &[uuid_array(ids)],
    )?;
    Ok(())
}

/// Locks one role for a change of its grants or its deletion.
pub fn lock(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.query(
        "SELECT 1 FROM roles WHERE id = $1 FOR UPDATE",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// Roles by ids (those that exist).
pub fn find_many(db: &Db, ids: &[Uuid]) -> Result<Vec<Role>, DbError> {
    db.all(
        &format!("SELECT {COLUMNS} FROM roles r WHERE r.id = ANY($1::text[]::uuid[])"),
        &[uuid_array(ids)],
        role,
    )
}

/// Roles visible in a tenant (system roles and the tenant's own), or every
/// role (`tenant` = `Err(())`: platform staff), filtered and paged.
pub fn list(
    db: &Db,
    tenant: Result<Option<Uuid>, ()>,
    q: Option<&str>,
    page: Page,
) -> Result<(Vec<Role>, i64), DbError> {
    let mut w = Where::new();
    if let Ok(t) = tenant {
        match t {
            Some(t) => {
                let p = w.bind(P::Uuid(t.to_string()));
                w.and(format!("(r.tenant_id IS NULL OR r.tenant_id = {p})"));
            }
            None => w.and("r.tenant_id IS NULL"),
        }
    }
    if let Some(q) = q {
        w.search(&["r.code", "r.name"], q);
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM roles r"),
        "roles r",
        w,
        "r.tenant_id NULLS FIRST, r.code",
        page,
        role,
    )
}

/// Inserts a role with its permissions; a taken code is [`DbError::Unique`].
pub fn insert(db: &Db, tenant: Option<Uuid>, r: &NewRole) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    db.execute(
        "INSERT INTO roles (id, tenant_id, code, name, description) VALUES ($1, $2, $3, $4, $5)",
        &[
            P::Uuid(id.to_string()),
            opt_uuid(tenant),
            P::Str(r.code.as_str().into()),
            P::Str(r.name.as_str().into()),
            P::Str(r.description.clone()),
        ],
    )?;
    set_permissions(db, id, &r.permissions)?;
    Ok(id)
}

/// Renames or re-describes a role.
pub fn update(
    db: &Db,
    id: Uuid,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE roles SET name = coalesce($2, name), description = coalesce($3, description), \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            name.map_or(P::DbNull, |n| P::Str(n.into())),
            description.map_or(P::DbNull, |d| P::Str(d.into())),
        ],
    )?;
    Ok(())
}

/// Replaces a role's permissions.
pub fn set_permissions(db: &Db, id: Uuid, perms: &BTreeSet<String>) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM role_permissions WHERE role_id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    db.execute(
        "INSERT INTO role_permissions (role_id, permission) SELECT $1, p FROM unnest($2::text[]) p",
        &[
            P::Uuid(id.to_string()),
            P::ArrayStr(perms.iter().cloned().map(Some).collect()),
        ],
    )?;
    db.execute(
        "UPDATE roles SET version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// How many users hold a role.
pub fn holder_count(db: &Db, id: Uuid) -> Result<i64, DbError> {
    let rows = db.query(
        "SELECT count(*) FROM user_roles ur JOIN users u ON u.id = ur.user_id WHERE ur.role_id = $1 AND u.status <> 'deleted'",
        &[P::Uuid(id.to_string())],
    )?;
    col(&rows.rows[0], 0, "count")
}

/// Deletes a role (its scopes and field rules go with it); assignments of
/// deleted users are removed first.
pub fn delete(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM user_roles WHERE role_id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    db.execute(
        "DELETE FROM roles WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

fn permission(r: &[DbValue]) -> Result<Permission, DbError> {
    Ok(Permission {
        code: col(r, 0, "permissions.code")?,
        resource: col(r, 1, "permissions.resource")?,
        action: col(r, 2, "permissions.action")?,
        description: col(r, 3, "permissions.description")?,
        is_system: col(r, 4, "permissions.is_system")?,
    })
}

/// The catalogue, optionally for one resource.
pub fn permissions(
    db: &Db,
    resource: Option<&str>,
    page: Page,
) -> Result<(Vec<Permission>, i64), DbError> {
    let mut w = Where::new();
    if let Some(r) = resource {
        w.eq("resource", P::Str(r.into()));
    }
    paged(
        db,
        "SELECT code, resource, action, description, is_system FROM permissions",
        "permissions",
        w,
        "code",
        page,
        permission,
    )
}

/// One catalogue entry.
pub fn find_permission(db: &Db, code: &str) -> Result<Option<Permission>, DbError> {
    db.one(
        "SELECT code, resource, action, description, is_system FROM permissions WHERE code = $1",
        &[P::Str(code.into())],
        permission,
    )
}

/// Adds a custom permission; a taken code is [`DbError::Unique`].
pub fn insert_permission(
    db: &Db,
    code: &str,
    resource: &str,
    action: &str,
    description: &str,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO permissions (code, resource, action, description) VALUES ($1, $2, $3, $4)",
        &[
            P::Str(code.into()),
            P::Str(resource.into()),
            P::Str(action.into()),
            P::Str(description.into()),
        ],
    )?;
    Ok(())
}

/// Roles that grant a permission code exactly.
pub fn roles_granting(db: &Db, code: &str) -> Result<i64, DbError> {
    let rows = db.query(
        "SELECT count(*) FROM role_permissions WHERE permission = $1",
        &[P::Str(code.into())],
    )?;
    col(&rows.rows[0], 0, "count")
}

/// Removes a custom permission.
pub fn delete_permission(db: &Db, code: &str) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM permissions WHERE code = $1 AND NOT is_system",
        &[P::Str(code.into())],
    )?;
    Ok(())
}

fn data_scope(r: &[DbValue]) -> Result<DataScope, DbError> {
    Ok(DataScope {
        id: col(r, 0, "data_scopes.id")?,
        role_id: col(r, 1, "data_scopes.role_id")?,
        resource: col(r, 2, "data_scopes.resource")?,
        scope: col(r, 3, "data_scopes.scope")?,
        department_ids: uuids(r, 4, "data_scopes.department_ids")?,
        updated_at: timestamp(r, 5, "data_scopes.updated_at")?,
    })
}

const SCOPE_COLUMNS: &str = "id, role_id, resource, scope, department_ids::text[], updated_at";

/// Data scopes of the given roles.
pub fn data_scopes(db: &Db, roles: &[Uuid]) -> Result<Vec<DataScope>, DbError> {
    db.all(
        &format!("SELECT {SCOPE_COLUMNS} FROM data_scopes WHERE role_id = ANY($1::text[]::uuid[]) ORDER BY role_id, resource"),
        &[uuid_array(roles)],
        data_scope,
    )
}

/// One data scope.
pub fn find_data_scope(db: &Db, id: Uuid) -> Result<Option<DataScope>, DbError> {
    db.one(
        &format!("SELECT {SCOPE_COLUMNS} FROM data_scopes WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        data_scope,
    )
}

/// Inserts or replaces the scope of (role, resource); a second scope for the
/// same pair is [`DbError::Unique`] on insert.
pub fn upsert_data_scope(
    db: &Db,
    id: Option<Uuid>,
    role: Uuid,
    resource: &str,
    kind: ScopeKind,
    departments: &[Uuid],
) -> Result<Uuid, DbError> {
    match id {
        None => {
            let id = Uuid::new_v4();
            db.execute(
                "INSERT INTO data_scopes (id, role_id, resource, scope, department_ids) VALUES ($1, $2, $3, $4, $5::text[]::uuid[])",
                &[
                    P::Uuid(id.to_string()),
                    P::Uuid(role.to_string()),
                    P::Str(resource.into()),
                    P::Str(kind.as_str().into()),
                    uuid_array(departments),
                ],
            )?;
            Ok(id)
        }
        Some(id) => {
            db.execute(
                "UPDATE data_scopes SET resource = $2, scope = $3, department_ids = $4::text[]::uuid[], \
                   updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
                &[
                    P::Uuid(id.to_string()),
                    P::Str(resource.into()),
                    P::Str(kind.as_str().into()),
                    uuid_array(departments),
                ],
            )?;
            Ok(id)
        }
    }
}

/// Deletes a data scope.
pub fn delete_data_scope(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM data_scopes WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

fn field_permission(r: &[DbValue]) -> Result<FieldPermission, DbError> {
    Ok(FieldPermission {
        id: col(r, 0, "field_permissions.id")?,
        role_id: col(r, 1, "field_permissions.role_id")?,
        resource: col(r, 2, "field_permissions.resource")?,
        hidden: strings(r, 3, "field_permissions.hidden")?,
        masked: strings(r, 4, "field_permissions.masked")?,
        updated_at: timestamp(r, 5, "field_permissions.updated_at")?,
    })
}

const FIELD_COLUMNS: &str = "id, role_id, resource, hidden, masked, updated_at";

/// Field permissions of the given roles.
pub fn field_permissions(db: &Db, roles: &[Uuid]) -> Result<Vec<FieldPermission>, DbError> {
    db.all(
        &format!("SELECT {FIELD_COLUMNS} FROM field_permissions WHERE role_id = ANY($1::text[]::uuid[]) ORDER BY role_id, resource"),
        &[uuid_array(roles)],
        field_permission,
    )
}

/// One field permission.
pub fn find_field_permission(db: &Db, id: Uuid) -> Result<Option<FieldPermission>, DbError> {
    db.one(
        &format!("SELECT {FIELD_COLUMNS} FROM field_permissions WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        field_permission,
    )
}

/// Inserts or replaces a field permission.
pub fn upsert_field_permission(
    db: &Db,
    id: Option<Uuid>,
    role: Uuid,
    resource: &str,
    hidden: &[String],
    masked: &[String],
) -> Result<Uuid, DbError> {
    let arr = |v: &[String]| P::ArrayStr(v.iter().cloned().map(Some).collect());
    match id {
        None => {
            let id = Uuid::new_v4();
            db.execute(
                "INSERT INTO field_permissions (id, role_id, resource, hidden, masked) VALUES ($1, $2, $3, $4, $5)",
                &[P::Uuid(id.to_string()), P::Uuid(role.to_string()), P::Str(resource.into()), arr(hidden), arr(masked)],
            )?;
            Ok(id)
        }
        Some(id) => {
            db.execute(
                "UPDATE field_permissions SET resource = $2, hidden = $3, masked = $4, \
                   updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
                &[
                    P::Uuid(id.to_string()),
                    P::Str(resource.into()),
                    arr(hidden),
                    arr(masked),
                ],
            )?;
            Ok(id)
        }
    }
}

/// Deletes a field permission.
pub fn delete_field_permission(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM field_permissions WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}
