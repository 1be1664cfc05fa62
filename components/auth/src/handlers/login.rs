//! `POST /login`: checks the password and opens a session. The same work is
//! done whether or not the email exists, the error never says which part was
//! wrong, and after `login_max_failures` failures the email (registered or
//! not) is locked for `login_lockout_secs`.

use crate::domain::password;
use crate::domain::session::email_key;
use crate::error::Error;
use crate::repo;
use platform::input::Email;
use serde::Deserialize;
use spin_sdk::http::Response;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    email: String,
    password: String,
}

/// Logs a user in.
pub fn post(call: &super::Call) -> Result<Response, Error> {
    let body: Body = call.body()?;
    let db = super::db()?;
    let key = email_key(&body.email);
    if let Some(secs) = repo::locked_for(&db, &key)? {
        password::verify(&body.password, password::DUMMY_HASH);
        return Err(Error::Locked(secs.max(1)));
    }
    let found = match Email::parse(&body.email) {
        Ok(email) if body.password.chars().count() <= 128 => repo::find_credentials(&db, &email)?,
        _ => None,
    };
    let ok = match &found {
        Some(c) => password::verify(&body.password, &c.password_hash),
        None => {
            password::verify(&body.password, password::DUMMY_HASH);
            false
        }
    };
    let Some(cred) = found.filter(|_| ok) else {
        repo::record_failed_login(&db, &key, super::session::lockout()?)?;
        return Err(Error::BadCredentials);
    };
    repo::clear_failed_logins(&db, &key)?;
    super::session::issue(&db, cred.user_id, None)
}
