//! Postgres through Spin's `spin:postgres@4.0.0`, with the rules Spin's pool
//! imposes: every transaction this module opens ends in COMMIT or ROLLBACK on
//! every path, because a connection goes back to the pool as it is and an open
//! transaction would leak into a later request. Errors are classified so that
//! an unreachable database is a 503 and a unique-key violation a 409.

use crate::Problem;
use spin_sdk::pg4::{self, Connection, DbValue, ParameterValue, QueryError, RowSet};

/// A classified database error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// The database cannot be reached (503).
    Unavailable(String),
    /// A unique constraint was violated; holds the constraint name (409).
    Unique(String),
    /// A foreign-key or check constraint was violated (409 or 400 by caller).
    Constraint(String),
    /// The statement gave up waiting (a lock timeout, or the role's
    /// `statement_timeout`): back-pressure, 503 with `Retry-After`.
    Busy(String),
    /// Anything else (500).
    Other(String),
}

impl From<pg4::PgError> for DbError {
    fn from(e: pg4::PgError) -> Self {
        match e {
            pg4::PgError::ConnectionFailed(m) => DbError::Unavailable(m),
            pg4::PgError::QueryFailed(QueryError::DbError(d)) => {
                let constraint = d
                    .extras
                    .iter()
                    .find(|(k, _)| k == "constraint")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                match d.code.as_str() {
                    "23505" => DbError::Unique(constraint),
                    "23503" | "23514" | "23502" => DbError::Constraint(constraint),
                    "55P03" | "57014" => DbError::Busy(d.message),
                    // Connection-class and shutdown errors: the database is going away.
                    c if c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03" => {
                        DbError::Unavailable(d.as_text)
                    }
                    _ => DbError::Other(d.as_text),
                }
            }
            // Spin 4.1 serves `spin:postgres@4.0.0` queries through its
            // newer interface and hands some server errors back as text (the
            // SQLSTATE only inside it): read the code from the text, so a
            // lock or statement time-out is still back-pressure, not a 500.
            pg4::PgError::QueryFailed(QueryError::Text(t)) => match sqlstate_in(&t) {
                Some("23505") => DbError::Unique(String::new()),
                Some("23503" | "23514" | "23502") => DbError::Constraint(String::new()),
                Some("55P03" | "57014") => DbError::Busy(t),
                Some(c) if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03") => {
                    DbError::Unavailable(t)
                }
                _ => DbError::Other(t),
            },
            other => DbError::Other(other.to_string()),
        }
    }
}

/// The SQLSTATE a server error's text carries (`code: "57014"`, or
/// tokio-postgres' `SqlState(E57014)`).
fn sqlstate_in(text: &str) -> Option<&str> {
    let after = |marker: &str| {
        let at = text.find(marker)? + marker.len();
        let code = text.get(at..at + 5)?;
        code.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(code)
    };
    after("SqlState(E").or_else(|| after("code: \""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_handed_back_as_text_keeps_its_meaning() {
        // As Spin 4.1 answers a lock time-out of a `query` (abridged).
        let text = r#"Error::QueryFailed(QueryError::DbError(DbError { as-text: "Error { kind: Db, cause: Some(DbError { severity: \"ERROR\", code: SqlState(E55P03), message: \"canceling statement due to lock timeout\" }) }", code: "55P03" }))"#;
        let e = DbError::from(pg4::PgError::QueryFailed(QueryError::Text(text.into())));
        assert!(matches!(e, DbError::Busy(_)), "{e:?}");
        assert_eq!(Problem::from(e).status, 503);
        let unique = r#"db error: code: "23505", message: "duplicate key""#;
        assert!(matches!(
            DbError::from(pg4::PgError::QueryFailed(QueryError::Text(unique.into()))),
            DbError::Unique(_)
        ));
        let other = "something else entirely";
        assert!(matches!(
            DbError::from(pg4::PgError::QueryFailed(QueryError::Text(other.into()))),
            DbError::Other(_)
        ));
        assert_eq!(sqlstate_in("code: SqlState(E57014)"), Some("57014"));
        assert_eq!(sqlstate_in("SqlState(E12"), None);
    }
}

impl From<DbError> for Problem {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => Problem::unavailable(format!("database unavailable: {m}")),
            // Constraint names are schema detail: they go to the log only.
            DbError::Unique(c) => Problem {
                internal: Some(format!("unique violation: {c}")),
                ..Problem::conflict("already exists")
            },
            DbError::Constraint(c) => Problem {
                internal: Some(format!("constraint violation: {c}")),
                ..Problem::conflict("the change conflicts with existing data")
            },
            DbError::Busy(m) => Problem::unavailable(format!("database busy: {m}")).retry_after(1),
            DbError::Other(m) => Problem::internal(format!("database error: {m}")),
        }
    }
}

/// A decoding failure of a row into a domain type.
pub fn decode_error(what: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Other(format!("cannot decode {what}: {e}"))
}

/// How long [`Db::open`] waits for a free connection slot before answering 503.
pub const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a connection failure means the server had no slot for us.
fn out_of_slots(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("too many connections")
        || m.contains("too many clients")
        || m.contains("remaining connection slots")
}

/// A connection to the component's own database.
///
/// A component never holds one across a chained call ([`crate::http::chain`]
/// refuses): with a bounded number of database connections (Spin's
/// `[outbound_pg] max_connections`), requests that hold connections while
/// waiting for chained requests that need connections could wait on each
/// other forever.
pub struct Db {
    conn: Connection,
}

thread_local! {
    /// Connections this instance holds open (an instance serves one request).
    static OPEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// How many database connections this instance holds open now.
pub fn open_connections() -> u32 {
    OPEN.with(|o| o.get())
}

impl Drop for Db {
    fn drop(&mut self) {
        OPEN.with(|o| o.set(o.get().saturating_sub(1)));
    }
}

impl Db {
    /// Opens the database named by the component variable `db_url`.
    ///
    /// When the server refuses for lack of connection slots (the role's
    /// `CONNECTION LIMIT`, or the server's), it retries with backoff for up
    /// to [`BUSY_WAIT`], then answers 503 with `Retry-After`: back-pressure,
    /// not a failure.
    pub fn open() -> Result<Self, Problem> {
        let url = crate::var("db_url")?;
        let mut waited = std::time::Duration::ZERO;
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            match Self::open_url(&url) {
                Err(DbError::Unavailable(m)) if out_of_slots(&m) => {
                    if waited >= BUSY_WAIT {
                        return Err(Problem::unavailable(format!(
                            "database busy after {waited:?}: {m}"
                        ))
                        .retry_after(1));
                    }
                    std::thread::sleep(pause);
                    waited += pause;
                    pause = (pause * 2).min(std::time::Duration::from_millis(320));
                }
                other => return other.map_err(Problem::from),
            }
        }
    }

    /// Opens a database by URL.
    pub fn open_url(url: &str) -> Result<Self, DbError> {
        let conn = Connection::open(url)?;
        OPEN.with(|o| o.set(o.get() + 1));
        Ok(Self { conn })
    }

    /// Runs a query.
    pub fn query(&self, sql: &str, params: &[ParameterValue]) -> Result<RowSet, DbError> {
        Ok(self.conn.query(sql, params)?)
    }

    /// The first row of a query, decoded (`None` if there is none).
    pub fn one<T>(
        &self,
        sql: &str,
        params: &[ParameterValue],
        decode: impl Fn(&[DbValue]) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let rows = self.query(sql, params)?;
        rows.rows.first().map(|r| decode(r)).transpose()
    }

    /// Every row of a query, decoded.
    pub fn all<T>(
        &self,
        sql: &str,
        params: &[ParameterValue],
        decode: impl Fn(&[DbValue]) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let rows = self.query(sql, params)?;
        rows.rows.iter().map(|r| decode(r)).collect()
    }

    /// Runs a statement and returns the affected row count.
    pub fn execute(&self, sql: &str, params: &[ParameterValue]) -> Result<u64, DbError> {
        Ok(self.conn.execute(sql, params)?)
    }

    /// Runs `f` in a transaction: COMMIT if it returns `Ok`, ROLLBACK otherwise
    /// (and if the commit itself fails).
    pub fn transaction<T, E>(&self, f: impl FnOnce(&Db) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.execute("BEGIN", &[])?;
        match f(self) {
            Ok(v) => match self.execute("COMMIT", &[]) {
                Ok(_) => Ok(v),
                Err(e) => {
                    let _ = self.execute("ROLLBACK", &[]);
                    Err(e.into())
                }
            },
            Err(e) => {
                // A failed rollback leaves the connection unusable; Postgres
                // aborts the transaction when the connection closes.
                let _ = self.execute("ROLLBACK", &[]);
                Err(e)
            }
        }
    }
}

/// Reads column `i` of a row.
pub fn col<T: pg4::Decode>(row: &[DbValue], i: usize, what: &str) -> Result<T, DbError> {
    let v = row
        .get(i)
        .ok_or_else(|| decode_error(what, "missing column"))?;
    T::decode(v).map_err(|e| decode_error(what, e))
}

/// A `timestamp` column (UTC by convention) as RFC 3339.
pub fn timestamp(row: &[DbValue], i: usize, what: &str) -> Result<String, DbError> {
    let t: chrono::NaiveDateTime = col(row, i, what)?;
    Ok(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// A nullable `timestamp` column as RFC 3339.
pub fn opt_timestamp(row: &[DbValue], i: usize, what: &str) -> Result<Option<String>, DbError> {
    let t: Option<chrono::NaiveDateTime> = col(row, i, what)?;
    Ok(t.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
}

/// A `text[]` column (select uuid arrays as `col::text[]`: Spin has no uuid
/// array type) as UUIDs.
pub fn uuids(row: &[DbValue], i: usize, what: &str) -> Result<Vec<uuid::Uuid>, DbError> {
    let v: Vec<Option<String>> = col(row, i, what)?;
    v.into_iter()
        .flatten()
        .map(|s| uuid::Uuid::parse_str(&s).map_err(|e| decode_error(what, e)))
        .collect()
}

/// A `text[]` column without nulls.
pub fn strings(row: &[DbValue], i: usize, what: &str) -> Result<Vec<String>, DbError> {
    let v: Vec<Option<String>> = col(row, i, what)?;
    Ok(v.into_iter().flatten().collect())
}

/// A list of UUIDs as a parameter for `= ANY($n::text[]::uuid[])`.
pub fn uuid_array(ids: &[uuid::Uuid]) -> ParameterValue {
    ParameterValue::ArrayStr(ids.iter().map(|i| Some(i.to_string())).collect())
}

/// A nullable UUID parameter.
pub fn opt_uuid(id: Option<uuid::Uuid>) -> ParameterValue {
    id.map_or(ParameterValue::DbNull, |i| {
        ParameterValue::Uuid(i.to_string())
    })
}

/// A UTC time as a Spin `datetime` parameter.
pub fn datetime_param(dt: chrono::NaiveDateTime) -> ParameterValue {
    use chrono::{Datelike, Timelike};
    ParameterValue::Datetime((
        dt.year(),
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
        dt.nanosecond(),
    ))
}

/// The current UTC time as a Spin `datetime` parameter.
pub fn now_param() -> ParameterValue {
    use chrono::{Datelike, Timelike};
    let secs = crate::now_unix();
    let dt = chrono::DateTime::from_timestamp(secs, 0)
        .expect("valid time")
        .naive_utc();
    ParameterValue::Datetime((
        dt.year(),
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
        0,
    ))
}

/// Checks that the component's database answers (used by `GET /health`).
pub fn ping() -> Result<(), Problem> {
    Db::open()?.query("SELECT 1", &[])?;
    Ok(())
}
