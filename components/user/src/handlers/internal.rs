//! Internal endpoints, reached by service chaining from other components and
//! by the scheduler; the route guard requires the shared internal token.

use super::{audit, db, publish_after_commit, Call};
use crate::domain::profile::{Registration, SUPER_ADMIN_ROLE};
use crate::error::{Error, Result};
use crate::repo;
use platform::events::{USER_CREATED, USER_ROLES_CHANGED};
use platform::input::Email;
use serde::Deserialize;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    email: String,
}

/// `POST /internal/bootstrap-admin`: gives an existing user the
/// `super_admin` role (how the first platform administrator is made; run by
/// `cargo xtask admin`, which holds the internal token).
pub fn bootstrap_admin(call: &Call) -> Result<Response> {
    let email = Email::parse(&call.body::<Bootstrap>()?.email)?;
    let db = db()?;
    let id = db.transaction(|tx| {
        let id = repo::users::id_by_email(tx, email.as_str())?.ok_or(Error::NotFound("user"))?;
        let p = repo::users::lock(tx, id)?.ok_or(Error::NotFound("user"))?;
        if p.tenant_id.is_some() {
            return Err(Error::Conflict(
                "platform administrators belong to no tenant".into(),
            ));
        }
        if !p.roles.iter().any(|r| r.id == SUPER_ADMIN_ROLE) {
            let mut roles: Vec<_> = p.roles.iter().map(|r| r.id).collect();
            roles.push(SUPER_ADMIN_ROLE);
            repo::users::set_roles(tx, id, &roles)?;
            repo::snapshot::emit(tx, id, &USER_ROLES_CHANGED)?;
            repo::audit::record(tx, &audit(call, "user.bootstrap_admin", "user", id, None))?;
        }
        Ok::<_, Error>(id)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(
        200,
        &serde_json::json!({"id": id, "role": "super_admin"}),
    ))
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
