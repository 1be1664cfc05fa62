//! The `user` component: users' profiles, roles, permissions, data scopes,
//! field permissions, tenants, departments, menus, quotas (with the
//! reservation API other components use), tickets and the audit log. Owns
//! `cloudphone_user` and publishes `user.*` and `quota.*` events through its
//! outbox; follows `auth`'s events into the audit log. Every user's
//! effective access is computed here and travels in those events to `auth`.
//! Served by Spin's HTTP trigger under `/api/v1/user/...`.

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

    /// Spin's Redis trigger calls this for every `auth` event (the
    /// `user-events` component of `spin.toml`, the same code without
    /// service chaining).
    #[spin_sdk::redis_component]
    fn on_message(message: Vec<u8>) -> Result<(), String> {
        platform::consumer::on_message(&message, crate::consumer::Consumer::SOURCES)
    }
}
