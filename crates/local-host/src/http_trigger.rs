//! The HTTP trigger: a hyper server that routes each request to a fresh
//! instance of the matching component, logs it with a request id, and shuts
//! down gracefully.

use crate::app::App;
use anyhow::Result;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

type Body = UnsyncBoxBody<bytes::Bytes, wasmtime_wasi_http::Error>;

fn text(status: u16, body: &'static str) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(
            Full::new(bytes::Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("static response")
}

/// Header carrying the request id, set by the host when the client sent none.
pub const REQUEST_ID: &str = "x-request-id";

async fn serve_one(
    app: Arc<App>,
    mut req: http::Request<hyper::body::Incoming>,
    client: std::net::SocketAddr,
) -> Result<http::Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let request_id = match req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() && id.len() <= 128 => id.to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            req.headers_mut()
                .insert(REQUEST_ID, id.parse().expect("uuid is a header value"));
            id
        }
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match app.handle_http(req, client).await {
        Ok(Some(resp)) => resp.map(|b| b.boxed_unsync()),
        Ok(None) => text(404, "Not Found"),
        Err(e) => {
            tracing::error!(request_id = %request_id, error = format!("{e:#}"), "request failed in the component");
            text(500, "Internal Server Error")
        }
    };
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(resp)
}

/// Accepts connections until `shutdown` flips, then lets in-flight requests finish.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(move |req| serve_one(app.clone(), req, client)));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("http trigger drained"),
        _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => tracing::warn!("http trigger drain timed out"),
    }
    Ok(())
}
