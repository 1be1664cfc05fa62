//! `GET /me` and `POST /password`: the caller's own account.

use super::hashing;
use super::{db, publish_after_commit, Call};
use crate::domain::input::NewPassword;
use crate::error::Error;
use crate::repo;
use platform::events::catalogue::CREDENTIAL_PASSWORD_CHANGED;
use serde::Deserialize;
use spin_sdk::http::Response;

/// Who the caller is, as `auth` knows them: identity, roles and effective
/// permissions (and, for an API key, the key).
pub fn me(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let db = db()?;
    let (email, _) = repo::credentials_of(&db, caller.user_id)?.ok_or(Error::NotFound)?;
    let status =
        repo::identity(&db, caller.user_id)?.map_or_else(|| "active".to_string(), |i| i.status);
    Ok(platform::http::json(
        200,
        &serde_json::json!({
            "user_id": caller.user_id, "email": email, "tenant_id": caller.tenant_id,
            "department_id": caller.department_id, "roles": caller.roles, "status": status,
            "permissions": caller.access.permissions, "credential": caller.credential,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the password and ends every session.
pub fn change_password(call: &Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let body: PasswordChange = call.body()?;
    let new = NewPassword::parse(&body.new_password)?;
    let db = db()?;
    let (_, hash) = repo::credentials_of(&db, caller.user_id)?.ok_or(Error::NotFound)?;
    if body.current_password.chars().count() > 128
        || !hashing::verify(&db, &body.current_password, &hash)?
    {
        return Err(Error::BadCredentials);
    }
    let new_hash = hashing::hash(&db, new.as_str())?;
    db.transaction(|tx| password_changed(tx, caller.user_id, &new_hash, "change"))?;
    publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}

/// Stores a new password hash, ends every session (and, unless the owner
/// changed it, every API key) and records
/// `credential.password_changed`; call inside a transaction.
pub fn password_changed(
    db: &platform::db::Db,
    user: uuid::Uuid,
    hash: &str,
    how: &str,
) -> Result<(), Error> {
    let version = repo::set_password(db, user, hash)?;
    repo::revoke_user_tokens(db, user)?;
    // A reset or an administrator's new password means the account may have
    // been in other hands: its API keys end too.
    if how != "change" {
        repo::keys::revoke_all(db, user)?;
    }
    platform::outbox::enqueue(
        db,
        &CREDENTIAL_PASSWORD_CHANGED,
        &user.to_string(),
        version,
        &serde_json::json!({"user_id": user, "how": how}),
    )?;
    Ok(())
}
