//! Quota claims: the reservations this component holds in `user` for its
//! devices (`device`: the device exists; `run`: it is meant to run), with
//! the state of each, so that a crash between reserving and committing (or
//! releasing) is settled by a job instead of leaking quota.

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Records a reservation made in `user`.
pub fn reserved(
    db: &Db,
    reservation: Uuid,
    device: Uuid,
    owner: Uuid,
    purpose: &str,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO quota_claims (reservation_id, device_id, owner_id, purpose, state) VALUES ($1, $2, $3, $4, 'reserved') \
         ON CONFLICT (reservation_id) DO NOTHING",
        &[
            P::Uuid(reservation.to_string()),
            P::Uuid(device.to_string()),
            P::Uuid(owner.to_string()),
            P::Str(purpose.into()),
        ],
    )?;
    Ok(())
}

/// Sets a claim's state.
pub fn set_state(db: &Db, reservation: Uuid, state: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE quota_claims SET state = $2, updated_at = now() AT TIME ZONE 'UTC' WHERE reservation_id = $1",
        &[P::Uuid(reservation.to_string()), P::Str(state.into())],
    )?;
    Ok(())
}

/// The live claims of a device for a purpose (reserved or committed).
pub fn live(db: &Db, device: Uuid, purpose: &str) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "SELECT reservation_id FROM quota_claims WHERE device_id = $1 AND purpose = $2 \
           AND state IN ('reserved', 'committed') ORDER BY created_at",
        &[P::Uuid(device.to_string()), P::Str(purpose.into())],
        |r| col(r, 0, "quota_claims.reservation_id"),
    )
}

/// Marks a device's live claims of a purpose as being released; returns them.
pub fn start_release(db: &Db, device: Uuid, purpose: &str) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "UPDATE quota_claims SET state = 'releasing', updated_at = now() AT TIME ZONE 'UTC' \
         WHERE device_id = $1 AND purpose = $2 AND state IN ('reserved', 'committed') RETURNING reservation_id",
        &[P::Uuid(device.to_string()), P::Str(purpose.into())],
        |r| col(r, 0, "quota_claims.reservation_id"),
    )
}

/// Claims left unsettled for `secs`: (reservation, device, state, whether
/// the device still wants it).
pub fn unsettled(
    db: &Db,
    secs: i32,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, String, bool)>, DbError> {
    db.all(
        "SELECT c.reservation_id, c.device_id, c.state, \
           coalesce(d.desired_status <> 'deleted' AND (c.purpose = 'device' OR d.desired_status = 'running'), false) \
         FROM quota_claims c LEFT JOIN devices d ON d.id = c.device_id \
         WHERE c.state IN ('reserved', 'releasing') AND c.updated_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => $1::int) \
         ORDER BY c.updated_at LIMIT $2",
        &[P::Int32(secs), P::Int64(limit)],
        |r| {
            Ok((
                col(r, 0, "reservation_id")?,
                col(r, 1, "device_id")?,
                col(r, 2, "state")?,
                col(r, 3, "wanted")?,
            ))
        },
    )
}
