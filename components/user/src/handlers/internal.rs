//! Internal endpoints, reached by service chaining from other components and
//! by the scheduler; they require the shared internal token.

use crate::domain::NewUser;
use crate::error::Error;
use crate::repo;
use platform::http::Ctx;
use spin_sdk::http::{Request, Response};

/// `POST /internal/users`: creates a profile and its `user.created` event in
/// one transaction. A create for an email that already has a profile answers
/// 200 with that profile's id (see `auth`'s register handler for why).
pub fn create_user(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    platform::auth::require_internal(req)?;
    let new: NewUser = platform::http::body(req)?;
    new.check()?;
    let db = platform::db::Db::open()?;
    let (id, created) = repo::create(&db, &new)?;
    if created {
        publish_after_commit(ctx, &db);
    }
    Ok(platform::http::json(
        if created { 201 } else { 200 },
        &serde_json::json!({"id": id}),
    ))
}

/// `POST /internal/outbox/publish`: publishes pending events (scheduler job).
pub fn publish_outbox(req: &Request) -> Result<Response, Error> {
    platform::auth::require_internal(req)?;
    let db = platform::db::Db::open()?;
    let redis_url = platform::var("redis_url")?;
    let n = platform::outbox::publish_pending(&db, &redis_url, 500)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"published": n}),
    ))
}

/// Publishing right after commit is the fast path; if it fails the event stays
/// pending and the scheduler's job publishes it, so the error is only logged.
pub fn publish_after_commit(ctx: &Ctx, db: &platform::db::Db) {
    let result =
        platform::var("redis_url").and_then(|url| platform::outbox::publish_pending(db, &url, 100));
    if let Err(p) = result {
        eprintln!(
            "{}",
            serde_json::json!({"level": "warn", "request_id": ctx.request_id, "msg": "outbox publish deferred", "cause": p.internal})
        );
    }
}

fn int_param(req: &Request, name: &str, default: i64, max: i64) -> Result<i64, Error> {
    match platform::http::query_param(req, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .ok_or_else(|| Error::Invalid(format!("{name} must be an integer from 0 to {max}"))),
    }
}

/// `GET /internal/events?after=&limit=`: the outbox feed consumers catch up from.
pub fn events(req: &Request) -> Result<Response, Error> {
    platform::auth::require_internal(req)?;
    let after = int_param(req, "after", 0, i64::MAX)?;
    let limit = int_param(req, "limit", 200, 1000)?.max(1);
    let db = platform::db::Db::open()?;
    match platform::outbox::feed(&db, after, limit)? {
        Ok(page) => Ok(platform::http::json(200, &page)),
        Err(pruned_through) => Ok(platform::http::json(
            410,
            &serde_json::json!({
                "error": {"code": "resync_required", "message": "events after this cursor were pruned: resync from the api"},
                "resume_after": pruned_through,
            }),
        )),
    }
}

/// `GET /internal/identities?after=<uuid>&limit=`: identity snapshots with
/// their versions, for consumers resyncing their copies.
pub fn identities(req: &Request) -> Result<Response, Error> {
    platform::auth::require_internal(req)?;
    let after = match platform::http::query_param(req, "after") {
        None => uuid::Uuid::nil(),
        Some(v) => {
            uuid::Uuid::parse_str(&v).map_err(|_| Error::Invalid("after must be a uuid".into()))?
        }
    };
    let limit = int_param(req, "limit", 200, 1000)?.max(1);
    let db = platform::db::Db::open()?;
    let items = repo::identities(&db, after, limit)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}
