//! Consuming events with nothing lost, nothing applied twice, nothing out of
//! order. Pub/sub is the fast path ([`on_message`]); the guarantee is the
//! source's feed, which [`catch_up`] pulls from a cursor kept per source in
//! the consumer's own database (run by the scheduler every few seconds, so a
//! consumer that was down catches up within one tick of starting). Each event
//! is applied in one transaction with the record of its id
//! ([`crate::outbox::apply_once`]); handlers that keep redundant copies apply
//! an update only when its aggregate version is newer than the one they hold.
//! A failed event is recorded in `event_failures` and retried with backoff by
//! [`retry_due`]; after `max_attempts` it is parked (a dead letter), visible
//! and replayable through the component's admin endpoints, and it never
//! blocks the events after it.

use crate::db::{col, timestamp, Db, DbError};
use crate::outbox::{apply_once, Envelope, FeedPage};
use crate::Problem;
use serde::Serialize;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Why a handler could not apply an event.
#[derive(Debug)]
pub enum HandlerError {
    /// The event cannot be applied as it is (bad payload, unknown reference).
    Rejected(String),
    /// A database error; retried.
    Db(DbError),
}

impl From<DbError> for HandlerError {
    fn from(e: DbError) -> Self {
        HandlerError::Db(e)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Rejected(m) => write!(f, "rejected: {m}"),
            HandlerError::Db(e) => write!(f, "database: {e:?}"),
        }
    }
}

/// Applies one event inside the consumer's transaction.
pub type Handler = fn(&Db, &Envelope) -> Result<(), HandlerError>;

/// Rebuilds a consumer's copies from the source's API after the feed was
/// pruned past its cursor (opening its own database between the calls: no
/// connection may be held across a chained call).
pub type Resync = fn(&crate::http::Ctx) -> Result<(), Problem>;

/// A source this consumer follows.
pub struct Source {
    /// Producing component, e.g. `user`.
    pub name: &'static str,
    /// Its internal feed, e.g. `http://user.spin.internal/api/v1/user/internal/events`.
    pub feed_url: &'static str,
    /// How to apply its events.
    pub handler: Handler,
    /// How to rebuild from its API when the feed no longer reaches back to the cursor.
    pub resync: Resync,
}

/// What happened to a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now.
    Applied,
    /// Applied before; nothing changed.
    Duplicate,
    /// Failed; recorded for retry or parked.
    Failed,
}

fn max_attempts() -> i32 {
    crate::var("event_max_attempts")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5)
}

/// Applies an event once, or records its failure. Errs only when the failure
/// itself cannot be recorded (the database is gone): the caller stops then.
pub fn deliver(db: &Db, env: &Envelope, handler: Handler) -> Result<Outcome, Problem> {
    match apply_once(db, env, |tx| handler(tx, env)) {
        Ok(true) => {
            db.execute(
                "DELETE FROM event_failures WHERE event_id = $1",
                &[P::Uuid(env.id.to_string())],
            )?;
            Ok(Outcome::Applied)
        }
        Ok(false) => Ok(Outcome::Duplicate),
        Err(HandlerError::Db(DbError::Unavailable(m))) => Err(Problem::unavailable(m)),
        Err(e) => {
            record_failure(db, env, &e.to_string())?;
            Ok(Outcome::Failed)
        }
    }
}

fn record_failure(db: &Db, env: &Envelope, error: &str) -> Result<(), DbError> {
    let envelope = spin_sdk::pg4::jsonb(env).map_err(|e| DbError::Other(e.to_string()))?;
    // Backoff 2^attempts seconds, capped at 5 minutes; parked at the limit.
    db.execute(
        "INSERT INTO event_failures (event_id, source, event_type, envelope, attempts, last_error, next_attempt_at, parked) \
         VALUES ($1, $2, $3, $4, 1, $5, (now() AT TIME ZONE 'UTC') + interval '1 second', 1 >= $6) \
         ON CONFLICT (event_id) DO UPDATE SET attempts = event_failures.attempts + 1, last_error = $5, \
           next_attempt_at = (now() AT TIME ZONE 'UTC') + least(interval '5 minutes', make_interval(secs => power(2, event_failures.attempts + 1))), \
           parked = event_failures.attempts + 1 >= $6, updated_at = now() AT TIME ZONE 'UTC'",
        &[
            P::Uuid(env.id.to_string()),
            P::Str(env.source.clone()),
            P::Str(env.event_type.clone()),
            envelope,
            P::Str(error.chars().take(2000).collect()),
            P::Int32(max_attempts()),
        ],
    )?;
    eprintln!(
        "{}",
        serde_json::json!({"level": "warn", "msg": "event failed", "event_id": env.id, "type": env.event_type, "error": error})
    );
    Ok(())
}

/// The pub/sub path: one message from the Redis trigger. Only events signed
/// by the producer their envelope names are applied (`events::signing`, the
/// public keys in `event_public_keys`); anything else is dropped with an
/// error in the log, and a real event that was dropped still arrives
/// through the feed.
pub fn on_message(message: &[u8], sources: &[Source]) -> Result<(), String> {
    let verifier = events::EventVerifier::parse(
        &crate::var("event_public_keys").map_err(|p| format!("{p:?}"))?,
    )
    .map_err(|e| e.to_string())?;
    let env = verifier.verify(message).map_err(|e| {
        // Logged here too: Spin logs a handler's error only at debug level.
        let why = format!("event dropped: {e}");
        eprintln!("{}", serde_json::json!({"level": "warn", "msg": why}));
        why
    })?;
    let Some(source) = sources.iter().find(|s| s.name == env.source) else {
        return Ok(());
    };
    let db = Db::open().map_err(|p| format!("{p:?}"))?;
    deliver(&db, &env, source.handler)
        .map(|_| ())
        .map_err(|p| format!("{p:?}"))
}

/// Summary of one catch-up pass.
#[derive(Debug, Default, Serialize)]
pub struct CatchUp {
    /// Events applied now.
    pub applied: usize,
    /// Events seen before.
    pub duplicates: usize,
    /// Events that failed (recorded).
    pub failed: usize,
    /// Failed events retried now and applied.
    pub retried: usize,
    /// Sources rebuilt from their API because the feed was pruned.
    pub resynced: usize,
}

const PAGE: i64 = 200;

/// Pulls every source's feed from the stored cursor and applies what is new,
/// then retries failed events that are due.
pub fn catch_up(sources: &[Source], ctx: &crate::http::Ctx) -> Result<CatchUp, Problem> {
    let mut summary = CatchUp::default();
    for source in sources {
        loop {
            // No connection is held while the producer is asked.
            let cursor = cursor(&Db::open()?, source.name)?;
            let url = format!("{}?after={cursor}&limit={PAGE}", source.feed_url);
            let resp = crate::http::chain(ctx, spin_sdk::http::Method::Get, &url, None)?;
            if *resp.status() == 410 {
                // Pruned past our cursor: rebuild from the source's API, then
                // continue from where the feed resumes.
                #[derive(serde::Deserialize)]
                struct Gone {
                    resume_after: i64,
                }
                let gone: Gone = serde_json::from_slice(resp.body()).map_err(|e| {
                    Problem::internal(format!("feed of {}: bad 410 body: {e}", source.name))
                })?;
                (source.resync)(ctx)?;
                set_cursor(&Db::open()?, source.name, gone.resume_after)?;
                summary.resynced += 1;
                continue;
            }
            if *resp.status() != 200 {
                return Err(Problem::unavailable(format!(
                    "feed of {} answered {}",
                    source.name,
                    resp.status()
                )));
            }
            let page: FeedPage = serde_json::from_slice(resp.body()).map_err(|e| {
                Problem::internal(format!("feed of {}: bad page: {e}", source.name))
            })?;
            let n = page.events.len();
            let db = Db::open()?;
            for ev in &page.events {
                match deliver(&db, &ev.envelope, source.handler)? {
                    Outcome::Applied => summary.applied += 1,
                    Outcome::Duplicate => summary.duplicates += 1,
                    Outcome::Failed => summary.failed += 1,
                }
            }
            set_cursor(&db, source.name, page.next_after)?;
            if (n as i64) < PAGE {
                break;
            }
        }
    }
    summary.retried = retry_due(&Db::open()?, sources)?;
    Ok(summary)
}

fn cursor(db: &Db, source: &str) -> Result<i64, DbError> {
    let rows = db.query(
        "SELECT last_seq FROM event_cursors WHERE source = $1",
        &[P::Str(source.into())],
    )?;
    match rows.rows.first() {
        Some(r) => col(r, 0, "event_cursors.last_seq"),
        None => Ok(0),
    }
}

fn set_cursor(db: &Db, source: &str, seq: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO event_cursors (source, last_seq) VALUES ($1, $2) \
         ON CONFLICT (source) DO UPDATE SET last_seq = greatest(event_cursors.last_seq, $2), updated_at = now() AT TIME ZONE 'UTC'",
        &[P::Str(source.into()), P::Int64(seq)],
    )?;
    Ok(())
}

/// Retries failed, unparked events whose backoff has passed. Returns how many
/// were applied now.
pub fn retry_due(db: &Db, sources: &[Source]) -> Result<usize, Problem> {
    let rows = db.query(
        "SELECT envelope FROM event_failures WHERE NOT parked AND next_attempt_at <= (now() AT TIME ZONE 'UTC') \
         ORDER BY next_attempt_at LIMIT 100",
        &[],
    )?;
    let mut applied = 0;
    for row in &rows.rows {
        let env: serde_json::Value = col(row, 0, "event_failures.envelope")?;
        let env: Envelope = serde_json::from_value(env)
            .map_err(|e| Problem::internal(format!("stored envelope: {e}")))?;
        if let Some(source) = sources.iter().find(|s| s.name == env.source) {
            if deliver(db, &env, source.handler)? == Outcome::Applied {
                applied += 1;
            }
        }
    }
    Ok(applied)
}

/// A parked (dead-letter) event as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// The event id.
    pub event_id: Uuid,
    /// Its source.
    pub source: String,
    /// Its type.
    pub event_type: String,
    /// Attempts made.
    pub attempts: i32,
    /// The last error.
    pub last_error: String,
    /// The event itself.
    pub envelope: serde_json::Value,
    /// When it first failed.
    pub created_at: String,
}

/// A page of parked events, oldest first, and the total.
pub fn dead_letters(db: &Db, page: crate::http::Page) -> Result<(Vec<DeadLetter>, i64), DbError> {
    let rows = db.query(
        "SELECT event_id, source, event_type, attempts, last_error, envelope, created_at FROM event_failures \
         WHERE parked ORDER BY created_at, event_id LIMIT $1 OFFSET $2",
        &[P::Int64(page.per_page), P::Int64(page.offset())],
    )?;
    let mut items = Vec::new();
    for r in &rows.rows {
        items.push(DeadLetter {
            event_id: col(r, 0, "event_failures.event_id")?,
            source: col(r, 1, "event_failures.source")?,
            event_type: col(r, 2, "event_failures.event_type")?,
            attempts: col(r, 3, "event_failures.attempts")?,
            last_error: col(r, 4, "event_failures.last_error")?,
            envelope: col(r, 5, "event_failures.envelope")?,
            created_at: timestamp(r, 6, "event_failures.created_at")?,
        });
    }
    let total = db.query("SELECT count(*) FROM event_failures WHERE parked", &[])?;
    Ok((items, col(&total.rows[0], 0, "count")?))
}

/// Replays a parked event now. `Ok(None)` if there is no such parked event.
pub fn replay(db: &Db, event_id: Uuid, sources: &[Source]) -> Result<Option<Outcome>, Problem> {
    let rows = db.query(
        "UPDATE event_failures SET parked = false, attempts = 0, next_attempt_at = now() AT TIME ZONE 'UTC' \
         WHERE event_id = $1 AND parked RETURNING envelope",
        &[P::Uuid(event_id.to_string())],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let env: serde_json::Value = col(row, 0, "event_failures.envelope")?;
    let env: Envelope = serde_json::from_value(env)
        .map_err(|e| Problem::internal(format!("stored envelope: {e}")))?;
    let source = sources
        .iter()
        .find(|s| s.name == env.source)
        .ok_or_else(|| Problem::internal(format!("no handler for source {}", env.source)))?;
    deliver(db, &env, source.handler).map(Some)
}

/// A component's list of sources, as a type so that the shared endpoints
/// below can be named in a route table (`endpoints::catch_up::<Error, Consumer>`).
pub trait Sources {
    /// The sources the component consumes.
    const SOURCES: &'static [Source];
}

/// HTTP endpoints every producer or consumer component routes to; each is a
/// route handler (`fn(&Call) -> Result<Response, E>`).
pub mod endpoints {
    use super::*;
    use crate::router::Call;
    use spin_sdk::http::Response;

    /// `POST /internal/events/catch-up` (scheduler): pull feeds, retry failures.
    pub fn catch_up<E: From<Problem>, S: Sources>(call: &Call) -> Result<Response, E> {
        let summary = super::catch_up(S::SOURCES, call.ctx)?;
        Ok(crate::http::json(200, &summary))
    }

    /// `GET /internal/events?after=&limit=` of a producer: its outbox feed,
    /// or 410 `resync_required` when the cursor is older than retention.
    pub fn feed<E: From<Problem>>(call: &Call) -> Result<Response, E> {
        let after = crate::http::int_query(call.req, "after", 0, i64::MAX)?;
        let limit = crate::http::int_query(call.req, "limit", 200, 1000)?.max(1);
        let db = Db::open()?;
        match crate::outbox::feed(&db, after, limit).map_err(Problem::from)? {
            Ok(page) => Ok(crate::http::json(200, &page)),
            Err(pruned_through) => Ok(crate::http::json(
                410,
                &serde_json::json!({
                    "error": {"code": "resync_required", "message": "events after this cursor were pruned: resync from the api"},
                    "resume_after": pruned_through,
                }),
            )),
        }
    }

    /// `POST /internal/outbox/publish` of a producer (scheduler): numbers and
    /// publishes what a crash between commit and publish left pending.
    pub fn publish<E: From<Problem>>(_call: &Call) -> Result<Response, E> {
        let db = Db::open()?;
        let n = crate::outbox::publish_pending(&db, &crate::var("redis_url")?, 500)?;
        Ok(crate::http::json(200, &serde_json::json!({"published": n})))
    }

    /// `POST /internal/events/prune` (scheduler): retention of this database's
    /// outbox rows and applied-event records.
    pub fn prune<E: From<Problem>>(_call: &Call) -> Result<Response, E> {
        let days: i32 = crate::var("event_retention_days")?
            .parse()
            .map_err(|_| Problem::internal("event_retention_days is not a number"))?;
        let db = Db::open()?;
        let deleted = crate::outbox::prune(&db, days).map_err(Problem::from)?;
        Ok(crate::http::json(
            200,
            &serde_json::json!({"deleted": deleted}),
        ))
    }

    /// Dead letters hold whole events of every tenant: platform staff only
    /// (scope `all` for `event`), on top of the route's `event:manage`.
    fn platform_staff(caller: &access::Caller) -> Result<(), Problem> {
        if matches!(caller.filter("event"), access::RowFilter::All) {
            Ok(())
        } else {
            Err(Problem::new(
                403,
                "forbidden",
                "dead letters are for platform staff",
            ))
        }
    }

    /// `GET /admin/dead-letters?page=&per_page=`: parked events.
    pub fn dead_letters<E: From<Problem>>(call: &Call) -> Result<Response, E> {
        platform_staff(call.caller()?)?;
        let page = call.page()?;
        let db = Db::open()?;
        let (items, total) = super::dead_letters(&db, page).map_err(Problem::from)?;
        Ok(crate::http::json(
            200,
            &crate::http::Paged {
                items,
                page: page.page,
                per_page: page.per_page,
                total,
            },
        ))
    }

    /// `POST /admin/dead-letters/{event_id}/replay`: tries a parked event again now.
    pub fn replay<E: From<Problem>, S: Sources>(call: &Call) -> Result<Response, E> {
        platform_staff(call.caller()?)?;
        let id = call.id("id", "dead letter")?;
        let db = Db::open()?;
        match super::replay(&db, id, S::SOURCES)? {
            None => Err(Problem::not_found("dead letter").into()),
            Some(outcome) => Ok(crate::http::json(
                200,
                &serde_json::json!({"event_id": id, "applied": outcome != Outcome::Failed}),
            )),
        }
    }
}
