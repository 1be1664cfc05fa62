//! What follows from a device's observed status changing, in the
//! transaction of the change: its events (through the outbox), its run
//! intervals (the metering source), the operations that were waiting
//! for it, and its lifecycle clocks (`policy`). Called for agents' reports and for the control plane's own
//! findings (a silent node).

use crate::domain::status::Observed;
use crate::error::Result;
use crate::repo::{self, devices::Device};
use events::catalogue::{
    DEVICE_DELETED, DEVICE_FAILED, DEVICE_STARTED, DEVICE_STATUS_CHANGED, DEVICE_STOPPED,
};
use platform::db::Db;

/// Records what a change from `before` to `after` implies.
pub fn observed_changed(tx: &Db, before: &Device, after: &Device) -> Result<()> {
    let (from, to) = (before.observed(), after.observed());
    if from == to {
        // The same status at a newer generation is how a stop of a stopped
        // container, or a start of a running one, is seen carried out.
        if before.observed_generation != after.observed_generation {
            finish_waiting(tx, after)?;
        }
        return Ok(());
    }
    let id = after.id.to_string();
    let payload = after.event(Some(&before.observed_status));
    platform::outbox::enqueue(tx, &DEVICE_STATUS_CHANGED, &id, after.version, &payload)?;
    let specific = match to {
        Observed::Running => Some(&DEVICE_STARTED),
        Observed::Stopped => Some(&DEVICE_STOPPED),
        Observed::Failed => Some(&DEVICE_FAILED),
        Observed::Deleted => Some(&DEVICE_DELETED),
        _ => None,
    };
    if let Some(t) = specific {
        platform::outbox::enqueue(tx, t, &id, after.version, &payload)?;
    }
    // Metering: an interval is open exactly while the device is seen running.
    // A silent node (`unknown`) leaves it open: the device may well run on.
    match to {
        Observed::Running => repo::runs::open(
            tx,
            after.id,
            after.owner_id,
            after.tenant_id,
            after.node_id.as_deref(),
            &after.spec,
        )?,
        Observed::Unknown | Observed::Creating | Observed::Booting => {}
        other => repo::runs::close(tx, after.id, other.as_str())?,
    }
    // A removed device's GPU slot is free again.
    if to == Observed::Deleted {
        repo::gpus::release(tx, after.id)?;
    }
    finish_waiting(tx, after)?;
    // Idle and session clocks run only while it runs.
    super::policy::observed_changed(tx, before, after)?;
    Ok(())
}

/// Finishes the device's running lifecycle operations that its observed
/// state now satisfies (or has made impossible).
pub fn finish_waiting(tx: &Db, d: &Device) -> Result<()> {
    let observed = d.observed();
    let built = d.observed_generation;
    for op in repo::operations::running_for_device(tx, d.id)? {
        let reached = |want: Observed| {
            observed == want && op.generation.is_none_or(|g| built.is_some_and(|b| b >= g))
        };
        let outcome = match op.kind.as_str() {
            "create" | "start" if reached(Observed::Running) => Some(Ok(())),
            // A recovered device is made again as it was wanted.
            "recover" if reached(Observed::Running) || reached(Observed::Stopped) => Some(Ok(())),
            "stop" if reached(Observed::Stopped) => Some(Ok(())),
            "delete" if observed == Observed::Deleted => Some(Ok(())),
            "create" | "start" | "restart" | "stop" | "recover" if observed == Observed::Failed => {
                Some(Err((
                    "device_failed",
                    d.status_reason
                        .clone()
                        .unwrap_or_else(|| "the device failed".into()),
                )))
            }
            _ => None,
        };
        match outcome {
            Some(Ok(())) => {
                let result = serde_json::json!({"device_id": d.id, "status": d.observed_status});
                if repo::operations::finish(tx, op.id, true, Some(&result), None)? {
                    super::followups::operation_finished(tx, &op, true, Some(&result), None)?;
                }
            }
            Some(Err((code, message))) => {
                if repo::operations::finish(tx, op.id, false, None, Some((code, &message)))? {
                    super::followups::operation_finished(
                        tx,
                        &op,
                        false,
                        None,
                        Some((code, &message)),
                    )?;
                }
            }
            None => {
                let pct = match observed {
                    Observed::Creating => 30,
                    Observed::Booting => 60,
                    _ => 0,
                };
                if pct > 0 {
                    repo::operations::progress(tx, op.id, pct)?;
                }
            }
        }
    }
    Ok(())
}
