//! Quota grants: limits raised by something a user bought (`billing`'s
//! orders). A grant is made pending (nothing changes yet), activated (its
//! amounts are added to the user's limits) or revoked (taken off again if
//! it was active). Each step happens once however often it is asked for.

use crate::domain::quota::Amounts;
use platform::db::{col, opt_timestamp, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A grant.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    /// Id.
    pub id: Uuid,
    /// Whose limits.
    pub user_id: Uuid,
    /// The granting component's key (`order:<id>`).
    pub idempotency_key: String,
    /// What it adds to the limits.
    pub resources: Amounts,
    /// `pending`, `active` or `revoked`.
    pub status: String,
    /// When.
    pub created_at: String,
    /// When it took effect.
    pub activated_at: Option<String>,
    /// When it was taken back.
    pub revoked_at: Option<String>,
}

const COLUMNS: &str = "id, user_id, idempotency_key, devices, concurrent_devices, cpu_cores, \
     memory_mb, storage_gb, status, created_at, activated_at, revoked_at";

fn grant(r: &[DbValue]) -> Result<Grant, DbError> {
    let c = |i: usize| col::<i32>(r, i, "quota_grants");
    Ok(Grant {
        id: col(r, 0, "quota_grants.id")?,
        user_id: col(r, 1, "quota_grants.user_id")?,
        idempotency_key: col(r, 2, "quota_grants.idempotency_key")?,
        resources: Amounts {
            devices: c(3)?,
            concurrent_devices: c(4)?,
            cpu_cores: c(5)?,
            memory_mb: c(6)?,
            storage_gb: c(7)?,
        },
        status: col(r, 8, "quota_grants.status")?,
        created_at: timestamp(r, 9, "quota_grants.created_at")?,
        activated_at: opt_timestamp(r, 10, "quota_grants.activated_at")?,
        revoked_at: opt_timestamp(r, 11, "quota_grants.revoked_at")?,
    })
}

/// Makes a pending grant, or finds the one made under the same key:
/// `(grant, made now)`; `None` when the user has no quota (no such user).
pub fn make(tx: &Db, user: Uuid, key: &str, a: &Amounts) -> Result<Option<(Grant, bool)>, DbError> {
    super::quotas::ensure(tx, user)?;
    let exists = tx.query(
        "SELECT 1 FROM quotas WHERE user_id = $1",
        &[P::Uuid(user.to_string())],
    )?;
    if exists.rows.is_empty() {
        return Ok(None);
    }
    let made = tx.execute(
        "INSERT INTO quota_grants (id, user_id, idempotency_key, devices, concurrent_devices, cpu_cores, \
           memory_mb, storage_gb) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(user.to_string()),
            P::Str(key.into()),
            P::Int32(a.devices),
            P::Int32(a.concurrent_devices),
            P::Int32(a.cpu_cores),
            P::Int32(a.memory_mb),
            P::Int32(a.storage_gb),
        ],
    )? == 1;
    let g = tx
        .one(
            &format!(
                "SELECT {COLUMNS} FROM quota_grants WHERE user_id = $1 AND idempotency_key = $2"
            ),
            &[P::Uuid(user.to_string()), P::Str(key.into())],
            grant,
        )?
        .ok_or_else(|| DbError::Other("grant vanished".into()))?;
    Ok(Some((g, made)))
}

/// A grant, locked.
pub fn lock(tx: &Db, id: Uuid) -> Result<Option<Grant>, DbError> {
    tx.one(
        &format!("SELECT {COLUMNS} FROM quota_grants WHERE id = $1 FOR UPDATE"),
        &[P::Uuid(id.to_string())],
        grant,
    )
}

/// Moves a locked grant to `status`, adding its amounts to the limits
/// (`sign` +1) or taking them off (-1, never below zero).
pub fn settle(tx: &Db, g: &Grant, status: &str, sign: i32) -> Result<(), DbError> {
    tx.execute(
        "UPDATE quota_grants SET status = $2, \
           activated_at = CASE WHEN $2 = 'active' THEN now() AT TIME ZONE 'UTC' ELSE activated_at END, \
           revoked_at = CASE WHEN $2 = 'revoked' THEN now() AT TIME ZONE 'UTC' ELSE revoked_at END \
         WHERE id = $1",
        &[P::Uuid(g.id.to_string()), P::Str(status.into())],
    )?;
    super::quotas::shift(tx, g.user_id, super::quotas::Side::Max, sign, &g.resources)
}
