//! Run intervals: one row per interval a device ran, opened when its agent
//! reports it running and closed when it reports anything else (or it is
//! deleted). The one source billing meters from: each opening and closing
//! is a `device.run_started` / `device.run_ended` event in the same
//! transaction (and `GET /internal/runs` lists them).

use events::catalogue::{EventType, DEVICE_RUN_ENDED, DEVICE_RUN_STARTED};
use events::payload::DeviceRun;
use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Opens an interval for a device (none if one is open) and announces it
/// (`device.run_started`), in `tx`.
pub fn open(
    tx: &Db,
    device: Uuid,
    owner: Uuid,
    tenant: Option<Uuid>,
    node: Option<&str>,
    spec: &serde_json::Value,
) -> Result<(), DbError> {
    let opened = tx.one(
        &format!(
            "INSERT INTO device_runs (device_id, owner_id, tenant_id, node_id, spec, started_at) \
             VALUES ($1, $2, $3, $4, $5, now() AT TIME ZONE 'UTC') ON CONFLICT (device_id) WHERE ended_at IS NULL DO NOTHING \
             RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(device.to_string()),
            P::Uuid(owner.to_string()),
            opt_uuid(tenant),
            node.map_or(P::DbNull, |n| P::Str(n.into())),
            spin_sdk::pg4::jsonb(spec).map_err(|e| DbError::Other(e.to_string()))?,
        ],
        run,
    )?;
    match opened {
        Some(r) => announce(tx, &DEVICE_RUN_STARTED, r, 1),
        None => Ok(()),
    }
}

/// Closes a device's open interval, if any, and announces it
/// (`device.run_ended`), in `tx`.
pub fn close(tx: &Db, device: Uuid, reason: &str) -> Result<(), DbError> {
    let closed = tx.one(
        &format!(
            "UPDATE device_runs SET ended_at = now() AT TIME ZONE 'UTC', end_reason = $2 \
             WHERE device_id = $1 AND ended_at IS NULL RETURNING {COLUMNS}"
        ),
        &[P::Uuid(device.to_string()), P::Str(reason.into())],
        run,
    )?;
    match closed {
        Some(r) => announce(tx, &DEVICE_RUN_ENDED, r, 2),
        None => Ok(()),
    }
}

fn announce(tx: &Db, event: &EventType, r: Run, version: i64) -> Result<(), DbError> {
    let payload = DeviceRun {
        run_id: r.id,
        device_id: r.device_id,
        owner_id: r.owner_id,
        tenant_id: r.tenant_id,
        node_id: r.node_id,
        spec: r.spec,
        started_at: r.started_at,
        ended_at: r.ended_at,
        end_reason: r.end_reason,
    };
    platform::outbox::enqueue(tx, event, &payload.run_id.to_string(), version, &payload)?;
    Ok(())
}

/// One run interval.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Position in the feed.
    pub id: i64,
    /// Device.
    pub device_id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Node.
    pub node_id: Option<String>,
    /// The spec it ran with.
    pub spec: serde_json::Value,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, if it ended.
    pub ended_at: Option<String>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

fn run(r: &[spin_sdk::pg4::DbValue]) -> Result<Run, DbError> {
    Ok(Run {
        id: col(r, 0, "device_runs.id")?,
        device_id: col(r, 1, "device_runs.device_id")?,
        owner_id: col(r, 2, "device_runs.owner_id")?,
        tenant_id: col(r, 3, "device_runs.tenant_id")?,
        node_id: col(r, 4, "device_runs.node_id")?,
        spec: col(r, 5, "device_runs.spec")?,
        started_at: timestamp(r, 6, "device_runs.started_at")?,
        ended_at: opt_timestamp(r, 7, "device_runs.ended_at")?,
        end_reason: col(r, 8, "device_runs.end_reason")?,
    })
}

const COLUMNS: &str =
    "id, device_id, owner_id, tenant_id, node_id, spec, started_at, ended_at, end_reason";

/// The intervals of a device, newest first.
pub fn of_device(db: &Db, device: Uuid, limit: i64) -> Result<Vec<Run>, DbError> {
    db.all(
        &format!("SELECT {COLUMNS} FROM device_runs WHERE device_id = $1 ORDER BY started_at DESC LIMIT $2"),
        &[P::Uuid(device.to_string()), P::Int64(limit)],
        run,
    )
}

/// Closed intervals after position `after` (billing's feed: an interval
/// appears once it has ended, with its final length).
pub fn ended_after(db: &Db, after: i64, limit: i64) -> Result<Vec<Run>, DbError> {
    db.all(
        &format!("SELECT {COLUMNS} FROM device_runs WHERE id > $1 ORDER BY id LIMIT $2"),
        &[P::Int64(after), P::Int64(limit)],
        run,
    )
}
