//! Devices' lifecycle columns: the policy (expiry, idle timeout, session
//! length), client heartbeats, the marks of warnings sent, and the due time
//! the lifecycle job claims rows by (`devices_lifecycle_due`, a partial
//! index of the rows that have one).

use super::devices::{device, Device, COLUMNS};
use crate::domain::lifecycle::Warning;
use chrono::NaiveDateTime;
use platform::db::{col, datetime_param, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// The database's clock (UTC; the transaction's start inside one), which
/// every lifecycle time is read and written against.
pub fn now(db: &Db) -> Result<NaiveDateTime, DbError> {
    let rows = db.query("SELECT now() AT TIME ZONE 'UTC'", &[])?;
    col(&rows.rows[0], 0, "now")
}

/// A change of a device's lifecycle policy; `None` leaves a field, `Some(None)` clears it.
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyChange {
    /// Idle timeout (seconds).
    pub idle_timeout_secs: Option<Option<i32>>,
    /// Maximum session length (seconds).
    pub max_session_secs: Option<Option<i32>>,
    /// Expiry; a change clears the expiry warning's mark, so the new one is warned of.
    pub expires_at: Option<Option<NaiveDateTime>>,
}

impl PolicyChange {
    /// Whether it changes anything.
    pub fn is_empty(&self) -> bool {
        self.idle_timeout_secs.is_none()
            && self.max_session_secs.is_none()
            && self.expires_at.is_none()
    }
}

/// Applies a policy change to a device.
pub fn set_policy(db: &Db, id: Uuid, c: &PolicyChange) -> Result<(), DbError> {
    let int = |v: Option<Option<i32>>| v.flatten().map_or(P::DbNull, P::Int32);
    db.execute(
        "UPDATE devices SET \
           idle_timeout_secs = CASE WHEN $2 THEN $3 ELSE idle_timeout_secs END, \
           max_session_secs = CASE WHEN $4 THEN $5 ELSE max_session_secs END, \
           expires_at = CASE WHEN $6 THEN $7 ELSE expires_at END, \
           expiry_warned_at = CASE WHEN $6 THEN NULL ELSE expiry_warned_at END, \
           updated_at = now() AT TIME ZONE 'UTC', version = version + 1 \
         WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            P::Boolean(c.idle_timeout_secs.is_some()),
            int(c.idle_timeout_secs),
            P::Boolean(c.max_session_secs.is_some()),
            int(c.max_session_secs),
            P::Boolean(c.expires_at.is_some()),
            c.expires_at.flatten().map_or(P::DbNull, datetime_param),
        ],
    )?;
    Ok(())
}

/// Records a client heartbeat (one statement); the device after it. The
/// caller checked that the device takes heartbeats; one that stopped since
/// gains nothing from it (idle rules apply only while it runs). The due time stays:
/// a heartbeat only moves the idle deadline later, and the job, looking
/// early, moves it on. `clock_timestamp()`, not the statement's start: a
/// heartbeat that waited for the job's row lock must count as newer than
/// the warning the job wrote meanwhile.
pub fn heartbeat(db: &Db, id: Uuid) -> Result<Option<Device>, DbError> {
    db.one(
        &format!(
            "UPDATE devices d SET last_client_heartbeat_at = clock_timestamp() AT TIME ZONE 'UTC' \
             WHERE d.id = $1 RETURNING {COLUMNS}"
        ),
        &[P::Uuid(id.to_string())],
        device,
    )
}

/// Starts a device's session clock (it was seen starting to run).
pub fn start_session(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE devices SET session_started_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// Marks a warning as sent now (a change of the device: its version grows,
/// so the warning's event carries a version of its own).
pub fn mark_warned(db: &Db, id: Uuid, w: Warning) -> Result<(), DbError> {
    let sql = match w {
        Warning::Expiry => {
            "UPDATE devices SET expiry_warned_at = now() AT TIME ZONE 'UTC', \
               updated_at = now() AT TIME ZONE 'UTC', version = version + 1 WHERE id = $1"
        }
        Warning::Idle => {
            "UPDATE devices SET idle_warned_at = now() AT TIME ZONE 'UTC', \
               updated_at = now() AT TIME ZONE 'UTC', version = version + 1 WHERE id = $1"
        }
    };
    db.execute(sql, &[P::Uuid(id.to_string())])?;
    Ok(())
}

/// Stores when the lifecycle job must next look at a device.
pub fn set_due(db: &Db, id: Uuid, at: Option<NaiveDateTime>) -> Result<(), DbError> {
    db.execute(
        "UPDATE devices SET lifecycle_due_at = $2 WHERE id = $1 AND lifecycle_due_at IS DISTINCT FROM $2",
        &[P::Uuid(id.to_string()), at.map_or(P::DbNull, datetime_param)],
    )?;
    Ok(())
}

/// Claims up to `limit` devices whose due time has come, oldest first, by
/// moving their due time `lease_secs` ahead in the same statement: rows
/// another run holds are skipped (`FOR UPDATE SKIP LOCKED`), and rows this
/// run claimed are no longer due for the next one. Processing a device
/// recomputes its due time; a run that dies leaves the lease, and the
/// device comes due again when it ends.
pub fn claim_due(db: &Db, limit: i64, lease_secs: i64) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "UPDATE devices SET lifecycle_due_at = (now() AT TIME ZONE 'UTC') + make_interval(secs => $2) \
         WHERE id IN (SELECT id FROM devices \
                      WHERE lifecycle_due_at <= now() AT TIME ZONE 'UTC' \
                      ORDER BY lifecycle_due_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id",
        &[P::Int64(limit), P::Floating64(lease_secs as f64)],
        |r| col(r, 0, "devices.id"),
    )
}
