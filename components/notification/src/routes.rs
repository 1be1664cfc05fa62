//! The whole route table of `notification`, below `/api/v1/notification`.
//! Public: `health`. Everything else requires a bearer token.

use crate::error::Error;
use crate::handlers;
use platform::http::{method_not_allowed, Ctx};
use spin_sdk::http::{Method, Request, Response};

/// Routes a request to its handler.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    match (req.method(), ctx.path().as_slice()) {
        (Method::Get, ["health"]) => platform::http::health("notification").map_err(Error::from),
        (Method::Get, ["health", "live"]) => {
            platform::http::live("notification").map_err(Error::from)
        }
        (Method::Get, ["notifications"]) => handlers::notifications::list(req),
        (Method::Post, ["notifications", id, "read"]) => {
            handlers::notifications::mark_read(req, id)
        }
        (m, ["health", "live"] | ["health" | "notifications"] | ["notifications", _, "read"]) => {
            Err(method_not_allowed(m).into())
        }
        _ => Err(Error::NotFound),
    }
}
