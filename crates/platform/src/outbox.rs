//! The transactional outbox: a domain change and the events it implies are
//! written in one transaction ([`enqueue`]); right after commit the component
//! gives what is pending its feed position and publishes it to Redis
//! ([`publish_pending`]), and a scheduler job calls the same function for
//! anything a crash left behind. Consumers record each applied event id in
//! the same transaction as the effect ([`apply_once`]), so a redelivered
//! event changes nothing.
//!
//! Feed positions are assigned after commit, by [`sequence`], one
//! sequencing transaction at a time (they queue on the `feed_counter` row):
//! every position it hands out is higher than any visible before, and all of
//! them become visible at once. So a consumer's cursor can never pass an
//! event that commits later, however the producing transactions interleave
//! (the outbox's own `seq` is taken at insert, before commit, and cannot
//! promise that).

use crate::db::{col, Db, DbError};
use events::EventType;
pub use events::{channel, Envelope};
use serde::{Deserialize, Serialize};
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

/// Writes an event of a catalogue type into the outbox; call inside the
/// transaction of the change.
pub fn enqueue<P: Serialize>(
    db: &Db,
    event: &EventType,
    aggregate_id: &str,
    aggregate_version: i64,
    payload: &P,
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

/// [`enqueue`] for many aggregates at once, in one statement (a batch
/// job's events): `(aggregate id, aggregate version, payload)` each, in
/// that order.
pub fn enqueue_many<P: Serialize>(
    db: &Db,
    event: &EventType,
    items: &[(String, i64, P)],
) -> Result<(), DbError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(items.len());
    let mut aggregates = Vec::with_capacity(items.len());
    let mut versions = Vec::with_capacity(items.len());
    let mut payloads = Vec::with_capacity(items.len());
    for (aggregate, version, payload) in items {
        ids.push(Some(Uuid::new_v4().to_string()));
        aggregates.push(Some(aggregate.clone()));
        versions.push(Some(*version));
        payloads.push(Some(
            serde_json::to_string(payload).map_err(|e| DbError::Other(e.to_string()))?,
        ));
    }
    db.execute(
        "INSERT INTO outbox (id, source, event_type, schema_version, aggregate_id, aggregate_version, payload, created_at) \
         SELECT u.id::uuid, $1, $2, $3, u.aggregate, u.version, u.payload::jsonb, clock_timestamp() AT TIME ZONE 'UTC' \
           FROM unnest($4::text[], $5::text[], $6::bigint[], $7::text[]) WITH ORDINALITY \
                AS u(id, aggregate, version, payload, n) \
          ORDER BY u.n",
        &[
            ParameterValue::Str(event.source.to_string()),
            ParameterValue::Str(event.name.to_string()),
            ParameterValue::Int32(event.schema_version),
            ParameterValue::ArrayStr(ids),
            ParameterValue::ArrayStr(aggregates),
            ParameterValue::ArrayInt64(versions),
            ParameterValue::ArrayStr(payloads),
        ],
    )?;
    Ok(())
}

const ENVELOPE_COLUMNS: &str =
    "id, source, event_type, schema_version, aggregate_id, aggregate_version, \
     to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), payload, feed_seq";

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
    /// Events after the cursor, in feed order, with their feed position.
    pub events: Vec<FeedEvent>,
    /// The cursor to ask with next (the last event's position, or the request's `after`).
    pub next_after: i64,
}

/// An event with its position in the source's feed.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Position in the feed.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// The feed of this database's outbox after position `after`: events that
/// have a feed position ([`sequence`]), in position order. Returns
/// `Err(pruned_through)` when events after `after` were pruned by
/// retention: the consumer must resync.
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
            "SELECT {ENVELOPE_COLUMNS} FROM outbox WHERE feed_seq > $1 ORDER BY feed_seq LIMIT $2"
        ),
        &[ParameterValue::Int64(after), ParameterValue::Int64(limit)],
    )?;
    let mut events = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        events.push(FeedEvent {
            seq: col(row, 8, "outbox.feed_seq")?,
            envelope: envelope(row)?,
        });
    }
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Ok(FeedPage { events, next_after }))
}

/// Gives up to `limit` committed events without a feed position the next
/// positions, in insertion order. Sequencing transactions queue on the
/// `feed_counter` row, and the numbering statement runs after that lock is
/// held, so its snapshot sees every earlier sequencing transaction's work.
/// Returns how many were numbered.
pub fn sequence(db: &Db, limit: i64) -> Result<u64, DbError> {
    db.transaction(|tx| {
        tx.query(
            "SELECT last_feed_seq FROM feed_counter WHERE id = 1 FOR UPDATE",
            &[],
        )?;
        let numbered = tx.query(
            "WITH todo AS (SELECT id, row_number() OVER (ORDER BY seq) AS rn FROM outbox \
                 WHERE feed_seq IS NULL ORDER BY seq LIMIT $1), \
             base AS (SELECT last_feed_seq FROM feed_counter WHERE id = 1), \
             done AS (UPDATE outbox o SET feed_seq = base.last_feed_seq + todo.rn FROM todo, base \
                 WHERE o.id = todo.id RETURNING o.feed_seq) \
             SELECT count(*), coalesce(max(feed_seq), 0) FROM done",
            &[ParameterValue::Int64(limit)],
        )?;
        let n: i64 = col(&numbered.rows[0], 0, "count")?;
        let max: i64 = col(&numbered.rows[0], 1, "max")?;
        if n > 0 {
            tx.execute(
                "UPDATE feed_counter SET last_feed_seq = $1 WHERE id = 1",
                &[ParameterValue::Int64(max)],
            )?;
        }
        Ok(n as u64)
    })
}

/// Deletes events that have a feed position, and applied-event records, older than `days`,
/// remembering how far the feed was pruned. Returns rows deleted.
pub fn prune(db: &Db, days: i32) -> Result<u64, DbError> {
    db.transaction(|tx| {
        let gone = tx.query(
            "WITH gone AS (DELETE FROM outbox WHERE feed_seq IS NOT NULL \
                 AND created_at < (now() AT TIME ZONE 'UTC') - make_interval(days => $1) RETURNING feed_seq) \
             SELECT count(*), coalesce(max(feed_seq), 0) FROM gone",
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

/// The signer of this component's events (its component key's event key).
fn signer(source: &str) -> Result<events::EventSigner, crate::Problem> {
    let key = access::service::ComponentKey::parse(&crate::var("component_key")?)
        .map_err(|e| crate::Problem::internal(e.to_string()))?;
    Ok(events::EventSigner::from_seed(
        source,
        key.event_signing_seed(),
    ))
}

/// Numbers what is pending ([`sequence`]), then publishes up to `limit`
/// numbered, unpublished events in feed order, signed, and marks them
/// published. Publishing rows are claimed with `FOR UPDATE SKIP LOCKED`, so
/// concurrent publishers never send the same event twice in one pass; if
/// Redis is down the events keep their positions and the feed serves them.
/// Returns how many were published.
pub fn publish_pending(db: &Db, redis_url: &str, limit: i64) -> Result<usize, crate::Problem> {
    sequence(db, limit)?;
    db.transaction(|tx| {
        let rows = tx.query(
            &format!("SELECT {ENVELOPE_COLUMNS} FROM outbox WHERE feed_seq IS NOT NULL AND published_at IS NULL \
                      ORDER BY feed_seq LIMIT $1 FOR UPDATE SKIP LOCKED"),
            &[ParameterValue::Int64(limit)],
        )?;
        if rows.rows.is_empty() {
            return Ok(0);
        }
        let redis = spin_sdk::redis::Connection::open(redis_url)
            .map_err(|e| crate::Problem::unavailable(format!("redis: {e}")))?;
        let mut signer: Option<events::EventSigner> = None;
        for row in &rows.rows {
            let env = envelope(row)?;
            if signer.is_none() {
                signer = Some(self::signer(&env.source)?);
            }
            let message = signer.as_ref().expect("set above").sign(&env);
            redis
                .publish(&channel(&env.source), &message)
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
