//! The `device` component: cloud phones, host nodes, templates, snapshots,
//! GPU allocations and placement. Owns `cloudphone_device` and speaks the
//! runtime-agent protocol (`docs/agent-protocol.md`). Served under
//! `/api/v1/device/...`; this first cut serves only its health route.

/// Spin's export macro generates `unsafe` glue: it is confined to this module,
/// and compiled only for wasm32 (natively the unit tests run without it).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{Request, Response};

    #[spin_sdk::http_component]
    fn handle(req: Request) -> Response {
        platform::router::serve_health_only("device", req)
    }
}
