//! Snapshot policies: a device's automatic backups (due times the snapshot
//! job claims through an index) and its retention.

use crate::domain::snapshot_policy::{AppliesTo, Policy};
use platform::db::{col, opt_timestamp, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A device's policy as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPolicy {
    /// The device.
    pub device_id: Uuid,
    /// Seconds between automatic snapshots (`null`: none).
    pub every_secs: Option<i32>,
    /// Newest snapshots kept.
    pub keep_last: Option<i32>,
    /// Oldest kept, in seconds after ready.
    pub max_age_secs: Option<i32>,
    /// `scheduled` or `all`.
    pub applies_to: &'static str,
    /// When the next automatic snapshot is due.
    pub next_backup_at: Option<String>,
    /// When the last one was taken (asked of the agent).
    pub last_backup_at: Option<String>,
    /// Why the last due one was not taken.
    pub last_skipped: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// Version.
    pub version: i64,
}

impl StoredPolicy {
    /// The policy of a device that never had one set.
    pub fn none(device: Uuid, now: &str) -> Self {
        StoredPolicy {
            device_id: device,
            every_secs: None,
            keep_last: None,
            max_age_secs: None,
            applies_to: AppliesTo::Scheduled.as_str(),
            next_backup_at: None,
            last_backup_at: None,
            last_skipped: None,
            updated_at: now.to_string(),
            version: 0,
        }
    }
}

const COLUMNS: &str =
    "device_id, every_secs, keep_last, max_age_secs, applies_to, next_backup_at, \
     last_backup_at, last_skipped, updated_at, version";

fn stored(r: &[DbValue]) -> Result<StoredPolicy, DbError> {
    let applies: String = col(r, 4, "snapshot_policies.applies_to")?;
    Ok(StoredPolicy {
        device_id: col(r, 0, "snapshot_policies.device_id")?,
        every_secs: col(r, 1, "snapshot_policies.every_secs")?,
        keep_last: col(r, 2, "snapshot_policies.keep_last")?,
        max_age_secs: col(r, 3, "snapshot_policies.max_age_secs")?,
        applies_to: AppliesTo::from_db(&applies).as_str(),
        next_backup_at: opt_timestamp(r, 5, "snapshot_policies.next_backup_at")?,
        last_backup_at: opt_timestamp(r, 6, "snapshot_policies.last_backup_at")?,
        last_skipped: col(r, 7, "snapshot_policies.last_skipped")?,
        updated_at: timestamp(r, 8, "snapshot_policies.updated_at")?,
        version: col(r, 9, "snapshot_policies.version")?,
    })
}

fn opt_int(v: Option<i32>) -> P {
    v.map_or(P::DbNull, P::Int32)
}

/// A device's policy, if one was ever set.
pub fn find(db: &Db, device: Uuid) -> Result<Option<StoredPolicy>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM snapshot_policies WHERE device_id = $1"),
        &[P::Uuid(device.to_string())],
        stored,
    )
}

/// Sets a device's policy. The first automatic snapshot is due one interval
/// from now; an unchanged interval keeps the due time it had.
pub fn put(db: &Db, device: Uuid, p: &Policy) -> Result<StoredPolicy, DbError> {
    let row = db.one(
        &format!(
            "INSERT INTO snapshot_policies AS s (device_id, every_secs, keep_last, max_age_secs, applies_to, next_backup_at) \
             VALUES ($1, $2, $3, $4, $5, (now() AT TIME ZONE 'UTC') + make_interval(secs => $2::int)) \
             ON CONFLICT (device_id) DO UPDATE SET every_secs = EXCLUDED.every_secs, \
               keep_last = EXCLUDED.keep_last, max_age_secs = EXCLUDED.max_age_secs, \
               applies_to = EXCLUDED.applies_to, \
               next_backup_at = CASE WHEN s.every_secs IS NOT DISTINCT FROM EXCLUDED.every_secs \
                                       AND s.next_backup_at IS NOT NULL \
                                     THEN s.next_backup_at ELSE EXCLUDED.next_backup_at END, \
               updated_at = now() AT TIME ZONE 'UTC', version = s.version + 1 \
             RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(device.to_string()),
            opt_int(p.every_secs),
            opt_int(p.keep_last),
            opt_int(p.max_age_secs),
            P::Str(p.applies_to.as_str().into()),
        ],
        stored,
    )?;
    row.ok_or_else(|| DbError::Other("snapshot policy upsert returned nothing".into()))
}

/// Claims up to `limit` devices whose automatic snapshot is due, moving
/// their due time `lease_secs` on (a run that dies leaves them due again
/// then).
pub fn claim_due(db: &Db, limit: i64, lease_secs: i64) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "UPDATE snapshot_policies SET next_backup_at = (now() AT TIME ZONE 'UTC') + make_interval(secs => $2) \
         WHERE device_id IN (SELECT device_id FROM snapshot_policies \
                             WHERE next_backup_at <= now() AT TIME ZONE 'UTC' \
                             ORDER BY next_backup_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING device_id",
        &[P::Int64(limit), P::Floating64(lease_secs as f64)],
        |r| col(r, 0, "snapshot_policies.device_id"),
    )
}

/// Records a due backup taken (`skipped` None) or not taken, and makes the
/// next one due an interval from now.
pub fn backed_up(db: &Db, device: Uuid, skipped: Option<&str>) -> Result<(), DbError> {
    db.execute(
        "UPDATE snapshot_policies SET \
           next_backup_at = CASE WHEN every_secs IS NULL THEN NULL \
                            ELSE (now() AT TIME ZONE 'UTC') + make_interval(secs => every_secs) END, \
           last_backup_at = CASE WHEN $2::text IS NULL THEN now() AT TIME ZONE 'UTC' ELSE last_backup_at END, \
           last_skipped = $2::text \
         WHERE device_id = $1",
        &[
            P::Uuid(device.to_string()),
            skipped.map_or(P::DbNull, |s| P::Str(s.into())),
        ],
    )?;
    Ok(())
}

/// Stops the automatic snapshots of a device that is gone.
pub fn stop(db: &Db, device: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE snapshot_policies SET next_backup_at = NULL, last_skipped = 'the device is deleted' \
         WHERE device_id = $1",
        &[P::Uuid(device.to_string())],
    )?;
    Ok(())
}
