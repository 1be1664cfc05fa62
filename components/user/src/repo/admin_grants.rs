//! `admin_grants`: requests to make a user platform administrator, written
//! by `cargo xtask admin` straight into the database and applied by the
//! scheduler's job (`handlers::internal::apply_admin_grants`).

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// The oldest pending grant and its email, claimed until the caller's
/// transaction ends (`FOR UPDATE SKIP LOCKED`: concurrent runs take
/// different grants).
pub fn claim(db: &Db) -> Result<Option<(Uuid, String)>, DbError> {
    db.one(
        "SELECT id, email FROM admin_grants WHERE applied_at IS NULL \
         ORDER BY requested_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        &[],
        |r| {
            Ok((
                col(r, 0, "admin_grants.id")?,
                col(r, 1, "admin_grants.email")?,
            ))
        },
    )
}

/// Records a grant's outcome (only if it is still pending).
pub fn finish(db: &Db, id: Uuid, (user, outcome): (Option<Uuid>, &str)) -> Result<(), DbError> {
    db.execute(
        "UPDATE admin_grants SET applied_at = now() AT TIME ZONE 'UTC', user_id = $2, outcome = $3 \
         WHERE id = $1 AND applied_at IS NULL",
        &[P::Uuid(id.to_string()), platform::db::opt_uuid(user), P::Str(outcome.into())],
    )?;
    Ok(())
}
