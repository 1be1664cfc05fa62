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

use platform::query::Where;
use spin_sdk::pg4::ParameterValue as P;

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
