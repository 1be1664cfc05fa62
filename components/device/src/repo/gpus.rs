//! GPU slots held by devices (`gpu_allocations`).

use crate::domain::gpu::choose_slot;
use platform::db::{col, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Gives a device a slot of one of its node's GPUs, under the node's row
/// lock (held by placement); the render node it got, or `None` when every
/// slot is taken.
pub fn allocate(
    db: &Db,
    node: &str,
    gpus: &[String],
    slots: i32,
    device: Uuid,
) -> Result<Option<String>, DbError> {
    let taken = db.all(
        "SELECT gpu, slot FROM gpu_allocations WHERE node_id = $1",
        &[P::Str(node.into())],
        |r| Ok((col::<String>(r, 0, "gpu")?, col::<i32>(r, 1, "slot")?)),
    )?;
    let Some((gpu, slot)) = choose_slot(gpus, slots, &taken) else {
        return Ok(None);
    };
    db.execute(
        "INSERT INTO gpu_allocations (node_id, gpu, slot, device_id) VALUES ($1, $2, $3, $4)",
        &[
            P::Str(node.into()),
            P::Str(gpu.clone()),
            P::Int32(slot),
            P::Uuid(device.to_string()),
        ],
    )?;
    db.execute(
        "UPDATE devices SET gpu_device = $2 WHERE id = $1",
        &[P::Uuid(device.to_string()), P::Str(gpu.clone())],
    )?;
    Ok(Some(gpu))
}

/// Releases a device's slot, if it holds one.
pub fn release(db: &Db, device: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM gpu_allocations WHERE device_id = $1",
        &[P::Uuid(device.to_string())],
    )?;
    Ok(())
}

/// A slot in use.
#[derive(Debug, Clone, Serialize)]
pub struct Allocation {
    /// The GPU's render node.
    pub gpu: String,
    /// The slot.
    pub slot: i32,
    /// The device holding it.
    pub device_id: Uuid,
    /// Since.
    pub allocated_at: String,
}

/// The slots in use on a node, by GPU and slot.
pub fn on_node(db: &Db, node: &str) -> Result<Vec<Allocation>, DbError> {
    db.all(
        "SELECT gpu, slot, device_id, allocated_at FROM gpu_allocations WHERE node_id = $1 ORDER BY gpu, slot",
        &[P::Str(node.into())],
        |r| {
            Ok(Allocation {
                gpu: col(r, 0, "gpu")?,
                slot: col(r, 1, "slot")?,
                device_id: col(r, 2, "device_id")?,
                allocated_at: timestamp(r, 3, "allocated_at")?,
            })
        },
    )
}
