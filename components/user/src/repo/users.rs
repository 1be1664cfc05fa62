//! Users: profiles, role assignments, status.

use crate::domain::profile::{NewUser, Profile, ProfileChange, RoleRef, UserFilter};
use crate::error::Error;
use access::RowFilter;
use platform::db::{col, opt_uuid, strings, timestamp, uuid_array, uuids, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to users: a user owns their own row.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "u.tenant_id",
    department: Some("u.department_id"),
    owner: Some("u.id"),
};

const COLUMNS: &str = "u.id, u.email, u.display_name, u.phone, u.tenant_id, u.department_id, u.status, \
     u.metadata, u.version, u.created_at, u.updated_at, \
     coalesce((SELECT array_agg(r.id::text ORDER BY r.code) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}'), \
     coalesce((SELECT array_agg(r.code ORDER BY r.code) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}'), \
     u.locale";

fn profile(row: &[DbValue]) -> Result<Profile, DbError> {
    let ids = uuids(row, 11, "roles.id")?;
    let codes = strings(row, 12, "roles.code")?;
    Ok(Profile {
        id: col(row, 0, "users.id")?,
        email: col(row, 1, "users.email")?,
        display_name: col(row, 2, "users.display_name")?,
        phone: col(row, 3, "users.phone")?,
        tenant_id: col(row, 4, "users.tenant_id")?,
        department_id: col(row, 5, "users.department_id")?,
        status: col(row, 6, "users.status")?,
        metadata: col(row, 7, "users.metadata")?,
        version: col(row, 8, "users.version")?,
        created_at: timestamp(row, 9, "users.created_at")?,
        updated_at: timestamp(row, 10, "users.updated_at")?,
        locale: col(row, 13, "users.locale")?,
        roles: ids
            .into_iter()
            .zip(codes)
            .map(|(id, code)| RoleRef { id, code })
            .collect(),
    })
}

/// A profile by id (deleted users are not found).
pub fn find(db: &Db, id: Uuid) -> Result<Option<Profile>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM users u WHERE u.id = $1 AND u.status <> 'deleted'"),
        &[P::Uuid(id.to_string())],
        profile,
    )
}

/// A profile by id, locked for update (deleted users are not found).
pub fn lock(db: &Db, id: Uuid) -> Result<Option<Profile>, DbError> {
    db.one(
        &format!(
            "SELECT {COLUMNS} FROM users u WHERE u.id = $1 AND u.status <> 'deleted' FOR UPDATE OF u"
        ),
        &[P::Uuid(id.to_string())],
        profile,
    )
}

/// A page of users in the caller's scope, with the total.
pub fn list(
    db: &Db,
    scope: &RowFilter,
    f: &UserFilter,
    searchable: &[&str],
    sort: &str,
    page: Page,
) -> Result<(Vec<Profile>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    match &f.status {
        Some(s) => w.eq("u.status", P::Str(s.clone())),
        None => w.and("u.status <> 'deleted'"),
    }
    if let Some(q) = &f.q {
        if searchable.is_empty() {
            w.and("false");
        } else {
            w.search(searchable, q);
        }
    }
    if let Some(t) = f.tenant_id {
        w.eq("u.tenant_id", P::Uuid(t.to_string()));
    }
    if let Some(d) = f.department_id {
        w.eq("u.department_id", P::Uuid(d.to_string()));
    }
    if let Some(role) = &f.role {
        let p = w.bind(P::Str(role.clone()));
        w.and(format!(
            "EXISTS (SELECT 1 FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id AND r.code = {p})"
        ));
    }
    let order = match sort {
        "email" => "lower(u.email), u.id",
        "-email" => "lower(u.email) DESC, u.id",
        "display_name" => "lower(u.display_name), u.id",
        "created_at" => "u.created_at, u.id",
        _ => "u.created_at DESC, u.id",
    };
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM users u"),
        "users u",
        w,
        order,
        page,
        profile,
    )
}

/// Inserts a user with their roles and a default quota. `Ok(None)` when the
/// email is taken by another (not deleted) user.
pub fn insert(db: &Db, u: &NewUser) -> Result<Option<Uuid>, DbError> {
    let rows = db.query(
        "INSERT INTO users (id, email, display_name, phone, tenant_id, department_id, created_by, locale) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING id",
        &[
            P::Uuid(u.id.to_string()),
            P::Str(u.email.as_str().into()),
            P::Str(u.display_name.as_str().into()),
            u.phone
                .as_ref()
                .map_or(P::DbNull, |p| P::Str(p.as_str().into())),
            opt_uuid(u.tenant_id),
            opt_uuid(u.department_id),
            opt_uuid(u.created_by),
            P::Str(u.locale.as_str().into()),
        ],
    )?;
    if rows.rows.is_empty() {
        return Ok(None);
    }
    set_roles(db, u.id, &u.role_ids)?;
    super::quotas::ensure(db, u.id)?;
    Ok(Some(u.id))
}

/// The id of the (not deleted) user with an email.
pub fn id_by_email(db: &Db, email: &str) -> Result<Option<Uuid>, DbError> {
    let rows = db.query(
        "SELECT id FROM users WHERE lower(email) = lower($1) AND status <> 'deleted'",
        &[P::Str(email.into())],
    )?;
    rows.rows.first().map(|r| col(r, 0, "users.id")).transpose()
}

/// The profile a registration that failed half-way left behind for this
/// email: self-registered, tenantless, holding only the `user` role. An
/// administrator's user is never handed to whoever registers its email.
pub fn unfinished_registration(db: &Db, email: &str) -> Result<Option<Uuid>, DbError> {
    let rows = db.query(
        "SELECT u.id FROM users u WHERE lower(u.email) = lower($1) AND u.status = 'active' \
           AND u.tenant_id IS NULL AND u.created_by IS NULL \
           AND NOT EXISTS (SELECT 1 FROM user_roles ur WHERE ur.user_id = u.id AND ur.role_id <> $2)",
        &[P::Str(email.into()), P::Uuid(crate::domain::profile::USER_ROLE.to_string())],
    )?;
    rows.rows.first().map(|r| col(r, 0, "users.id")).transpose()
}

/// Applies a profile change (the caller emits the event, which bumps the version).
pub fn update(db: &Db, id: Uuid, c: &ProfileChange) -> Result<(), Error> {
    let metadata = match &c.metadata {
        Some(m) => spin_sdk::pg4::jsonb(m).map_err(|e| Error::Invalid(e.to_string()))?,
        None => P::DbNull,
    };
    db.execute(
        "UPDATE users SET display_name = coalesce($2, display_name), metadata = coalesce($3, metadata), \
           phone = CASE WHEN $4 THEN $5 ELSE phone END, \
           department_id = CASE WHEN $6 THEN $7::uuid ELSE department_id END, \
           locale = coalesce($8, locale), \
           updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            c.display_name.as_ref().map_or(P::DbNull, |n| P::Str(n.as_str().into())),
            metadata,
            P::Boolean(c.phone.is_some()),
            c.phone.clone().flatten().map_or(P::DbNull, |p| P::Str(p.as_str().into())),
            P::Boolean(c.department_id.is_some()),
            opt_uuid(c.department_id.flatten()),
            c.locale.as_ref().map_or(P::DbNull, |l| P::Str(l.as_str().into())),
        ],
    )?;
    if let Some(d) = c.department_id {
        db.execute(
            "UPDATE quotas SET department_id = $2 WHERE user_id = $1",
            &[P::Uuid(id.to_string()), opt_uuid(d)],
        )?;
    }
    Ok(())
}

/// A user's stored effective access.
pub fn access_of(db: &Db, id: Uuid) -> Result<access::Access, DbError> {
    let rows = db.query(
        "SELECT access FROM users WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    match rows.rows.first() {
        Some(r) => {
            let v: serde_json::Value = col(r, 0, "users.access")?;
            serde_json::from_value(v).map_err(|e| platform::db::decode_error("users.access", e))
        }
        None => Ok(access::Access::default()),
    }
}

/// Whether a user holds a role.
pub fn holds(db: &Db, user: Uuid, role: Uuid) -> Result<bool, DbError> {
    let rows = db.query(
        "SELECT 1 FROM user_roles WHERE user_id = $1 AND role_id = $2",
        &[P::Uuid(user.to_string()), P::Uuid(role.to_string())],
    )?;
    Ok(!rows.rows.is_empty())
}

/// Replaces the roles a user holds.
pub fn set_roles(db: &Db, id: Uuid, roles: &[Uuid]) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM user_roles WHERE user_id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    db.execute(
        "INSERT INTO user_roles (user_id, role_id) SELECT $1, r FROM unnest($2::text[]::uuid[]) r ON CONFLICT DO NOTHING",
        &[P::Uuid(id.to_string()), uuid_array(roles)],
    )?;
    Ok(())
}

/// Sets a user's status (`active`, `locked`, `deleted`).
pub fn set_status(db: &Db, id: Uuid, status: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET status = $2, updated_at = now() AT TIME ZONE 'UTC', \
           deleted_at = CASE WHEN $2 = 'deleted' THEN now() AT TIME ZONE 'UTC' ELSE NULL END \
         WHERE id = $1",
        &[P::Uuid(id.to_string()), P::Str(status.into())],
    )?;
    Ok(())
}

/// Ids of (not deleted) users of a tenant.
pub fn ids_in_tenant(db: &Db, tenant: Uuid) -> Result<Vec<Uuid>, DbError> {
    let rows = db.query(
        "SELECT id FROM users WHERE tenant_id = $1 AND status <> 'deleted' ORDER BY id",
        &[P::Uuid(tenant.to_string())],
    )?;
    rows.rows.iter().map(|r| col(r, 0, "users.id")).collect()
}

/// Tenant, department and owner of a user, for visibility checks.
pub fn row_ref(p: &Profile) -> access::RowRef {
    access::RowRef {
        tenant: p.tenant_id,
        department: p.department_id,
        owner: Some(p.id),
    }
}

/// A page of stored identity snapshots ordered by id, for consumers resyncing.
pub fn identities(db: &Db, after: Uuid, limit: i64) -> Result<Vec<serde_json::Value>, DbError> {
    Ok(super::snapshot::stored_page(db, after, limit)?
        .into_iter()
        .map(|(identity, version)| {
            let mut v = serde_json::to_value(identity).expect("identity serializes");
            v["version"] = version.into();
            v
        })
        .collect())
}
