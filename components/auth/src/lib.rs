//! The `auth` component: registers users (their profile lives in `user`, their
//! credentials here), logs them in, and signs the access tokens that every
//! other component verifies with `crates/access`. Served by Spin's HTTP
//! trigger under `/api/v1/auth/...`; follows `user`'s events (Redis trigger and
//! catch-up feed) to keep its copy of each identity.

// Natively only the unit tests use the code; the entry point is wasm-only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod consumer;
mod domain;
mod error;
mod handlers;
mod repo;
mod routes;

/// Spin's export macro generates `unsafe` glue: it is confined to this module,
/// and compiled only for wasm32 (natively the unit tests run without it).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use platform::consumer::Sources;
    use spin_sdk::http::{Request, Response};

    #[spin_sdk::http_component]
    fn handle(req: Request) -> Response {
        platform::router::serve(&crate::routes::COMPONENT, req)
    }

    /// Spin's Redis trigger calls this for every `user.*` event (the
    /// `auth-events` component of `spin.toml`, the same code without
    /// service chaining).
    #[spin_sdk::redis_component]
    fn on_message(message: Vec<u8>) -> Result<(), String> {
        platform::consumer::on_message(&message, crate::consumer::Consumer::SOURCES)
    }
}
