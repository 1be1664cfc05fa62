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

/// Longest `wait` of the long poll, seconds.
const MAX_WAIT_SECS: i64 = 30;

/// `GET /notifications/unread-count` (`notification:read`): `{unread,
/// by_category: {category: n}, token}`, what a console's badge shows.
/// The long poll: with `wait` (seconds, at most 30) and `since` (the
/// `token` of the last answer), held until the caller's notifications
/// change (one added, read or deleted) or the wait passes; it looks every
/// 250 ms and holds no database connection between looks. A console keeps
/// one such request open and refetches the list when `token` changes: new
/// notifications show within a second.
pub fn unread_count(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let wait = platform::http::int_query(call.req, "wait", 0, MAX_WAIT_SECS)?;
    let since = call.query("since");
    if since.as_ref().is_some_and(|s| s.len() > 100) {
        return Err(platform::Problem::invalid("since must be a token this route gave").into());
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(wait.max(0) as u64);
    let standing = loop {
        let s = repo::standing(&platform::db::Db::open()?, caller.user_id)?;
        if since.as_deref() != Some(s.token.as_str()) || std::time::Instant::now() >= until {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let unread: i64 = standing.unread.iter().map(|(_, n)| n).sum();
    let by_category: serde_json::Map<String, serde_json::Value> = standing
        .unread
        .into_iter()
        .map(|(c, n)| (c, serde_json::json!(n)))
        .collect();
    Ok(platform::http::json(
        200,
        &serde_json::json!({"unread": unread, "by_category": by_category, "token": standing.token}),
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
