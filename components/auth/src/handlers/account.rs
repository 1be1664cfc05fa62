//! `GET /me` and `POST /password`: the caller's own account.

use crate::domain::input::NewPassword;
use crate::domain::password;
use crate::error::Error;
use crate::repo;
use serde::Deserialize;
use spin_sdk::http::{Request, Response};

/// Who the token belongs to, as auth knows them.
pub fn me(req: &Request) -> Result<Response, Error> {
    let caller = platform::auth::authenticate(req)?;
    let db = platform::db::Db::open()?;
    let (email, _) = repo::credentials_of(&db, caller.user_id)?.ok_or(Error::NotFound)?;
    let status =
        repo::identity(&db, caller.user_id)?.map_or_else(|| "active".to_string(), |i| i.status);
    Ok(platform::http::json(
        200,
        &serde_json::json!({
            "user_id": caller.user_id, "email": email, "tenant_id": caller.tenant_id,
            "roles": caller.roles, "status": status,
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
pub fn change_password(req: &Request) -> Result<Response, Error> {
    let caller = platform::auth::authenticate(req)?;
    let body: PasswordChange = platform::http::body(req)?;
    let new = NewPassword::parse(&body.new_password)?;
    let db = platform::db::Db::open()?;
    let (_, hash) = repo::credentials_of(&db, caller.user_id)?.ok_or(Error::NotFound)?;
    if body.current_password.chars().count() > 128
        || !password::verify(&body.current_password, &hash)
    {
        return Err(Error::BadCredentials);
    }
    let new_hash = password::hash(new.as_str()).map_err(platform::Problem::internal)?;
    db.transaction(|tx| {
        repo::set_password(tx, caller.user_id, &new_hash)?;
        repo::revoke_user_tokens(tx, caller.user_id)?;
        Ok::<_, Error>(())
    })?;
    Ok(platform::http::no_content())
}
