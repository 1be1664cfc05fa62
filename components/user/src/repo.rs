//! All SQL of `user`.

use crate::domain::{NewUser, Profile};
use crate::error::Error;
use platform::db::{col, timestamp, Db, DbError};
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
            let payload = serde_json::json!({
                "id": p.id, "email": p.email, "display_name": p.display_name,
                "tenant_id": p.tenant_id, "status": p.status, "roles": p.roles,
            });
            platform::outbox::enqueue(
                tx,
                "user",
                "user.created",
                &p.id.to_string(),
                p.version,
                &payload,
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
