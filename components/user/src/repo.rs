//! All SQL of `user`.

use crate::domain::{identity_payload, NewUser, Profile, ProfileUpdate};
use crate::error::Error;
use platform::db::{col, timestamp, Db, DbError};
use platform::events::{USER_CREATED, USER_UPDATED};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

const PROFILE_COLUMNS: &str =
    "id, email, display_name, tenant_id, status, roles, metadata, version, \
     created_at, updated_at";

fn profile(row: &[DbValue]) -> Result<Profile, DbError> {
    let roles: Vec<Option<String>> = col(row, 5, "users.roles")?;
    Ok(Profile {
        id: col(row, 0, "users.id")?,
        email: col(row, 1, "users.email")?,
        display_name: col(row, 2, "users.display_name")?,
        tenant_id: col(row, 3, "users.tenant_id")?,
        status: col(row, 4, "users.status")?,
        roles: roles.into_iter().flatten().collect(),
        metadata: col(row, 6, "users.metadata")?,
        version: col(row, 7, "users.version")?,
        created_at: timestamp(row, 8, "users.created_at")?,
        updated_at: timestamp(row, 9, "users.updated_at")?,
    })
}

/// A profile by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Profile>, DbError> {
    let rows = db.query(
        &format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id = $1 AND status <> 'deleted'"),
        &[P::Uuid(id.to_string())],
    )?;
    rows.rows.first().map(|r| profile(r)).transpose()
}

/// Creates a profile with its `user.created` event, or returns the id of the
/// profile that already has this email. Returns `(id, created)`.
pub fn create(db: &Db, new: &NewUser) -> Result<(Uuid, bool), Error> {
    db.transaction(|tx| {
        let inserted = tx.query(
            &format!(
                "INSERT INTO users (id, email, display_name) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING RETURNING {PROFILE_COLUMNS}"
            ),
            &[
                P::Uuid(new.id.to_string()),
                P::Str(new.email.clone()),
                P::Str(new.display_name.clone()),
            ],
        )?;
        if let Some(row) = inserted.rows.first() {
            let p = profile(row)?;
            platform::outbox::enqueue(
                tx,
                &USER_CREATED,
                &p.id.to_string(),
                p.version,
                &identity_payload(&p),
            )?;
            return Ok((p.id, true));
        }
        let existing = tx.query(
            "SELECT id FROM users WHERE lower(email) = lower($1)",
            &[P::Str(new.email.clone())],
        )?;
        match existing.rows.first() {
            Some(r) => Ok((col(r, 0, "users.id")?, false)),
            // The id, not the email, collided.
            None => Err(Error::IdTaken),
        }
    })
}

/// Applies a profile change and its `user.updated` event in one transaction;
/// `None` if the user does not exist.
pub fn update(db: &Db, id: Uuid, change: &ProfileUpdate) -> Result<Option<Profile>, Error> {
    let metadata = match &change.metadata {
        Some(m) => spin_sdk::pg4::jsonb(m).map_err(|e| Error::Invalid(e.to_string()))?,
        None => P::DbNull,
    };
    let name = change.display_name.clone().map_or(P::DbNull, P::Str);
    db.transaction(|tx| {
        let rows = tx.query(
            &format!(
                "UPDATE users SET display_name = coalesce($2, display_name), metadata = coalesce($3, metadata), \
                 version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
                 WHERE id = $1 AND status <> 'deleted' RETURNING {PROFILE_COLUMNS}"
            ),
            &[P::Uuid(id.to_string()), name, metadata],
        )?;
        let Some(row) = rows.rows.first() else { return Ok(None) };
        let p = profile(row)?;
        platform::outbox::enqueue(tx, &USER_UPDATED, &p.id.to_string(), p.version, &identity_payload(&p))?;
        Ok(Some(p))
    })
}

/// A page of identities ordered by id, for consumers that resync their copies.
pub fn identities(db: &Db, after: Uuid, limit: i64) -> Result<Vec<serde_json::Value>, DbError> {
    let rows = db.query(
        &format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"),
        &[P::Uuid(after.to_string()), P::Int64(limit)],
    )?;
    rows.rows
        .iter()
        .map(|r| {
            let p = profile(r)?;
            let mut v = identity_payload(&p);
            v["version"] = p.version.into();
            Ok(v)
        })
        .collect()
}
