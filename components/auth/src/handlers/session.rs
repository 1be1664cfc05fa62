//! Issuing a session: a short-lived signed access token built from auth's
//! identity copy (roles, tenant, department and effective access), and a
//! rotating refresh token.

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
    // Registration stores the copy; a user whose copy is missing (created
    // before this version) gets a token with no permissions until it arrives.
    let identity = repo::identity(db, user)?;
    if identity.as_ref().is_some_and(|i| !i.may_sign_in()) {
        return Err(Error::Inactive);
    }
    let (tid, dept, roles, acc) = match identity {
        Some(i) => (i.tenant_id, i.department_id, i.roles, i.access),
        None => (
            None,
            None,
            vec!["user".to_string()],
            access::Access::default(),
        ),
    };
    let signer = TokenSigner::parse(&platform::var("jwt_signing_key")?)
        .map_err(|e| Problem::internal(format!("jwt_signing_key: {e}")))?;
    let ttl = number_var("access_token_ttl")?;
    let refresh_ttl = number_var("refresh_token_ttl")?;
    let now = platform::now_unix();
    let claims = Claims {
        sub: user,
        tid,
        dept,
        roles,
        acc,
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
