//! The one error type of `billing` and its mapping to the common error body.

use platform::db::DbError;
use platform::Problem;

/// Everything that can go wrong in `billing`.
#[derive(Debug)]
pub enum Error {
    /// 400: the input breaks a rule.
    Invalid(String),
    /// 403: the caller may not do this here (beyond the route's permission).
    Forbidden(&'static str),
    /// 404: no such resource, or not one the caller may see (never says which).
    NotFound(&'static str),
    /// 409: the change conflicts with what is stored.
    Conflict(String),
    /// 409 `insufficient_balance`: a balance would go below its floor.
    Insufficient,
    /// 409 `idempotency_key_reused`: the key was used for another request.
    KeyReused,
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
            Error::Forbidden(m) => Problem::new(403, "forbidden", m),
            Error::NotFound(what) => Problem::not_found(what),
            Error::Conflict(m) => Problem::conflict(m),
            Error::Insufficient => Problem::new(
                409,
                "insufficient_balance",
                "the balance does not cover this: the available balance may not go below minus its credit limit, nor a frozen one below zero",
            ),
            Error::KeyReused => Problem::new(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ),
            Error::Problem(p) => p,
        }
    }
}

/// The result of every handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;
