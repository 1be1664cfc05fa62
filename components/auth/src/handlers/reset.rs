//! Password reset by emailed token. The request answers 202 for any
//! well-formed email, registered or not, so its answer reveals nothing. The
//! token is stored here only as its sha256; it goes to `notification` by
//! service chaining, never through the outbox, Redis or the event feed,
//! and `notification` queues it sealed for email only (no API shows it);
//! the `credential.reset_requested` event records only that a reset was
//! asked for. Confirming with a valid token sets the password, ends every
//! session and API key, and lifts a login lockout.

use super::hashing;
use super::{account::password_changed, db, publish_after_commit, Call};
use crate::domain::input::NewPassword;
use crate::domain::keys::hash;
use crate::domain::session::{email_key, new_refresh_token};
use crate::error::Error;
use crate::repo;
use platform::events::catalogue::CREDENTIAL_RESET_REQUESTED;
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
        let expires_at = db.transaction(|tx| {
            let expires_at = repo::resets::insert(tx, cred.user_id, &token_hash, TOKEN_TTL_SECS)?;
            platform::outbox::enqueue(
                tx,
                &CREDENTIAL_RESET_REQUESTED,
                &cred.user_id.to_string(),
                cred.version,
                &platform::events::payload::ResetRequested {
                    user_id: cred.user_id,
                    expires_at: expires_at.clone(),
                },
            )?;
            Ok::<_, Error>(expires_at)
        })?;
        publish_after_commit(call, &db);
        drop(db);
        deliver(call, cred.user_id, email.as_str(), &token, &expires_at)?;
    }
    Ok(platform::http::json(
        202,
        &serde_json::json!({"status": "if the email is registered, a reset link is on its way"}),
    ))
}

/// Hands the token to `notification` for delivery. If this fails the
/// request fails too: the user asks again (a new token replaces this one).
fn deliver(
    call: &Call,
    user: uuid::Uuid,
    email: &str,
    token: &str,
    expires_at: &str,
) -> Result<(), Error> {
    let body = serde_json::json!({"user_id": user, "email": email, "token": token, "expires_at": expires_at});
    let resp = platform::http::chain(
        call.ctx,
        spin_sdk::http::Method::Post,
        "http://notification.spin.internal/api/v1/notification/internal/password-resets",
        Some(&body),
    )?;
    match *resp.status() {
        201 => Ok(()),
        s => Err(Error::Upstream(format!("notification answered {s}"))),
    }
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
    let db = db()?;
    let new_hash = hashing::hash(&db, new.as_str())?;
    db.transaction(|tx| {
        let user =
            repo::resets::consume(tx, &hash(&body.token))?.ok_or(Error::InvalidResetToken)?;
        // The user may have been deleted since (credentials dropped).
        let (email, _) = repo::credentials_of(tx, user)?.ok_or(Error::InvalidResetToken)?;
        password_changed(tx, user, &new_hash, "reset")?;
        repo::clear_failed_logins(tx, &email_key(&email))?;
        Ok::<_, Error>(())
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}
