//! `GET /me`: the caller's own profile.

use crate::error::Error;
use spin_sdk::http::{Request, Response};

/// Returns the authenticated caller's profile.
pub fn get(req: &Request) -> Result<Response, Error> {
    let caller = platform::auth::authenticate(req)?;
    let db = platform::db::Db::open()?;
    let profile = crate::repo::find(&db, caller.user_id)?.ok_or(Error::NoProfile)?;
    Ok(platform::http::json(200, &profile))
}
