//! The transactional outbox: a domain change and the events it implies are
//! written in one transaction ([`enqueue`]); right after commit the component
//! publishes what is pending to Redis ([`publish_pending`]), and a scheduler
//! job calls the same function for anything a crash left behind. Consumers
//! record each applied event id in the same transaction as the effect
//! ([`apply_once`]), so a redelivered event changes nothing.

use crate::db::{col, Db, DbError};
use serde::{Deserialize, Serialize};
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

/// Redis channel of a source's events: `cloudphone.events.<source>`.
pub fn channel(source: &str) -> String {
    format!("cloudphone.events.{source}")
}

/// An event as it travels: the envelope documented in `docs/events.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique event id.
    pub id: Uuid,
    /// Event type, e.g. `user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: i32,
    /// Producing component.
    pub source: String,
    /// Id of the changed aggregate.
    pub aggregate_id: String,
    /// Version of the aggregate after the change.
    pub aggregate_version: i64,
    /// When the change committed (RFC 3339, UTC).
    pub occurred_at: String,
    /// Type-specific payload.
    pub payload: serde_json::Value,
}

/// Writes an event into the outbox; call inside the transaction of the change.
pub fn enqueue(
    db: &Db,
    source: &str,
    event_type: &str,
    aggregate_id: &str,
    aggregate_version: i64,
    payload: &serde_json::Value,
) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    let payload = spin_sdk::pg4::jsonb(payload).map_err(|e| DbError::Other(e.to_string()))?;
    db.execute(
        "INSERT INTO outbox (id, source, event_type, schema_version, aggregate_id, aggregate_version, payload) \
         VALUES ($1, $2, $3, 1, $4, $5, $6)",
        &[
            ParameterValue::Uuid(id.to_string()),
            ParameterValue::Str(source.to_string()),
            ParameterValue::Str(event_type.to_string()),
            ParameterValue::Str(aggregate_id.to_string()),
            ParameterValue::Int64(aggregate_version),
            payload,
        ],
    )?;
    Ok(id)
}

/// Publishes up to `limit` unpublished events in commit order and marks them
/// published. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent
/// publishers never send the same event twice in one pass. Returns how many
/// were published.
pub fn publish_pending(db: &Db, redis_url: &str, limit: i64) -> Result<usize, crate::Problem> {
    db.transaction(|tx| {
        let rows = tx.query(
            "SELECT id, source, event_type, schema_version, aggregate_id, aggregate_version, \
                    to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), payload \
             FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[ParameterValue::Int64(limit)],
        )?;
        if rows.rows.is_empty() {
            return Ok(0);
        }
        let redis = spin_sdk::redis::Connection::open(redis_url)
            .map_err(|e| crate::Problem::unavailable(format!("redis: {e}")))?;
        for row in &rows.rows {
            let id: Uuid = col(row, 0, "outbox.id")?;
            let source: String = col(row, 1, "outbox.source")?;
            let payload: serde_json::Value = col(row, 7, "outbox.payload")?;
            let env = Envelope {
                id,
                source: source.clone(),
                event_type: col(row, 2, "outbox.event_type")?,
                schema_version: col(row, 3, "outbox.schema_version")?,
                aggregate_id: col(row, 4, "outbox.aggregate_id")?,
                aggregate_version: col(row, 5, "outbox.aggregate_version")?,
                occurred_at: col(row, 6, "outbox.created_at")?,
                payload,
            };
            let bytes = serde_json::to_vec(&env).expect("envelope serializes");
            redis
                .publish(&channel(&source), &bytes)
                .map_err(|e| crate::Problem::unavailable(format!("redis publish: {e}")))?;
            tx.execute(
                "UPDATE outbox SET published_at = (now() AT TIME ZONE 'UTC') WHERE id = $1",
                &[ParameterValue::Uuid(id.to_string())],
            )?;
        }
        Ok(rows.rows.len())
    })
}

/// Applies an event at most once: records its id in `processed_events` and
/// runs `effect` in the same transaction. Returns false if it was applied before.
pub fn apply_once<E>(
    db: &Db,
    env: &Envelope,
    effect: impl FnOnce(&Db) -> Result<(), E>,
) -> Result<bool, E>
where
    E: From<DbError>,
{
    db.transaction(|tx| {
        let inserted = tx.execute(
            "INSERT INTO processed_events (event_id, source, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[
                ParameterValue::Uuid(env.id.to_string()),
                ParameterValue::Str(env.source.clone()),
                ParameterValue::Str(env.event_type.clone()),
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        effect(tx)?;
        Ok(true)
    })
}
