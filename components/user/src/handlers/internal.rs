//! Internal endpoints, reached by service chaining from `auth` and by the
//! scheduler; they require the shared internal token.

use crate::domain::NewUser;
use crate::error::Error;
use crate::repo;
use spin_sdk::http::{Request, Response};

/// `POST /internal/users`: creates a profile and its `user.created` event in
/// one transaction. A create for an email that already has a profile answers
/// 200 with that profile's id (see `auth`'s register handler for why).
pub fn create_user(req: &Request) -> Result<Response, Error> {
    platform::auth::require_internal(req)?;
    let new: NewUser = platform::http::body(req)?;
    new.check()?;
    let db = platform::db::Db::open()?;
    let (id, created) = repo::create(&db, &new)?;
    if created {
        publish_after_commit(&db);
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
fn publish_after_commit(db: &platform::db::Db) {
    let result =
        platform::var("redis_url").and_then(|url| platform::outbox::publish_pending(db, &url, 100));
    if let Err(p) = result {
        eprintln!(
            "{}",
            serde_json::json!({"level": "warn", "msg": "outbox publish deferred", "cause": p.internal})
        );
    }
}
