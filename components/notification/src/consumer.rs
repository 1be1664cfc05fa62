//! Reacts to events with notifications: a new user gets a welcome, a hit
//! quota a warning, a password change a security notice. (Password-reset
//! links do not travel as events: `auth` hands them over by chaining, see
//! `handlers::deliveries`.) Each event is applied at
//! most once (platform::consumer), and each creates at most one
//! notification (`source_event_id` is unique).

use crate::repo::{self, New};
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    APP_APPROVED, APP_CHANGES_REQUESTED, APP_INSTALL_FAILED, APP_REJECTED,
    CREDENTIAL_PASSWORD_CHANGED, QUOTA_EXCEEDED, USER_CREATED,
};
use platform::events::payload::{AppInstall, AppReview};
use platform::outbox::Envelope;
use platform::Problem;
use serde_json::Value;
use uuid::Uuid;

/// What `notification` consumes: `user`'s, `auth`'s and `app`'s events.
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
        Source {
            name: "app",
            feed_url: "http://app.spin.internal/api/v1/app/internal/events",
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
    } else if let Some(new) = app_notice(env)? {
        new
    } else {
        return Ok(());
    };
    repo::insert(db, &new, Some(env.id))?;
    Ok(())
}

/// What the people concerned hear of `app`'s events: the owner of a
/// version of its review's outcome, the requester of an install that
/// failed.
fn app_notice(env: &Envelope) -> Result<Option<New<'static>>, HandlerError> {
    let t = env.event_type.as_str();
    if [&APP_APPROVED, &APP_REJECTED, &APP_CHANGES_REQUESTED]
        .iter()
        .any(|e| e.name == t)
    {
        let r: AppReview = env.payload().map_err(HandlerError::Rejected)?;
        let name = format!(
            "{} {}",
            r.label.as_deref().unwrap_or(&r.package),
            r.version_code
        );
        let said = r
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        let (kind, title, body) = if t == APP_APPROVED.name {
            (
                "app_approved",
                "Your app was approved",
                format!("{name} is in the public catalogue now{said}."),
            )
        } else if t == APP_REJECTED.name {
            (
                "app_rejected",
                "Your app was rejected",
                format!("{name} was not accepted into the public catalogue{said}."),
            )
        } else {
            ("app_changes_requested", "Changes requested for your app", format!("A reviewer asked for changes to {name}{said}. Upload a new version and submit it."))
        };
        return Ok(Some(New {
            user: r.owner_id,
            kind,
            title,
            body,
            data: serde_json::json!({"version_id": r.version_id, "application_id": r.application_id}),
        }));
    }
    if t == APP_INSTALL_FAILED.name {
        let i: AppInstall = env.payload().map_err(HandlerError::Rejected)?;
        return Ok(Some(New {
            user: i.requested_by,
            kind: "app_install_failed",
            title: "An app could not be installed",
            body: format!(
                "Installing {} on device {} failed: {}.",
                i.label.as_deref().unwrap_or(&i.package),
                i.device_id,
                i.error.as_deref().unwrap_or("no reason given")
            ),
            data: serde_json::json!({"install_id": i.install_id, "device_id": i.device_id, "version_id": i.version_id}),
        }));
    }
    Ok(None)
}

/// Notifications are not worth resending after a long outage: a pruned feed
/// only moves the cursor on.
fn resync(_ctx: &platform::http::Ctx) -> Result<(), Problem> {
    Ok(())
}
