//! Automatic snapshots, retention and the storage a snapshot costs.
//!
//! A device's snapshot policy (`GET`/`PUT /devices/:id/snapshot-policy`)
//! says how often a snapshot is taken on its own and which snapshots
//! retention keeps. One job (`POST /internal/snapshots/maintain`) does
//! what is due, reading only due rows through their indexes: backups whose
//! time has come, snapshots whose retention time has passed, and storage
//! charges to make or give back in `user`.
//!
//! The charge: a snapshot that became ready is charged its measured size
//! (whole GiB, at least 1) against its owner's storage quota, under the
//! reservation key `snapshot:<id>` (a retry finds the same reservation).
//! When there is no room, the snapshot is refused: `snapshot.failed` with
//! the reason, and retention deletes it at once. A deleted snapshot's
//! charge is given back.

use super::snapshots::{self, Recorded, Taking};
use super::{db as open_db, dispatch, Call};
use crate::domain::snapshot_policy::PolicyInput;
use crate::domain::status::Desired;
use crate::error::{Error, Result};
use crate::repo::{self, snapshot_policies::StoredPolicy, snapshots::Snapshot};
use events::catalogue::SNAPSHOT_FAILED;
use platform::http::Ctx;
use spin_sdk::http::Response;
use uuid::Uuid;

/// Rows of each kind one run of the job takes at most.
const BATCH: i64 = 50;
/// How long a claimed backup is not due again (a run that dies leaves it
/// due after this).
const LEASE_SECS: i64 = 300;

/// Refuses a policy (a device's or a template's) with an interval or age
/// shorter than the deployment allows.
pub(super) fn check_min(p: crate::domain::snapshot_policy::Policy) -> Result<()> {
    let min = min_secs();
    match p.shortest_secs() {
        Some(s) if s < min => Err(Error::Invalid(format!(
            "snapshot intervals and ages must be at least {min} seconds"
        ))),
        _ => Ok(()),
    }
}

/// The shortest backup interval and retention age (Spin variable
/// `device_min_backup_secs`, default 3600).
fn min_secs() -> i64 {
    platform::var("device_min_backup_secs")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &i64| *n > 0)
        .unwrap_or(3600)
}

/// `GET /devices/:id/snapshot-policy` (`device:read`).
pub fn get_policy(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = open_db()?;
    let d = super::devices::visible(&db, caller, call.id("id", "device")?)?;
    let p = match repo::snapshot_policies::find(&db, d.id)? {
        Some(p) => p,
        None => StoredPolicy::none(d.id, &d.updated_at),
    };
    Ok(platform::http::json(200, &p))
}

/// `PUT /devices/:id/snapshot-policy` (`device:control`): the whole policy;
/// retention applies at once to the snapshots the device has.
pub fn put_policy(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    super::devices::visible(&open_db()?, caller, id)?;
    let input: PolicyInput = call.body()?;
    let policy = input.parse(min_secs(), snapshots::MAX_PER_DEVICE)?;
    let db = open_db()?;
    let stored = db.transaction(|tx| {
        let d = repo::devices::lock(tx, id)?.ok_or(Error::NotFound("device"))?;
        if d.desired() == Desired::Deleted {
            return Err(Error::Conflict("the device is deleted".into()));
        }
        let stored = repo::snapshot_policies::put(tx, id, &policy)?;
        repo::snapshots::apply_retention(tx, id)?;
        Ok(stored)
    })?;
    Ok(platform::http::json(200, &stored))
}

/// What one run of the job did.
#[derive(Default, serde::Serialize)]
struct Done {
    backups: usize,
    skipped: usize,
    expired: usize,
    charged: usize,
    refused: usize,
    released: usize,
    deferred: usize,
}

/// `POST /internal/snapshots/maintain` (scheduler).
pub fn job(call: &Call) -> Result<Response> {
    let ctx = call.ctx;
    let mut done = Done::default();
    let mut nodes = std::collections::BTreeSet::new();
    let defer = |what: &str, id: Uuid, e: Error, done: &mut Done| {
        done.deferred += 1;
        let p: platform::Problem = e.into();
        eprintln!(
            "{}",
            serde_json::json!({"level": "warn", "request_id": ctx.request_id, "msg": format!("snapshot {what} deferred"), "id": id, "cause": p.internal})
        );
    };

    let due = repo::snapshot_policies::claim_due(&open_db()?, BATCH, LEASE_SECS)?;
    for device in due {
        match backup(device) {
            Ok(Ok(node)) => {
                done.backups += 1;
                nodes.insert(node);
            }
            Ok(Err(())) => done.skipped += 1,
            Err(e) => defer("backup", device, e, &mut done),
        }
    }

    // Charges first: a refused snapshot expires now and is deleted below.
    // (Each list is read, and its connection dropped, before the loop: no
    // connection may be held across a chained call.)
    let charges = repo::snapshots::quota_due(&open_db()?, BATCH)?;
    for s in charges {
        let outcome = match s.quota_state.as_str() {
            "pending" => charge(ctx, &s),
            _ => release(ctx, &s),
        };
        match outcome {
            Ok(Charge::Held) => done.charged += 1,
            Ok(Charge::Refused) => done.refused += 1,
            Ok(Charge::Released) => done.released += 1,
            Err(e) => {
                // To the back of the queue, so that one that keeps failing
                // does not hold up the others.
                repo::snapshots::touch_quota(&open_db()?, s.id)?;
                defer("charge", s.id, e, &mut done)
            }
        }
    }

    let expired = repo::snapshots::expired(&open_db()?, BATCH)?;
    for id in expired {
        let db = open_db()?;
        let recorded = db.transaction(|tx| {
            // Still expired under the lock (a new policy may have kept it).
            if !repo::snapshots::lock_expired(tx, id)? {
                return Ok(None);
            }
            snapshots::start_delete(tx, id, Uuid::new_v4(), None, None).map(Some)
        });
        match recorded {
            Ok(Some(Recorded::New(_, node))) => {
                done.expired += 1;
                nodes.insert(node);
            }
            Ok(_) => {}
            Err(e) => defer("expiry", id, e, &mut done),
        }
    }

    for node in &nodes {
        dispatch::publish_commands_after_commit(ctx, node);
    }
    platform::outbox::publish_after_commit(&open_db()?, &ctx.request_id);
    Ok(platform::http::json(200, &done))
}

/// Takes a device's due backup: `Ok(node)` when its operation was queued,
/// `Err(())` when it was skipped (the reason is kept on the policy).
fn backup(device: Uuid) -> Result<std::result::Result<String, ()>> {
    let db = open_db()?;
    let name = format!("auto {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S"));
    let outcome = db.transaction(|tx| {
        let Some(d) = repo::devices::find(tx, device)? else {
            return Ok(Err(()));
        };
        if d.desired() == Desired::Deleted {
            repo::snapshot_policies::stop(tx, device)?;
            return Ok(Err(()));
        }
        let taking = Taking {
            device,
            snapshot: Uuid::new_v4(),
            operation: Uuid::new_v4(),
            requested_by: None,
            key: None,
            name: &name,
            description: "taken by the device's snapshot policy",
            origin: "scheduled",
        };
        // A device that cannot be snapshotted now (on its way between
        // running and stopped, or full) is skipped until the next interval,
        // with the reason on its policy. Those refusals come before any
        // write, so the transaction goes on.
        match snapshots::start_take(tx, &taking) {
            Ok(Recorded::New(_, node)) => {
                repo::snapshot_policies::backed_up(tx, device, None)?;
                Ok(Ok(node))
            }
            Ok(Recorded::Repeat(_)) => Ok(Err(())),
            Err(Error::Conflict(why)) => {
                repo::snapshot_policies::backed_up(tx, device, Some(&why))?;
                Ok(Err(()))
            }
            Err(e) => Err(e),
        }
    })?;
    Ok(outcome)
}

enum Charge {
    Held,
    Refused,
    Released,
}

/// The reservation of a snapshot's storage in `user`: made once, and found
/// again by its key `snapshot:<id>`.
fn reserve_storage(ctx: &Ctx, s: &Snapshot) -> Result<dispatch::Reservation> {
    let gb = s.storage_gb.unwrap_or(1).max(1);
    dispatch::reserve(
        ctx,
        s.owner_id,
        &format!("snapshot:{}", s.id),
        &serde_json::json!({"storage_gb": gb}),
    )
}

/// Charges a ready snapshot to its owner's storage quota, or refuses it
/// when there is no room. An owner who cannot hold resources now (locked,
/// or in a suspended tenant) is not a reason to delete their data: the
/// charge waits.
fn charge(ctx: &Ctx, s: &Snapshot) -> Result<Charge> {
    match reserve_storage(ctx, s) {
        Ok(r) => {
            dispatch::settle_reservation(ctx, r.id, true)?;
            // Charged, it counts for retention: it may push an older one out.
            open_db()?.transaction(|tx| {
                if repo::snapshots::set_quota(tx, s.id, "pending", "held", Some(r.id))? {
                    repo::snapshots::apply_retention(tx, s.device_id)?;
                }
                Ok::<_, Error>(())
            })?;
            Ok(Charge::Held)
        }
        Err(Error::QuotaExceeded(why)) => {
            let db = open_db()?;
            db.transaction(|tx| {
                match repo::snapshots::lock(tx, s.id)? {
                    Some(now) if now.quota_state == "pending" => {}
                    _ => return Ok(()),
                }
                repo::snapshots::refuse(tx, s.id, &format!("storage quota: {why}"))?;
                if let Some(after) = repo::snapshots::find(tx, s.id)? {
                    platform::outbox::enqueue(
                        tx,
                        &SNAPSHOT_FAILED,
                        &after.id.to_string(),
                        after.version,
                        &after.event(),
                    )?;
                }
                Ok::<_, Error>(())
            })?;
            Ok(Charge::Refused)
        }
        Err(e) => Err(e),
    }
}

/// Gives a deleted snapshot's charge back. A charge whose reservation was
/// never recorded (a crash between reserving and recording) is found by
/// its key.
fn release(ctx: &Ctx, s: &Snapshot) -> Result<Charge> {
    let reservation = match s.reservation_id {
        Some(r) => Some(r),
        None => {
            match reserve_storage(ctx, s) {
                Ok(r) => Some(r.id),
                // No reservation under the key, and no room for one:
                // nothing was ever held.
                Err(Error::QuotaExceeded(_)) => None,
                Err(e) => return Err(e),
            }
        }
    };
    if let Some(r) = reservation {
        dispatch::settle_reservation(ctx, r, false)?;
    }
    repo::snapshots::set_quota(&open_db()?, s.id, "releasing", "released", reservation)?;
    Ok(Charge::Released)
}
