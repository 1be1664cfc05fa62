//! The whole route table of `auth`, below `/api/v1/auth`, as data: one row
//! per route with its guard and handler (`platform::router`). Public by
//! design: `health`, `health/live`, `register`, `login`, `refresh` and
//! `logout` (the refresh token is the credential there), and the two
//! password-reset steps (the emailed token is the credential). Internal
//! routes (`internal/...`) accept only the service tokens of the components
//! (or the scheduler) named in their guard. `docs/api.md` lists the same
//! table (a unit test keeps them equal).

use crate::consumer::Consumer;
use crate::error::Error;
use crate::handlers::{account, api_keys, internal, login, refresh, register, reset};
use platform::auth::KeyVerifier;
use platform::consumer::endpoints;
use platform::router::{route, Component, Guard, Guard::*, Route};

/// Scheduler jobs.
const SCHEDULER: Guard = Service(&["scheduler"]);

/// The component. `auth` owns the API keys, so it verifies them itself
/// instead of chaining to itself.
pub const COMPONENT: Component<Error> = Component {
    name: "auth",
    routes: ROUTES,
    agent: None,
    keys: KeyVerifier::Local(api_keys::verify_local),
};

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Error>] = &[
    route("GET", "health", Public, platform::http::health),
    route("GET", "health/live", Public, platform::http::live),
    route("POST", "register", Public, register::post),
    route("POST", "login", Public, login::post),
    route("POST", "refresh", Public, refresh::refresh),
    route("POST", "logout", Public, refresh::logout),
    route("POST", "logout-all", Session, refresh::logout_all),
    route("GET", "me", Authenticated, account::me),
    route("POST", "password", Session, account::change_password),
    route("POST", "password-reset/request", Public, reset::request),
    route("POST", "password-reset/confirm", Public, reset::confirm),
    route("GET", "api-keys", Permission("api_key:read"), api_keys::list),
    route("POST", "api-keys", Permission("api_key:create"), api_keys::create),
    route("GET", "api-keys/:id", Permission("api_key:read"), api_keys::get),
    route("POST", "api-keys/:id/revoke", Permission("api_key:revoke"), api_keys::revoke),
    route("DELETE", "api-keys/:id", Permission("api_key:revoke"), api_keys::delete),
    route("POST", "internal/api-keys/verify", Service(&["user", "device", "app", "billing", "notification"]), internal::verify_key),
    route("PUT", "internal/credentials", Service(&["user"]), internal::put_credentials),
    route("POST", "internal/events/catch-up", SCHEDULER, endpoints::catch_up::<Error, Consumer>),
    route("POST", "internal/events/prune", SCHEDULER, endpoints::prune),
    route("POST", "internal/outbox/publish", SCHEDULER, endpoints::publish),
    route("GET", "internal/events", Service(&["user", "notification"]), endpoints::feed),
    route("GET", "admin/dead-letters", Permission("event:manage"), endpoints::dead_letters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), endpoints::replay::<Error, Consumer>),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        platform::router::assert_documented(include_str!("../../../docs/api.md"), "auth", ROUTES);
    }
}
