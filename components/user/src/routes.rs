//! The whole route table of `user`, below `/api/v1/user`.
//! Public: `health`, `health/live`. Internal (x-internal-token): `internal/...`.
//! Everything else requires a bearer token.

use crate::error::Error;
use crate::handlers;
use platform::http::{method_not_allowed, Ctx};
use spin_sdk::http::{Method, Request, Response};

/// Routes a request to its handler.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    use handlers::{internal, me};
    match (req.method(), ctx.path().as_slice()) {
        (Method::Get, ["health"]) => platform::http::health("user").map_err(Error::from),
        (Method::Get, ["health", "live"]) => platform::http::live("user").map_err(Error::from),
        (Method::Get, ["me"]) => me::get(req),
        (Method::Patch, ["me"]) => me::patch(ctx, req),
        (Method::Post, ["internal", "users"]) => internal::create_user(ctx, req),
        (Method::Post, ["internal", "outbox", "publish"]) => internal::publish_outbox(req),
        (Method::Get, ["internal", "events"]) => internal::events(req),
        (Method::Post, ["internal", "events", "prune"]) => {
            Ok(platform::consumer::endpoints::prune(req)?)
        }
        (Method::Get, ["internal", "identities"]) => internal::identities(req),
        (
            m,
            ["health"]
            | ["health", "live"]
            | ["me"]
            | ["internal", "users"]
            | ["internal", "outbox", "publish"]
            | ["internal", "events"]
            | ["internal", "events", "prune"]
            | ["internal", "identities"],
        ) => Err(method_not_allowed(m).into()),
        _ => Err(Error::NotFound),
    }
}
