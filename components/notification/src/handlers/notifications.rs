//! The caller's notifications.

use crate::error::Error;
use platform::http::{Page, Paged};
use spin_sdk::http::{Request, Response};
use uuid::Uuid;

/// `GET /notifications?page=&per_page=&unread=true`: newest first.
pub fn list(req: &Request) -> Result<Response, Error> {
    let caller = platform::auth::authenticate(req)?;
    let page = Page::from_request(req)?;
    let unread_only = match platform::http::query_param(req, "unread").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Error::Invalid("unread must be true or false".into())),
    };
    let db = platform::db::Db::open()?;
    let (items, total) = crate::repo::list(&db, caller.user_id, unread_only, page)?;
    Ok(platform::http::json(
        200,
        &Paged {
            items,
            page: page.page,
            per_page: page.per_page,
            total,
        },
    ))
}

/// `POST /notifications/{id}/read`: marks one of the caller's notifications read.
pub fn mark_read(req: &Request, id: &str) -> Result<Response, Error> {
    let caller = platform::auth::authenticate(req)?;
    let id =
        Uuid::parse_str(id).map_err(|_| Error::Invalid("notification id must be a uuid".into()))?;
    let db = platform::db::Db::open()?;
    if crate::repo::mark_read(&db, caller.user_id, id)? {
        Ok(platform::http::no_content())
    } else {
        Err(Error::NoNotification)
    }
}
