//! Reacts to events with notifications: a new user gets a welcome, a hit
//! quota a warning, a password change a security notice. (Password-reset
//! links do not travel as events: `auth` hands them over by chaining, see
//! `handlers::deliveries`.) Each event is applied at
//! most once (platform::consumer), and each creates at most one
//! notification (`source_event_id` is unique).

use crate::repo::{self, New};
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{CREDENTIAL_PASSWORD_CHANGED, QUOTA_EXCEEDED, USER_CREATED};
use platform::outbox::Envelope;
use platform::Problem;
use serde_json::Value;
use uuid::Uuid;

/// What `notification` consumes: `user`'s and `auth`'s events.
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
            name: "auth",
            feed_url: "http://auth.spin.internal/api/v1/auth/internal/events",
            handler: apply,
            resync,
        },
    ];
}

fn field<'a>(env: &'a Envelope, name: &str) -> Result<&'a str, HandlerError> {
    env.payload
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| HandlerError::Rejected(format!("{} without payload.{name}", env.event_type)))
}

fn user_of(env: &Envelope, name: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(field(env, name)?).map_err(|_| {
        HandlerError::Rejected(format!("{}: payload.{name} is not a uuid", env.event_type))
    })
}

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    let t = env.event_type.as_str();
    let new = if t == USER_CREATED.name {
        let name = env
            .payload
            .get("display_name")
            .and_then(Value::as_str)
            .unwrap_or("there");
        New {
            user: user_of(env, "id")?,
            kind: "welcome",
            title: "Welcome to cloudphone",
            body: format!("Hi {name}, your account is ready. Rent your first cloud phone from the devices page."),
            data: serde_json::json!({}),
        }
    } else if t == QUOTA_EXCEEDED.name {
        New {
            user: user_of(env, "user_id")?,
            kind: "quota_exceeded",
            title: "You reached a quota limit",
            body: format!(
                "{}. Ask your administrator for more, or free some resources.",
                field(env, "reason")?
            ),
            data: env.payload.clone(),
        }
    } else if t == CREDENTIAL_PASSWORD_CHANGED.name {
        New {
            user: user_of(env, "user_id")?,
            kind: "password_changed",
            title: "Your password was changed",
            body: "Your password was changed and every session signed out. If this was not you, reset it now.".into(),
            data: serde_json::json!({"how": env.payload.get("how")}),
        }
    } else {
        return Ok(());
    };
    repo::insert(db, &new, Some(env.id))?;
    Ok(())
}

/// Notifications are not worth resending after a long outage: a pruned feed
/// only moves the cursor on.
fn resync(_ctx: &platform::http::Ctx) -> Result<(), Problem> {
    Ok(())
}
