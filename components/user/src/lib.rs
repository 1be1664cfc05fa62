//! The `user` component: user profiles (and, as the domain fills in, roles,
//! tenants, departments, quotas, tickets and the audit log). Owns
//! `cloudphone_user` and publishes `user.*` events through its outbox.
//! Served by Spin's HTTP trigger under `/api/v1/user/...`.

// Natively only the unit tests use the code; the entry point is wasm-only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

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
    use spin_sdk::http::{Request, Response};

    #[spin_sdk::http_component]
    async fn handle(req: Request) -> Response {
        platform::http::serve(req, crate::routes::dispatch).await
    }
}
