//! The caller's notifications.

use crate::error::Error;
use platform::router::Call;
use spin_sdk::http::Response;

/// `GET /notifications?page=&per_page=&unread=true`: newest first.
pub fn list(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let page = call.page()?;
    let unread_only = platform::input::bool_param(call.query("unread"), "unread")?.unwrap_or(false);
    let db = platform::db::Db::open()?;
    Ok(platform::http::page_of(
        page,
        crate::repo::list(&db, caller.user_id, unread_only, page)?,
    ))
}

/// `POST /notifications/{id}/read`: marks one of the caller's notifications read.
pub fn mark_read(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let id = call.id("id", "notification")?;
    let db = platform::db::Db::open()?;
    if crate::repo::mark_read(&db, caller.user_id, id)? {
        Ok(platform::http::no_content())
    } else {
        Err(Error::NoNotification)
    }
}
