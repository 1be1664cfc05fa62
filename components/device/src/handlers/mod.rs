//! Thin handlers: parse input, call the domain and repo, build the response.
//! `lifecycle` holds what several handlers share about a device's state
//! changing (events, run intervals, operations finishing); `dispatch` what
//! happens after a commit (commands to agents, quota in `user`);
//! `device_ops` the operations inside a running phone (shell, files, apps);
//! `followups` what an operation's end carries on (first-boot steps,
//! snapshots);
//! `policy` the lifecycle policy (expiry, idle timeout, session length,
//! forced release) and its job; `backups` the snapshot policy
//! (automatic snapshots, retention) and the storage snapshots are charged.

pub mod agent;
pub mod backups;
pub mod batches;
pub mod device_ops;
pub mod devices;
pub mod dispatch;
pub mod failover;
pub mod followups;
pub mod identity;
pub mod internal;
pub mod lifecycle;
pub mod nodes;
pub mod operations;
pub mod plan_devices;
pub mod policy;
pub mod pools;
pub mod snapshots;
pub mod templates;

use crate::error::{Error, Result};
use access::Caller;
use platform::db::Db;
use platform::http::Page;
use serde::Serialize;
use spin_sdk::http::Response;

/// A matched, authenticated request of this component.
pub type Call<'a> = platform::router::Call<'a>;

/// Opens the component's database.
pub fn db() -> Result<Db> {
    Ok(Db::open()?)
}

/// A page of items as JSON.
pub fn paged<T: Serialize>(items: Vec<T>, page: Page, total: i64) -> Response {
    platform::http::page_of(page, (items, total))
}

/// Publishes this request's events right after commit.
pub fn publish_after_commit(call: &Call, db: &Db) {
    platform::outbox::publish_after_commit(db, &call.ctx.request_id);
}

/// Whether the caller is platform staff for `resource` (scope `all`).
pub fn platform_wide(caller: &Caller, resource: &str) -> bool {
    matches!(caller.filter(resource), access::RowFilter::All)
}

/// A query parameter that must be one of `allowed`.
pub fn one_of(call: &Call, name: &str, allowed: &[&str]) -> Result<Option<String>> {
    Ok(platform::input::one_of(call.query(name), name, allowed)?)
}

/// A query parameter that must be a UUID.
pub fn uuid_query(call: &Call, name: &str) -> Result<Option<uuid::Uuid>> {
    Ok(platform::input::uuid_param(call.query(name), name)?)
}

/// A search string: at most 100 characters.
pub fn search_query(call: &Call) -> Result<Option<String>> {
    match call.query("q") {
        Some(q) if q.chars().count() > 100 => {
            Err(Error::Invalid("q must be at most 100 characters".into()))
        }
        Some(q) if q.trim().is_empty() => Ok(None),
        q => Ok(q),
    }
}
