//! `billing` follows `user`'s events to keep its copy of the users whose
//! money it holds (tenant, department, status: what data scopes and
//! postings are decided on), applying only newer versions; and `device`'s
//! run intervals (`device.run_started`, `device.run_ended`), the one
//! source metering charges from. Both are idempotent: a repeated or late
//! event changes nothing.

use crate::repo::metering::{self, Announced};
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    DEVICE_RUN_ENDED, DEVICE_RUN_STARTED, USER_CREATED, USER_DELETED, USER_LOCKED,
    USER_ROLES_CHANGED, USER_UPDATED,
};
use platform::events::payload::{DeviceRun, Identity};
use platform::outbox::Envelope;
use platform::Problem;

/// What `billing` consumes: `user`'s and `device`'s events.
pub struct Consumer;

impl Sources for Consumer {
    const SOURCES: &'static [Source] = &[
        Source {
            name: "user",
            feed_url: "http://user.spin.internal/api/v1/user/internal/events",
            handler: apply_user,
            resync: resync_users,
        },
        Source {
            name: "device",
            feed_url: "http://device.spin.internal/api/v1/device/internal/events",
            handler: apply_device,
            resync: resync_runs,
        },
    ];
}

fn apply_user(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    let user_events = [
        &USER_CREATED,
        &USER_UPDATED,
        &USER_DELETED,
        &USER_ROLES_CHANGED,
        &USER_LOCKED,
    ];
    if !user_events.iter().any(|t| env.is(t)) {
        return Ok(());
    }
    let i: Identity = env.payload().map_err(HandlerError::Rejected)?;
    platform::owners::upsert(db, &i, env.aggregate_version)?;
    Ok(())
}

/// A run interval as recorded, from `device`'s payload.
fn announced(r: DeviceRun) -> Result<Announced, String> {
    let time = |t: &str, f: &str| platform::input::rfc3339(t, f).map_err(|p| p.message);
    Ok(Announced {
        run_id: r.run_id,
        device_id: r.device_id,
        user_id: r.owner_id,
        tenant_id: r.tenant_id,
        spec: r.spec,
        started_at: time(&r.started_at, "started_at")?,
        ended_at: r
            .ended_at
            .as_deref()
            .map(|t| time(t, "ended_at"))
            .transpose()?,
        end_reason: r.end_reason,
    })
}

fn apply_device(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    if !(env.is(&DEVICE_RUN_STARTED) || env.is(&DEVICE_RUN_ENDED)) {
        return Ok(());
    }
    let run: DeviceRun = env.payload().map_err(HandlerError::Rejected)?;
    metering::record(db, &announced(run).map_err(HandlerError::Rejected)?)?;
    Ok(())
}

/// Rebuilds every user copy from `user`'s API (after the feed was pruned
/// past the cursor).
fn resync_users(ctx: &platform::http::Ctx) -> Result<(), Problem> {
    platform::owners::resync(ctx, |_, _, _| Ok(()))
}

/// Records every run interval from `device`'s list of them (after its feed
/// was pruned past the cursor), one page at a time, no connection held
/// while asking.
fn resync_runs(ctx: &platform::http::Ctx) -> Result<(), Problem> {
    platform::http::each_page(
        ctx,
        "device runs",
        |last: Option<&DeviceRun>| {
            let after = last.map_or(0, |r| r.run_id);
            format!(
                "http://device.spin.internal/api/v1/device/internal/runs?after={after}&limit=1000"
            )
        },
        |db, runs| {
            for run in runs {
                let run = announced(run).map_err(Problem::internal)?;
                metering::record(db, &run)?;
            }
            Ok(())
        },
    )
}
