//! Types and rules of `user`, free of I/O.

pub mod access;
pub mod org;
pub mod profile;
pub mod quota;
pub mod role;
pub mod ticket;

/// Parses an RFC 3339 time into the UTC timestamp the database stores.
pub fn parse_time(raw: &str, field: &str) -> Result<chrono::NaiveDateTime, crate::error::Error> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.naive_utc())
        .map_err(|_| crate::error::Error::Invalid(format!("{field} must be an RFC 3339 time")))
}
