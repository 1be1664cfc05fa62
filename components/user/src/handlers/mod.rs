//! Thin handlers: parse input, call the domain and repo, build the response.

pub mod audit;
pub mod departments;
pub mod internal;
pub mod me;
pub mod menus;
pub mod quotas;
pub mod roles;
pub mod scopes;
pub mod tenants;
pub mod tickets;
pub mod users;

use crate::error::{Error, Result};
use crate::repo::audit::Entry;
use access::Caller;
use platform::db::Db;
use platform::http::Page;
use serde::Serialize;
use spin_sdk::http::Response;
use uuid::Uuid;

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

/// An audit entry for this request's caller.
pub fn audit(
    call: &Call,
    action: &str,
    resource_type: &'static str,
    resource_id: impl ToString,
    tenant: Option<Uuid>,
) -> Entry {
    let caller = match &call.who {
        platform::router::Who::Caller(c) => Some(c),
        _ => None,
    };
    let addr = call
        .req
        .header("spin-client-addr")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Entry::new(caller, action, resource_type, resource_id, tenant)
        .request(&call.ctx.request_id, addr)
}

/// Publishes this request's events right after commit (see
/// `platform::outbox::publish_after_commit`).
pub fn publish_after_commit(call: &Call, db: &Db) {
    platform::outbox::publish_after_commit(db, &call.ctx.request_id);
}

/// Whether the caller sees every tenant (platform staff with scope `all`)
/// for `resource`.
pub fn platform_wide(caller: &Caller, resource: &str) -> bool {
    matches!(caller.filter(resource), access::RowFilter::All)
}

/// The tenant a caller acts in: their own, or (platform staff only) the one asked for.
pub fn acting_tenant(caller: &Caller, resource: &str, asked: Option<Uuid>) -> Result<Option<Uuid>> {
    match asked {
        Some(t) if Some(t) != caller.tenant_id && !platform_wide(caller, resource) => Err(
            Error::Forbidden("you can act only in your own tenant".into()),
        ),
        Some(t) => Ok(Some(t)),
        None => Ok(caller.tenant_id),
    }
}

/// Whether the caller may hand out a permission pattern: they hold it, and
/// (acting through an API key) it is within the key's scopes.
pub fn grantable(caller: &Caller, pattern: &str) -> bool {
    use crate::domain::access::covers;
    covers(&caller.access.permissions, pattern)
        && caller
            .access
            .limit
            .as_ref()
            .is_none_or(|l| covers(l, pattern))
}

/// How far a data scope reaches, for comparing what a caller has with what
/// they hand out (all > tenant > departments > own).
fn reach(level: access::Level) -> u8 {
    match level {
        access::Level::Own => 0,
        access::Level::Departments => 1,
        access::Level::Tenant => 2,
        access::Level::All => 3,
    }
}

/// Whether a scope kind set on a role for `resource` reaches no further than
/// the caller's own scope for it (nobody hands out a wider view than theirs).
pub fn scope_grantable(
    caller: &Caller,
    resource: &str,
    kind: crate::domain::access::ScopeKind,
) -> bool {
    use crate::domain::access::ScopeKind::*;
    let wanted = match kind {
        All if caller.tenant_id.is_some() => access::Level::Tenant,
        All => access::Level::All,
        Tenant => access::Level::Tenant,
        Department | DepartmentTree | Custom => access::Level::Departments,
        SelfOnly => access::Level::Own,
    };
    let held = match caller.filter(resource) {
        access::RowFilter::All => access::Level::All,
        access::RowFilter::Tenant(_) => access::Level::Tenant,
        access::RowFilter::Departments { .. } => access::Level::Departments,
        access::RowFilter::Own { .. } => access::Level::Own,
    };
    reach(wanted) <= reach(held)
}

/// Whether the caller may administer a user: every permission the user holds
/// is one the caller could grant (a tenant administrator cannot lock out,
/// delete or take over someone with more rights).
pub fn outranks(db: &Db, caller: &Caller, user: Uuid) -> Result<()> {
    let theirs = crate::repo::users::access_of(db, user)?;
    match theirs.permissions.iter().find(|p| !grantable(caller, p)) {
        Some(p) => Err(Error::Forbidden(format!(
            "the user holds {p}, which you do not"
        ))),
        None => Ok(()),
    }
}

/// A JSON value with the caller's field rules for `resource` applied.
pub fn present<T: Serialize>(
    caller: &Caller,
    resource: &str,
    owner: Option<Uuid>,
    item: &T,
) -> serde_json::Value {
    let mut v = serde_json::to_value(item).expect("response serializes");
    caller.field_rule(resource, owner).apply(&mut v);
    v
}

/// A query parameter that must be one of `allowed`.
pub fn one_of(call: &Call, name: &str, allowed: &[&str]) -> Result<Option<String>> {
    Ok(platform::input::one_of(call.query(name), name, allowed)?)
}

/// A query parameter that must be a UUID.
pub fn uuid_query(call: &Call, name: &str) -> Result<Option<Uuid>> {
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
