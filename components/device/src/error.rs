//! The one error type of `device` and its mapping to the common error body.

use platform::db::DbError;
use platform::Problem;

/// Everything that can go wrong in `device`.
#[derive(Debug)]
pub enum Error {
    /// 400: the input breaks a rule.
    Invalid(String),
    /// 404: no such resource, or not one the caller may see (never says which).
    NotFound(&'static str),
    /// 409: the change conflicts with the current state.
    Conflict(String),
    /// 403: the caller may not do this.
    Forbidden(String),
    /// 409 `quota_exceeded`: the owner's quota does not allow it.
    QuotaExceeded(String),
    /// 409 `no_capacity`: no node can take the device (the message says why).
    NoCapacity(String),
    /// 401: an agent's request is not signed by its node.
    BadSignature(&'static str),
    /// 502: a component this one depends on refused or failed.
    Upstream(String),
    /// Any already-classified problem (database, auth, body parsing).
    Problem(Problem),
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::Problem(p)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Problem(e.into())
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => Problem::invalid(m),
            Error::NotFound(what) => Problem::not_found(what),
            Error::Conflict(m) => Problem::conflict(m),
            Error::Forbidden(m) => Problem::new(403, "forbidden", m),
            Error::QuotaExceeded(m) => Problem::new(409, "quota_exceeded", m),
            Error::NoCapacity(m) => Problem::new(409, "no_capacity", m),
            Error::BadSignature(why) => Problem::unauthenticated(why),
            Error::Upstream(cause) => Problem::upstream(cause),
            Error::Problem(p) => p,
        }
    }
}

/// The result of every handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;
