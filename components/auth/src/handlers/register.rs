//! `POST /register`: creates the profile in `user` (service chaining), then
//! the credentials here. `user` answers a create for an email it already holds
//! (a registration that failed half-way) with the existing profile, so a
//! retry completes the registration, and of two concurrent registrations of
//! one email the credentials' unique index lets exactly one win. `user`
//! answers the identity snapshot too, so the new user can log in at once,
//! before the `user.created` event arrives.

use super::hashing;
use super::Call;
use crate::domain::input::NewPassword;
use crate::error::Error;
use crate::repo;
use platform::events::payload::Identity;
use platform::input::{Email, Name};
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    email: String,
    password: String,
    display_name: String,
}

/// Registers a user.
pub fn post(call: &Call) -> Result<Response, Error> {
    let body: Body = call.body()?;
    let email = Email::parse(&body.email)?;
    let password = NewPassword::parse(&body.password)?;
    let name = Name::display_name(&body.display_name)?;
    let hash = {
        let db = super::db()?;
        if repo::email_registered(&db, &email)? {
            return Err(Error::EmailTaken);
        }
        hashing::hash(&db, password.as_str())?
    };
    let created = create_profile(call, Uuid::new_v4(), &email, &name)?;
    let db = super::db()?;
    db.transaction(|tx| {
        // Of two concurrent registrations of one email, the unique index
        // lets one win.
        repo::insert_credentials(tx, created.id, &email, &hash).map_err(|e| match e {
            platform::db::DbError::Unique(_) => Error::EmailTaken,
            e => e.into(),
        })?;
        repo::upsert_identity(tx, &created.identity, created.version)?;
        Ok::<_, Error>(())
    })?;
    Ok(platform::http::json(
        201,
        &serde_json::json!({"id": created.id, "email": email.as_str(), "display_name": name.as_str()}),
    ))
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
    identity: Identity,
    version: i64,
}

/// Asks `user` to create the profile; returns the profile it holds for this email.
fn create_profile(call: &Call, id: Uuid, email: &Email, name: &Name) -> Result<Created, Error> {
    let body =
        serde_json::json!({"id": id, "email": email.as_str(), "display_name": name.as_str()});
    let resp = platform::http::chain(
        call.ctx,
        spin_sdk::http::Method::Post,
        "http://user.spin.internal/api/v1/user/internal/users",
        Some(&body),
    )?;
    match *resp.status() {
        200 | 201 => serde_json::from_slice(resp.body())
            .map_err(|e| Error::Upstream(format!("user: bad response: {e}"))),
        409 => Err(Error::EmailTaken),
        s => Err(Error::Upstream(format!(
            "user answered {s}: {}",
            String::from_utf8_lossy(resp.body())
        ))),
    }
}
