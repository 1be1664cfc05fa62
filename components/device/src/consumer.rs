//! `device` follows `user`'s events to keep the owner copies on devices
//! (name, email, tenant), applying only newer versions, and an `owners`
//! table for devices created later.

use crate::repo;
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    USER_CREATED, USER_DELETED, USER_LOCKED, USER_ROLES_CHANGED, USER_UPDATED,
};
use platform::events::payload::Identity;
use platform::outbox::Envelope;
use platform::Problem;

/// What `device` consumes: `user`'s events.
pub struct Consumer;

impl Sources for Consumer {
    const SOURCES: &'static [Source] = &[Source {
        name: "user",
        feed_url: "http://user.spin.internal/api/v1/user/internal/events",
        handler: apply,
        resync,
    }];
}

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
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
    if platform::owners::upsert(db, &i, env.aggregate_version)? {
        repo::devices::update_owner(
            db,
            i.id,
            &i.display_name,
            &i.email,
            i.tenant_id,
            env.aggregate_version,
        )?;
    }
    Ok(())
}

/// Rebuilds every owner copy from `user`'s API (after the feed was pruned
/// past the cursor), and the owner fields on their devices.
fn resync(ctx: &platform::http::Ctx) -> Result<(), Problem> {
    platform::owners::resync(ctx, |db, i, version| {
        repo::devices::update_owner(db, i.id, &i.display_name, &i.email, i.tenant_id, version)?;
        Ok(())
    })
}
