//! The `auth` component: registers users (their profile lives in `user`, their
//! credentials here), logs them in, and signs the access tokens that every
//! other component verifies with `crates/access`. Served by Spin's HTTP
//! trigger under `/api/v1/auth/...`.

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
