//! The whole route table of `auth`, below `/api/v1/auth`.
//! Public (unauthenticated) by design: `health`, `register`, `login`.

use crate::error::Error;
use crate::handlers;
use platform::http::{method_not_allowed, Ctx};
use spin_sdk::http::{Method, Request, Response};

/// Routes a request to its handler.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    match (req.method(), ctx.path().as_slice()) {
        (Method::Get, ["health"]) => platform::http::health("auth").map_err(Error::from),
        (Method::Get, ["health", "live"]) => platform::http::live("auth").map_err(Error::from),
        (Method::Post, ["register"]) => handlers::register::post(ctx, req).await,
        (Method::Post, ["login"]) => handlers::login::post(req),
        (m, ["health", "live"] | ["health" | "register" | "login"]) => {
            Err(method_not_allowed(m).into())
        }
        _ => Err(Error::NotFound),
    }
}
