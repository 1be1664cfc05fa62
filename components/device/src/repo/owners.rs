//! The owners of devices as `user`'s events describe them: a copy kept for
//! showing devices with their owner's name and email, never going back in
//! version. Kept by the consumer with `platform::owners::upsert`.

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

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
