//! The `app` component: the APK catalogue and install records. Owns
//! `cloudphone_app`. Serves `/api/v1/app/...`: uploads of APKs in chunks
//! (kept in the database), each read by the `apk` crate on completion, so
//! what the catalogue says about a version comes from the file itself, and
//! the applications and versions callers may see, and installs of them on
//! devices, through `device` (whose `apk.*` events it follows). Publishes
//! `app.*` events through its outbox.

// Natively only the unit tests use the code; the entry point is wasm-only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod consumer;
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

    /// Spin's Redis trigger calls this for every `device.*` event (the
    /// `app-events` component of `spin.toml`, the same code without
    /// service chaining).
    #[spin_sdk::redis_component]
    fn on_message(message: Vec<u8>) -> Result<(), String> {
        platform::consumer::on_message(&message, crate::consumer::Consumer::SOURCES)
    }
}
