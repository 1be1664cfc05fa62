//! Who is asking: every endpoint that is not explicitly public calls
//! [`authenticate`], which verifies the bearer token with the public keys in
//! the `jwt_public_keys` variable. Internal endpoints (reached by service
//! chaining from other components and the scheduler) call
//! [`require_internal`] instead.

use crate::Problem;
use access::{TokenError, TokenVerifier};
use spin_sdk::http::Request;
use uuid::Uuid;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub user_id: Uuid,
    /// Tenant, if the user belongs to one.
    pub tenant_id: Option<Uuid>,
    /// Role codes.
    pub roles: Vec<String>,
}

impl Caller {
    /// Whether the caller has a role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.header("authorization")?.as_str()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Verifies the request's bearer token.
pub fn authenticate(req: &Request) -> Result<Caller, Problem> {
    let token = bearer(req).ok_or_else(|| Problem::unauthenticated("missing bearer token"))?;
    let verifier = TokenVerifier::parse(&crate::var("jwt_public_keys")?)
        .map_err(|e| Problem::internal(format!("jwt_public_keys: {e}")))?;
    match verifier.verify(token, crate::now_unix()) {
        Ok(c) => Ok(Caller {
            user_id: c.sub,
            tenant_id: c.tid,
            roles: c.roles,
        }),
        Err(TokenError::Expired) => Err(Problem::unauthenticated("token expired")),
        Err(TokenError::BadKey(e)) => Err(Problem::internal(format!("jwt_public_keys: {e}"))),
        Err(_) => Err(Problem::unauthenticated("invalid token")),
    }
}

/// Checks the shared internal token of a chained or scheduler request.
pub fn require_internal(req: &Request) -> Result<(), Problem> {
    let expected = crate::var("internal_token")?;
    let given = req
        .header("x-internal-token")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if !expected.is_empty() && constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Problem::unauthenticated("internal endpoint"))
    }
}

/// Compares without leaking the position of the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
