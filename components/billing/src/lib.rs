//! The `billing` component: users' money. Owns `cloudphone_billing`.
//! Serves `/api/v1/billing/...`: balances kept in a double-entry ledger
//! (integer minor units and an ISO currency on every amount; every movement
//! one balanced transaction; balances that are the sum of their entries and
//! never below their floor), operators' postings with a reason and an
//! idempotency key, transaction lists, CSV exports and statistics. Follows
//! `user`'s events for the users it bills; publishes `balance.*` events
//! through its outbox.

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
    /// `billing-events` component of `spin.toml`, the same code without
    /// service chaining).
    #[spin_sdk::redis_component]
    fn on_message(message: Vec<u8>) -> Result<(), String> {
        platform::consumer::on_message(&message, crate::consumer::Consumer::SOURCES)
    }
}
