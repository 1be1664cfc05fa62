//! The `user` component: user profiles (and, as the domain fills in, roles,
//! tenants, departments, quotas, tickets and the audit log). Owns
//! `cloudphone_user` and publishes `user.*` events through its outbox.
//! Served by Spin's HTTP trigger under `/api/v1/user/...`.

mod domain;
mod error;
mod handlers;
mod repo;
mod routes;

/// Spin's export macro generates `unsafe` glue: it is confined to this module.
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{Request, Response};

    #[spin_sdk::http_component]
    async fn handle(req: Request) -> Response {
        platform::http::serve(req, crate::routes::dispatch).await
    }
}
