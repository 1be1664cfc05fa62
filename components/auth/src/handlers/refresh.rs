//! `POST /refresh`, `POST /logout`, `POST /logout-all`: the refresh-token
//! lifecycle. Refresh tokens rotate; presenting a used one revokes its whole
//! family (it was stolen, or replayed), and every failure looks the same.

use crate::domain::session::hash_token;
use crate::error::Error;
use crate::repo::{self, RefreshUse};
use serde::Deserialize;
use spin_sdk::http::Response;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    refresh_token: String,
}

fn token_hash(call: &super::Call) -> Result<String, Error> {
    let body: Body = call.body()?;
    if body.refresh_token.is_empty() || body.refresh_token.len() > 128 {
        return Err(Error::InvalidRefresh);
    }
    Ok(hash_token(&body.refresh_token))
}

/// Exchanges a refresh token for a new session in the same family.
pub fn refresh(call: &super::Call) -> Result<Response, Error> {
    let hash = token_hash(call)?;
    let db = super::db()?;
    match repo::use_refresh_token(&db, &hash)? {
        RefreshUse::Fresh { family, user } => super::session::issue(&db, user, Some(family)),
        RefreshUse::Reused => {
            eprintln!(
                "{}",
                serde_json::json!({"level": "warn", "msg": "refresh token reuse: family revoked"})
            );
            Err(Error::InvalidRefresh)
        }
        RefreshUse::Invalid => Err(Error::InvalidRefresh),
    }
}

/// Ends the session a refresh token belongs to (idempotent).
pub fn logout(call: &super::Call) -> Result<Response, Error> {
    let hash = token_hash(call)?;
    let db = super::db()?;
    if let Some(family) = repo::token_family(&db, &hash)? {
        repo::revoke_family(&db, family)?;
    }
    Ok(platform::http::no_content())
}

/// Ends every session of the caller. Access tokens already issued stay valid
/// until they expire (`access_token_ttl`, 15 minutes by default).
pub fn logout_all(call: &super::Call) -> Result<Response, Error> {
    let caller = call.caller()?;
    let db = super::db()?;
    repo::revoke_user_tokens(&db, caller.user_id)?;
    Ok(platform::http::no_content())
}
