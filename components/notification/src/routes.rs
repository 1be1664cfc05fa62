//! The whole route table of `notification`, below `/api/v1/notification`,
//! as data: one row per route with its guard and handler
//! (`platform::router`). Public: `health`, `health/live`. Internal routes
//! (`internal/...`) accept only the service tokens named in their guard.
//! `docs/api.md` lists the same table.

use crate::consumer::Consumer;
use crate::error::Error;
use crate::handlers::{deliveries, notifications};
use platform::auth::KeyVerifier;
use platform::consumer::endpoints;
use platform::router::{route, Component, Guard, Guard::*, Route};

/// Scheduler jobs.
const SCHEDULER: Guard = Service(&["scheduler"]);

/// The component: its routes, and API keys verified by chaining to `auth`.
pub const COMPONENT: Component<Error> = Component {
    name: "notification",
    routes: ROUTES,
    agent: None,
    keys: KeyVerifier::Chained,
};

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Error>] = &[
    route("GET", "health", Public, platform::http::health),
    route("GET", "health/live", Public, platform::http::live),
    route("GET", "notifications", Permission("notification:read"), notifications::list),
    route("GET", "notifications/unread-count", Permission("notification:read"), notifications::unread_count),
    route("POST", "notifications/read-all", Permission("notification:read"), notifications::mark_all_read),
    route("POST", "notifications/:id/read", Permission("notification:read"), notifications::mark_read),
    route("DELETE", "notifications/:id", Permission("notification:read"), notifications::delete),
    route("POST", "internal/password-resets", Service(&["auth"]), deliveries::password_reset),
    route("POST", "internal/events/catch-up", SCHEDULER, endpoints::catch_up::<Error, Consumer>),
    route("POST", "internal/events/prune", SCHEDULER, endpoints::prune),
    route("GET", "admin/dead-letters", Permission("event:manage"), endpoints::dead_letters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), endpoints::replay::<Error, Consumer>),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        platform::router::assert_documented(
            include_str!("../../../docs/api.md"),
            "notification",
            ROUTES,
        );
    }
}
