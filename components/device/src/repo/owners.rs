//! The owners of devices as `user`'s events describe them: a copy kept for
//! showing devices with their owner's name and email, never going back in
//! version.

use platform::db::{col, opt_uuid, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Upserts an owner with a newer version; returns whether it changed.
pub fn upsert(db: &Db, i: &events::payload::Identity, version: i64) -> Result<bool, DbError> {
    let n = db.execute(
        "INSERT INTO owners (user_id, email, display_name, tenant_id, department_id, status, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, display_name = EXCLUDED.display_name, \
           tenant_id = EXCLUDED.tenant_id, department_id = EXCLUDED.department_id, status = EXCLUDED.status, \
           version = EXCLUDED.version WHERE owners.version < EXCLUDED.version",
        &[
            P::Uuid(i.id.to_string()),
            P::Str(i.email.clone()),
            P::Str(i.display_name.clone()),
            opt_uuid(i.tenant_id),
            opt_uuid(i.department_id),
            P::Str(i.status.clone()),
            P::Int64(version),
        ],
    )?;
    Ok(n > 0)
}

/// An owner's display name, email and version, if known.
pub fn find(db: &Db, user: Uuid) -> Result<Option<(String, String, i64)>, DbError> {
    db.one(
        "SELECT display_name, email, version FROM owners WHERE user_id = $1",
        &[P::Uuid(user.to_string())],
        |r| {
            Ok((
                col(r, 0, "owners.display_name")?,
                col(r, 1, "owners.email")?,
                col(r, 2, "owners.version")?,
            ))
        },
    )
}
