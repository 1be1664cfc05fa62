//! The identity snapshot of a user and the `user.*` events that carry it.
//! Every change that affects what another component knows of a user (profile,
//! status, roles, a role's permissions, scopes or field rules, departments,
//! the tenant's status) ends with [`emit`] in the same transaction: it
//! recomputes the user's effective access from their roles, stores it, bumps
//! the version once and writes the event to the outbox. So the version and
//! the event can never drift apart, and one function owns the rule.

use crate::domain::access::{compute, Org, RoleGrant, ScopeKind, ScopeRule};
use crate::domain::profile::Identity;
use access::FieldRule;
use platform::db::{col, strings, uuid_array, uuids, Db, DbError};
use platform::events::catalogue::{EventType, USER_CREATED};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What one role grants, for every role in `ids`.
fn grants(db: &Db, ids: &[Uuid]) -> Result<Vec<RoleGrant>, DbError> {
    let mut by_role: BTreeMap<Uuid, RoleGrant> =
        ids.iter().map(|i| (*i, RoleGrant::default())).collect();
    let param = [uuid_array(ids)];
    for r in &db
        .query(
            "SELECT role_id, permission FROM role_permissions WHERE role_id = ANY($1::text[]::uuid[])",
            &param,
        )?
        .rows
    {
        let id: Uuid = col(r, 0, "role_permissions.role_id")?;
        if let Some(g) = by_role.get_mut(&id) {
            g.permissions.push(col(r, 1, "role_permissions.permission")?);
        }
    }
    for r in &db
        .query(
            "SELECT role_id, resource, scope, department_ids::text[] FROM data_scopes WHERE role_id = ANY($1::text[]::uuid[])",
            &param,
        )?
        .rows
    {
        let id: Uuid = col(r, 0, "data_scopes.role_id")?;
        let kind: String = col(r, 2, "data_scopes.scope")?;
        let kind = ScopeKind::parse(&kind)
            .ok_or_else(|| platform::db::decode_error("data_scopes.scope", kind))?;
        if let Some(g) = by_role.get_mut(&id) {
            g.scopes.push(ScopeRule {
                resource: col(r, 1, "data_scopes.resource")?,
                kind,
                departments: uuids(r, 3, "data_scopes.department_ids")?,
            });
        }
    }
    for r in &db
        .query(
            "SELECT role_id, resource, hidden, masked FROM field_permissions WHERE role_id = ANY($1::text[]::uuid[])",
            &param,
        )?
        .rows
    {
        let id: Uuid = col(r, 0, "field_permissions.role_id")?;
        if let Some(g) = by_role.get_mut(&id) {
            g.fields.push((
                col(r, 1, "field_permissions.resource")?,
                FieldRule {
                    hidden: strings(r, 2, "field_permissions.hidden")?.into_iter().collect(),
                    masked: strings(r, 3, "field_permissions.masked")?.into_iter().collect(),
                },
            ));
        }
    }
    Ok(by_role.into_values().collect())
}

/// The department and its subtree.
fn org(db: &Db, department: Option<Uuid>) -> Result<Org, DbError> {
    let Some(d) = department else {
        return Ok(Org::default());
    };
    let rows = db.query(
        "SELECT sub.id FROM departments me JOIN departments sub ON sub.path LIKE me.path || '%' WHERE me.id = $1",
        &[P::Uuid(d.to_string())],
    )?;
    Ok(Org {
        department: Some(d),
        subtree: rows
            .rows
            .iter()
            .map(|r| col(r, 0, "departments.id"))
            .collect::<Result<_, _>>()?,
    })
}

/// Recomputes a user's identity from their roles and organisation.
fn compute_identity(db: &Db, id: Uuid) -> Result<Identity, DbError> {
    let rows = db.query(
        "SELECT u.email, u.display_name, u.tenant_id, u.department_id, u.status, coalesce(t.status = 'active', true), \
           coalesce((SELECT array_agg(r.id::text ORDER BY r.code) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}'), \
           coalesce((SELECT array_agg(r.code ORDER BY r.code) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}'), \
           u.locale \
         FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id WHERE u.id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    let r = rows
        .rows
        .first()
        .ok_or_else(|| DbError::Other(format!("user {id} vanished inside its transaction")))?;
    let department: Option<Uuid> = col(r, 3, "users.department_id")?;
    let status: String = col(r, 4, "users.status")?;
    let role_ids = uuids(r, 6, "roles.id")?;
    let access = if status == "deleted" {
        access::Access::default()
    } else {
        compute(&grants(db, &role_ids)?, &org(db, department)?)
    };
    Ok(Identity {
        id,
        email: col(r, 0, "users.email")?,
        display_name: col(r, 1, "users.display_name")?,
        tenant_id: col(r, 2, "users.tenant_id")?,
        department_id: department,
        status,
        tenant_active: col(r, 5, "tenant_active")?,
        roles: strings(r, 7, "roles.code")?,
        access,
        locale: col(r, 8, "users.locale")?,
    })
}

/// Recomputes and stores a user's snapshot, bumps the version (except for
/// `user.created`, whose version is 1) and writes `event` to the outbox.
/// Call inside the transaction of the change.
pub fn emit(db: &Db, id: Uuid, event: &EventType) -> Result<Identity, DbError> {
    // Lock the user first: two transactions computing one user's snapshot
    // must not publish the older computation under the newer version.
    db.query(
        "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
        &[P::Uuid(id.to_string())],
    )?;
    let identity = compute_identity(db, id)?;
    let access =
        spin_sdk::pg4::jsonb(&identity.access).map_err(|e| DbError::Other(e.to_string()))?;
    let rows = db.query(
        "UPDATE users SET access = $2, tenant_active = $3, version = version + $4, \
           updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1 RETURNING version",
        &[
            P::Uuid(id.to_string()),
            access,
            P::Boolean(identity.tenant_active),
            P::Int64(if event.name == USER_CREATED.name {
                0
            } else {
                1
            }),
        ],
    )?;
    let version: i64 = col(&rows.rows[0], 0, "users.version")?;
    let payload = serde_json::to_value(&identity).expect("identity serializes");
    platform::outbox::enqueue(db, event, &id.to_string(), version, &payload)?;
    Ok(identity)
}

/// [`emit`] for many users.
pub fn emit_all(db: &Db, ids: &[Uuid], event: &EventType) -> Result<usize, DbError> {
    for id in ids {
        emit(db, *id, event)?;
    }
    Ok(ids.len())
}

const STORED: &str = "SELECT u.id, u.email, u.display_name, u.tenant_id, u.department_id, u.status, u.tenant_active, \
       coalesce((SELECT array_agg(r.code ORDER BY r.code) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}'), \
       u.access, u.version, u.locale FROM users u";

fn stored_row(r: &[DbValue]) -> Result<(Identity, i64), DbError> {
    let access: serde_json::Value = col(r, 8, "users.access")?;
    Ok((
        Identity {
            id: col(r, 0, "users.id")?,
            email: col(r, 1, "users.email")?,
            display_name: col(r, 2, "users.display_name")?,
            tenant_id: col(r, 3, "users.tenant_id")?,
            department_id: col(r, 4, "users.department_id")?,
            status: col(r, 5, "users.status")?,
            tenant_active: col(r, 6, "users.tenant_active")?,
            roles: strings(r, 7, "roles.code")?,
            access: serde_json::from_value(access)
                .map_err(|e| platform::db::decode_error("users.access", e))?,
            locale: col(r, 10, "users.locale")?,
        },
        col(r, 9, "users.version")?,
    ))
}

/// The stored snapshot of a user and its version.
pub fn stored(db: &Db, id: Uuid) -> Result<Option<(Identity, i64)>, DbError> {
    db.one(
        &format!("{STORED} WHERE u.id = $1"),
        &[P::Uuid(id.to_string())],
        stored_row,
    )
}

/// A page of stored snapshots ordered by id.
pub fn stored_page(db: &Db, after: Uuid, limit: i64) -> Result<Vec<(Identity, i64)>, DbError> {
    db.all(
        &format!("{STORED} WHERE u.id > $1 ORDER BY u.id LIMIT $2"),
        &[P::Uuid(after.to_string()), P::Int64(limit)],
        stored_row,
    )
}

/// Users holding a role (not deleted).
pub fn holders_of_role(db: &Db, role: Uuid) -> Result<Vec<Uuid>, DbError> {
    let rows = db.query(
        "SELECT ur.user_id FROM user_roles ur JOIN users u ON u.id = ur.user_id \
         WHERE ur.role_id = $1 AND u.status <> 'deleted' ORDER BY ur.user_id",
        &[P::Uuid(role.to_string())],
    )?;
    rows.rows
        .iter()
        .map(|r| col(r, 0, "user_roles.user_id"))
        .collect()
}

/// Users of a tenant whose access depends on the department tree (they hold a
/// role with a department-based scope), whose snapshots a tree change affects.
pub fn department_scoped_users(db: &Db, tenant: Option<Uuid>) -> Result<Vec<Uuid>, DbError> {
    let rows = db.query(
        "SELECT DISTINCT u.id FROM users u JOIN user_roles ur ON ur.user_id = u.id \
           JOIN data_scopes ds ON ds.role_id = ur.role_id \
         WHERE u.tenant_id IS NOT DISTINCT FROM $1 AND u.status <> 'deleted' \
           AND ds.scope IN ('department', 'department_tree') ORDER BY u.id",
        &[platform::db::opt_uuid(tenant)],
    )?;
    rows.rows.iter().map(|r| col(r, 0, "users.id")).collect()
}
