//! `auth` follows `user`'s events to keep its copy of each identity (email,
//! status, tenant, department, roles and effective access), so that issuing
//! a token needs no call to `user`. A change is applied only if its
//! aggregate version is newer than the copy's. When a user is locked,
//! deleted, or their tenant suspended, their sessions and API keys end; a
//! deleted user's credentials are dropped so the email can register again.

use crate::repo;
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    USER_CREATED, USER_DELETED, USER_LOCKED, USER_ROLES_CHANGED, USER_UPDATED,
};
use platform::events::payload::Identity;
use platform::outbox::Envelope;
use platform::Problem;

/// What `auth` consumes: `user`'s events.
pub struct Consumer;

impl Sources for Consumer {
    const SOURCES: &'static [Source] = &[Source {
        name: "user",
        feed_url: "http://user.spin.internal/api/v1/user/internal/events",
        handler: apply,
        resync,
    }];
}

const USER_EVENTS: &[&platform::events::EventType] = &[
    &USER_CREATED,
    &USER_UPDATED,
    &USER_DELETED,
    &USER_ROLES_CHANGED,
    &USER_LOCKED,
];

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    if !USER_EVENTS.iter().any(|t| env.is(t)) {
        return Ok(());
    }
    let identity: Identity = env.payload().map_err(HandlerError::Rejected)?;
    if identity.id.to_string() != env.aggregate_id {
        return Err(HandlerError::Rejected(
            "payload id differs from aggregate_id".into(),
        ));
    }
    if repo::upsert_identity(db, &identity, env.aggregate_version)? {
        end_access_if_needed(db, &identity)?;
    }
    Ok(())
}

/// Ends sessions and API keys of an identity that may no longer sign in.
fn end_access_if_needed(db: &Db, i: &Identity) -> Result<(), platform::db::DbError> {
    if i.status != "active" || !i.tenant_active {
        repo::revoke_user_tokens(db, i.id)?;
        repo::keys::revoke_all(db, i.id)?;
    }
    if i.status == "deleted" {
        repo::delete_credentials(db, i.id)?;
    }
    Ok(())
}

/// Rebuilds every identity from `user`'s API (after the feed was pruned).
fn resync(ctx: &platform::http::Ctx) -> Result<(), Problem> {
    platform::owners::each_identity(ctx, |db, i, version| {
        if repo::upsert_identity(db, i, version)? {
            end_access_if_needed(db, i)?;
        }
        Ok(())
    })
}
