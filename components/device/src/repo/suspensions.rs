//! Billing's suspensions of users' balances, as `device` follows them.

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Records a balance's suspension (or its lifting) if `version` is newer
/// than what is stored; whether it was.
pub fn apply(
    tx: &Db,
    user: Uuid,
    currency: &str,
    suspended: bool,
    version: i64,
) -> Result<bool, DbError> {
    Ok(tx.execute(
        "INSERT INTO balance_suspensions (user_id, currency, suspended, version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, currency) DO UPDATE SET suspended = EXCLUDED.suspended, \
           version = EXCLUDED.version, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE balance_suspensions.version < EXCLUDED.version",
        &[
            P::Uuid(user.to_string()),
            P::Str(currency.into()),
            P::Boolean(suspended),
            P::Int64(version),
        ],
    )? == 1)
}

/// Whether a user's balance is suspended in any currency.
pub fn suspended(db: &Db, user: Uuid) -> Result<bool, DbError> {
    Ok(db
        .one(
            "SELECT EXISTS (SELECT 1 FROM balance_suspensions WHERE user_id = $1 AND suspended)",
            &[P::Uuid(user.to_string())],
            |r| col::<bool>(r, 0, "exists"),
        )?
        .unwrap_or(false))
}

/// Up to `limit` devices meant to run whose owner's balance is suspended.
pub fn running_devices(db: &Db, limit: i64) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "SELECT DISTINCT d.id FROM balance_suspensions s JOIN devices d ON d.owner_id = s.user_id \
          WHERE s.suspended AND d.desired_status = 'running' ORDER BY d.id LIMIT $1",
        &[P::Int64(limit)],
        |r| col(r, 0, "devices.id"),
    )
}
