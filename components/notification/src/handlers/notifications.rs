//! The caller's notifications (the in-app channel): list with filters,
//! unread counts, marking read (one or all) and deleting. Each user sees
//! and changes only their own.

use crate::error::Error;
use crate::repo::{self, Filter};
use platform::router::Call;
use spin_sdk::http::Response;

/// The categories notifications have (the catalogue's).
const CATEGORIES: &[&str] = &["account", "security", "quota", "device", "app", "billing"];

fn category(call: &Call) -> Result<Option<String>, Error> {
    Ok(platform::input::one_of(
        call.query("category"),
        "category",
        CATEGORIES,
    )?)
}

/// `GET /notifications` (`notification:read`): the caller's notifications,
/// newest first; `unread` (`true`: unread only, `false`: read only),
/// `category`, `kind` (an event type, or `password_reset_requested`),
/// paging.
pub fn list(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let page = call.page()?;
    let kind = call.query("kind");
    if kind.as_ref().is_some_and(|k| k.is_empty() || k.len() > 100) {
        return Err(platform::Problem::invalid("kind must be 1-100 characters").into());
    }
    let filter = Filter {
        unread: platform::input::bool_param(call.query("unread"), "unread")?,
        category: category(call)?,
        kind,
    };
    let db = platform::db::Db::open()?;
    Ok(platform::http::page_of(
        page,
        repo::list(&db, caller.user_id, filter, page)?,
    ))
}

/// `GET /notifications/unread-count` (`notification:read`): `{unread,
/// by_category: {category: n}}`, what a console's badge shows.
pub fn unread_count(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let (unread, by) = repo::unread(&platform::db::Db::open()?, caller.user_id)?;
    let by_category: serde_json::Map<String, serde_json::Value> = by
        .into_iter()
        .map(|(c, n)| (c, serde_json::json!(n)))
        .collect();
    Ok(platform::http::json(
        200,
        &serde_json::json!({"unread": unread, "by_category": by_category}),
    ))
}

/// `POST /notifications/read-all` (`notification:read`): marks every
/// unread notification of the caller read (of one `category`, when
/// given); `{marked}`.
pub fn mark_all_read(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let category = category(call)?;
    let marked = repo::mark_all_read(
        &platform::db::Db::open()?,
        caller.user_id,
        category.as_deref(),
    )?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"marked": marked}),
    ))
}

/// `POST /notifications/{id}/read`: marks one of the caller's notifications read.
pub fn mark_read(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let id = call.id("id", "notification")?;
    let db = platform::db::Db::open()?;
    if repo::mark_read(&db, caller.user_id, id)? {
        Ok(platform::http::no_content())
    } else {
        Err(Error::NoNotification)
    }
}

/// `DELETE /notifications/{id}`: deletes one of the caller's notifications.
pub fn delete(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let id = call.id("id", "notification")?;
    let db = platform::db::Db::open()?;
    if repo::delete(&db, caller.user_id, id)? {
        Ok(platform::http::no_content())
    } else {
        Err(Error::NoNotification)
    }
}
