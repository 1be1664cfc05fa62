//! `GET /audit-logs` and `GET /audit-logs/:id`: searching the audit log
//! within the caller's data scope for `audit_log`.

use super::{db, paged, uuid_query, Call};
use crate::domain::parse_time;
use crate::error::{Error, Result};
use crate::repo::{self, audit::Search};
use access::RowRef;
use spin_sdk::http::Response;

fn short(call: &Call, name: &str) -> Result<Option<String>> {
    match call.query(name) {
        Some(v) if v.is_empty() || v.len() > 128 => Err(Error::Invalid(format!(
            "{name} must be 1 to 128 characters"
        ))),
        v => Ok(v),
    }
}

/// An entry with the caller's field rules applied to the states it records
/// (an audit log must not show what the caller's field rules hide).
fn masked(caller: &access::Caller, e: &repo::audit::Logged) -> serde_json::Value {
    let owner = uuid::Uuid::parse_str(&e.resource_id).ok();
    let rule = caller.field_rule(&e.resource_type, owner);
    let mut v = serde_json::to_value(e).expect("entry serializes");
    for state in ["before", "after"] {
        if let Some(s) = v.get_mut(state) {
            rule.apply(s);
        }
    }
    v
}

/// `GET /audit-logs?actor_id=&action=&resource_type=&resource_id=&tenant_id=&from=&to=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let time = |name: &str| call.query(name).map(|t| parse_time(&t, name)).transpose();
    let search = Search {
        actor_id: uuid_query(call, "actor_id")?,
        action: short(call, "action")?,
        resource_type: short(call, "resource_type")?,
        resource_id: short(call, "resource_id")?,
        tenant_id: uuid_query(call, "tenant_id")?,
        from: time("from")?,
        to: time("to")?,
    };
    let (items, total) = repo::audit::search(&db()?, &caller.filter("audit_log"), &search, page)?;
    let items: Vec<_> = items.iter().map(|e| masked(caller, e)).collect();
    Ok(paged(items, page, total))
}

/// `GET /audit-logs/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let e = repo::audit::find(&db()?, call.id("id", "audit entry")?)?
        .ok_or(Error::NotFound("audit entry"))?;
    let row = RowRef {
        tenant: e.tenant_id,
        department: None,
        owner: e.actor_id,
    };
    if !caller.sees("audit_log", row) {
        return Err(Error::NotFound("audit entry"));
    }
    Ok(platform::http::json(200, &masked(caller, &e)))
}
