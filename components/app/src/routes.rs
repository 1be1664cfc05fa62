//! The whole route table of `app`, below `/api/v1/app`, as data: one row
//! per route with its guard and handler (`platform::router`). Public:
//! `health`, `health/live`, and `files/:id`, whose signed link is the
//! credential. Internal routes accept only the service tokens named in
//! their guard. `docs/api.md` lists the same table.

use crate::consumer::Consumer;
use crate::error::Error;
use crate::handlers::{catalogue, downloads, installs, reviews, uploads};
use platform::auth::KeyVerifier;
use platform::consumer::endpoints;
use platform::router::{route, Component, Guard, Guard::*, Route};

/// Scheduler jobs.
const SCHEDULER: Guard = Service(&["scheduler"]);

/// The component: its routes, and API keys verified by chaining to `auth`.
pub const COMPONENT: Component<Error> = Component {
    name: "app",
    routes: ROUTES,
    agent: None,
    keys: KeyVerifier::Chained,
};

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Error>] = &[
    route("GET", "health", Public, platform::http::health),
    route("GET", "health/live", Public, platform::http::live),
    route("POST", "uploads", Permission("app:upload"), uploads::begin),
    route("PUT", "uploads/:id/chunks/:seq", Permission("app:upload"), uploads::put_chunk),
    route("POST", "uploads/:id/complete", Permission("app:upload"), uploads::complete),
    route("DELETE", "uploads/:id", Permission("app:upload"), uploads::abort),
    route("GET", "applications", Permission("app:read"), catalogue::list),
    route("GET", "applications/:id", Permission("app:read"), catalogue::get),
    route("GET", "versions/:id", Permission("app:read"), catalogue::version),
    route("GET", "versions/:id/download", Permission("app:read"), downloads::link),
    route("POST", "versions/:id/submit", Permission("app:upload"), reviews::submit),
    route("POST", "versions/:id/review", Permission("app:manage"), reviews::review),
    route("POST", "versions/:id/withdraw", Permission("app:upload"), reviews::withdraw),
    route("GET", "versions/:id/reviews", Permission("app:read"), reviews::trail),
    route("GET", "reviews", Permission("app:manage"), reviews::queue),
    route("GET", "files/:id", Public, downloads::file),
    route("POST", "installs", Permission("app:read"), installs::create),
    route("GET", "installs", Permission("app:read"), installs::list),
    route("GET", "installs/:id", Permission("app:read"), installs::get),
    route("POST", "installs/:id/uninstall", Permission("app:read"), installs::uninstall),
    route("POST", "devices/:id/reconcile", Permission("app:read"), installs::reconcile),
    route("POST", "internal/uploads/expire", SCHEDULER, uploads::expire_job),
    route("POST", "internal/outbox/publish", SCHEDULER, endpoints::publish),
    route("GET", "internal/events", Service(&["notification", "billing"]), endpoints::feed),
    route("POST", "internal/events/prune", SCHEDULER, endpoints::prune),
    route("POST", "internal/events/catch-up", SCHEDULER, endpoints::catch_up::<Error, Consumer>),
    route("GET", "admin/dead-letters", Permission("event:manage"), endpoints::dead_letters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), endpoints::replay::<Error, Consumer>),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        platform::router::assert_documented(include_str!("../../../docs/api.md"), "app", ROUTES);
    }
}
