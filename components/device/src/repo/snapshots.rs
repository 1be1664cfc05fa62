//! Snapshots of devices: taken, restored and deleted by the device's node's
//! agent; each row follows its operations.

use crate::domain::snapshot_policy::storage_gb;
use access::RowFilter;
use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to snapshots: those of the device's owner when it
/// was taken.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "s.tenant_id",
    department: Some("s.department_id"),
    owner: Some("s.owner_id"),
};

/// A snapshot as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Id.
    pub id: Uuid,
    /// The device it was taken of.
    pub device_id: Uuid,
    /// Where it is kept.
    #[serde(skip)]
    pub node_id: String,
    /// The device's owner.
    pub owner_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Their department.
    #[serde(skip)]
    pub department_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// `creating`, `ready`, `failed`, `deleting` or `deleted`.
    pub status: String,
    /// The device's generation when it was taken.
    pub generation: i64,
    /// The image the agent committed.
    pub image: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The operation that took it.
    pub operation_id: Uuid,
    /// How often it was restored.
    pub restores: i32,
    /// `manual` (asked for) or `scheduled` (the device's snapshot policy).
    pub origin: String,
    /// Bytes of its `/data` copy, as the agent measured them.
    pub data_bytes: Option<i64>,
    /// What it costs the owner's storage quota, in GiB.
    pub storage_gb: Option<i32>,
    /// When retention deletes it.
    pub expires_at: Option<String>,
    /// Its charge to the owner's storage quota: `none`, `pending`, `held`,
    /// `refused`, `releasing` or `released`.
    pub quota_state: String,
    /// The reservation in `user` that holds the charge.
    #[serde(skip)]
    pub reservation_id: Option<Uuid>,
    /// Bytes of its archive in the control plane (a device whose recover
    /// policy is `snapshot` has its snapshots archived there, so that
    /// another node can make it from one).
    pub archive_bytes: Option<i64>,
    /// When its archive was kept; `None`: it has none.
    pub archived_at: Option<String>,
    /// Why an archive asked for was not kept.
    pub archive_error: Option<String>,
    /// Taken (asked for).
    pub created_at: String,
    /// Ready.
    pub ready_at: Option<String>,
    /// Deleted.
    pub deleted_at: Option<String>,
    /// Version.
    pub version: i64,
}

const COLUMNS: &str = "s.id, s.device_id, s.node_id, s.owner_id, s.tenant_id, s.department_id, s.name, \
     s.description, s.status, s.generation, s.image, s.error, s.operation_id, s.restores, s.created_at, \
     s.ready_at, s.deleted_at, s.version, s.origin, s.data_bytes, s.storage_gb, s.expires_at, \
     s.quota_state, s.reservation_id, s.archive_bytes, s.archived_at, s.archive_error";

fn snapshot(r: &[DbValue]) -> Result<Snapshot, DbError> {
    Ok(Snapshot {
        id: col(r, 0, "snapshots.id")?,
        device_id: col(r, 1, "snapshots.device_id")?,
        node_id: col(r, 2, "snapshots.node_id")?,
        owner_id: col(r, 3, "snapshots.owner_id")?,
        tenant_id: col(r, 4, "snapshots.tenant_id")?,
        department_id: col(r, 5, "snapshots.department_id")?,
        name: col(r, 6, "snapshots.name")?,
        description: col(r, 7, "snapshots.description")?,
        status: col(r, 8, "snapshots.status")?,
        generation: col(r, 9, "snapshots.generation")?,
        image: col(r, 10, "snapshots.image")?,
        error: col(r, 11, "snapshots.error")?,
        operation_id: col(r, 12, "snapshots.operation_id")?,
        restores: col(r, 13, "snapshots.restores")?,
        created_at: timestamp(r, 14, "snapshots.created_at")?,
        ready_at: opt_timestamp(r, 15, "snapshots.ready_at")?,
        deleted_at: opt_timestamp(r, 16, "snapshots.deleted_at")?,
        version: col(r, 17, "snapshots.version")?,
        origin: col(r, 18, "snapshots.origin")?,
        data_bytes: col(r, 19, "snapshots.data_bytes")?,
        storage_gb: col(r, 20, "snapshots.storage_gb")?,
        expires_at: opt_timestamp(r, 21, "snapshots.expires_at")?,
        quota_state: col(r, 22, "snapshots.quota_state")?,
        reservation_id: col(r, 23, "snapshots.reservation_id")?,
        archive_bytes: col(r, 24, "snapshots.archive_bytes")?,
        archived_at: opt_timestamp(r, 25, "snapshots.archived_at")?,
        archive_error: col(r, 26, "snapshots.archive_error")?,
    })
}

impl Snapshot {
    /// Its `row_ref` for the caller's data scope.
    pub fn row_ref(&self) -> access::RowRef {
        access::RowRef {
            tenant: self.tenant_id,
            department: self.department_id,
            owner: Some(self.owner_id),
        }
    }

    /// The payload of its `snapshot.*` events.
    pub fn event(&self) -> events::payload::Snapshot {
        events::payload::Snapshot {
            id: self.id,
            device_id: self.device_id,
            owner_id: self.owner_id,
            tenant_id: self.tenant_id,
            name: self.name.clone(),
            status: self.status.clone(),
            error: self.error.clone(),
        }
    }
}

/// A new snapshot.
pub struct NewSnapshot<'a> {
    /// Id.
    pub id: Uuid,
    /// The device (owner, tenant, department, node and generation are its).
    pub device: &'a super::devices::Device,
    /// Its node.
    pub node: &'a str,
    /// Name.
    pub name: &'a str,
    /// Free text.
    pub description: &'a str,
    /// The operation that takes it.
    pub operation: Uuid,
    /// `manual` or `scheduled`.
    pub origin: &'static str,
}

/// Inserts a snapshot being taken.
pub fn insert(db: &Db, s: &NewSnapshot) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO snapshots (id, device_id, node_id, owner_id, tenant_id, department_id, name, description, \
           generation, operation_id, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            P::Uuid(s.id.to_string()),
            P::Uuid(s.device.id.to_string()),
            P::Str(s.node.into()),
            P::Uuid(s.device.owner_id.to_string()),
            opt_uuid(s.device.tenant_id),
            opt_uuid(s.device.department_id),
            P::Str(s.name.into()),
            P::Str(s.description.into()),
            P::Int64(s.device.generation),
            P::Uuid(s.operation.to_string()),
            P::Str(s.origin.into()),
        ],
    )?;
    Ok(())
}

/// A snapshot by id (deleted ones too).
pub fn find(db: &Db, id: Uuid) -> Result<Option<Snapshot>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM snapshots s WHERE s.id = $1"),
        &[P::Uuid(id.to_string())],
        snapshot,
    )
}

/// A snapshot locked until the transaction ends.
pub fn lock(db: &Db, id: Uuid) -> Result<Option<Snapshot>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM snapshots s WHERE s.id = $1 FOR UPDATE"),
        &[P::Uuid(id.to_string())],
        snapshot,
    )
}

/// Snapshots of a device that are not deleted (being taken, ready, failed
/// or being deleted).
pub fn count_live(db: &Db, device: Uuid) -> Result<i64, DbError> {
    let r = db.query(
        "SELECT count(*) FROM snapshots WHERE device_id = $1 AND status <> 'deleted'",
        &[P::Uuid(device.to_string())],
    )?;
    col(&r.rows[0], 0, "count")
}

/// Marks a snapshot being deleted by an operation.
pub fn deleting(db: &Db, id: Uuid, op: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE snapshots SET status = 'deleting', delete_operation_id = $2, version = version + 1 WHERE id = $1",
        &[P::Uuid(id.to_string()), P::Uuid(op.to_string())],
    )?;
    Ok(())
}

/// Counts a restore.
pub fn restored(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE snapshots SET restores = restores + 1, version = version + 1 WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// What finishing an operation did to a snapshot.
pub enum Finished {
    /// The snapshot the operation took is ready (or failed).
    Taken(Snapshot),
    /// The snapshot the operation deleted is gone (or back to `ready` with
    /// the error, when the delete failed).
    Deleted(Snapshot),
}

/// Applies a finished operation to the snapshot it took or deleted, if any.
pub fn operation_finished(
    db: &Db,
    op: Uuid,
    ok: bool,
    output: Option<&serde_json::Value>,
    error: Option<&str>,
) -> Result<Option<Finished>, DbError> {
    let text = |v: Option<&serde_json::Value>, k: &str| {
        v.and_then(|o| o[k].as_str())
            .map_or(P::DbNull, |s| P::Str(s.chars().take(300).collect()))
    };
    let err = error.map_or(P::DbNull, |e| P::Str(e.chars().take(2000).collect()));
    // An agent older than `data_bytes` is charged the minimum.
    let data_bytes = output
        .and_then(|o| o["data_bytes"].as_u64())
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let taken = db.one(
        &format!(
            "UPDATE snapshots s SET status = CASE WHEN $2 THEN 'ready' ELSE 'failed' END, \
               image = $3, image_id = $4, error = $5, \
               ready_at = CASE WHEN $2 THEN now() AT TIME ZONE 'UTC' END, \
               data_bytes = $6, storage_gb = $7, \
               quota_state = CASE WHEN $2 THEN 'pending' ELSE 'none' END, \
               quota_updated_at = now() AT TIME ZONE 'UTC', version = version + 1 \
             WHERE s.operation_id = $1 AND s.status = 'creating' RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(op.to_string()),
            P::Boolean(ok),
            text(output, "image"),
            text(output, "image_id"),
            err.clone(),
            data_bytes.map_or(P::DbNull, P::Int64),
            P::Int32(storage_gb(data_bytes.unwrap_or(0))),
        ],
        snapshot,
    )?;
    if let Some(s) = taken {
        return Ok(Some(Finished::Taken(s)));
    }
    let deleted = db.one(
        &format!(
            "UPDATE snapshots s SET status = CASE WHEN $2 THEN 'deleted' ELSE 'ready' END, \
               error = coalesce($3, s.error), deleted_at = CASE WHEN $2 THEN now() AT TIME ZONE 'UTC' END, \
               quota_state = CASE WHEN NOT $2 THEN s.quota_state \
                                  WHEN s.quota_state IN ('pending', 'held') THEN 'releasing' \
                                  WHEN s.quota_state = 'refused' THEN 'released' \
                                  ELSE s.quota_state END, \
               quota_updated_at = now() AT TIME ZONE 'UTC', version = version + 1 \
             WHERE s.delete_operation_id = $1 AND s.status = 'deleting' RETURNING {COLUMNS}"
        ),
        &[P::Uuid(op.to_string()), P::Boolean(ok), err],
        snapshot,
    )?;
    Ok(deleted.map(Finished::Deleted))
}

/// List filters.
#[derive(Debug, Default)]
pub struct Filter {
    /// The device.
    pub device_id: Option<Uuid>,
    /// Status (without it, every status but `deleted`).
    pub status: Option<String>,
}

/// A page of the snapshots a caller sees, newest first.
pub fn list(
    db: &Db,
    scope: &RowFilter,
    f: &Filter,
    page: Page,
) -> Result<(Vec<Snapshot>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    if let Some(d) = f.device_id {
        w.eq("s.device_id", P::Uuid(d.to_string()));
    }
    if let Some(s) = &f.status {
        w.eq("s.status", P::Str(s.clone()));
    } else {
        w.and("s.status <> 'deleted'");
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM snapshots s"),
        "snapshots s",
        w,
        "s.created_at DESC, s.id",
        page,
        snapshot,
    )
}

/// Applies a device's retention to its ready snapshots: those beyond the
/// newest `keep_last` expire now, the others `max_age_secs` after they
/// were ready, and those retention does not cover (a user's own under a
/// `scheduled` policy, or every one without a policy) never. Only charged
/// snapshots count: one not charged yet cannot push a kept one out, and one
/// refused for quota keeps the expiry that removes it.
pub fn apply_retention(db: &Db, device: Uuid) -> Result<(), DbError> {
    db.execute(
        "WITH p AS (SELECT keep_last, max_age_secs, applies_to FROM snapshot_policies WHERE device_id = $1), \
         ranked AS ( \
           SELECT s.id, s.ready_at, \
                  (p.applies_to = 'all' OR s.origin = 'scheduled') AS covered, \
                  row_number() OVER (PARTITION BY (p.applies_to = 'all' OR s.origin = 'scheduled') \
                                     ORDER BY s.ready_at DESC, s.id) AS rank \
           FROM snapshots s LEFT JOIN p ON true \
           WHERE s.device_id = $1 AND s.status = 'ready' AND s.quota_state NOT IN ('pending', 'refused')) \
         UPDATE snapshots s SET expires_at = CASE \
             WHEN NOT coalesce(r.covered, false) THEN NULL \
             WHEN p.keep_last IS NOT NULL AND r.rank > p.keep_last THEN now() AT TIME ZONE 'UTC' \
             WHEN p.max_age_secs IS NOT NULL THEN r.ready_at + make_interval(secs => p.max_age_secs) \
             ELSE NULL END \
         FROM ranked r LEFT JOIN p ON true \
         WHERE s.id = r.id",
        &[P::Uuid(device.to_string())],
    )?;
    Ok(())
}

/// Up to `limit` ready snapshots whose retention time has passed.
pub fn expired(db: &Db, limit: i64) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "SELECT id FROM snapshots WHERE status = 'ready' AND expires_at <= now() AT TIME ZONE 'UTC' \
         ORDER BY expires_at LIMIT $1",
        &[P::Int64(limit)],
        |r| col(r, 0, "snapshots.id"),
    )
}

/// Locks a snapshot if it is ready and its retention time has passed;
/// whether it is.
pub fn lock_expired(db: &Db, id: Uuid) -> Result<bool, DbError> {
    let r = db.query(
        "SELECT 1 FROM snapshots WHERE id = $1 AND status = 'ready' \
           AND expires_at <= now() AT TIME ZONE 'UTC' FOR UPDATE",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(!r.rows.is_empty())
}

/// Up to `limit` snapshots whose storage charge is to be made (`pending`)
/// or given back (`releasing`), oldest first.
pub fn quota_due(db: &Db, limit: i64) -> Result<Vec<Snapshot>, DbError> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM snapshots s WHERE s.quota_state IN ('pending', 'releasing') \
             ORDER BY s.quota_updated_at LIMIT $1"
        ),
        &[P::Int64(limit)],
        snapshot,
    )
}

/// Moves a snapshot's charge from one state to another (only from `from`);
/// returns whether it moved.
pub fn set_quota(
    db: &Db,
    id: Uuid,
    from: &str,
    to: &str,
    reservation: Option<Uuid>,
) -> Result<bool, DbError> {
    let n = db.execute(
        "UPDATE snapshots SET quota_state = $3, reservation_id = coalesce($4, reservation_id), \
           quota_updated_at = now() AT TIME ZONE 'UTC', version = version + 1 \
         WHERE id = $1 AND quota_state = $2",
        &[
            P::Uuid(id.to_string()),
            P::Str(from.into()),
            P::Str(to.into()),
            reservation.map_or(P::DbNull, |r| P::Uuid(r.to_string())),
        ],
    )?;
    Ok(n == 1)
}

/// Puts a snapshot's pending charge or refund at the back of the queue.
pub fn touch_quota(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE snapshots SET quota_updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// A snapshot the owner's storage quota has no room for: refused, with the
/// reason, and expired so that it is deleted (again, if a delete fails).
pub fn refuse(db: &Db, id: Uuid, why: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE snapshots SET quota_state = 'refused', error = $2, \
           expires_at = now() AT TIME ZONE 'UTC', quota_updated_at = now() AT TIME ZONE 'UTC', \
           version = version + 1 \
         WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            P::Str(why.chars().take(2000).collect()),
        ],
    )?;
    Ok(())
}
