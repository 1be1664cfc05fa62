//! `user` follows `auth`'s events to complete the audit log with what happens
//! to credentials and API keys there: one audit entry per event, written
//! once (platform::consumer).

use crate::repo::{self, audit::Entry};
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    API_KEY_CREATED, API_KEY_REVOKED, CREDENTIAL_PASSWORD_CHANGED, CREDENTIAL_RESET_REQUESTED,
};
use platform::outbox::Envelope;
use platform::Problem;
use serde_json::Value;
use uuid::Uuid;

/// What `user` consumes: `auth`'s events.
pub struct Consumer;

impl Sources for Consumer {
    const SOURCES: &'static [Source] = &[Source {
        name: "auth",
        feed_url: "http://auth.spin.internal/api/v1/auth/internal/events",
        handler: apply,
        resync,
    }];
}

fn uuid_at(env: &Envelope, name: &str) -> Result<Uuid, HandlerError> {
    env.payload
        .get(name)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            HandlerError::Rejected(format!("{} without a uuid payload.{name}", env.event_type))
        })
}

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    let t = env.event_type.as_str();
    let (action, resource_type, resource_id, actor) =
        if t == API_KEY_CREATED.name || t == API_KEY_REVOKED.name {
            let action = if t == API_KEY_CREATED.name {
                "api_key.create"
            } else {
                "api_key.revoke"
            };
            (
                action,
                "api_key",
                uuid_at(env, "id")?,
                uuid_at(env, "actor_id")?,
            )
        } else if t == CREDENTIAL_PASSWORD_CHANGED.name {
            let user = uuid_at(env, "user_id")?;
            ("user.password_changed", "user", user, user)
        } else if t == CREDENTIAL_RESET_REQUESTED.name {
            let user = uuid_at(env, "user_id")?;
            ("user.password_reset_requested", "user", user, user)
        } else {
            return Ok(());
        };
    let owner = uuid_at(env, "user_id")?;
    let tenant = repo::users::find(db, owner)?.and_then(|p| p.tenant_id);
    let mut entry =
        Entry::new(None, action, resource_type, resource_id, tenant).after(&env.payload);
    entry.actor = Some((actor, "user"));
    entry.request_id = Some(format!("event:{}", env.id));
    repo::audit::record(db, &entry)?;
    Ok(())
}

/// Audit entries of a pruned feed cannot be recovered from `auth`'s API;
/// the cursor moves on (and the gap is visible as the prune in the log).
fn resync(_ctx: &platform::http::Ctx) -> Result<(), Problem> {
    Ok(())
}
