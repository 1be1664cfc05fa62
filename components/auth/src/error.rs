//! The one error type of `auth` and its mapping to the common error body.

use platform::db::DbError;
use platform::Problem;

/// Everything that can go wrong in `auth`.
#[derive(Debug)]
pub enum Error {
    /// 400: the input breaks a rule.
    Invalid(String),
    /// 401: wrong email or password (never says which).
    BadCredentials,
    /// 401: the refresh token is unknown, expired, revoked or reused.
    InvalidRefresh,
    /// 429: too many failed logins for this email; seconds until it unlocks.
    Locked(i64),
    /// 403: the password was right but the account is not active.
    Inactive,
    /// 404: the caller's credentials are gone (deleted user).
    NotFound,
    /// 404: no such resource of the caller's.
    NotFoundNamed(&'static str),
    /// 400: the password-reset token is unknown, used or expired.
    InvalidResetToken,
    /// 409: the email is registered already.
    EmailTaken,
    /// 502: the `user` component refused or failed.
    Upstream(String),
    /// Any already-classified problem (database, configuration, body parsing).
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
            Error::BadCredentials => {
                Problem::new(401, "bad_credentials", "invalid email or password")
            }
            Error::InvalidRefresh => Problem::new(
                401,
                "invalid_refresh_token",
                "refresh token is invalid or expired",
            ),
            Error::Locked(secs) => Problem::new(
                429,
                "locked",
                format!("too many failed logins: try again in {secs} seconds"),
            ),
            Error::Inactive => Problem::new(403, "inactive", "this account is not active"),
            Error::NotFound => Problem::not_found("account"),
            Error::NotFoundNamed(what) => Problem::not_found(what),
            Error::InvalidResetToken => Problem::new(
                400,
                "invalid_reset_token",
                "the reset token is invalid, used or expired",
            ),
            Error::EmailTaken => Problem::conflict("email is already registered"),
            Error::Upstream(cause) => Problem::upstream(cause),
            Error::Problem(p) => p,
        }
    }
}
