//! All SQL of `auth`.

use crate::domain::input::Email;
use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Stored credentials of one user.
pub struct Credentials {
    /// The user id.
    pub user_id: Uuid,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// Whether credentials exist for an email (case-insensitive).
pub fn email_registered(db: &Db, email: &Email) -> Result<bool, DbError> {
    let rows = db.query(
        "SELECT 1 FROM credentials WHERE lower(email) = lower($1)",
        &[P::Str(email.as_str().into())],
    )?;
    Ok(!rows.rows.is_empty())
}

/// Looks up credentials by email.
pub fn find_credentials(db: &Db, email: &Email) -> Result<Option<Credentials>, DbError> {
    let rows = db.query(
        "SELECT user_id, password_hash FROM credentials WHERE lower(email) = lower($1)",
        &[P::Str(email.as_str().into())],
    )?;
    rows.rows
        .first()
        .map(|r| {
            Ok(Credentials {
                user_id: col(r, 0, "credentials.user_id")?,
                password_hash: col(r, 1, "credentials.password_hash")?,
            })
        })
        .transpose()
}

/// Stores new credentials; a duplicate email is [`DbError::Unique`].
pub fn insert_credentials(
    db: &Db,
    user_id: Uuid,
    email: &Email,
    hash: &str,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO credentials (user_id, email, password_hash) VALUES ($1, $2, $3)",
        &[
            P::Uuid(user_id.to_string()),
            P::Str(email.as_str().into()),
            P::Str(hash.into()),
        ],
    )?;
    Ok(())
}

/// Inserts or updates an identity copy, only if `version` is newer than the
/// copy's (an older or repeated event changes nothing).
pub fn upsert_identity(
    db: &Db,
    i: &crate::consumer::Identity,
    version: i64,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO identities (user_id, email, status, tenant_id, roles, version) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, status = EXCLUDED.status, \
           tenant_id = EXCLUDED.tenant_id, roles = EXCLUDED.roles, version = EXCLUDED.version, \
           updated_at = now() AT TIME ZONE 'UTC' \
         WHERE identities.version < EXCLUDED.version",
        &[
            P::Uuid(i.id.to_string()),
            P::Str(i.email.clone()),
            P::Str(i.status.clone()),
            i.tenant_id.map_or(P::DbNull, |t| P::Uuid(t.to_string())),
            P::ArrayStr(i.roles.iter().cloned().map(Some).collect()),
            P::Int64(version),
        ],
    )?;
    Ok(())
}

/// What a token needs from the identity copy.
pub struct TokenIdentity {
    /// Status: only `active` users get tokens.
    pub status: String,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Role codes.
    pub roles: Vec<String>,
}

/// The identity copy of a user, if its events have arrived.
pub fn identity(db: &Db, user_id: Uuid) -> Result<Option<TokenIdentity>, DbError> {
    let rows = db.query(
        "SELECT status, tenant_id, roles FROM identities WHERE user_id = $1",
        &[P::Uuid(user_id.to_string())],
    )?;
    rows.rows
        .first()
        .map(|r| {
            let roles: Vec<Option<String>> = col(r, 2, "identities.roles")?;
            Ok(TokenIdentity {
                status: col(r, 0, "identities.status")?,
                tenant_id: col(r, 1, "identities.tenant_id")?,
                roles: roles.into_iter().flatten().collect(),
            })
        })
        .transpose()
}
