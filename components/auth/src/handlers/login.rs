//! `POST /login`: checks the password and returns a signed access token. The
//! same work is done whether or not the email exists, and the error never
//! says which part was wrong.

use crate::domain::input::Email;
use crate::domain::password;
use crate::error::Error;
use crate::repo;
use access::{Claims, TokenSigner, ISSUER};
use serde::Deserialize;
use spin_sdk::http::{Request, Response};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    email: String,
    password: String,
}

/// Logs a user in.
pub fn post(req: &Request) -> Result<Response, Error> {
    let body: Body = platform::http::body(req)?;
    if body.password.chars().count() > 128 {
        return Err(Error::BadCredentials);
    }
    let db = platform::db::Db::open()?;
    let found = match Email::parse(&body.email) {
        Ok(email) => repo::find_credentials(&db, &email)?,
        Err(_) => None,
    };
    let ok = match &found {
        Some(c) => password::verify(&body.password, &c.password_hash),
        None => {
            password::verify(&body.password, password::DUMMY_HASH);
            false
        }
    };
    let Some(cred) = found.filter(|_| ok) else {
        return Err(Error::BadCredentials);
    };
    let signer = TokenSigner::parse(&platform::var("jwt_signing_key")?)
        .map_err(|e| platform::Problem::internal(format!("jwt_signing_key: {e}")))?;
    let ttl: i64 = platform::var("access_token_ttl")?
        .parse()
        .map_err(|_| platform::Problem::internal("access_token_ttl is not a number"))?;
    // The identity copy arrives by event right after registration; until it
    // has, the user is a plain active user.
    let (tid, roles) = match repo::identity(&db, cred.user_id)? {
        Some(i) if i.status != "active" => return Err(Error::Inactive),
        Some(i) => (i.tenant_id, i.roles),
        None => (None, vec!["user".to_string()]),
    };
    let now = platform::now_unix();
    let claims = Claims {
        sub: cred.user_id,
        tid,
        roles,
        iat: now,
        exp: now + ttl,
        iss: ISSUER.into(),
        jti: uuid::Uuid::new_v4(),
    };
    Ok(platform::http::json(
        200,
        &serde_json::json!({"access_token": signer.sign(&claims), "token_type": "Bearer", "expires_in": ttl}),
    ))
}
