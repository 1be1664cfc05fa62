//! Password reset by emailed token. The request answers 202 whether or not
//! the email exists (and does the same work either way), so it reveals
//! nothing; the token travels in a `credential.reset_requested` event to
//! `notification`, which delivers it. Confirming with a valid token sets the
//! password, ends every session and lifts a login lockout.

use super::{account::password_changed, db, publish_after_commit, Call};
use crate::domain::input::NewPassword;
use crate::domain::keys::hash;
use crate::domain::password;
use crate::domain::session::{email_key, new_refresh_token};
use crate::error::Error;
use crate::repo;
use platform::events::CREDENTIAL_RESET_REQUESTED;
use platform::input::Email;
use serde::Deserialize;
use spin_sdk::http::Response;

/// How long a reset token works.
pub const TOKEN_TTL_SECS: i64 = 1800;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    email: String,
}

/// `POST /password-reset/request`: 202 for any well-formed email.
pub fn request(call: &Call) -> Result<Response, Error> {
    let body: Request = call.body()?;
    let email = Email::parse(&body.email)?;
    let token = new_refresh_token().map_err(platform::Problem::internal)?;
    let token_hash = hash(&token);
    let db = db()?;
    let found = repo::find_credentials(&db, &email)?.map(|c| (c, email));
    if let Some((cred, email)) = found {
        db.transaction(|tx| {
            let expires_at = repo::resets::insert(tx, cred.user_id, &token_hash, TOKEN_TTL_SECS)?;
            platform::outbox::enqueue(
                tx,
                &CREDENTIAL_RESET_REQUESTED,
                &cred.user_id.to_string(),
                platform::now_unix(),
                &serde_json::json!({"user_id": cred.user_id, "email": email.as_str(), "token": token, "expires_at": expires_at}),
            )?;
            Ok::<_, Error>(())
        })?;
        publish_after_commit(call, &db);
    }
    Ok(platform::http::json(
        202,
        &serde_json::json!({"status": "if the email is registered, a reset link is on its way"}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    token: String,
    new_password: String,
}

/// `POST /password-reset/confirm`: 204, or 400 `invalid_reset_token`.
pub fn confirm(call: &Call) -> Result<Response, Error> {
    let body: Confirm = call.body()?;
    let new = NewPassword::parse(&body.new_password)?;
    if body.token.is_empty() || body.token.len() > 128 {
        return Err(Error::InvalidResetToken);
    }
    let new_hash = password::hash(new.as_str()).map_err(platform::Problem::internal)?;
    let db = db()?;
    db.transaction(|tx| {
        let user =
            repo::resets::consume(tx, &hash(&body.token))?.ok_or(Error::InvalidResetToken)?;
        password_changed(tx, user, &new_hash, "reset")?;
        if let Some((email, _)) = repo::credentials_of(tx, user)? {
            repo::clear_failed_logins(tx, &email_key(&email))?;
        }
        Ok::<_, Error>(())
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}
