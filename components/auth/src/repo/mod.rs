//! All SQL of `auth`: credentials, the identity copy, sessions and lockout
//! here; API keys and password resets in their modules.

pub mod keys;
pub mod resets;

use platform::db::{col, opt_uuid, Db, DbError};
use platform::input::Email;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Stored credentials of one user.
pub struct Credentials {
    /// The user id.
    pub user_id: Uuid,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Version, carried by `credential.*` events.
    pub version: i64,
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
        "SELECT user_id, password_hash, version FROM credentials WHERE lower(email) = lower($1)",
        &[P::Str(email.as_str().into())],
    )?;
    rows.rows
        .first()
        .map(|r| {
            Ok(Credentials {
                user_id: col(r, 0, "credentials.user_id")?,
                password_hash: col(r, 1, "credentials.password_hash")?,
                version: col(r, 2, "credentials.version")?,
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
/// copy's (an older or repeated event changes nothing). Returns whether it
/// changed the copy.
pub fn upsert_identity(
    db: &Db,
    i: &platform::events::payload::Identity,
    version: i64,
) -> Result<bool, DbError> {
    let access = spin_sdk::pg4::jsonb(&i.access).map_err(|e| DbError::Other(e.to_string()))?;
    let n = db.execute(
        "INSERT INTO identities (user_id, email, status, tenant_id, roles, version, department_id, tenant_active, access) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, status = EXCLUDED.status, \
           tenant_id = EXCLUDED.tenant_id, roles = EXCLUDED.roles, version = EXCLUDED.version, \
           department_id = EXCLUDED.department_id, tenant_active = EXCLUDED.tenant_active, \
           access = EXCLUDED.access, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE identities.version < EXCLUDED.version",
        &[
            P::Uuid(i.id.to_string()),
            P::Str(i.email.clone()),
            P::Str(i.status.clone()),
            opt_uuid(i.tenant_id),
            P::ArrayStr(i.roles.iter().cloned().map(Some).collect()),
            P::Int64(version),
            opt_uuid(i.department_id),
            P::Boolean(i.tenant_active),
            access,
        ],
    )?;
    Ok(n > 0)
}

/// What a token needs from the identity copy.
pub struct TokenIdentity {
    /// Status: only `active` users get tokens.
    pub status: String,
    /// Whether the user's tenant is active.
    pub tenant_active: bool,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Department.
    pub department_id: Option<Uuid>,
    /// Role codes.
    pub roles: Vec<String>,
    /// Effective access.
    pub access: access::Access,
}

impl TokenIdentity {
    /// Whether this identity may have tokens (and API keys act for it).
    pub fn may_sign_in(&self) -> bool {
        self.status == "active" && self.tenant_active
    }

    /// The caller it is, authenticated with `credential`.
    pub fn caller(self, user_id: Uuid, credential: access::Credential) -> access::Caller {
        access::Caller {
            user_id,
            tenant_id: self.tenant_id,
            department_id: self.department_id,
            roles: self.roles,
            access: self.access,
            credential,
        }
    }
}

/// Reads a [`TokenIdentity`] from columns `from..from+6` (status,
/// tenant_active, tenant_id, department_id, roles, access).
pub fn token_identity(r: &[spin_sdk::pg4::DbValue], from: usize) -> Result<TokenIdentity, DbError> {
    let roles: Vec<Option<String>> = col(r, from + 4, "identities.roles")?;
    let access: serde_json::Value = col(r, from + 5, "identities.access")?;
    Ok(TokenIdentity {
        status: col(r, from, "identities.status")?,
        tenant_active: col(r, from + 1, "identities.tenant_active")?,
        tenant_id: col(r, from + 2, "identities.tenant_id")?,
        department_id: col(r, from + 3, "identities.department_id")?,
        roles: roles.into_iter().flatten().collect(),
        access: serde_json::from_value(access)
            .map_err(|e| platform::db::decode_error("identities.access", e))?,
    })
}

/// The identity columns [`token_identity`] reads, for an `identities i` join.
pub const IDENTITY_COLUMNS: &str =
    "i.status, i.tenant_active, i.tenant_id, i.department_id, i.roles, i.access";

/// The identity copy of a user, if its events have arrived.
pub fn identity(db: &Db, user_id: Uuid) -> Result<Option<TokenIdentity>, DbError> {
    let rows = db.query(
        &format!("SELECT {IDENTITY_COLUMNS} FROM identities i WHERE i.user_id = $1"),
        &[P::Uuid(user_id.to_string())],
    )?;
    rows.rows.first().map(|r| token_identity(r, 0)).transpose()
}

/// What [`put_credentials`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCredentials {
    /// The user had no credentials.
    Created,
    /// The user's password was replaced.
    Replaced,
    /// The email belongs to another user; nothing changed.
    EmailTaken,
}

/// Sets the credentials of a user (from `user`: administrators create users
/// and set passwords).
pub fn put_credentials(
    db: &Db,
    user: Uuid,
    email: &Email,
    hash: &str,
) -> Result<PutCredentials, DbError> {
    let rows = db.query(
        "SELECT user_id FROM credentials WHERE lower(email) = lower($1) OR user_id = $2",
        &[P::Str(email.as_str().into()), P::Uuid(user.to_string())],
    )?;
    let mut existed = false;
    for r in &rows.rows {
        let owner: Uuid = col(r, 0, "credentials.user_id")?;
        if owner != user {
            return Ok(PutCredentials::EmailTaken);
        }
        existed = true;
    }
    db.execute(
        "INSERT INTO credentials (user_id, email, password_hash) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, password_hash = EXCLUDED.password_hash, \
           updated_at = now() AT TIME ZONE 'UTC'",
        &[P::Uuid(user.to_string()), P::Str(email.as_str().into()), P::Str(hash.into())],
    )?;
    Ok(if existed {
        PutCredentials::Replaced
    } else {
        PutCredentials::Created
    })
}

/// Forgets a deleted user's credentials, so their email can register again.
pub fn delete_credentials(db: &Db, user: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM credentials WHERE user_id = $1",
        &[P::Uuid(user.to_string())],
    )?;
    Ok(())
}

/// The lock of an email key: seconds until it unlocks, if locked.
pub fn locked_for(db: &Db, email_key: &str) -> Result<Option<i64>, DbError> {
    let rows = db.query(
        "SELECT ceil(extract(epoch FROM locked_until - (now() AT TIME ZONE 'UTC')))::bigint FROM login_attempts \
         WHERE email_key = $1 AND locked_until > (now() AT TIME ZONE 'UTC')",
        &[P::Str(email_key.into())],
    )?;
    rows.rows
        .first()
        .map(|r| col(r, 0, "login_attempts.locked_until"))
        .transpose()
}

/// Counts a failed login; at the limit the key is locked and the count restarts.
pub fn record_failed_login(
    db: &Db,
    email_key: &str,
    rule: crate::domain::session::Lockout,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO login_attempts (email_key, failures) VALUES ($1, 1) \
         ON CONFLICT (email_key) DO UPDATE SET failures = login_attempts.failures + 1, updated_at = now() AT TIME ZONE 'UTC'",
        &[P::Str(email_key.into())],
    )?;
    db.execute(
        "UPDATE login_attempts SET failures = 0, \
           locked_until = (now() AT TIME ZONE 'UTC') + make_interval(secs => $3) \
         WHERE email_key = $1 AND failures >= $2",
        &[
            P::Str(email_key.into()),
            P::Int32(rule.max_failures),
            P::Floating64(rule.lock_secs as f64),
        ],
    )?;
    Ok(())
}

/// Forgets failed logins after a successful one.
pub fn clear_failed_logins(db: &Db, email_key: &str) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM login_attempts WHERE email_key = $1",
        &[P::Str(email_key.into())],
    )?;
    Ok(())
}

/// Stores a refresh token's hash.
pub fn insert_refresh_token(
    db: &Db,
    family: Uuid,
    user: Uuid,
    hash: &str,
    ttl_secs: i64,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) \
         VALUES ($1, $2, $3, $4, (now() AT TIME ZONE 'UTC') + make_interval(secs => $5))",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(family.to_string()),
            P::Uuid(user.to_string()),
            P::Str(hash.into()),
            P::Floating64(ttl_secs as f64),
        ],
    )?;
    Ok(())
}

/// The outcome of presenting a refresh token.
pub enum RefreshUse {
    /// Valid and now used: issue its successor in `family`.
    Fresh {
        /// The token family.
        family: Uuid,
        /// The user.
        user: Uuid,
    },
    /// Used before: the family has been revoked.
    Reused,
    /// Unknown, revoked or expired.
    Invalid,
}

/// Uses a refresh token once. The row is locked, so of two concurrent uses
/// one wins and the other counts as reuse.
pub fn use_refresh_token(db: &Db, hash: &str) -> Result<RefreshUse, DbError> {
    db.transaction(|tx| {
        let rows = tx.query(
            "SELECT id, family_id, user_id, used_at IS NOT NULL, revoked_at IS NOT NULL, \
                    expires_at <= (now() AT TIME ZONE 'UTC') \
             FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            &[P::Str(hash.into())],
        )?;
        let Some(r) = rows.rows.first() else {
            return Ok(RefreshUse::Invalid);
        };
        let id: Uuid = col(r, 0, "refresh_tokens.id")?;
        let family: Uuid = col(r, 1, "refresh_tokens.family_id")?;
        let (used, revoked, expired): (bool, bool, bool) = (
            col(r, 3, "used")?,
            col(r, 4, "revoked")?,
            col(r, 5, "expired")?,
        );
        if revoked || expired {
            return Ok(RefreshUse::Invalid);
        }
        if used {
            revoke_family(tx, family)?;
            return Ok(RefreshUse::Reused);
        }
        tx.execute(
            "UPDATE refresh_tokens SET used_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
            &[P::Uuid(id.to_string())],
        )?;
        Ok(RefreshUse::Fresh {
            family,
            user: col(r, 2, "refresh_tokens.user_id")?,
        })
    })
}

/// Revokes every token of a family.
pub fn revoke_family(db: &Db, family: Uuid) -> Result<u64, DbError> {
    db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() AT TIME ZONE 'UTC' WHERE family_id = $1 AND revoked_at IS NULL",
        &[P::Uuid(family.to_string())],
    )
}

/// The family of a token, if it exists.
pub fn token_family(db: &Db, hash: &str) -> Result<Option<Uuid>, DbError> {
    let rows = db.query(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1",
        &[P::Str(hash.into())],
    )?;
    rows.rows
        .first()
        .map(|r| col(r, 0, "refresh_tokens.family_id"))
        .transpose()
}

/// Revokes every refresh token of a user (logout everywhere, password change).
pub fn revoke_user_tokens(db: &Db, user: Uuid) -> Result<u64, DbError> {
    db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() AT TIME ZONE 'UTC' WHERE user_id = $1 AND revoked_at IS NULL",
        &[P::Uuid(user.to_string())],
    )
}

/// Credentials by user id.
pub fn credentials_of(db: &Db, user: Uuid) -> Result<Option<(String, String)>, DbError> {
    let rows = db.query(
        "SELECT email, password_hash FROM credentials WHERE user_id = $1",
        &[P::Uuid(user.to_string())],
    )?;
    rows.rows
        .first()
        .map(|r| {
            Ok((
                col(r, 0, "credentials.email")?,
                col(r, 1, "credentials.password_hash")?,
            ))
        })
        .transpose()
}

/// Replaces a hash of the same password made with earlier parameters (no new
/// version: the password did not change), unless it changed meanwhile.
pub fn upgrade_hash(db: &Db, user: Uuid, old: &str, new: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE credentials SET password_hash = $3 WHERE user_id = $1 AND password_hash = $2",
        &[
            P::Uuid(user.to_string()),
            P::Str(old.into()),
            P::Str(new.into()),
        ],
    )?;
    Ok(())
}

/// Replaces a password hash; returns the credentials' new version.
pub fn set_password(db: &Db, user: Uuid, hash: &str) -> Result<i64, DbError> {
    let rows = db.query(
        "UPDATE credentials SET password_hash = $2, version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE user_id = $1 RETURNING version",
        &[P::Uuid(user.to_string()), P::Str(hash.into())],
    )?;
    match rows.rows.first() {
        Some(r) => col(r, 0, "credentials.version"),
        None => Err(DbError::Other(format!("no credentials for {user}"))),
    }
}
