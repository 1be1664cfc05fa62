//! Reacts to events with notifications: every event type the catalogue
//! marks as meant for people (`Audience::People`) is told to the user its
//! payload names (the template's `recipient`), written from its template
//! (`templates`) in their locale (kept from `user.*` events in
//! `recipients`, with their address). (Password-reset links do not travel as
//! events: `auth` hands them over by chaining, see `handlers::deliveries`.)
//! Each event is applied at most once (platform::consumer), and each
//! creates at most one notification (`source_event_id` is unique).

use crate::repo::{self, New};
use crate::templates;
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{Audience, CATALOGUE};
use platform::outbox::Envelope;
use platform::Problem;
use repo::Recipient;
use serde_json::Value;
use uuid::Uuid;

/// What `notification` consumes: the feeds of every component whose
/// events people hear of.
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
        Source {
            name: "device",
            feed_url: "http://device.spin.internal/api/v1/device/internal/events",
            handler: apply,
            resync,
        },
        Source {
            name: "billing",
            feed_url: "http://billing.spin.internal/api/v1/billing/internal/events",
            handler: apply,
            resync,
        },
    ];
}

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    let Some(event) = CATALOGUE.iter().find(|e| e.name == env.event_type) else {
        return Ok(());
    };
    // Every `user.*` event carries the user's identity: keep their copy
    // (language, address) first, so their own notice is in their language.
    let identity = if event.source == "user" && event.name.starts_with("user.") {
        let who: Recipient = env.payload().map_err(HandlerError::Rejected)?;
        repo::keep_recipient(db, &who, env.aggregate_version)?;
        Some(who)
    } else {
        None
    };
    let Audience::People(category) = event.audience else {
        return Ok(());
    };
    let Some(t) = templates::defaults().get(event.name) else {
        return Ok(());
    };
    let field = t.recipient.as_deref().unwrap_or("user_id");
    let user = env
        .payload
        .get(field)
        .and_then(Value::as_str)
        .and_then(|u| Uuid::parse_str(u).ok())
        .ok_or_else(|| {
            HandlerError::Rejected(format!(
                "{} without a user in payload.{field}",
                env.event_type
            ))
        })?;
    let locale = match &identity {
        Some(who) if who.id == user => Some(who.locale.clone()),
        _ => repo::locale_of(db, user)?,
    };
    // A payload lacking a field its template names still tells the user
    // (the value blank), and says so in the log; a template that cannot
    // render at all is a defect: the event goes to the dead letters, to
    // be replayed once it is mended.
    let (r, lacking) = templates::render_for_delivery(t, locale.as_deref(), &env.payload)
        .map_err(|e| HandlerError::Rejected(format!("{}: template: {e}", env.event_type)))?;
    if let Some(why) = lacking {
        eprintln!(
            "{}",
            serde_json::json!({"level": "warn", "msg": "a notification's payload lacks what its template names",
                               "event_type": env.event_type, "event_id": env.id, "cause": why})
        );
    }
    repo::insert(
        db,
        &New {
            user,
            kind: event.name,
            category: category.name(),
            locale: &r.locale,
            title: &r.title,
            body: r.body,
            data: env.payload.clone(),
        },
        Some(env.id),
    )?;
    Ok(())
}

/// Notifications are not worth resending after a long outage: a pruned feed
/// only moves the cursor on.
fn resync(_ctx: &platform::http::Ctx) -> Result<(), Problem> {
    Ok(())
}
