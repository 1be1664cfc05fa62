//! Issuing a session: a short-lived signed access token built from auth's
//! identity copy, and a rotating refresh token.

use crate::domain::session::{hash_token, new_refresh_token};
use crate::error::Error;
use crate::repo;
use access::{Claims, TokenSigner, ISSUER};
use platform::db::Db;
use platform::Problem;
use spin_sdk::http::Response;
use uuid::Uuid;

fn number_var(name: &str) -> Result<i64, Error> {
    platform::var(name)?
        .parse()
        .map_err(|_| Error::Problem(Problem::internal(format!("{name} is not a number"))))
}

/// Issues an access token and a refresh token in `family` (a new family at login).
pub fn issue(db: &Db, user: Uuid, family: Option<Uuid>) -> Result<Response, Error> {
    // The identity copy arrives by event right after registration; until it
    // has, the user is a plain active user.
    let (tid, roles) = match repo::identity(db, user)? {
        Some(i) if i.status != "active" => return Err(Error::Inactive),
        Some(i) => (i.tenant_id, i.roles),
        None => (None, vec!["user".to_string()]),
    };
    let signer = TokenSigner::parse(&platform::var("jwt_signing_key")?)
        .map_err(|e| Problem::internal(format!("jwt_signing_key: {e}")))?;
    let ttl = number_var("access_token_ttl")?;
    let refresh_ttl = number_var("refresh_token_ttl")?;
    let now = platform::now_unix();
    let claims = Claims {
        sub: user,
        tid,
        roles,
        iat: now,
        exp: now + ttl,
        iss: ISSUER.into(),
        jti: Uuid::new_v4(),
    };
    let refresh = new_refresh_token().map_err(Problem::internal)?;
    repo::insert_refresh_token(
        db,
        family.unwrap_or_else(Uuid::new_v4),
        user,
        &hash_token(&refresh),
        refresh_ttl,
    )?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({
            "access_token": signer.sign(&claims),
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
            "refresh_expires_in": refresh_ttl,
        }),
    ))
}

/// The lockout rule from the component variables.
pub fn lockout() -> Result<crate::domain::session::Lockout, Error> {
    Ok(crate::domain::session::Lockout {
        max_failures: number_var("login_max_failures")? as i32,
        lock_secs: number_var("login_lockout_secs")?,
    })
}
