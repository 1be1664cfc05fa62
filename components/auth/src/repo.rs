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
