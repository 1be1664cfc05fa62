//! Failover: devices to recover, moving a device to another node, and the
//! record of each recovery.

use platform::db::{col, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Devices whose policy recovers them and whose node has been unreachable
/// (or disabled) for `after_secs`, oldest node loss first.
pub fn due(db: &Db, after_secs: i32, limit: i64) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "SELECT d.id FROM devices d JOIN nodes n ON n.id = d.node_id \
         WHERE d.recover_policy <> 'none' AND d.desired_status <> 'deleted' \
           AND n.status IN ('unreachable', 'disabled') \
           AND coalesce(n.last_heartbeat_at, n.updated_at) < (now() AT TIME ZONE 'UTC') - make_interval(secs => $1::int) \
         ORDER BY n.last_heartbeat_at, d.id LIMIT $2",
        &[P::Int32(after_secs), P::Int64(limit)],
        |r| col(r, 0, "devices.id"),
    )
}

/// Moves a device to another node at a new generation, as not yet made
/// there; returns the new generation.
pub fn moved(
    db: &Db,
    id: Uuid,
    node: &str,
    address: &str,
    placement: &serde_json::Value,
    reason: &str,
) -> Result<i64, DbError> {
    let g = db.one(
        "UPDATE devices SET node_id = $2, adb_host = $3, placement = $4, generation = generation + 1, \
           observed_status = 'creating', observed_generation = NULL, container_id = NULL, adb_port = NULL, \
           status_reason = $5, gpu_device = NULL, updated_at = now() AT TIME ZONE 'UTC', version = version + 1 \
         WHERE id = $1 RETURNING generation",
        &[
            P::Uuid(id.to_string()),
            P::Str(node.into()),
            P::Str(address.into()),
            spin_sdk::pg4::jsonb(placement).map_err(|e| DbError::Other(e.to_string()))?,
            P::Str(reason.into()),
        ],
        |r| col::<i64>(r, 0, "generation"),
    )?;
    g.ok_or_else(|| DbError::Other("device vanished".into()))
}

/// Sets a device's recover policy.
pub fn set_policy(db: &Db, id: Uuid, policy: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE devices SET recover_policy = $2, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[P::Uuid(id.to_string()), P::Str(policy.into())],
    )?;
    Ok(())
}

/// A device's recover policy.
pub fn policy(db: &Db, id: Uuid) -> Result<String, DbError> {
    Ok(db
        .one(
            "SELECT recover_policy FROM devices WHERE id = $1",
            &[P::Uuid(id.to_string())],
            |r| col::<String>(r, 0, "recover_policy"),
        )?
        .unwrap_or_else(|| "none".into()))
}

/// One recovery.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    /// Id.
    pub id: Uuid,
    /// The node it left.
    pub from_node: String,
    /// The node it went to.
    pub to_node: String,
    /// `node_lost` or `operator`.
    pub reason: String,
    /// The operator, for a manual one.
    pub requested_by: Option<Uuid>,
    /// What did not come along.
    pub lost: String,
    /// The operation that made it again.
    pub operation_id: Uuid,
    /// The snapshot its data came from; `None`: made fresh.
    pub snapshot_id: Option<Uuid>,
    /// When.
    pub created_at: String,
}

/// A new recovery.
pub struct NewRecovery<'a> {
    /// Device.
    pub device: Uuid,
    /// From.
    pub from: &'a str,
    /// To.
    pub to: &'a str,
    /// Why.
    pub reason: &'a str,
    /// Operator.
    pub by: Option<Uuid>,
    /// What was lost.
    pub lost: &'a str,
    /// Operation.
    pub operation: Uuid,
    /// The snapshot its data came from.
    pub snapshot: Option<Uuid>,
}

/// Records a recovery.
pub fn record(db: &Db, r: &NewRecovery) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO device_recoveries (id, device_id, from_node, to_node, reason, requested_by, lost, operation_id, \
           snapshot_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(r.device.to_string()),
            P::Str(r.from.into()),
            P::Str(r.to.into()),
            P::Str(r.reason.into()),
            platform::db::opt_uuid(r.by),
            P::Str(r.lost.into()),
            P::Uuid(r.operation.to_string()),
            platform::db::opt_uuid(r.snapshot),
        ],
    )?;
    Ok(())
}

/// Notes on the recovery an operation carried out that the operation
/// failed: the device may not have been made as recorded (a snapshot's
/// archive that did not check out is not used, and the node's agent makes
/// the device from its desired state with an empty `/data`).
pub fn failed(db: &Db, operation: Uuid, error: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE device_recoveries SET lost = left(lost || '; the recover operation failed: ' || $2, 4000) \
         WHERE operation_id = $1",
        &[
            P::Uuid(operation.to_string()),
            P::Str(error.chars().take(500).collect()),
        ],
    )?;
    Ok(())
}

/// A device's recoveries, newest first.
pub fn of_device(db: &Db, id: Uuid) -> Result<Vec<Recovery>, DbError> {
    db.all(
        "SELECT id, from_node, to_node, reason, requested_by, lost, operation_id, created_at, snapshot_id \
         FROM device_recoveries WHERE device_id = $1 ORDER BY created_at DESC LIMIT 100",
        &[P::Uuid(id.to_string())],
        |r| {
            Ok(Recovery {
                id: col(r, 0, "id")?,
                from_node: col(r, 1, "from_node")?,
                to_node: col(r, 2, "to_node")?,
                reason: col(r, 3, "reason")?,
                requested_by: col(r, 4, "requested_by")?,
                lost: col(r, 5, "lost")?,
                operation_id: col(r, 6, "operation_id")?,
                created_at: timestamp(r, 7, "created_at")?,
                snapshot_id: col(r, 8, "snapshot_id")?,
            })
        },
    )
}
