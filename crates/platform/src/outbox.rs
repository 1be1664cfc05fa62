//! The transactional outbox: a domain change and the events it implies are
//! written in one transaction ([`enqueue`]); right after commit the component
//! publishes what is pending to Redis ([`publish_pending`]), and a scheduler
//! job calls the same function for anything a crash left behind. Consumers
//! record each applied event id in the same transaction as the effect
//! ([`apply_once`]), so a redelivered event changes nothing.

use crate::db::{col, Db, DbError};
use crate::events::EventType;
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

/// Writes an event of a catalogue type into the outbox; call inside the
/// transaction of the change.
pub fn enqueue(
    db: &Db,
    event: &EventType,
    aggregate_id: &str,
    aggregate_version: i64,
    payload: &serde_json::Value,
) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    let payload = spin_sdk::pg4::jsonb(payload).map_err(|e| DbError::Other(e.to_string()))?;
    db.execute(
        "INSERT INTO outbox (id, source, event_type, schema_version, aggregate_id, aggregate_version, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp() AT TIME ZONE 'UTC')",
        &[
            ParameterValue::Uuid(id.to_string()),
            ParameterValue::Str(event.source.to_string()),
            ParameterValue::Str(event.name.to_string()),
            ParameterValue::Int32(event.schema_version),
            ParameterValue::Str(aggregate_id.to_string()),
            ParameterValue::Int64(aggregate_version),
            payload,
        ],
    )?;
    Ok(id)
}

const ENVELOPE_COLUMNS: &str =
    "id, source, event_type, schema_version, aggregate_id, aggregate_version, \
     to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), payload, seq";

fn envelope(row: &[spin_sdk::pg4::DbValue]) -> Result<Envelope, DbError> {
    Ok(Envelope {
        id: col(row, 0, "outbox.id")?,
        source: col(row, 1, "outbox.source")?,
        event_type: col(row, 2, "outbox.event_type")?,
        schema_version: col(row, 3, "outbox.schema_version")?,
        aggregate_id: col(row, 4, "outbox.aggregate_id")?,
        aggregate_version: col(row, 5, "outbox.aggregate_version")?,
        occurred_at: col(row, 6, "outbox.created_at")?,
        payload: col(row, 7, "outbox.payload")?,
    })
}

/// One page of a source's event feed.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedPage {
    /// Events after the cursor, in commit order, with their feed position.
    pub events: Vec<FeedEvent>,
    /// The cursor to ask with next (the last event's `seq`, or the request's `after`).
    pub next_after: i64,
}

/// An event with its position in the source's feed.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Position in the feed (the outbox sequence).
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// The feed of this database's outbox after position `after`. Only events of
/// transactions older than every running one are served: a transaction that
/// took a lower `seq` but commits later would otherwise be skipped by a
/// cursor that had already moved past it. Returns `Err(pruned_through)` when
/// events after `after` were pruned by retention: the consumer must resync.
pub fn feed(db: &Db, after: i64, limit: i64) -> Result<Result<FeedPage, i64>, DbError> {
    let pruned = db.query(
        "SELECT pruned_through_seq FROM outbox_retention WHERE id = 1",
        &[],
    )?;
    let pruned_through: i64 = match pruned.rows.first() {
        Some(r) => col(r, 0, "outbox_retention.pruned_through_seq")?,
        None => 0,
    };
    if after < pruned_through {
        return Ok(Err(pruned_through));
    }
    let rows = db.query(
        &format!(
            "SELECT {ENVELOPE_COLUMNS} FROM outbox \
             WHERE seq > $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY seq LIMIT $2"
        ),
        &[ParameterValue::Int64(after), ParameterValue::Int64(limit)],
    )?;
    let mut events = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        events.push(FeedEvent {
            seq: col(row, 8, "outbox.seq")?,
            envelope: envelope(row)?,
        });
    }
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Ok(FeedPage { events, next_after }))
}

/// Deletes published events and applied-event records older than `days`,
/// remembering how far the feed was pruned. Returns rows deleted.
pub fn prune(db: &Db, days: i32) -> Result<u64, DbError> {
    db.transaction(|tx| {
        let gone = tx.query(
            "WITH gone AS (DELETE FROM outbox WHERE published_at IS NOT NULL \
                 AND created_at < (now() AT TIME ZONE 'UTC') - make_interval(days => $1) RETURNING seq) \
             SELECT count(*), coalesce(max(seq), 0) FROM gone",
            &[ParameterValue::Int32(days)],
        )?;
        let n: i64 = col(&gone.rows[0], 0, "count")?;
        let max: i64 = col(&gone.rows[0], 1, "max")?;
        tx.execute(
            "INSERT INTO outbox_retention (id, pruned_through_seq) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET pruned_through_seq = greatest(outbox_retention.pruned_through_seq, $1)",
            &[ParameterValue::Int64(max)],
        )?;
        let m = tx.execute(
            "DELETE FROM processed_events WHERE processed_at < (now() AT TIME ZONE 'UTC') - make_interval(days => $1)",
            &[ParameterValue::Int32(days)],
        )?;
        Ok(n as u64 + m)
    })
}

/// Publishes up to `limit` unpublished events in commit order and marks them
/// published. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent
/// publishers never send the same event twice in one pass. Returns how many
/// were published.
pub fn publish_pending(db: &Db, redis_url: &str, limit: i64) -> Result<usize, crate::Problem> {
    db.transaction(|tx| {
        let rows = tx.query(
            &format!("SELECT {ENVELOPE_COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"),
            &[ParameterValue::Int64(limit)],
        )?;
        if rows.rows.is_empty() {
            return Ok(0);
        }
        let redis = spin_sdk::redis::Connection::open(redis_url)
            .map_err(|e| crate::Problem::unavailable(format!("redis: {e}")))?;
        let key = crate::var("internal_token")?;
        for row in &rows.rows {
            let env = envelope(row)?;
            let mut signed = serde_json::to_value(&env).expect("envelope serializes");
            signed[access::mac::SIG] = access::mac::sign_event(&key, &signed).into();
            let bytes = serde_json::to_vec(&signed).expect("envelope serializes");
            redis
                .publish(&channel(&env.source), &bytes)
                .map_err(|e| crate::Problem::unavailable(format!("redis publish: {e}")))?;
            tx.execute(
                "UPDATE outbox SET published_at = (now() AT TIME ZONE 'UTC') WHERE id = $1",
                &[ParameterValue::Uuid(env.id.to_string())],
            )?;
        }
        Ok(rows.rows.len())
    })
}

/// Publishes right after a commit: the fast path. If it fails the events
/// stay pending and the scheduler's relay job publishes them, so the error
/// is only logged.
pub fn publish_after_commit(db: &Db, request_id: &str) {
    let result = crate::var("redis_url").and_then(|url| publish_pending(db, &url, 100));
    if let Err(p) = result {
        eprintln!(
            "{}",
            serde_json::json!({"level": "warn", "request_id": request_id, "msg": "outbox publish deferred", "cause": p.internal})
        );
    }
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
            "INSERT INTO processed_events (event_id, source, event_type, processed_at) \
             VALUES ($1, $2, $3, clock_timestamp() AT TIME ZONE 'UTC') ON CONFLICT DO NOTHING",
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
