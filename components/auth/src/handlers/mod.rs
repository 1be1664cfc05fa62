//! Thin handlers: parse input, call the domain and repo, build the response.

pub mod account;
pub mod api_keys;
pub mod hashing;
pub mod internal;
pub mod login;
pub mod refresh;
pub mod register;
pub mod reset;
pub mod session;

/// A matched, authenticated request of this component.
pub type Call<'a> = platform::router::Call<'a>;

/// Opens the component's database.
pub fn db() -> Result<platform::db::Db, crate::error::Error> {
    Ok(platform::db::Db::open()?)
}

/// Publishes this request's events right after commit (see
/// `platform::outbox::publish_after_commit`).
pub fn publish_after_commit(call: &Call, db: &platform::db::Db) {
    platform::outbox::publish_after_commit(db, &call.ctx.request_id);
}
