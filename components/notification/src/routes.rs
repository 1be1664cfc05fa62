//! The whole route table of `notification`, below `/api/v1/notification`.
//! Public: `health`, `health/live`. Internal (x-internal-token): `internal/...`.
//! Admin role: `admin/...`. Everything else requires a bearer token.

use crate::error::Error;
use crate::handlers;
use platform::consumer::endpoints;
use platform::http::{method_not_allowed, Ctx};
use spin_sdk::http::{Method, Request, Response};

/// Routes a request to its handler.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    use crate::consumer::SOURCES;
    use handlers::notifications;
    match (req.method(), ctx.path().as_slice()) {
        (Method::Get, ["health"]) => Ok(platform::http::health("notification")?),
        (Method::Get, ["health", "live"]) => Ok(platform::http::live("notification")?),
        (Method::Get, ["notifications"]) => notifications::list(req),
        (Method::Post, ["notifications", id, "read"]) => notifications::mark_read(req, id),
        (Method::Post, ["internal", "events", "catch-up"]) => {
            Ok(endpoints::catch_up(req, SOURCES).await?)
        }
        (Method::Post, ["internal", "events", "prune"]) => Ok(endpoints::prune(req)?),
        (Method::Get, ["admin", "dead-letters"]) => Ok(endpoints::dead_letters(req)?),
        (Method::Post, ["admin", "dead-letters", id, "replay"]) => {
            Ok(endpoints::replay(req, id, SOURCES)?)
        }
        (
            m,
            ["health"]
            | ["health", "live"]
            | ["notifications"]
            | ["notifications", _, "read"]
            | ["internal", "events", "catch-up" | "prune"]
            | ["admin", "dead-letters"]
            | ["admin", "dead-letters", _, "replay"],
        ) => Err(method_not_allowed(m).into()),
        _ => Err(Error::NotFound),
    }
}
