//! Internal endpoints, each open only to the components its route names:
//! API-key verification for every other component, and credentials set by
//! `user`.

use super::hashing;
use super::{account::password_changed, db, Call};
use crate::domain::input::NewPassword;
use crate::error::Error;
use crate::repo;
use platform::input::Email;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verify {
    key: String,
}

/// `POST /internal/api-keys/verify`: 200 with the caller, or 401.
pub fn verify_key(call: &Call) -> Result<Response, Error> {
    let body: Verify = call.body()?;
    match super::api_keys::verify(&db()?, &body.key)? {
        Some(caller) => Ok(platform::http::json(200, &caller)),
        None => Err(Error::Problem(platform::Problem::unauthenticated(
            "invalid api key",
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    user_id: Uuid,
    email: String,
    password: String,
    /// A new user's identity snapshot and its version.
    #[serde(default)]
    identity: Option<platform::events::payload::Identity>,
    #[serde(default)]
    version: Option<i64>,
}

/// `PUT /internal/credentials`: sets a user's login (administrators creating
/// users or setting passwords in `user`). 409 if the email is another user's.
pub fn put_credentials(call: &Call) -> Result<Response, Error> {
    let body: Credentials = call.body()?;
    let email = Email::parse(&body.email)?;
    let password = NewPassword::parse(&body.password)?;
    let db = db()?;
    let hash = hashing::hash(&db, password.as_str())?;
    db.transaction(|tx| {
        // Credentials belong to a user `user` told us of: in this request
        // (a new user) or earlier by event.
        if body.identity.is_none() && repo::identity(tx, body.user_id)?.is_none() {
            return Err(Error::NotFoundNamed("user"));
        }
        let outcome = repo::put_credentials(tx, body.user_id, &email, &hash)?;
        match outcome {
            repo::PutCredentials::EmailTaken => return Err(Error::EmailTaken),
            // Every session ends and the user is told.
            repo::PutCredentials::Replaced => password_changed(tx, body.user_id, &hash, "admin")?,
            repo::PutCredentials::Created => {}
        }
        if let (Some(identity), Some(version)) = (&body.identity, body.version) {
            if identity.id != body.user_id {
                return Err(Error::Invalid("identity.id differs from user_id".into()));
            }
            repo::upsert_identity(tx, identity, version)?;
        }
        Ok(())
    })?;
    super::publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}
