//! The whole route table of `auth`, below `/api/v1/auth`, as data: each
//! route's guard is applied by `platform::router` before its handler runs.
//! Public by design: `health`, `health/live`, `register`, `login`,
//! `refresh` and `logout` (the refresh token is the credential there), and
//! the two password-reset steps (the emailed token is the credential).
//! Internal routes (the shared internal token): `internal/...`. `docs/api.md`
//! lists the same table (a unit test keeps them equal).

use crate::error::Error;
use crate::handlers::{account, api_keys, internal, login, refresh, register, reset};
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
    Register,
    Login,
    Refresh,
    Logout,
    LogoutAll,
    Me,
    ChangePassword,
    RequestReset,
    ConfirmReset,
    ListKeys,
    CreateKey,
    GetKey,
    RevokeKey,
    DeleteKey,
    VerifyKey,
    PutCredentials,
    CatchUp,
    PruneEvents,
    PublishOutbox,
    Events,
    DeadLetters,
    Replay,
}

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Op>] = &[
    route("GET", "health", Public, Op::Health),
    route("GET", "health/live", Public, Op::Live),
    route("POST", "register", Public, Op::Register),
    route("POST", "login", Public, Op::Login),
    route("POST", "refresh", Public, Op::Refresh),
    route("POST", "logout", Public, Op::Logout),
    route("POST", "logout-all", Session, Op::LogoutAll),
    route("GET", "me", Authenticated, Op::Me),
    route("POST", "password", Session, Op::ChangePassword),
    route("POST", "password-reset/request", Public, Op::RequestReset),
    route("POST", "password-reset/confirm", Public, Op::ConfirmReset),
    route("GET", "api-keys", Permission("api_key:read"), Op::ListKeys),
    route("POST", "api-keys", Permission("api_key:create"), Op::CreateKey),
    route("GET", "api-keys/:id", Permission("api_key:read"), Op::GetKey),
    route("POST", "api-keys/:id/revoke", Permission("api_key:revoke"), Op::RevokeKey),
    route("DELETE", "api-keys/:id", Permission("api_key:revoke"), Op::DeleteKey),
    route("POST", "internal/api-keys/verify", Internal, Op::VerifyKey),
    route("PUT", "internal/credentials", Internal, Op::PutCredentials),
    route("POST", "internal/events/catch-up", Internal, Op::CatchUp),
    route("POST", "internal/events/prune", Internal, Op::PruneEvents),
    route("POST", "internal/outbox/publish", Internal, Op::PublishOutbox),
    route("GET", "internal/events", Internal, Op::Events),
    route("GET", "admin/dead-letters", Permission("event:manage"), Op::DeadLetters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), Op::Replay),
];

/// Routes a request to its handler. `auth` owns the API keys, so it
/// verifies them itself instead of chaining to itself.
pub async fn dispatch(ctx: &Ctx, req: &Request) -> Result<Response, Error> {
    let call = resolve(ROUTES, ctx, req, KeyVerifier::Local(api_keys::verify_local)).await?;
    match call.op {
        Op::Health => Ok(platform::http::health("auth")?),
        Op::Live => Ok(platform::http::live("auth")?),
        Op::Register => register::post(&call).await,
        Op::Login => login::post(&call),
        Op::Refresh => refresh::refresh(&call),
        Op::Logout => refresh::logout(&call),
        Op::LogoutAll => refresh::logout_all(&call),
        Op::Me => account::me(&call),
        Op::ChangePassword => account::change_password(&call),
        Op::RequestReset => reset::request(&call).await,
        Op::ConfirmReset => reset::confirm(&call),
        Op::ListKeys => api_keys::list(&call),
        Op::CreateKey => api_keys::create(&call),
        Op::GetKey => api_keys::get(&call),
        Op::RevokeKey => api_keys::revoke(&call),
        Op::DeleteKey => api_keys::delete(&call),
        Op::VerifyKey => internal::verify_key(&call),
        Op::PutCredentials => internal::put_credentials(&call),
        Op::CatchUp => Ok(endpoints::catch_up(crate::consumer::SOURCES).await?),
        Op::PruneEvents => Ok(endpoints::prune()?),
        Op::PublishOutbox => Ok(endpoints::publish()?),
        Op::Events => Ok(endpoints::feed(call.req)?),
        Op::DeadLetters => Ok(endpoints::dead_letters(call.caller()?, call.req)?),
        Op::Replay => Ok(endpoints::replay(
            call.caller()?,
            call.params.get("id"),
            crate::consumer::SOURCES,
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
            platform::router::rows_in_api_doc(doc, "auth"),
            platform::router::documented_rows("auth", ROUTES)
        );
    }
}
