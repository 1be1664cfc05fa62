//! The one error type of `app` and its mapping to the common error body.

use platform::db::DbError;
use platform::Problem;

/// Everything that can go wrong in `app`.
#[derive(Debug)]
pub enum Error {
    /// 400: the input breaks a rule.
    Invalid(String),
    /// 404: no such resource, or not one the caller may see (never says which).
    NotFound(&'static str),
    /// 409: the change conflicts with what is stored.
    Conflict(String),
    /// 422 `invalid_apk`: the file is not an APK this platform takes.
    InvalidApk(String),
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
            Error::InvalidApk(m) => Problem::new(422, "invalid_apk", m),
            Error::Problem(p) => p,
        }
    }
}

/// The result of every handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;
