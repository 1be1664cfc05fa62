//! The whole route table of `notification`, below `/api/v1/notification`,
//! as data: each route's guard is applied by `platform::router`. Public:
//! `health`, `health/live`. Internal (the shared internal token):
//! `internal/...`. `docs/api.md` lists the same table.

use crate::consumer::SOURCES;
use crate::error::Error;
use crate::handlers::notifications;
use platform::auth::KeyVerifier;
use platform::consumer::endpoints;
use platform::http::Ctx;
use platform::router::{resolve, route, Guard::*, Route};
use spin_sdk::http::{Request, Response};

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Health,
    Live,
    List,
    MarkRead,
    PasswordReset,
    CatchUp,
    Prune,
    DeadLetters,
    Replay,
}

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Op>] = &[
    route("GET", "health", Public, Op::Health),
    route("GET", "health/live", Public, Op::Live),
    route("GET", "notifications", Permission("notification:read"), Op::List),
    route("POST", "notifications/:id/read", Permission("notification:read"), Op::MarkRead),
    route("POST", "internal/password-resets", Internal, Op::PasswordReset),
    route("POST", "internal/events/catch-up", Internal, Op::CatchUp),
    route("POST", "internal/events/prune", Internal, Op::Prune),
    route("GET", "admin/dead-letters", Permission("event:manage"), Op::DeadLetters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), Op::Replay),
];

/// Routes a request to its handler.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    let call = resolve(ROUTES, ctx, req, KeyVerifier::Chained).await?;
    match call.op {
        Op::Health => Ok(platform::http::health("notification")?),
        Op::Live => Ok(platform::http::live("notification")?),
        Op::List => notifications::list(&call),
        Op::MarkRead => notifications::mark_read(&call),
        Op::PasswordReset => crate::handlers::deliveries::password_reset(&call),
        Op::CatchUp => Ok(endpoints::catch_up(SOURCES).await?),
        Op::Prune => Ok(endpoints::prune()?),
        Op::DeadLetters => Ok(endpoints::dead_letters(call.caller()?, call.req)?),
        Op::Replay => Ok(endpoints::replay(
            call.caller()?,
            call.params.get("id"),
            SOURCES,
        )?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        let doc = include_str!("../../../docs/api.md");
        assert_eq!(
            platform::router::rows_in_api_doc(doc, "notification"),
            platform::router::documented_rows("notification", ROUTES)
        );
    }
}
