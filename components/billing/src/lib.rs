//! The `billing` component: plans, orders, payments, balances and their
//! ledger, usage records, invoices and billing rules. Owns `cloudphone_billing`.
//! Served under `/api/v1/billing/...`; this first cut serves only its health route.

/// Spin's export macro generates `unsafe` glue: it is confined to this module,
/// and compiled only for wasm32 (natively the unit tests run without it).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{Request, Response};

    #[spin_sdk::http_component]
    fn handle(req: Request) -> Response {
        platform::router::serve_health_only("billing", req)
    }
}
