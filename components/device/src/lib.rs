//! The `device` component: cloud phones and the hosts that run them. Owns
//! `cloudphone_device`: nodes (enrolled by operators, each with a sealed
//! secret its runtime agent signs with), devices with their desired and
//! observed status, the operations users ask for, the commands sent to
//! agents, run intervals (the metering source) and owner copies from
//! `user`'s events. Serves `/api/v1/device/...` to users, operators and the
//! runtime agents (protocol version 2, docs/agent-protocol.md), publishes
//! `device.*` and `node.*` events through its outbox, and sends commands to
//! agents on their nodes' Redis channels.

// Natively only the unit tests use the code; the entry point is wasm-only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod consumer;
mod domain;
mod error;
mod handlers;
mod repo;
mod routes;

/// Placement decisions (a pure function), public for the benchmarks.
pub use domain::placement;

/// Spin's export macros generate `unsafe` glue: it is confined to this
/// module, and compiled only for wasm32 (natively the unit tests run without it).
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
    /// `device-events` component of `spin.toml`, the same code without
    /// service chaining).
    #[spin_sdk::redis_component]
    fn on_message(message: Vec<u8>) -> Result<(), String> {
        platform::consumer::on_message(&message, crate::consumer::Consumer::SOURCES)
    }
}
