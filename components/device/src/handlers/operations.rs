//! Operations: read one (optionally waiting for it to finish), or list
//! them, within the caller's data scope.

use super::{db, one_of, paged, uuid_query, Call};
use crate::error::{Error, Result};
use crate::repo;
use spin_sdk::http::Response;
use std::time::{Duration, Instant};

/// Longest `wait` a request may ask for.
pub const MAX_WAIT_SECS: i64 = 30;

/// `GET /operations/:id?wait=<seconds>`: the operation; with `wait`, held
/// until it finishes or the wait (at most 30 s) passes. No database
/// connection is held between looks.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "operation")?;
    let wait = platform::http::int_query(call.req, "wait", 0, MAX_WAIT_SECS)?;
    let until = Instant::now() + Duration::from_secs(wait as u64);
    loop {
        let op = {
            let db = db()?;
            match repo::operations::find(&db, id)? {
                Some(o) if caller.sees("device", o.row_ref()) => o,
                _ => return Err(Error::NotFound("operation")),
            }
        };
        if op.status != "running" || Instant::now() >= until {
            return Ok(platform::http::json(200, &op));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /operations?device_id=&status=&kind=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let status = one_of(call, "status", &["running", "succeeded", "failed"])?;
    let kind = one_of(
        call,
        "kind",
        &["create", "start", "stop", "restart", "delete"],
    )?;
    let page = call.page()?;
    let (items, total) = repo::operations::list(
        &db()?,
        &caller.filter("device"),
        uuid_query(call, "device_id")?,
        status.as_deref(),
        kind.as_deref(),
        page,
    )?;
    Ok(paged(items, page, total))
}
