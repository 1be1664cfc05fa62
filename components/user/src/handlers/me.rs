//! `GET /me` and `PATCH /me`: the caller's own profile.

use super::{db, publish_after_commit, Call};
use crate::domain::profile::ProfilePatch;
use crate::error::{Error, Result};
use crate::repo;
use platform::events::catalogue::USER_UPDATED;
use spin_sdk::http::Response;

/// The caller's profile.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = db()?;
    let profile = repo::users::find(&db, caller.user_id)?.ok_or(Error::NotFound("user"))?;
    Ok(platform::http::json(200, &profile))
}

/// Changes the caller's display name, phone or metadata; emits `user.updated`.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let change = call.body::<ProfilePatch>()?.parse(true)?;
    let db = db()?;
    let profile = db.transaction(|tx| {
        repo::users::lock(tx, caller.user_id)?.ok_or(Error::NotFound("user"))?;
        repo::users::update(tx, caller.user_id, &change)?;
        repo::snapshot::emit(tx, caller.user_id, &USER_UPDATED)?;
        repo::users::find(tx, caller.user_id)?.ok_or(Error::NotFound("user"))
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(200, &profile))
}
