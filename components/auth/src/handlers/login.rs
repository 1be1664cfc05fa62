//! `POST /login`: checks the password and opens a session. The same work is
//! done whether or not the email exists, the error never says which part was
//! wrong, and after `login_max_failures` failures the email (registered or
//! not) is locked for `login_lockout_secs`.

use super::hashing;
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

/// Longest password a login looks at: anything longer is not a password
/// anyone registered (at most 128 characters) but a malformed request.
const MAX_LOGIN_PASSWORD_BYTES: usize = 1024;

/// Logs a user in.
pub fn post(call: &super::Call) -> Result<Response, Error> {
    let body: Body = call.body()?;
    if body.password.len() > MAX_LOGIN_PASSWORD_BYTES {
        return Err(Error::Invalid("password is too long".into()));
    }
    let db = super::db()?;
    // An email that cannot be parsed belongs to no account: the same work is
    // done and the same answer given, but there is nothing to count or lock.
    let Ok(email) = Email::parse(&body.email) else {
        hashing::verify(&db, &body.password, password::DUMMY_HASH)?;
        return Err(Error::BadCredentials);
    };
    let key = email_key(&body.email);
    if let Some(secs) = repo::locked_for(&db, &key)? {
        hashing::verify(&db, &body.password, password::DUMMY_HASH)?;
        return Err(Error::Locked(secs.max(1)));
    }
    let found = if body.password.chars().count() <= 128 {
        repo::find_credentials(&db, &email)?
    } else {
        None
    };
    let ok = match &found {
        Some(c) => hashing::verify(&db, &body.password, &c.password_hash)?,
        None => {
            hashing::verify(&db, &body.password, password::DUMMY_HASH)?;
            false
        }
    };
    let Some(cred) = found.filter(|_| ok) else {
        repo::record_failed_login(&db, &key, super::session::lockout()?)?;
        return Err(Error::BadCredentials);
    };
    repo::clear_failed_logins(&db, &key)?;
    // A hash made with earlier parameters is replaced now that the password
    // is at hand; when no hashing slot is free it waits for the next login.
    if !password::is_current(&cred.password_hash) {
        if let Ok(new_hash) = hashing::hash(&db, &body.password) {
            repo::upgrade_hash(&db, cred.user_id, &cred.password_hash, &new_hash)?;
        }
    }
    super::session::issue(&db, cred.user_id, None)
}
