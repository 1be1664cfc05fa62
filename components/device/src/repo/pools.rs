//! Warm pools and the devices waiting in them.

use super::devices::{device, Device, COLUMNS};
use platform::db::{col, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Who owns a device waiting in a pool: nobody (the nil UUID).
pub const NOBODY: Uuid = Uuid::nil();

/// A pool as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Pool {
    /// Its template.
    pub template_id: Uuid,
    /// How many devices it keeps ready.
    pub size: i32,
    /// Who set it last.
    pub updated_by: Uuid,
    /// Set.
    pub updated_at: String,
}

fn pool(r: &[spin_sdk::pg4::DbValue]) -> Result<Pool, DbError> {
    Ok(Pool {
        template_id: col(r, 0, "template_id")?,
        size: col(r, 1, "size")?,
        updated_by: col(r, 2, "updated_by")?,
        updated_at: timestamp(r, 3, "updated_at")?,
    })
}

/// Sets a template's pool size.
pub fn set(db: &Db, template: Uuid, size: i32, by: Uuid) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO warm_pools (template_id, size, updated_by) VALUES ($1, $2, $3) \
         ON CONFLICT (template_id) DO UPDATE SET size = $2, updated_by = $3, updated_at = now() AT TIME ZONE 'UTC'",
        &[
            P::Uuid(template.to_string()),
            P::Int32(size),
            P::Uuid(by.to_string()),
        ],
    )?;
    Ok(())
}

/// A template's pool.
pub fn find(db: &Db, template: Uuid) -> Result<Option<Pool>, DbError> {
    db.one(
        "SELECT template_id, size, updated_by, updated_at FROM warm_pools WHERE template_id = $1",
        &[P::Uuid(template.to_string())],
        pool,
    )
}

/// Every pool (a few per deployment).
pub fn all(db: &Db) -> Result<Vec<Pool>, DbError> {
    db.all(
        "SELECT template_id, size, updated_by, updated_at FROM warm_pools ORDER BY template_id",
        &[],
        pool,
    )
}

/// Takes the pool's replenish lease for a minute; false when another run
/// holds it.
pub fn lease(db: &Db, template: Uuid) -> Result<bool, DbError> {
    Ok(db.execute(
        "UPDATE warm_pools SET lease_until = (now() AT TIME ZONE 'UTC') + interval '60 seconds' \
         WHERE template_id = $1 AND (lease_until IS NULL OR lease_until < now() AT TIME ZONE 'UTC')",
        &[P::Uuid(template.to_string())],
    )? == 1)
}

/// Gives the lease back.
pub fn unlease(db: &Db, template: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE warm_pools SET lease_until = NULL WHERE template_id = $1",
        &[P::Uuid(template.to_string())],
    )?;
    Ok(())
}

/// The devices waiting in a template's pool (not deleted), oldest first.
pub fn waiting(db: &Db, template: Uuid) -> Result<Vec<Device>, DbError> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM devices d WHERE d.pool_template_id = $1 \
               AND d.desired_status <> 'deleted' ORDER BY d.created_at, d.id"
        ),
        &[P::Uuid(template.to_string())],
        device,
    )
}

/// Which pooled devices are ready to give: running, made with the
/// template's spec as it is now, their first-boot steps all done.
const READY: &str = "d.pool_template_id = $1 AND d.desired_status = 'running' \
     AND d.observed_status = 'running' AND d.spec = $2 \
     AND NOT EXISTS (SELECT 1 FROM provision_steps s WHERE s.device_id = d.id \
                     AND s.status IN ('pending', 'running'))";

/// Takes one ready device of a template's pool (locked; one a concurrent
/// take holds is skipped), if any.
pub fn take_one(
    db: &Db,
    template: Uuid,
    spec: &serde_json::Value,
) -> Result<Option<Device>, DbError> {
    db.one(
        &format!(
            "SELECT {COLUMNS} FROM devices d WHERE {READY} \
             ORDER BY d.created_at, d.id LIMIT 1 FOR UPDATE SKIP LOCKED"
        ),
        &[
            P::Uuid(template.to_string()),
            spin_sdk::pg4::jsonb(spec).map_err(|e| DbError::Other(e.to_string()))?,
        ],
        device,
    )
}

/// Whether a template's pool has a running device now (a cheap look before
/// reserving quota for one).
pub fn has_ready(db: &Db, template: Uuid, spec: &serde_json::Value) -> Result<bool, DbError> {
    let r = db.query(
        &format!("SELECT 1 FROM devices d WHERE {READY} LIMIT 1"),
        &[
            P::Uuid(template.to_string()),
            spin_sdk::pg4::jsonb(spec).map_err(|e| DbError::Other(e.to_string()))?,
        ],
    )?;
    Ok(!r.rows.is_empty())
}

/// The user a pooled device goes to.
pub struct Taker<'a> {
    /// The user.
    pub owner: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Their department.
    pub department: Option<Uuid>,
    /// Their name and email as known here, with the copy's version.
    pub owner_copy: Option<(String, String, i64)>,
    /// The device's name.
    pub name: &'a str,
    /// Its tags.
    pub tags: &'a [String],
}

/// Gives a pooled device to a user: it leaves the pool.
pub fn assign(db: &Db, device: Uuid, t: &Taker) -> Result<(), DbError> {
    let (name, email, version) = t.owner_copy.clone().unwrap_or_default();
    db.execute(
        "UPDATE devices SET owner_id = $2, tenant_id = $3, department_id = $4, owner_name = $5, owner_email = $6, \
           owner_version = $7, name = $8, tags = $9, pool_template_id = NULL, \
           updated_at = now() AT TIME ZONE 'UTC', version = version + 1 WHERE id = $1",
        &[
            P::Uuid(device.to_string()),
            P::Uuid(t.owner.to_string()),
            platform::db::opt_uuid(t.tenant),
            platform::db::opt_uuid(t.department),
            P::Str(name),
            P::Str(email),
            P::Int64(version),
            P::Str(t.name.into()),
            P::ArrayStr(t.tags.iter().cloned().map(Some).collect()),
        ],
    )?;
    Ok(())
}
