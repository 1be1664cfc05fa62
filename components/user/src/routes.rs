//! The whole route table of `user`, below `/api/v1/user`.
//! Public: `health`. Internal (x-internal-token): `internal/...`.
//! Everything else requires a bearer token.

use crate::error::Error;
use crate::handlers;
use platform::http::{method_not_allowed, Ctx};
use spin_sdk::http::{Method, Request, Response};

/// Routes a request to its handler.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    match (req.method(), ctx.path().as_slice()) {
        (Method::Get, ["health"]) => platform::http::health("user").map_err(Error::from),
        (Method::Get, ["health", "live"]) => platform::http::live("user").map_err(Error::from),
        (Method::Get, ["me"]) => handlers::me::get(req),
        (Method::Post, ["internal", "users"]) => handlers::internal::create_user(req),
        (Method::Post, ["internal", "outbox", "publish"]) => {
            handlers::internal::publish_outbox(req)
        }
        (
            m,
            ["health", "live"]
            | ["health" | "me"]
            | ["internal", "users"]
            | ["internal", "outbox", "publish"],
        ) => Err(method_not_allowed(m).into()),
        _ => Err(Error::NotFound),
    }
}
