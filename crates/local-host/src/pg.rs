//! `spin:postgres/postgres@4.0.0` on tokio-postgres, with Spin's semantics:
//! connections are pooled per component and address and go back to the pool
//! as they are, so a transaction left open by one request is still open for
//! the next one; parameters bind with exact types; `timestamptz` cannot be
//! read (select `col AT TIME ZONE 'UTC'` instead), and `json`, `money` and
//! other unmapped types come back as raw bytes.

// The error type is the WIT interface's `error` variant, returned to the
// guest as it is: boxing it would only add a copy.
#![allow(clippy::result_large_err)]

use crate::bindings::spin::postgres::postgres::{
    self as pg, Column, DbDataType, DbError, DbValue, Error, Interval, ParameterValue, QueryError,
    RowSet,
};
use crate::state::State;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};
use wasmtime::component::Resource;

/// Connections a pool holds at most, checked out and idle together (Spin
/// 4.1's `CONNECTION_POOL_SIZE`, a deadpool pool per component and address):
/// a guest asking for one more waits, first come first served, until one is
/// returned.
pub const POOL_SIZE: usize = 64;

/// One component's pool for one address.
struct Pool {
    /// Connections returned and not closed.
    idle: Mutex<Vec<Client>>,
    /// One permit per connection checked out (or being made).
    size: Arc<tokio::sync::Semaphore>,
}

/// The app's connection pools, one per component and address (as in Spin
/// 4.1, where each component has its own client factory), and Spin's
/// `[outbound_pg] max_connections`: at most that many connections are open
/// in guests at once across the app; a guest opening one more waits until
/// one is dropped (Spin's runtime config sets no wait time-out).
#[derive(Default)]
pub struct PgPool {
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    permits: Option<Arc<tokio::sync::Semaphore>>,
}

/// A connection taken from a [`Pool`], with its place in that pool.
struct Taken {
    client: Client,
    pool: Arc<Pool>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl PgPool {
    /// A pool with an optional bound on connections open at once.
    pub fn new(max_connections: Option<usize>) -> Self {
        Self {
            pools: Mutex::default(),
            permits: max_connections.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
        }
    }

    fn pool(&self, component: &str, address: &str) -> Arc<Pool> {
        self.pools
            .lock()
            .expect("pool lock")
            .entry((component.to_owned(), address.to_owned()))
            .or_insert_with(|| {
                Arc::new(Pool {
                    idle: Mutex::default(),
                    size: Arc::new(tokio::sync::Semaphore::new(POOL_SIZE)),
                })
            })
            .clone()
    }

    async fn get(&self, component: &str, address: &str) -> Result<Taken, Error> {
        let pool = self.pool(component, address);
        let place = pool
            .size
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ConnectionFailed("connection pool closed".into()))?;
        loop {
            let candidate = pool.idle.lock().expect("pool lock").pop();
            match candidate {
                Some(c) if !c.is_closed() => {
                    return Ok(Taken {
                        client: c,
                        pool,
                        _place: place,
                    })
                }
                Some(_) => continue,
                None => break,
            }
        }
        let client = connect(address).await?;
        Ok(Taken {
            client,
            pool,
            _place: place,
        })
    }
}

/// A new connection to `address`.
async fn connect(address: &str) -> Result<Client, Error> {
    let mut config: tokio_postgres::Config = address
        .parse()
        .map_err(|e| Error::ConnectionFailed(format!("invalid address: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if !matches!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Disable
    ) {
        return Err(Error::ConnectionFailed(
            "the local host connects without TLS: add sslmode=disable to the address".into(),
        ));
    }
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        // The server's reason ("too many connections for role ..."), not
        // only "db error": the guest tells a full role from an outage.
        Error::ConnectionFailed(match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// The host side of a guest's `connection` resource.
pub struct PgConnection {
    taken: Option<Taken>,
    /// Held while the guest holds the connection (released on drop).
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        // Spin returns the connection without resetting it: deliberately the
        // same. A closed one leaves the pool.
        if let Some(t) = self.taken.take() {
            if t.client.is_closed() {
                return;
            }
            // Back to the pool (its place is given up just after). A pool
            // never holds more than POOL_SIZE connections: one is made only
            // by a holder of a place that found none idle, and a returned one
            // gives its place up.
            t.pool.idle.lock().expect("pool lock").push(t.client);
        }
    }
}

impl PgConnection {
    fn client(&self) -> &Client {
        &self
            .taken
            .as_ref()
            .expect("client present until drop")
            .client
    }
}

impl pg::Host for State {}

impl pg::HostConnection for State {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, Error>> {
        if let Err(e) = self.component.policy.check_url(&address) {
            return Ok(Err(Error::ConnectionFailed(e)));
        }
        let pool = self.component.pg.clone();
        let permit = match &pool.permits {
            Some(sem) => Some(
                sem.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| wasmtime::Error::msg("connection semaphore closed"))?,
            ),
            None => None,
        };
        let taken = match pool.get(&self.component.id, &address).await {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let conn = PgConnection {
            taken: Some(taken),
            _permit: permit,
        };
        Ok(Ok(self.table.push(conn)?))
    }

    async fn query(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let conn = self.table.get(&this)?;
        Ok(query(conn.client(), &statement, params).await)
    }

    async fn execute(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let conn = self.table.get(&this)?;
        let params = match to_sql_params(params) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        Ok(conn
            .client()
            .execute(statement.as_str(), &refs)
            .await
            .map_err(query_error))
    }

    async fn drop(&mut self, this: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

async fn query(
    client: &Client,
    statement: &str,
    params: Vec<ParameterValue>,
) -> Result<RowSet, Error> {
    let params = to_sql_params(params)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
    let stmt = client.prepare(statement).await.map_err(query_error)?;
    let rows = client.query(&stmt, &refs).await.map_err(query_error)?;
    let columns = stmt
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            data_type: data_type(c.type_()),
        })
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(row.len());
        for (i, col) in stmt.columns().iter().enumerate() {
            values.push(db_value(row, i, col.type_())?);
        }
        out.push(values);
    }
    Ok(RowSet { columns, rows: out })
}

fn query_error(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let mut extras = Vec::new();
        if let Some(c) = db.constraint() {
            extras.push(("constraint".to_string(), c.to_string()));
        }
        if let Some(t) = db.table() {
            extras.push(("table".to_string(), t.to_string()));
        }
        if let Some(c) = db.column() {
            extras.push(("column".to_string(), c.to_string()));
        }
        return Error::QueryFailed(QueryError::DbError(DbError {
            as_text: db.to_string(),
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            extras,
        }));
    }
    if e.is_closed() {
        return Error::ConnectionFailed(e.to_string());
    }
    Error::QueryFailed(QueryError::Text(format!("{e:#}")))
}

fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        ref other => DbDataType::Other(other.name().to_string()),
    }
}

fn conv(e: impl std::fmt::Display) -> Error {
    Error::ValueConversionFailed(e.to_string())
}

fn db_value(row: &tokio_postgres::Row, i: usize, t: &Type) -> Result<DbValue, Error> {
    macro_rules! get {
        ($ty:ty, $variant:expr) => {
            match row.try_get::<_, Option<$ty>>(i).map_err(conv)? {
                Some(v) => $variant(v),
                None => DbValue::DbNull,
            }
        };
    }
    Ok(match *t {
        Type::BOOL => get!(bool, DbValue::Boolean),
        Type::CHAR => get!(i8, DbValue::Int8),
        Type::INT2 => get!(i16, DbValue::Int16),
        Type::INT4 => get!(i32, DbValue::Int32),
        Type::INT8 => get!(i64, DbValue::Int64),
        Type::FLOAT4 => get!(f32, DbValue::Floating32),
        Type::FLOAT8 => get!(f64, DbValue::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get!(String, DbValue::Str),
        Type::BYTEA => get!(Vec<u8>, DbValue::Binary),
        Type::DATE => get!(chrono::NaiveDate, |d: chrono::NaiveDate| {
            use chrono::Datelike;
            DbValue::Date((d.year(), d.month() as u8, d.day() as u8))
        }),
        Type::TIME => get!(chrono::NaiveTime, |t: chrono::NaiveTime| {
            use chrono::Timelike;
            DbValue::Time((
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
                t.nanosecond(),
            ))
        }),
        Type::TIMESTAMP => get!(chrono::NaiveDateTime, |d: chrono::NaiveDateTime| {
            use chrono::{Datelike, Timelike};
            DbValue::Datetime((
                d.year(),
                d.month() as u8,
                d.day() as u8,
                d.hour() as u8,
                d.minute() as u8,
                d.second() as u8,
                d.nanosecond(),
            ))
        }),
        Type::TIMESTAMPTZ => {
            return Err(Error::ValueConversionFailed(format!(
                "column {i} is timestamptz, which spin cannot read: select it AT TIME ZONE 'UTC'"
            )))
        }
        Type::UUID => get!(uuid::Uuid, |u: uuid::Uuid| DbValue::Uuid(u.to_string())),
        Type::JSONB => get!(serde_json::Value, |v: serde_json::Value| DbValue::Jsonb(
            serde_json::to_vec(&v).unwrap_or_default()
        )),
        Type::NUMERIC => get!(rust_decimal::Decimal, |d: rust_decimal::Decimal| {
            DbValue::Decimal(d.to_string())
        }),
        Type::INT4_ARRAY => get!(Vec<Option<i32>>, DbValue::ArrayInt32),
        Type::INT8_ARRAY => get!(Vec<Option<i64>>, DbValue::ArrayInt64),
        Type::NUMERIC_ARRAY => get!(Vec<Option<rust_decimal::Decimal>>, |v: Vec<
            Option<rust_decimal::Decimal>,
        >| {
            DbValue::ArrayDecimal(v.into_iter().map(|d| d.map(|d| d.to_string())).collect())
        }),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => get!(Vec<Option<String>>, DbValue::ArrayStr),
        Type::INTERVAL => get!(PgInterval, |v: PgInterval| DbValue::Interval(v.0)),
        _ => get!(Raw, |r: Raw| DbValue::Unsupported(r.0)),
    })
}

type BoxedParam = Box<dyn ToSql + Sync + Send>;

fn to_sql_params(params: Vec<ParameterValue>) -> Result<Vec<BoxedParam>, Error> {
    params.into_iter().map(to_sql).collect()
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::BadParameter(e.to_string())
}

fn to_sql(p: ParameterValue) -> Result<BoxedParam, Error> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        ParameterValue::Date((y, m, d)) => Box::new(
            chrono::NaiveDate::from_ymd_opt(y, m.into(), d.into())
                .ok_or_else(|| bad("invalid date"))?,
        ),
        ParameterValue::Time((h, m, s, ns)) => Box::new(
            chrono::NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
                .ok_or_else(|| bad("invalid time"))?,
        ),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => Box::new(
            chrono::NaiveDate::from_ymd_opt(y, mo.into(), d.into())
                .and_then(|date| date.and_hms_nano_opt(h.into(), mi.into(), s.into(), ns))
                .ok_or_else(|| bad("invalid datetime"))?,
        ),
        ParameterValue::Timestamp(secs) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
                .ok_or_else(|| bad("invalid timestamp"))?,
        ),
        ParameterValue::Uuid(s) => Box::new(uuid::Uuid::parse_str(&s).map_err(bad)?),
        ParameterValue::Jsonb(bytes) => {
            Box::new(serde_json::from_slice::<serde_json::Value>(&bytes).map_err(bad)?)
        }
        ParameterValue::Decimal(s) => Box::new(s.parse::<rust_decimal::Decimal>().map_err(bad)?),
        ParameterValue::ArrayInt32(v) => Box::new(v),
        ParameterValue::ArrayInt64(v) => Box::new(v),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.into_iter()
                .map(|d| d.map(|d| d.parse::<rust_decimal::Decimal>()).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?,
        ),
        ParameterValue::ArrayStr(v) => Box::new(v),
        ParameterValue::Interval(i) => Box::new(PgInterval(i)),
        ParameterValue::RangeInt32(_)
        | ParameterValue::RangeInt64(_)
        | ParameterValue::RangeDecimal(_) => {
            return Err(bad("range parameters are not supported by the local host"))
        }
        ParameterValue::DbNull => Box::new(Null),
    })
}

/// SQL NULL for a parameter of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// The raw binary value of a type that has no mapping.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `interval` in Postgres' binary format: microseconds, days, months.
#[derive(Debug)]
struct PgInterval(Interval);

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("invalid interval".into());
        }
        let micros = i64::from_be_bytes(raw[0..8].try_into()?);
        let days = i32::from_be_bytes(raw[8..12].try_into()?);
        let months = i32::from_be_bytes(raw[12..16].try_into()?);
        Ok(PgInterval(Interval {
            micros,
            days,
            months,
        }))
    }
    fn accepts(t: &Type) -> bool {
        *t == Type::INTERVAL
    }
}

impl ToSql for PgInterval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.micros.to_be_bytes());
        out.extend_from_slice(&self.0.days.to_be_bytes());
        out.extend_from_slice(&self.0.months.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(t: &Type) -> bool {
        *t == Type::INTERVAL
    }
    to_sql_checked!();
}
