//! Copies of `user`'s identities that a component keeps in its own
//! `owners` table (user id, email, name, tenant, department, status, and
//! the source's version): what it needs to show an owner and to apply data
//! scopes without asking `user`. A copy never goes back in version; when
//! the feed was pruned past a consumer's cursor, [`resync`] rebuilds every
//! copy from `user`'s identities API.

use crate::db::{opt_uuid, Db, DbError};
use crate::Problem;
use events::payload::Identity;
use spin_sdk::pg4::ParameterValue as P;

/// Upserts an owner with a newer version; returns whether it changed.
pub fn upsert(db: &Db, i: &Identity, version: i64) -> Result<bool, DbError> {
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

/// Rebuilds every owner copy from `user`'s identities; `also` runs for
/// each copy that changed (in the same connection), for what the component
/// derives from it.
pub fn resync(
    ctx: &crate::http::Ctx,
    also: impl Fn(&Db, &Identity, i64) -> Result<(), Problem>,
) -> Result<(), Problem> {
    each_identity(ctx, |db, i, version| {
        if upsert(db, i, version)? {
            also(db, i, version)?;
        }
        Ok(())
    })
}

/// Hands every identity `user` has, with its version, to `apply`, one
/// page at a time, no connection held while asking: how a consumer whose
/// cursor fell behind `user`'s retention rebuilds its copies.
pub fn each_identity(
    ctx: &crate::http::Ctx,
    apply: impl Fn(&Db, &Identity, i64) -> Result<(), Problem>,
) -> Result<(), Problem> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(flatten)]
        identity: Identity,
        version: i64,
    }
    crate::http::each_page(
        ctx,
        "user identities",
        |last: Option<&Item>| {
            let after = last.map_or(uuid::Uuid::nil(), |i| i.identity.id);
            format!(
                "http://user.spin.internal/api/v1/user/internal/identities?after={after}&limit=500"
            )
        },
        |db, items| {
            for item in &items {
                apply(db, &item.identity, item.version)?;
            }
            Ok(())
        },
    )
}
