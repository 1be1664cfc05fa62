//! Tenants, departments (a tree with materialized paths) and menus.

use crate::domain::org::{
    Department, DepartmentChange, Menu, NewDepartment, NewTenant, Tenant, TenantChange,
};
use platform::db::{col, datetime_param, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

const TENANT_COLUMNS: &str = "t.id, t.code, t.name, t.status, t.contact_email, t.max_users, t.max_devices, \
     t.expires_at, (SELECT count(*) FROM users u WHERE u.tenant_id = t.id AND u.status <> 'deleted'), \
     t.version, t.created_at, t.updated_at";

fn tenant(r: &[DbValue]) -> Result<Tenant, DbError> {
    Ok(Tenant {
        id: col(r, 0, "tenants.id")?,
        code: col(r, 1, "tenants.code")?,
        name: col(r, 2, "tenants.name")?,
        status: col(r, 3, "tenants.status")?,
        contact_email: col(r, 4, "tenants.contact_email")?,
        max_users: col(r, 5, "tenants.max_users")?,
        max_devices: col(r, 6, "tenants.max_devices")?,
        expires_at: opt_timestamp(r, 7, "tenants.expires_at")?,
        user_count: col(r, 8, "user_count")?,
        version: col(r, 9, "tenants.version")?,
        created_at: timestamp(r, 10, "tenants.created_at")?,
        updated_at: timestamp(r, 11, "tenants.updated_at")?,
    })
}

/// A tenant by id.
pub fn find_tenant(db: &Db, id: Uuid) -> Result<Option<Tenant>, DbError> {
    db.one(
        &format!("SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.id = $1"),
        &[P::Uuid(id.to_string())],
        tenant,
    )
}

/// A tenant by id, locked (user creation checks its limit under this lock).
pub fn lock_tenant(db: &Db, id: Uuid) -> Result<Option<Tenant>, DbError> {
    db.execute(
        "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE",
        &[P::Uuid(id.to_string())],
    )?;
    find_tenant(db, id)
}

/// Tenants, filtered and paged; `only` restricts to one (a tenant's member).
pub fn list_tenants(
    db: &Db,
    only: Option<Option<Uuid>>,
    q: Option<&str>,
    status: Option<&str>,
    page: Page,
) -> Result<(Vec<Tenant>, i64), DbError> {
    let mut w = Where::new();
    match only {
        Some(Some(t)) => w.eq("t.id", P::Uuid(t.to_string())),
        Some(None) => w.and("false"),
        None => {}
    }
    if let Some(q) = q {
        w.search(&["t.code", "t.name"], q);
    }
    if let Some(s) = status {
        w.eq("t.status", P::Str(s.into()));
    }
    paged(
        db,
        &format!("SELECT {TENANT_COLUMNS} FROM tenants t"),
        "tenants t",
        w,
        "t.created_at DESC, t.id",
        page,
        tenant,
    )
}

/// Inserts a tenant; a taken code is [`DbError::Unique`].
pub fn insert_tenant(db: &Db, t: &NewTenant) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    db.execute(
        "INSERT INTO tenants (id, code, name, contact_email, max_users, max_devices, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            P::Uuid(id.to_string()),
            P::Str(t.code.as_str().into()),
            P::Str(t.name.as_str().into()),
            t.contact_email
                .as_ref()
                .map_or(P::DbNull, |e| P::Str(e.as_str().into())),
            t.max_users.map_or(P::DbNull, P::Int32),
            t.max_devices.map_or(P::DbNull, P::Int32),
            t.expires_at.map_or(P::DbNull, datetime_param),
        ],
    )?;
    Ok(id)
}

/// Applies a tenant change.
pub fn update_tenant(db: &Db, id: Uuid, c: &TenantChange) -> Result<(), DbError> {
    db.execute(
        "UPDATE tenants SET name = coalesce($2, name), status = coalesce($3, status), \
           contact_email = CASE WHEN $4 THEN $5 ELSE contact_email END, \
           max_users = CASE WHEN $6 THEN $7::integer ELSE max_users END, \
           max_devices = CASE WHEN $8 THEN $9::integer ELSE max_devices END, \
           expires_at = CASE WHEN $10 THEN $11::timestamp ELSE expires_at END, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            c.name
                .as_ref()
                .map_or(P::DbNull, |n| P::Str(n.as_str().into())),
            c.status.map_or(P::DbNull, |s| P::Str(s.into())),
            P::Boolean(c.contact_email.is_some()),
            c.contact_email
                .clone()
                .flatten()
                .map_or(P::DbNull, |e| P::Str(e.as_str().into())),
            P::Boolean(c.max_users.is_some()),
            c.max_users.flatten().map_or(P::DbNull, P::Int32),
            P::Boolean(c.max_devices.is_some()),
            c.max_devices.flatten().map_or(P::DbNull, P::Int32),
            P::Boolean(c.expires_at.is_some()),
            c.expires_at.flatten().map_or(P::DbNull, datetime_param),
        ],
    )?;
    Ok(())
}

/// Suspends active tenants whose contract has ended; returns their ids.
pub fn suspend_expired(db: &Db) -> Result<Vec<Uuid>, DbError> {
    let rows = db.query(
        "UPDATE tenants SET status = 'suspended', version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE status = 'active' AND expires_at <= (now() AT TIME ZONE 'UTC') RETURNING id",
        &[],
    )?;
    rows.rows.iter().map(|r| col(r, 0, "tenants.id")).collect()
}

/// Users of a tenant, deleted ones included (they keep their tenant).
pub fn tenant_user_rows(db: &Db, id: Uuid) -> Result<i64, DbError> {
    let rows = db.query(
        "SELECT count(*) FROM users WHERE tenant_id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    col(&rows.rows[0], 0, "count")
}

/// Deletes a tenant that never had users; its roles and departments go with it.
pub fn delete_tenant(db: &Db, id: Uuid) -> Result<(), DbError> {
    let p = [P::Uuid(id.to_string())];
    db.execute("DELETE FROM roles WHERE tenant_id = $1", &p)?;
    db.execute(
        "UPDATE departments SET parent_id = NULL WHERE tenant_id = $1",
        &p,
    )?;
    db.execute("DELETE FROM departments WHERE tenant_id = $1", &p)?;
    db.execute("DELETE FROM tenants WHERE id = $1", &p)?;
    Ok(())
}

/// Serializes changes of one tenant's department tree (creations, moves,
/// deletions) until the transaction ends, so two moves cannot make a cycle.
pub fn lock_tree(db: &Db, tenant: Option<Uuid>) -> Result<(), DbError> {
    let key = tenant.map_or_else(
        || "departments:-".to_string(),
        |t| format!("departments:{t}"),
    );
    db.query(
        "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext($1))) l",
        &[P::Str(key)],
    )?;
    Ok(())
}

const DEPT_COLUMNS: &str =
    "id, tenant_id, parent_id, name, code, manager_id, sort, depth, version, created_at, updated_at, path";

fn department(r: &[DbValue]) -> Result<(Department, String), DbError> {
    Ok((
        Department {
            id: col(r, 0, "departments.id")?,
            tenant_id: col(r, 1, "departments.tenant_id")?,
            parent_id: col(r, 2, "departments.parent_id")?,
            name: col(r, 3, "departments.name")?,
            code: col(r, 4, "departments.code")?,
            manager_id: col(r, 5, "departments.manager_id")?,
            sort: col(r, 6, "departments.sort")?,
            depth: col(r, 7, "departments.depth")?,
            version: col(r, 8, "departments.version")?,
            created_at: timestamp(r, 9, "departments.created_at")?,
            updated_at: timestamp(r, 10, "departments.updated_at")?,
        },
        col(r, 11, "departments.path")?,
    ))
}

/// A department and its materialized path.
pub fn find_department(db: &Db, id: Uuid) -> Result<Option<(Department, String)>, DbError> {
    db.one(
        &format!("SELECT {DEPT_COLUMNS} FROM departments WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        department,
    )
}

/// Departments of a tenant, filtered; `under` limits to a subtree (path prefix).
pub fn list_departments(
    db: &Db,
    tenant: Result<Option<Uuid>, ()>,
    parent: Option<Option<Uuid>>,
    under: Option<&str>,
    q: Option<&str>,
    page: Page,
) -> Result<(Vec<Department>, i64), DbError> {
    let mut w = Where::new();
    if let Ok(t) = tenant {
        w.tenant_is("tenant_id", t);
    }
    match parent {
        Some(Some(p)) => w.eq("parent_id", P::Uuid(p.to_string())),
        Some(None) => w.and("parent_id IS NULL"),
        None => {}
    }
    if let Some(prefix) = under {
        let p = w.bind(P::Str(format!("{prefix}%")));
        w.and(format!("path LIKE {p}"));
    }
    if let Some(q) = q {
        w.search(&["name", "coalesce(code, '')"], q);
    }
    paged(
        db,
        &format!("SELECT {DEPT_COLUMNS} FROM departments"),
        "departments",
        w,
        "path",
        page,
        |r| department(r).map(|(d, _)| d),
    )
}

/// Inserts a department under `parent` (its path and depth); a sibling with
/// the same name is [`DbError::Unique`].
pub fn insert_department(
    db: &Db,
    tenant: Option<Uuid>,
    d: &NewDepartment,
    parent: Option<(&str, i32)>,
) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    let (path, depth) = match parent {
        Some((p, depth)) => (format!("{p}{id}/"), depth + 1),
        None => (format!("/{id}/"), 0),
    };
    db.execute(
        "INSERT INTO departments (id, tenant_id, parent_id, name, code, manager_id, sort, path, depth) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            P::Uuid(id.to_string()),
            opt_uuid(tenant),
            opt_uuid(d.parent_id),
            P::Str(d.name.as_str().into()),
            d.code.as_ref().map_or(P::DbNull, |c| P::Str(c.as_str().into())),
            opt_uuid(d.manager_id),
            P::Int32(d.sort),
            P::Str(path),
            P::Int32(depth),
        ],
    )?;
    Ok(id)
}

/// Applies a department change.
pub fn update_department(db: &Db, id: Uuid, c: &DepartmentChange) -> Result<(), DbError> {
    db.execute(
        "UPDATE departments SET name = coalesce($2, name), \
           code = CASE WHEN $3 THEN $4 ELSE code END, \
           manager_id = CASE WHEN $5 THEN $6::uuid ELSE manager_id END, \
           sort = coalesce($7, sort), version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            c.name.as_ref().map_or(P::DbNull, |n| P::Str(n.as_str().into())),
            P::Boolean(c.code.is_some()),
            c.code.clone().flatten().map_or(P::DbNull, |c| P::Str(c.as_str().into())),
            P::Boolean(c.manager_id.is_some()),
            opt_uuid(c.manager_id.flatten()),
            c.sort.map_or(P::DbNull, P::Int32),
        ],
    )?;
    Ok(())
}

/// The deepest depth in a subtree.
pub fn subtree_depth(db: &Db, path: &str) -> Result<i32, DbError> {
    let rows = db.query(
        "SELECT max(depth) FROM departments WHERE path LIKE $1 || '%'",
        &[P::Str(path.into())],
    )?;
    Ok(col::<Option<i32>>(&rows.rows[0], 0, "depth")?.unwrap_or(0))
}

/// Moves a subtree: the department gets a new parent, and every path below
/// it gets the new prefix, in one statement.
pub fn move_department(
    db: &Db,
    id: Uuid,
    old_path: &str,
    new_parent: Option<Uuid>,
    new_path: &str,
    depth_delta: i32,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE departments SET parent_id = $2, version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[P::Uuid(id.to_string()), opt_uuid(new_parent)],
    )?;
    db.execute(
        "UPDATE departments SET path = $2 || substr(path, length($1) + 1), depth = depth + $3 \
         WHERE path LIKE $1 || '%'",
        &[
            P::Str(old_path.into()),
            P::Str(new_path.into()),
            P::Int32(depth_delta),
        ],
    )?;
    Ok(())
}

/// Children and members of a department (a non-empty one cannot be deleted).
pub fn department_usage(db: &Db, id: Uuid) -> Result<(i64, i64), DbError> {
    let rows = db.query(
        "SELECT (SELECT count(*) FROM departments WHERE parent_id = $1), \
                (SELECT count(*) FROM users WHERE department_id = $1 AND status <> 'deleted')",
        &[P::Uuid(id.to_string())],
    )?;
    Ok((
        col(&rows.rows[0], 0, "children")?,
        col(&rows.rows[0], 1, "members")?,
    ))
}

/// Deletes an empty department (deleted users lose it too).
pub fn delete_department(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE users SET department_id = NULL WHERE department_id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    db.execute(
        "DELETE FROM departments WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

const MENU_COLUMNS: &str = "id, parent_id, code, name, path, icon, sort, permission, visible";

fn menu(r: &[DbValue]) -> Result<Menu, DbError> {
    Ok(Menu {
        id: col(r, 0, "menus.id")?,
        parent_id: col(r, 1, "menus.parent_id")?,
        code: col(r, 2, "menus.code")?,
        name: col(r, 3, "menus.name")?,
        path: col(r, 4, "menus.path")?,
        icon: col(r, 5, "menus.icon")?,
        sort: col(r, 6, "menus.sort")?,
        permission: col(r, 7, "menus.permission")?,
        visible: col(r, 8, "menus.visible")?,
        children: Vec::new(),
    })
}

/// Every menu entry.
pub fn menus(db: &Db) -> Result<Vec<Menu>, DbError> {
    db.all(
        &format!("SELECT {MENU_COLUMNS} FROM menus ORDER BY sort, code"),
        &[],
        menu,
    )
}

/// One menu entry.
pub fn find_menu(db: &Db, id: Uuid) -> Result<Option<Menu>, DbError> {
    db.one(
        &format!("SELECT {MENU_COLUMNS} FROM menus WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        menu,
    )
}

/// Inserts or replaces a menu entry; a taken code is [`DbError::Unique`].
pub fn upsert_menu(db: &Db, m: &Menu, insert: bool) -> Result<(), DbError> {
    let params = [
        P::Uuid(m.id.to_string()),
        opt_uuid(m.parent_id),
        P::Str(m.code.clone()),
        P::Str(m.name.clone()),
        P::Str(m.path.clone()),
        m.icon.clone().map_or(P::DbNull, P::Str),
        P::Int32(m.sort),
        m.permission.clone().map_or(P::DbNull, P::Str),
        P::Boolean(m.visible),
    ];
    let sql = if insert {
        "INSERT INTO menus (id, parent_id, code, name, path, icon, sort, permission, visible) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    } else {
        "UPDATE menus SET parent_id = $2, code = $3, name = $4, path = $5, icon = $6, sort = $7, \
           permission = $8, visible = $9, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1"
    };
    db.execute(sql, &params)?;
    Ok(())
}

/// Whether `ancestor` is `id` or above it in the menu tree.
pub fn menu_is_ancestor(db: &Db, ancestor: Uuid, id: Uuid) -> Result<bool, DbError> {
    let rows = db.query(
        "WITH RECURSIVE up(id, parent_id, n) AS (SELECT id, parent_id, 0 FROM menus WHERE id = $2 \
           UNION ALL SELECT m.id, m.parent_id, up.n + 1 FROM menus m JOIN up ON m.id = up.parent_id WHERE up.n < 20) \
         SELECT count(*) FROM up WHERE id = $1",
        &[P::Uuid(ancestor.to_string()), P::Uuid(id.to_string())],
    )?;
    Ok(col::<i64>(&rows.rows[0], 0, "count")? > 0)
}

/// Deletes a menu entry without children.
pub fn delete_menu(db: &Db, id: Uuid) -> Result<bool, DbError> {
    let rows = db.query(
        "SELECT count(*) FROM menus WHERE parent_id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    if col::<i64>(&rows.rows[0], 0, "count")? > 0 {
        return Ok(false);
    }
    db.execute(
        "DELETE FROM menus WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(true)
}
