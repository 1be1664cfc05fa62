//! The whole route table of `app`, below `/api/v1/app`, as data: one row
//! per route with its guard and handler (`platform::router`). Public:
//! `health`, `health/live`, and `files/:id`, whose signed link is the
//! credential. `docs/api.md` lists the same table.

use crate::error::Error;
use crate::handlers::{catalogue, downloads, uploads};
use platform::auth::KeyVerifier;
use platform::router::{route, Component, Guard::*, Route};

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
    route("GET", "files/:id", Public, downloads::file),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        platform::router::assert_documented(include_str!("../../../docs/api.md"), "app", ROUTES);
    }
}
