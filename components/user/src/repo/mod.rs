//! All SQL of `user`, one module per aggregate. Handlers call these inside
//! transactions they open with `Db::transaction`; nothing here builds a
//! response.

pub mod audit;
pub mod org;
pub mod quotas;
pub mod roles;
pub mod snapshot;
pub mod tickets;
pub mod users;

use platform::db::{col, Db, DbError};
use platform::query::Where;

/// `SELECT count(*) FROM <from>` with a filter.
pub fn count(db: &Db, from: &str, w: &Where) -> Result<i64, DbError> {
    let rows = db.query(
        &format!("SELECT count(*) FROM {from}{}", w.sql()),
        w.params(),
    )?;
    col(&rows.rows[0], 0, "count")
}
