//! Operations: read one (optionally waiting for it to finish), or list
//! them, within the caller's data scope.

use super::{db, one_of, paged, uuid_query, Call};
use crate::domain::device_ops::KINDS;
use crate::error::{Error, Result};
use crate::repo::{self, operations::Operation};
use access::Caller;
use spin_sdk::http::Response;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Longest `wait` a request may ask for.
pub const MAX_WAIT_SECS: i64 = 30;

/// `GET /operations/:id?wait=<seconds>`: the operation; with `wait`, held
/// until it finishes or the wait (at most 30 s) passes.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "operation")?;
    let wait = platform::http::int_query(call.req, "wait", 0, MAX_WAIT_SECS)?;
    Ok(platform::http::json(200, &wait_for(caller, id, wait)?))
}

/// An operation the caller sees (404 otherwise), once it has finished or
/// `wait_secs` have passed, whichever comes first. It looks every 200 ms and
/// holds no database connection between looks. The long poll of
/// `GET /operations/:id` and of the device operations.
pub fn wait_for(caller: &Caller, id: Uuid, wait_secs: i64) -> Result<Operation> {
    let until = Instant::now() + Duration::from_secs(wait_secs.max(0) as u64);
    loop {
        let op = {
            let db = db()?;
            match repo::operations::find(&db, id)? {
                Some(o) if caller.sees("device", o.row_ref()) => o,
                _ => return Err(Error::NotFound("operation")),
            }
        };
        if op.status != "running" || Instant::now() >= until {
            return Ok(op);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /operations?device_id=&status=&kind=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let status = one_of(call, "status", &["running", "succeeded", "failed"])?;
    let kind = one_of(call, "kind", KINDS)?;
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
