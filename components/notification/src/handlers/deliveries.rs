//! Messages other components hand over directly instead of by event,
//! because they carry a secret that must not sit in an outbox, a Redis
//! channel or an event feed.
//!
//! A password-reset token reaches its user only by email: the message is
//! queued in `outgoing_mail` sealed under this component's mail key
//! (`access::seal`), so neither the API nor a copy of the database shows
//! it, and the in-app notification says only that a reset was asked for.

use crate::error::Error;
use crate::repo::{self, New, NewMail};
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

/// `POST /internal/password-resets` (from `auth`): the reset token for a
/// user, queued for delivery by email.
pub fn password_reset(call: &Call) -> Result<Response, Error> {
    let body: PasswordReset = call.body()?;
    let email = Email::parse(&body.email)?;
    if body.token.is_empty() || body.token.len() > 128 || body.expires_at.len() > 64 {
        return Err(Error::Invalid(
            "token and expires_at must be short strings".into(),
        ));
    }
    let text = format!(
        "Someone (hopefully you) asked to reset the password of your cloudphone account.\n\n\
         Your reset token: {}\n\n\
         It works once, until {}. If you did not ask for it, ignore this message: your password stays as it is.\n",
        body.token, body.expires_at
    );
    let mail = NewMail {
        user: body.user_id,
        to: email.as_str(),
        kind: "password_reset",
        subject: "Reset your cloudphone password",
        text: &text,
    };
    let notice = New {
        user: body.user_id,
        kind: "password_reset_requested",
        category: "security",
        locale: "en",
        title: "A password reset was requested",
        body: "We emailed a reset token to your address. If you did not ask for it, ignore it; your password stays as it is.".into(),
        data: serde_json::json!({"expires_at": body.expires_at}),
    };
    let db = platform::db::Db::open()?;
    db.transaction(|tx| {
        repo::queue_mail(tx, &mail)?;
        repo::insert(tx, &notice, None)?;
        Ok::<_, Error>(())
    })?;
    Ok(platform::http::json(
        201,
        &serde_json::json!({"queued": true}),
    ))
}
