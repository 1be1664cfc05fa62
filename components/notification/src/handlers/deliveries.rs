//! Messages other components hand over directly instead of by event,
//! because they carry a secret that must not sit in an outbox, a Redis
//! channel or an event feed.

use crate::error::Error;
use crate::repo::{self, New};
use crate::routes::Op;
use platform::input::Email;
use platform::router::Call;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordReset {
    user_id: Uuid,
    email: String,
    token: String,
    expires_at: String,
}

/// `POST /internal/password-resets` (from `auth`): the reset link for a
/// user, to be delivered by email.
pub fn password_reset(call: &Call<Op>) -> Result<Response, Error> {
    let body: PasswordReset = call.body()?;
    let email = Email::parse(&body.email)?;
    if body.token.is_empty() || body.token.len() > 128 || body.expires_at.len() > 64 {
        return Err(Error::Invalid(
            "token and expires_at must be short strings".into(),
        ));
    }
    let new = New {
        user: body.user_id,
        kind: "password_reset",
        title: "Reset your password",
        body:
            "Use the token in this message to set a new password. It works once, for 30 minutes. \
               If you did not ask for it, ignore this message."
                .into(),
        data: serde_json::json!({
            "channel": "email", "to": email.as_str(), "token": body.token, "expires_at": body.expires_at,
        }),
    };
    let db = platform::db::Db::open()?;
    repo::insert(&db, &new, None)?;
    Ok(platform::http::json(
        201,
        &serde_json::json!({"queued": true}),
    ))
}
