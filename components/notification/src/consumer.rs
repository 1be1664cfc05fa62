//! Reacts to `user.*` events: a new user gets a welcome notification. Each
//! event is applied at most once (platform::consumer), so a redelivery or a
//! catch-up of an event already seen changes nothing.

use platform::consumer::{HandlerError, Source};
use platform::db::Db;
use platform::events::USER_CREATED;
use platform::outbox::Envelope;
use platform::Problem;

/// The sources `notification` consumes.
pub const SOURCES: &[Source] = &[Source {
    name: "user",
    feed_url: "http://user.spin.internal/api/v1/user/internal/events",
    handler: apply,
    resync,
}];

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    if env.event_type != USER_CREATED.name {
        return Ok(());
    }
    let user_id = env
        .payload
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or_else(|| HandlerError::Rejected("user.created without a valid payload.id".into()))?;
    let name = env
        .payload
        .get("display_name")
        .and_then(|v| v.as_str())
        .unwrap_or("there");
    crate::repo::insert_welcome(db, user_id, name, env.id)?;
    Ok(())
}

/// Welcome notifications are not worth resending after a long outage: a
/// pruned feed only moves the cursor on.
fn resync(
    _db: &Db,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Problem>> + '_>> {
    Box::pin(async { Ok(()) })
}
