//! All SQL of `billing`: the ledger, the accounts' views, metering, plans,
//! orders, payments and their webhooks, refunds, billing rules and invoices.

pub mod accounts;
pub mod invoices;
pub mod ledger;
pub mod metering;
pub mod orders;
pub mod payments;
pub mod plans;
pub mod refunds;
pub mod rules;

use platform::db::{Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// The filters every list of users' rows takes: the caller's data scope,
/// and optionally one user and one `status`.
pub fn owned_where(scope: &access::RowFilter, user: Option<Uuid>, status: Option<String>) -> Where {
    let mut w = Where::new();
    w.scope(scope, accounts::OWNER_SCOPE);
    if let Some(u) = user {
        w.eq("r.user_id", P::Uuid(u.to_string()));
    }
    if let Some(s) = status {
        w.eq("r.status", P::Str(s));
    }
    w
}

/// A page of `table`'s rows (users' rows, `r`, joined with their owner
/// copies, `o`, which the data scope reads) narrowed by `w`, ordered by
/// `order`; `columns` are the table's own, read as `r.<column>`.
pub fn owned_page<T>(
    db: &Db,
    table: &str,
    columns: &str,
    w: Where,
    order: &str,
    page: Page,
    decode: impl Fn(&[DbValue]) -> Result<T, DbError>,
) -> Result<(Vec<T>, i64), DbError> {
    let from = format!("{table} r JOIN owners o ON o.user_id = r.user_id");
    let cols: Vec<String> = columns.split(", ").map(|c| format!("r.{c}")).collect();
    paged(
        db,
        &format!("SELECT {} FROM {from}", cols.join(", ")),
        &from,
        w,
        order,
        page,
        decode,
    )
}

/// Narrows a catalogue query (plans, rules: rows with a `tenant_id`, none
/// for public ones) to what the caller sees: platform staff (billing data
/// scope `all`) every row, others the public ones and their tenant's.
pub fn catalogue_scope(w: &mut Where, caller: &access::Caller) {
    if matches!(caller.filter("billing"), access::RowFilter::All) {
        return;
    }
    match caller.tenant_id {
        Some(t) => {
            let p = w.bind(P::Uuid(t.to_string()));
            w.and(format!("(tenant_id IS NULL OR tenant_id = {p})"));
        }
        None => w.and("tenant_id IS NULL"),
    }
}
