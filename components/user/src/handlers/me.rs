//! `GET /me` and `PATCH /me`: the caller's own profile.

use crate::error::Error;
use spin_sdk::http::{Request, Response};

/// Returns the authenticated caller's profile.
pub fn get(req: &Request) -> Result<Response, Error> {
    let caller = platform::auth::authenticate(req)?;
    let db = platform::db::Db::open()?;
    let profile = crate::repo::find(&db, caller.user_id)?.ok_or(Error::NoProfile)?;
    Ok(platform::http::json(200, &profile))
}

/// Changes the caller's display name or metadata; emits `user.updated`.
pub fn patch(ctx: &platform::http::Ctx, req: &Request) -> Result<Response, Error> {
    let caller = platform::auth::authenticate(req)?;
    let mut change: crate::domain::ProfileUpdate = platform::http::body(req)?;
    change.check()?;
    let db = platform::db::Db::open()?;
    let profile = crate::repo::update(&db, caller.user_id, &change)?.ok_or(Error::NoProfile)?;
    crate::handlers::internal::publish_after_commit(ctx, &db);
    Ok(platform::http::json(200, &profile))
}
