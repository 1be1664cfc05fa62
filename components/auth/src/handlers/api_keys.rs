//! API keys: created by a user for themselves, shown once, stored as hashes,
//! limited to scopes within the user's own permissions, usable instead of an
//! access token on every component (each verifies them through
//! `internal/api-keys/verify`).

use super::{db, publish_after_commit, Call};
use crate::domain::keys::{hash, looks_like_key, new_key, CreateKey};
use crate::error::Error;
use crate::repo::{self, keys::ApiKey};
use access::{Caller, Credential};
use platform::events::catalogue::{API_KEY_CREATED, API_KEY_REVOKED};
use platform::Problem;
use spin_sdk::http::Response;
use uuid::Uuid;

/// Verifies a presented key: the caller it acts as, with the key's scopes as
/// a limit on the user's current access.
pub fn verify(db: &platform::db::Db, key: &str) -> Result<Option<Caller>, Error> {
    if !looks_like_key(key) {
        return Ok(None);
    }
    let Some(v) = repo::keys::verify(db, &hash(key))? else {
        return Ok(None);
    };
    if !v.identity.may_sign_in() {
        return Ok(None);
    }
    let mut caller = v.identity.caller(v.user_id, Credential::ApiKey(v.key_id));
    caller.access.limit = Some(v.scopes.into_iter().collect());
    Ok(Some(caller))
}

/// [`verify`] for `auth`'s own routes.
pub fn verify_local(key: &str) -> Result<Caller, Problem> {
    let db = platform::db::Db::open()?;
    match verify(&db, key) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(Problem::unauthenticated("invalid api key")),
        Err(e) => Err(e.into()),
    }
}

fn own(db: &platform::db::Db, caller: &Caller, id: Uuid) -> Result<ApiKey, Error> {
    match repo::keys::find(db, id)? {
        Some(k) if k.user_id == caller.user_id => Ok(k),
        _ => Err(Error::NotFoundNamed("api key")),
    }
}

/// `GET /api-keys?page=&per_page=`: the caller's keys.
pub fn list(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        repo::keys::list(&db()?, caller.user_id, page)?,
    ))
}

/// `GET /api-keys/:id`.
pub fn get(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let k = own(&db()?, caller, call.id("id", "api key")?)?;
    Ok(platform::http::json(200, &k))
}

/// `POST /api-keys`: answers the key once, in `key`.
pub fn create(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let body: CreateKey = call.body()?;
    body.check()?;
    if let Some(s) = body.scopes.iter().find(|s| !caller.can(s)) {
        return Err(Error::Invalid(format!(
            "scope {s} goes beyond your own permissions"
        )));
    }
    let (key, prefix) = new_key().map_err(Problem::internal)?;
    let name = platform::input::Name::parse(&body.name, "name", 64)?;
    let db = db()?;
    let created = db.transaction(|tx| {
        let k = repo::keys::insert(
            tx,
            caller.user_id,
            name.as_str(),
            &prefix,
            &hash(&key),
            &body.scopes,
            body.expires_in_days,
        )?;
        platform::outbox::enqueue(
            tx,
            &API_KEY_CREATED,
            &k.id.to_string(),
            1,
            &event_payload(&k, caller),
        )?;
        Ok::<_, Error>(k)
    })?;
    publish_after_commit(call, &db);
    let mut v = serde_json::to_value(&created).expect("key serializes");
    v["key"] = key.into();
    Ok(platform::http::json(201, &v))
}

fn event_payload(k: &ApiKey, caller: &Caller) -> serde_json::Value {
    serde_json::json!({
        "id": k.id, "user_id": k.user_id, "tenant_id": caller.tenant_id, "actor_id": caller.user_id,
        "name": k.name, "prefix": k.prefix, "scopes": k.scopes, "expires_at": k.expires_at,
    })
}

fn revoke_key(call: &Call, delete: bool) -> Result<Response, Error> {
    let caller = call.caller()?;
    let id = call.id("id", "api key")?;
    let db = db()?;
    let k = db.transaction(|tx| {
        let k = own(tx, caller, id)?;
        let was_active = repo::keys::revoke(tx, id)?;
        if delete {
            repo::keys::delete(tx, id)?;
        }
        if was_active {
            platform::outbox::enqueue(
                tx,
                &API_KEY_REVOKED,
                &id.to_string(),
                2,
                &event_payload(&k, caller),
            )?;
        }
        Ok::<_, Error>(k)
    })?;
    publish_after_commit(call, &db);
    if delete {
        Ok(platform::http::no_content())
    } else {
        Ok(platform::http::json(200, &own(&db, caller, k.id)?))
    }
}

/// `POST /api-keys/:id/revoke`: the key stops working at once (idempotent).
pub fn revoke(call: &Call) -> Result<Response, Error> {
    revoke_key(call, false)
}

/// `DELETE /api-keys/:id`.
pub fn delete(call: &Call) -> Result<Response, Error> {
    revoke_key(call, true)
}
