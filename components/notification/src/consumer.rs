//! Reacts to `user.*` events: a new user gets a welcome notification. Each
//! event is applied at most once (its id is recorded in `processed_events` in
//! the same transaction), so a redelivery changes nothing.

use platform::db::Db;
use platform::outbox::{apply_once, Envelope};

/// Handles one Redis message.
pub fn handle(message: &[u8]) -> Result<(), String> {
    let env: Envelope =
        serde_json::from_slice(message).map_err(|e| format!("not an event envelope: {e}"))?;
    if env.event_type != "user.created" {
        return Ok(());
    }
    let user_id = env
        .payload
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or("user.created without a valid payload.id")?;
    let name = env
        .payload
        .get("display_name")
        .and_then(|v| v.as_str())
        .unwrap_or("there")
        .to_string();
    let db = Db::open().map_err(|p| format!("{p:?}"))?;
    apply_once(&db, &env, |tx| {
        crate::repo::insert_welcome(tx, user_id, &name, env.id)
    })
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}
