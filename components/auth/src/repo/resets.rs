//! Password reset tokens.

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Stores a reset token's hash; earlier unused tokens of the user stop working.
pub fn insert(db: &Db, user: Uuid, hash: &str, ttl_secs: i64) -> Result<String, DbError> {
    db.execute(
        "UPDATE password_resets SET used_at = now() AT TIME ZONE 'UTC' WHERE user_id = $1 AND used_at IS NULL",
        &[P::Uuid(user.to_string())],
    )?;
    let rows = db.query(
        "INSERT INTO password_resets (token_hash, user_id, expires_at) \
         VALUES ($1, $2, (now() AT TIME ZONE 'UTC') + make_interval(secs => $3)) \
         RETURNING to_char(expires_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        &[
            P::Str(hash.into()),
            P::Uuid(user.to_string()),
            P::Floating64(ttl_secs as f64),
        ],
    )?;
    col(&rows.rows[0], 0, "password_resets.expires_at")
}

/// Uses a token once: the user it resets, if it is valid.
pub fn consume(db: &Db, hash: &str) -> Result<Option<Uuid>, DbError> {
    let rows = db.query(
        "UPDATE password_resets SET used_at = now() AT TIME ZONE 'UTC' \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > (now() AT TIME ZONE 'UTC') RETURNING user_id",
        &[P::Str(hash.into())],
    )?;
    rows.rows
        .first()
        .map(|r| col(r, 0, "password_resets.user_id"))
        .transpose()
}
