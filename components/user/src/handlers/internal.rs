//! Internal endpoints, reached by service chaining from other components and
//! by the scheduler; each route's guard names the callers whose service
//! token it accepts.

use super::{audit, db, publish_after_commit, Call};
use crate::domain::profile::{Registration, SUPER_ADMIN_ROLE};
use crate::error::{Error, Result};
use crate::repo;
use platform::events::catalogue::{USER_CREATED, USER_ROLES_CHANGED};
use platform::input::Email;
use spin_sdk::http::Response;

/// `POST /internal/users` (from `auth`'s registration): creates a profile
/// and its `user.created` event in one transaction, and answers the identity
/// snapshot so `auth` can issue tokens at once. A registration retried after
/// a failure between the two components' steps finds the profile it created
/// before (self-registered, tenantless, only the `user` role) and answers 200
/// with it; any other profile with the email is a 409.
pub fn create_user(call: &Call) -> Result<Response> {
    let new = call.body::<Registration>()?.parse()?;
    let db = db()?;
    let (id, created) = db.transaction(|tx| {
        if repo::users::insert(tx, &new)?.is_some() {
            repo::snapshot::emit(tx, new.id, &USER_CREATED)?;
            return Ok((new.id, true));
        }
        match repo::users::unfinished_registration(tx, new.email.as_str())? {
            Some(id) => Ok((id, false)),
            None => Err(Error::Conflict("email is already registered".into())),
        }
    })?;
    if created {
        publish_after_commit(call, &db);
    }
    let (identity, version) = repo::snapshot::stored(&db, id)?.ok_or(Error::NotFound("user"))?;
    Ok(platform::http::json(
        if created { 201 } else { 200 },
        &serde_json::json!({"id": id, "identity": identity, "version": version}),
    ))
}

/// `POST /internal/admin-grants/apply` (scheduler): applies the pending
/// requests in `admin_grants`, the one way to make a platform administrator
/// without one. Nothing on the network can ask for a grant: only a holder
/// of the database credentials (`cargo xtask admin`) can insert one. Each
/// grant gives an existing, tenantless user the `super_admin` role, with
/// its snapshot event and an audit entry, and records its outcome.
pub fn apply_admin_grants(call: &Call) -> Result<Response> {
    let db = db()?;
    let mut applied = 0;
    while db.transaction(|tx| {
        let Some((grant, email)) = repo::admin_grants::claim(tx)? else {
            return Ok::<_, Error>(false);
        };
        let outcome = grant_admin(call, tx, &email)?;
        repo::admin_grants::finish(tx, grant, outcome)?;
        Ok(true)
    })? {
        applied += 1;
    }
    if applied > 0 {
        publish_after_commit(call, &db);
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"applied": applied}),
    ))
}

/// Makes the user with `email` platform administrator; the outcome for the
/// grant's record.
fn grant_admin(
    call: &Call,
    tx: &platform::db::Db,
    email: &str,
) -> Result<(Option<uuid::Uuid>, &'static str)> {
    let Ok(email) = Email::parse(email) else {
        return Ok((None, "invalid email"));
    };
    let Some(id) = repo::users::id_by_email(tx, email.as_str())? else {
        return Ok((None, "no such user"));
    };
    let p = repo::users::lock(tx, id)?.ok_or(Error::NotFound("user"))?;
    if p.tenant_id.is_some() {
        return Ok((Some(id), "platform administrators belong to no tenant"));
    }
    if !p.roles.iter().any(|r| r.id == SUPER_ADMIN_ROLE) {
        let mut roles: Vec<_> = p.roles.iter().map(|r| r.id).collect();
        roles.push(SUPER_ADMIN_ROLE);
        repo::users::set_roles(tx, id, &roles)?;
        repo::snapshot::emit(tx, id, &USER_ROLES_CHANGED)?;
        repo::audit::record(tx, &audit(call, "user.bootstrap_admin", "user", id, None))?;
    }
    Ok((Some(id), "granted"))
}

/// `GET /internal/identities?after=<uuid>&limit=`: stored identity snapshots
/// with their versions, for consumers resyncing their copies.
pub fn identities(call: &Call) -> Result<Response> {
    let after = match call.query("after") {
        None => uuid::Uuid::nil(),
        Some(v) => {
            uuid::Uuid::parse_str(&v).map_err(|_| Error::Invalid("after must be a uuid".into()))?
        }
    };
    let limit = platform::http::int_query(call.req, "limit", 200, 1000)?.max(1);
    let items = repo::users::identities(&db()?, after, limit)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}
