//! `device` follows `user`'s events to keep the owner copies on devices
//! (name, email, tenant), applying only newer versions, and an `owners`
//! table for devices created later; and `billing`'s suspensions of
//! balances (`balance.suspended`, `balance.restored`): a suspended owner's
//! phones are stopped by the lifecycle job and may not start.

use crate::repo;
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    BALANCE_RESTORED, BALANCE_SUSPENDED, USER_CREATED, USER_DELETED, USER_LOCKED,
    USER_ROLES_CHANGED, USER_UPDATED,
};
use platform::events::payload::{BalanceSuspension, Identity};
use platform::outbox::Envelope;
use platform::Problem;

/// What `device` consumes: `user`'s events and `billing`'s suspensions.
pub struct Consumer;

impl Sources for Consumer {
    const SOURCES: &'static [Source] = &[
        Source {
            name: "user",
            feed_url: "http://user.spin.internal/api/v1/user/internal/events",
            handler: apply,
            resync,
        },
        Source {
            name: "billing",
            feed_url: "http://billing.spin.internal/api/v1/billing/internal/events",
            handler: apply_billing,
            resync: resync_billing,
        },
    ];
}

/// `balance.suspended` / `balance.restored`: recorded from a newer version
/// only (the lifecycle job stops the phones; starts are refused).
fn apply_billing(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    if !env.is(&BALANCE_SUSPENDED) && !env.is(&BALANCE_RESTORED) {
        return Ok(());
    }
    let s: BalanceSuspension = env.payload().map_err(HandlerError::Rejected)?;
    repo::suspensions::apply(
        db,
        s.user_id,
        &s.currency,
        s.suspended,
        env.aggregate_version,
    )?;
    Ok(())
}

/// Rebuilds the suspensions from `billing`'s API (after its feed was
/// pruned past the cursor), a page at a time, no connection held while
/// asking.
fn resync_billing(ctx: &platform::http::Ctx) -> Result<(), Problem> {
    #[derive(serde::Deserialize)]
    struct Item {
        user_id: uuid::Uuid,
        currency: String,
        suspended: bool,
        version: i64,
    }
    platform::http::each_page(
        ctx,
        "billing suspensions",
        |last: Option<&Item>| {
            let after = last.map_or(String::new(), |i| {
                format!("&after={}:{}", i.user_id, i.currency)
            });
            format!(
                "http://billing.spin.internal/api/v1/billing/internal/suspensions?limit=500{after}"
            )
        },
        |db, items| {
            for i in &items {
                repo::suspensions::apply(db, i.user_id, &i.currency, i.suspended, i.version)?;
            }
            Ok(())
        },
    )
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
