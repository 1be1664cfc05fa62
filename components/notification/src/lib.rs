//! The `notification` component: the notifications users see. It consumes
//! `user`'s and `auth`'s events (Spin's Redis trigger on
//! `cloudphone.events.user` and `cloudphone.events.auth`, and their feeds)
//! and serves `/api/v1/notification/...`.

// Natively only the unit tests use the code; the entry point is wasm-only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod consumer;
mod error;
mod handlers;
mod repo;
mod routes;
mod templates;

/// Spin's export macros generate `unsafe` glue: it is confined to this module,
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

    /// Spin's Redis trigger calls this for every message on a subscribed
    /// channel (the `notification-events` component of `spin.toml`, the
    /// same code without service chaining).
    #[spin_sdk::redis_component]
    fn on_message(message: Vec<u8>) -> Result<(), String> {
        platform::consumer::on_message(&message, crate::consumer::Consumer::SOURCES)
    }
}
