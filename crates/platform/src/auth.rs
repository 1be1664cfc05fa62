//! Who is asking: [`authenticate`] turns a request's credential into an
//! [`access::Caller`]. An access token (`Authorization: Bearer <jwt>`) is
//! verified locally with the public keys in `jwt_public_keys`; an API key
//! (`Authorization: Bearer cpk_...` or `X-API-Key: cpk_...`) is verified by
//! `auth`, which holds the keys' hashes, by service chaining. Internal
//! endpoints (called by other components and the scheduler) use
//! [`require_service`] instead: the caller's own service token
//! (`access::service`), checked against the callers the route accepts.
//! Routes pick one of these through their guard in the route table
//! (`crate::router`).

use crate::http::Ctx;
use crate::Problem;
use access::{Caller, TokenError, TokenVerifier};
use spin_sdk::http::Request;

/// Every API key starts with this, so it can be told from a token.
pub const API_KEY_PREFIX: &str = "cpk_";

/// How API keys are verified: by chaining to `auth` (every component but
/// `auth`), or by a function of `auth` itself.
#[derive(Clone, Copy)]
pub enum KeyVerifier {
    /// `POST http://auth.spin.internal/api/v1/auth/internal/api-keys/verify`.
    Chained,
    /// A local function (used by `auth`, which owns the keys).
    Local(fn(&str) -> Result<Caller, Problem>),
}

/// The credential a request presents.
enum Presented<'a> {
    Token(&'a str),
    ApiKey(&'a str),
}

fn presented(req: &Request) -> Option<Presented<'_>> {
    if let Some(key) = req.header("x-api-key").and_then(|v| v.as_str()) {
        return Some(Presented::ApiKey(key.trim()));
    }
    let v = req.header("authorization")?.as_str()?;
    let (scheme, value) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let value = value.trim();
    Some(if value.starts_with(API_KEY_PREFIX) {
        Presented::ApiKey(value)
    } else {
        Presented::Token(value)
    })
}

/// Verifies the request's access token or API key.
pub fn authenticate(req: &Request, ctx: &Ctx, keys: KeyVerifier) -> Result<Caller, Problem> {
    match presented(req)
        .ok_or_else(|| Problem::unauthenticated("missing bearer token or api key"))?
    {
        Presented::Token(token) => verify_token(token),
        Presented::ApiKey(key) => match keys {
            KeyVerifier::Local(verify) => verify(key),
            KeyVerifier::Chained => verify_key_by_chaining(key, ctx),
        },
    }
}

/// Verifies a signed access token with the configured public keys.
pub fn verify_token(token: &str) -> Result<Caller, Problem> {
    let verifier = TokenVerifier::parse(&crate::var("jwt_public_keys")?)
        .map_err(|e| Problem::internal(format!("jwt_public_keys: {e}")))?;
    match verifier.verify(token, crate::now_unix()) {
        Ok(c) => Ok(c.into_caller()),
        Err(TokenError::Expired) => Err(Problem::unauthenticated("token expired")),
        Err(TokenError::BadKey(e)) => Err(Problem::internal(format!("jwt_public_keys: {e}"))),
        Err(_) => Err(Problem::unauthenticated("invalid token")),
    }
}

fn verify_key_by_chaining(key: &str, ctx: &Ctx) -> Result<Caller, Problem> {
    let resp = crate::http::chain(
        ctx,
        spin_sdk::http::Method::Post,
        "http://auth.spin.internal/api/v1/auth/internal/api-keys/verify",
        Some(&serde_json::json!({ "key": key })),
    )?;
    match *resp.status() {
        200 => serde_json::from_slice(resp.body())
            .map_err(|e| Problem::internal(format!("auth api-key verify: bad caller: {e}"))),
        401 => Err(Problem::unauthenticated("invalid api key")),
        s => Err(Problem::unavailable(format!(
            "auth api-key verify answered {s}"
        ))),
    }
}

/// Checks the service token of a call to an internal endpoint: it must
/// belong to one of `callers` (by the sha256 hashes in
/// `service_token_hashes`). Returns the caller's name.
pub fn require_service(req: &Request, callers: &[&'static str]) -> Result<&'static str, Problem> {
    let hashes = access::service::ServiceTokenHashes::parse(&crate::var("service_token_hashes")?)
        .map_err(|e| Problem::internal(e.to_string()))?;
    let given = req
        .header(access::service::HEADER)
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if given.is_empty() {
        return Err(Problem::unauthenticated(
            "internal endpoint: service token required",
        ));
    }
    hashes
        .verify(given, callers)
        .ok_or_else(|| Problem::new(403, "forbidden", "this service may not call this endpoint"))
}

/// Compares without leaking the position of the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
