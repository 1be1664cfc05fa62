//! API keys.

use super::{token_identity, TokenIdentity, IDENTITY_COLUMNS};
use platform::db::{col, opt_timestamp, strings, timestamp, Db, DbError};
use platform::http::Page;
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// An API key as the API shows it (never the key itself, after creation).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Id.
    pub id: Uuid,
    /// The user it acts for.
    pub user_id: Uuid,
    /// Name.
    pub name: String,
    /// The visible start of the key.
    pub prefix: String,
    /// Permission patterns it is limited to.
    pub scopes: Vec<String>,
    /// When it expires.
    pub expires_at: Option<String>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<String>,
    /// How often it was used.
    pub usage_count: i64,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// Creation time.
    pub created_at: String,
}

const COLUMNS: &str = "id, user_id, name, prefix, scopes, expires_at, last_used_at, usage_count, revoked_at, \
     CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
          WHEN expires_at <= (now() AT TIME ZONE 'UTC') THEN 'expired' ELSE 'active' END, created_at";

fn key(r: &[DbValue]) -> Result<ApiKey, DbError> {
    Ok(ApiKey {
        id: col(r, 0, "api_keys.id")?,
        user_id: col(r, 1, "api_keys.user_id")?,
        name: col(r, 2, "api_keys.name")?,
        prefix: col(r, 3, "api_keys.prefix")?,
        scopes: strings(r, 4, "api_keys.scopes")?,
        expires_at: opt_timestamp(r, 5, "api_keys.expires_at")?,
        last_used_at: opt_timestamp(r, 6, "api_keys.last_used_at")?,
        usage_count: col(r, 7, "api_keys.usage_count")?,
        revoked_at: opt_timestamp(r, 8, "api_keys.revoked_at")?,
        status: col(r, 9, "status")?,
        created_at: timestamp(r, 10, "api_keys.created_at")?,
    })
}

/// Stores a new key's hash.
pub fn insert(
    db: &Db,
    user: Uuid,
    name: &str,
    prefix: &str,
    hash: &str,
    scopes: &[String],
    expires_in_days: Option<i64>,
) -> Result<ApiKey, DbError> {
    let rows = db.query(
        &format!(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7::bigint IS NULL THEN NULL \
               ELSE (now() AT TIME ZONE 'UTC') + make_interval(days => $7::integer) END) RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(user.to_string()),
            P::Str(name.into()),
            P::Str(prefix.into()),
            P::Str(hash.into()),
            P::ArrayStr(scopes.iter().cloned().map(Some).collect()),
            expires_in_days.map_or(P::DbNull, P::Int64),
        ],
    )?;
    key(&rows.rows[0])
}

/// A user's keys, newest first.
pub fn list(db: &Db, user: Uuid, page: Page) -> Result<(Vec<ApiKey>, i64), DbError> {
    let rows = db.query(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"),
        &[P::Uuid(user.to_string()), P::Int64(page.per_page), P::Int64(page.offset())],
    )?;
    let total = db.query(
        "SELECT count(*) FROM api_keys WHERE user_id = $1",
        &[P::Uuid(user.to_string())],
    )?;
    Ok((
        rows.rows.iter().map(|r| key(r)).collect::<Result<_, _>>()?,
        col(&total.rows[0], 0, "count")?,
    ))
}

/// One key by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<ApiKey>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        key,
    )
}

/// Revokes a key (idempotent). Returns whether it was active.
pub fn revoke(db: &Db, id: Uuid) -> Result<bool, DbError> {
    Ok(db.execute(
        "UPDATE api_keys SET revoked_at = now() AT TIME ZONE 'UTC' WHERE id = $1 AND revoked_at IS NULL",
        &[P::Uuid(id.to_string())],
    )? > 0)
}

/// Revokes every key of a user (locked or deleted).
pub fn revoke_all(db: &Db, user: Uuid) -> Result<u64, DbError> {
    db.execute(
        "UPDATE api_keys SET revoked_at = now() AT TIME ZONE 'UTC' WHERE user_id = $1 AND revoked_at IS NULL",
        &[P::Uuid(user.to_string())],
    )
}

/// Deletes a key.
pub fn delete(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM api_keys WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// A key that verified: its id, its user, its scopes and the user's identity.
pub struct Verified {
    /// The key's id.
    pub key_id: Uuid,
    /// The user it acts for.
    pub user_id: Uuid,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The user's identity copy.
    pub identity: TokenIdentity,
}

/// A usable key by hash (active, not expired) with its user's identity.
/// Records the use: the counter always, the time at most once a minute, so
/// a busy key does not write its row on every request.
pub fn verify(db: &Db, hash: &str) -> Result<Option<Verified>, DbError> {
    let rows = db.query(
        &format!(
            "UPDATE api_keys k SET usage_count = k.usage_count + 1, \
               last_used_at = CASE WHEN k.last_used_at IS NULL OR k.last_used_at < (now() AT TIME ZONE 'UTC') - interval '1 minute' \
                 THEN now() AT TIME ZONE 'UTC' ELSE k.last_used_at END \
             FROM identities i WHERE k.key_hash = $1 AND i.user_id = k.user_id AND k.revoked_at IS NULL \
               AND (k.expires_at IS NULL OR k.expires_at > (now() AT TIME ZONE 'UTC')) \
             RETURNING k.id, k.user_id, k.scopes, {IDENTITY_COLUMNS}"
        ),
        &[P::Str(hash.into())],
    )?;
    let Some(r) = rows.rows.first() else {
        return Ok(None);
    };
    Ok(Some(Verified {
        key_id: col(r, 0, "api_keys.id")?,
        user_id: col(r, 1, "api_keys.user_id")?,
        scopes: strings(r, 2, "api_keys.scopes")?,
        identity: token_identity(r, 3)?,
    }))
}
