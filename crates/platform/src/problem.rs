//! The one error shape of every component:
//! `{"error": {"code": "...", "message": "...", "request_id": "..."}}`.

use serde::Serialize;

/// An error on its way to becoming an HTTP response. `internal` holds the
/// cause of a 5xx: it goes to the log with the request id, never to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code, snake_case.
    pub code: &'static str,
    /// Human-readable message, lower-case, no trailing period.
    pub message: String,
    /// Cause for the log only.
    pub internal: Option<String>,
    /// Seconds after which a retry may succeed (`Retry-After`), for
    /// back-pressure answers (503, 429).
    pub retry_after: Option<u32>,
}

impl Problem {
    /// A client error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            internal: None,
            retry_after: None,
        }
    }

    /// 400 with a validation message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_input", message)
    }

    /// 401.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, "unauthenticated", message)
    }

    /// 403.
    pub fn forbidden() -> Self {
        Self::new(403, "forbidden", "you are not allowed to do this")
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "not_found", format!("{what} not found"))
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 500: the cause is logged, the client sees a generic message.
    pub fn internal(cause: impl Into<String>) -> Self {
        Self {
            status: 500,
            code: "internal",
            message: "internal error".into(),
            internal: Some(cause.into()),
            retry_after: None,
        }
    }

    /// 503: a dependency (the database) is unavailable.
    pub fn unavailable(cause: impl Into<String>) -> Self {
        Self {
            status: 503,
            code: "unavailable",
            message: "service temporarily unavailable, try again".into(),
            internal: Some(cause.into()),
            retry_after: Some(1),
        }
    }

    /// 502: another component refused or failed; the cause is logged.
    pub fn upstream(cause: impl Into<String>) -> Self {
        Self {
            status: 502,
            code: "upstream",
            message: "a dependency failed, try again".into(),
            internal: Some(cause.into()),
            retry_after: None,
        }
    }

    /// The same problem with a `Retry-After` of `secs`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body for a request id.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            request_id: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        serde_json::to_vec(&Outer {
            error: Inner {
                code: self.code,
                message: &self.message,
                request_id,
            },
        })
        .expect("error body serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_common_shape_and_hides_internal_causes() {
        let p = Problem::internal("password=hunter2 connection refused");
        let v: serde_json::Value = serde_json::from_slice(&p.body("r1")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "internal", "message": "internal error", "request_id": "r1"}})
        );
    }
}
