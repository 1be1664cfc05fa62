//! Request handling shared by every component: request ids, the route path
//! relative to the component's base route, bounded JSON input, query strings,
//! JSON responses and the mapping of [`Problem`] to the common error body.

use crate::Problem;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sdk::http::{Method, Request, Response};

/// Largest request body a component accepts.
pub const MAX_BODY: usize = 256 * 1024;

/// Per-request context handed to every handler.
pub struct Ctx {
    /// The component serving the request.
    pub component: &'static str,
    /// The request id: the client's `x-request-id` if sane, else a new one.
    pub request_id: String,
    /// Path segments below the component's base route, e.g. `["users", "42"]`,
    /// or `None` when the path is not below it.
    segments: Option<Vec<String>>,
}

impl Ctx {
    /// The context of a request to `component`, whose base route is
    /// `/api/v1/<component>`. The segments come from the request's own path,
    /// which is the whole path both for a request on the component's public
    /// route and for a chained one; `spin-path-info` differs between the two
    /// on Spin (a chained request is a synthetic wildcard match), so it is
    /// not used.
    pub fn new(component: &'static str, req: &Request) -> Self {
        let request_id = req
            .header("x-request-id")
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let base = format!("/api/v1/{component}");
        let path = req.path();
        let below = path
            .strip_prefix(base.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'));
        let segments = below.map(|rest| {
            rest.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        Self {
            component,
            request_id,
            segments,
        }
    }

    /// The segments as `&str`s, for matching in a route table (a path
    /// outside the component's base matches no route).
    pub fn path(&self) -> Vec<&str> {
        match &self.segments {
            Some(s) => s.iter().map(String::as_str).collect(),
            None => vec!["\u{0}outside"],
        }
    }
}

/// Runs a component's request handling and turns its result into a
/// response. Errors get the common JSON shape; the cause of a 5xx is logged
/// with the request id.
pub fn respond<F>(component: &'static str, req: Request, handle: F) -> Response
where
    F: FnOnce(&Ctx, &Request) -> Result<Response, Problem>,
{
    let ctx = Ctx::new(component, &req);
    let mut resp = match handle(&ctx, &req) {
        Ok(r) => r,
        Err(p) => problem_response(&ctx, p),
    };
    resp.set_header("x-request-id", ctx.request_id.clone());
    resp
}

/// The response for a problem, logging its internal cause.
pub fn problem_response(ctx: &Ctx, p: Problem) -> Response {
    if let Some(cause) = &p.internal {
        eprintln!(
            "{}",
            serde_json::json!({"level": "error", "request_id": ctx.request_id, "status": p.status, "cause": cause})
        );
    }
    let mut b = Response::builder();
    b.status(p.status)
        .header("content-type", "application/json");
    if let Some(secs) = p.retry_after {
        b.header("retry-after", secs.to_string());
    }
    b.body(p.body(&ctx.request_id)).build()
}

/// A JSON response.
pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(value).expect("response serializes"))
        .build()
}

/// 204 No Content.
pub fn no_content() -> Response {
    Response::builder().status(204).body(Vec::new()).build()
}

/// Parses a JSON body into `T`, with a size limit and a message that says
/// what was wrong (unknown fields are refused by `T`'s serde attributes).
pub fn body<T: DeserializeOwned>(req: &Request) -> Result<T, Problem> {
    body_within(req, MAX_BODY)
}

/// [`body`] with another size limit (routes that take large bodies, such as
/// agents' reports).
pub fn body_within<T: DeserializeOwned>(req: &Request, max: usize) -> Result<T, Problem> {
    let bytes = raw_body_within(req, max, "application/json")?;
    let clean = |e: serde_json::Error| {
        let msg = e.to_string();
        let msg = msg.split(" at line").next().unwrap_or(&msg).to_string();
        Problem::invalid(format!("invalid json body: {msg}"))
    };
    // Serde would read a struct from an array too; a body is an object.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(clean)?;
    if !value.is_object() {
        return Err(Problem::invalid(
            "invalid json body: expected a json object",
        ));
    }
    serde_json::from_value(value).map_err(clean)
}

/// A raw (non-JSON) request body of `content_type`, at most `max` bytes:
/// 413 when larger, 415 for another content type (file uploads).
pub fn raw_body_within<'a>(
    req: &'a Request,
    max: usize,
    content_type: &str,
) -> Result<&'a [u8], Problem> {
    let bytes = req.body();
    if bytes.len() > max {
        return Err(Problem::new(
            413,
            "payload_too_large",
            format!("body larger than {max} bytes"),
        ));
    }
    let matches = req
        .header("content-type")
        .and_then(|v| v.as_str())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case(content_type)
        })
        .unwrap_or(false);
    if !matches {
        return Err(Problem::new(
            415,
            "unsupported_media_type",
            format!("content-type must be {content_type}"),
        ));
    }
    Ok(bytes)
}

/// A response with a raw body of `content_type` (files, images).
pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .build()
}

/// Calls an internal endpoint of another component by service chaining
/// (`http://<component>.spin.internal/...`), with this component's service
/// token and the request id, and a JSON body if given. Transport failures
/// are 503s. Runs the request to completion (components handle one request
/// at a time, so nothing else waits meanwhile).
pub fn chain(
    ctx: &Ctx,
    method: Method,
    url: &str,
    body: Option<&serde_json::Value>,
) -> Result<Response, Problem> {
    let key = access::service::ComponentKey::parse(&crate::var("component_key")?)
        .map_err(|e| Problem::internal(e.to_string()))?;
    let mut b = chained(ctx, method, url)?;
    b.header(access::service::HEADER, key.service_token(ctx.component));
    send_chained(b, url, body)
}

/// Calls another component's public route by service chaining on behalf
/// of the caller of `req`: their own credentials (`Authorization`,
/// `X-API-Key`) travel with it, so the other component authenticates and
/// authorizes them itself (nothing is taken on this component's word); an
/// `Idempotency-Key` is sent when given. Transport failures are 503s.
pub fn chain_on_behalf(
    ctx: &Ctx,
    req: &Request,
    method: Method,
    url: &str,
    body: Option<&serde_json::Value>,
    idempotency_key: Option<&str>,
) -> Result<Response, Problem> {
    let mut b = chained(ctx, method, url)?;
    for name in ["authorization", "x-api-key"] {
        if let Some(v) = req.header(name).and_then(|v| v.as_str()) {
            b.header(name, v);
        }
    }
    if let Some(key) = idempotency_key {
        b.header("idempotency-key", key);
    }
    send_chained(b, url, body)
}

/// A chained request's builder with the request id; refused while this
/// instance holds a database connection.
fn chained(
    ctx: &Ctx,
    method: Method,
    url: &str,
) -> Result<spin_sdk::http::RequestBuilder, Problem> {
    if crate::db::open_connections() > 0 {
        return Err(Problem::internal(format!(
            "{url}: a database connection is held across a chained call (it could wait forever under a connection limit)"
        )));
    }
    let mut b = Request::builder();
    b.method(method)
        .uri(url)
        .header("x-request-id", ctx.request_id.as_str());
    Ok(b)
}

/// Sends a chained request (a JSON body if given) to completion
/// (components handle one request at a time, so nothing else waits).
fn send_chained(
    mut b: spin_sdk::http::RequestBuilder,
    url: &str,
    body: Option<&serde_json::Value>,
) -> Result<Response, Problem> {
    let req = match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(serde_json::to_vec(v).expect("json serializes"))
            .build(),
        None => b.build(),
    };
    spin_sdk::http::run(spin_sdk::http::send(req))
        .map_err(|e: spin_sdk::http::SendError| Problem::unavailable(format!("{url}: {e}")))
}

/// Reads another component's internal list one page at a time by service
/// chaining (what a consumer rebuilds its copies from when a feed was
/// pruned past its cursor): `url` makes a page's address from the last
/// item of the page before (none: the first), `apply` takes each page's
/// items with a connection opened after the page arrived (none is held
/// while asking). Ends at an empty page; a page that is not `200 {items}`
/// is a 503 (`what` names the list).
pub fn each_page<T: DeserializeOwned>(
    ctx: &Ctx,
    what: &str,
    url: impl Fn(Option<&T>) -> String,
    apply: impl Fn(&crate::db::Db, Vec<T>) -> Result<(), Problem>,
) -> Result<(), Problem> {
    #[derive(serde::Deserialize)]
    struct Page<T> {
        items: Vec<T>,
    }
    let mut next = url(None);
    loop {
        let resp = chain(ctx, Method::Get, &next, None)?;
        if *resp.status() != 200 {
            return Err(Problem::unavailable(format!(
                "{what} answered {}",
                resp.status()
            )));
        }
        let page: Page<T> = serde_json::from_slice(resp.body())
            .map_err(|e| Problem::internal(format!("{what}: bad page: {e}")))?;
        let Some(last) = page.items.last() else {
            return Ok(());
        };
        next = url(Some(last));
        let db = crate::db::Db::open()?;
        apply(&db, page.items)?;
    }
}

/// The request's `Idempotency-Key` header, if any: 1 to 128 printable
/// ASCII characters, else 400.
pub fn idempotency_key(req: &Request) -> Result<Option<String>, Problem> {
    match req.header("idempotency-key").and_then(|v| v.as_str()) {
        None => Ok(None),
        Some(k) if !k.is_empty() && k.len() <= 128 && k.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        Some(_) => Err(Problem::invalid(
            "Idempotency-Key must be 1-128 printable characters",
        )),
    }
}

/// The value of a query-string parameter.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find_map(|(k, v)| {
            if k == name {
                Some(percent_decode(v))
            } else {
                None
            }
        })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An integer query parameter from 0 to `max` (`default` when absent).
pub fn int_query(req: &Request, name: &str, default: i64, max: i64) -> Result<i64, Problem> {
    match query_param(req, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .ok_or_else(|| Problem::invalid(format!("{name} must be an integer from 0 to {max}"))),
    }
}

/// 405 for a known path with the wrong method.
pub fn method_not_allowed(method: &Method) -> Problem {
    Problem::new(
        405,
        "method_not_allowed",
        format!("method {method} is not allowed here"),
    )
}

/// Pagination parameters: `page` from 1, `per_page` 1..=100 (default 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: i64,
    /// Items per page.
    pub per_page: i64,
}

impl Page {
    /// Reads `page` and `per_page` from the query string.
    pub fn from_request(req: &Request) -> Result<Self, Problem> {
        let parse = |name: &str, default: i64, max: i64| -> Result<i64, Problem> {
            match query_param(req, name) {
                None => Ok(default),
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(Problem::invalid(format!(
                        "{name} must be an integer from 1 to {max}"
                    ))),
                },
            }
        };
        Ok(Self {
            page: parse("page", 1, 1_000_000)?,
            per_page: parse("per_page", 20, 100)?,
        })
    }

    /// SQL OFFSET.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }
}

/// A page of items with its total.
#[derive(Debug, Serialize)]
pub struct Paged<T: Serialize> {
    /// The items.
    pub items: Vec<T>,
    /// 1-based page number.
    pub page: i64,
    /// Items per page.
    pub per_page: i64,
    /// Total items over all pages.
    pub total: i64,
}

/// `200` with one page of a list: its items, the page asked for, and the
/// total over all pages.
pub fn page_of<T: Serialize>(page: Page, (items, total): (Vec<T>, i64)) -> Response {
    json(
        200,
        &Paged {
            items,
            page: page.page,
            per_page: page.per_page,
            total,
        },
    )
}

/// `GET /health` of a component: 200 when its own database answers, 503 otherwise.
pub fn health<E: From<Problem>>(call: &crate::router::Call) -> Result<Response, E> {
    crate::db::ping()?;
    Ok(json(
        200,
        &serde_json::json!({"status": "ok", "component": call.ctx.component, "database": "ok"}),
    ))
}

/// `GET /health/live`: the component runs (no dependency is checked), for
/// liveness probes.
pub fn live<E: From<Problem>>(call: &crate::router::Call) -> Result<Response, E> {
    Ok(json(
        200,
        &serde_json::json!({"status": "ok", "component": call.ctx.component}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_plus_and_garbage() {
        assert_eq!(percent_decode("a%40b+c"), "a@b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
