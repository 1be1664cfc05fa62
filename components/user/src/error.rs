//! The one error type of `user` and its mapping to the common error body.

use platform::db::DbError;
use platform::Problem;

/// Everything that can go wrong in `user`.
#[derive(Debug)]
pub enum Error {
    /// 400: the input breaks a rule.
    Invalid(String),
    /// 404: no such route or resource.
    NotFound,
    /// 404: the caller's profile does not exist (deleted).
    NoProfile,
    /// 409: the id is taken by a different email.
    IdTaken,
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
            Error::NotFound => Problem::not_found("route"),
            Error::NoProfile => Problem::not_found("user"),
            Error::IdTaken => Problem::conflict("user id already in use"),
            Error::Problem(p) => p,
        }
    }
}
