//! The whole route table of `auth`, below `/api/v1/auth`.
//! Public (unauthenticated) by design: `health`, `health/live`, `register`,
//! `login`, `refresh`, `logout` (the refresh token is the credential). Internal (x-internal-token): `internal/...`. Admin role: `admin/...`.

use crate::error::Error;
use crate::handlers;
use platform::consumer::endpoints;
use platform::http::{method_not_allowed, Ctx};
use spin_sdk::http::{Method, Request, Response};

/// Routes a request to its handler.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    match (req.method(), ctx.path().as_slice()) {
        (Method::Get, ["health"]) => platform::http::health("auth").map_err(Error::from),
        (Method::Get, ["health", "live"]) => platform::http::live("auth").map_err(Error::from),
        (Method::Post, ["register"]) => handlers::register::post(ctx, req).await,
        (Method::Post, ["login"]) => handlers::login::post(req),
        (Method::Post, ["refresh"]) => handlers::refresh::refresh(req),
        (Method::Post, ["logout"]) => handlers::refresh::logout(req),
        (Method::Post, ["logout-all"]) => handlers::refresh::logout_all(req),
        (Method::Get, ["me"]) => handlers::account::me(req),
        (Method::Post, ["password"]) => handlers::account::change_password(req),
        (Method::Post, ["internal", "events", "catch-up"]) => {
            Ok(endpoints::catch_up(req, crate::consumer::SOURCES).await?)
        }
        (Method::Post, ["internal", "events", "prune"]) => Ok(endpoints::prune(req)?),
        (Method::Get, ["admin", "dead-letters"]) => Ok(endpoints::dead_letters(req)?),
        (Method::Post, ["admin", "dead-letters", id, "replay"]) => {
            Ok(endpoints::replay(req, id, crate::consumer::SOURCES)?)
        }
        (
            m,
            ["health", "live"]
            | ["health" | "register" | "login" | "refresh" | "logout" | "logout-all" | "me"
            | "password"]
            | ["internal", "events", "catch-up" | "prune"]
            | ["admin", "dead-letters"]
            | ["admin", "dead-letters", _, "replay"],
        ) => Err(method_not_allowed(m).into()),
        _ => Err(Error::NotFound),
    }
}
