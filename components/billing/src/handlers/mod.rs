//! Thin handlers: parse input, call the domain and the repo, build the
//! response. `balances`: what a user holds and their credit limit;
//! `postings`: operators' movements; `transactions`: lists, one
//! transaction, CSV exports, statistics and the ledger's own check;
//! `metering`: device time charged from run intervals, and usage records;
//! `effects`: what follows every movement (debts paid, alerts); `plans`,
//! `orders` (the purchase saga), `payments` (providers and their
//! webhooks), `refunds`, `rules` (prices explained),
//! and `invoices` (the monthly run, documents, reports).

pub mod balances;
pub mod effects;
pub mod invoices;
pub mod metering;
pub mod orders;
pub mod payments;
pub mod plans;
pub mod postings;
pub mod refunds;
pub mod rules;
pub mod transactions;

use crate::domain::money::Currency;
use crate::error::{Error, Result};
use crate::repo::accounts::{self, Owner};
use access::{Caller, RowFilter};
use platform::db::Db;
use uuid::Uuid;

/// A matched, authenticated request of this component.
pub type Call<'a> = platform::router::Call<'a>;

/// Opens the component's database.
pub fn db() -> Result<Db> {
    Ok(Db::open()?)
}

/// The caller's data scope over billing's rows (users' money).
pub fn scope(caller: &Caller) -> RowFilter {
    caller.filter("billing")
}

/// A user the caller may see (404 otherwise, whatever the reason).
pub fn visible_owner(db: &Db, caller: &Caller, user: Uuid) -> Result<Owner> {
    accounts::visible_owner(db, user, &scope(caller))?.ok_or(Error::NotFound("user"))
}

/// A currency from input.
pub fn currency(raw: &str) -> Result<Currency> {
    Currency::parse(raw).map_err(Error::Invalid)
}

/// An optional UUID query parameter.
pub fn uuid_query(call: &Call, name: &str) -> Result<Option<Uuid>> {
    Ok(platform::input::uuid_param(call.query(name), name)?)
}

/// Whether the caller sees a catalogue row (a plan, a rule) of `tenant`
/// (none: public): platform staff every one, others the public ones and
/// their tenant's.
pub fn sees_catalogue(caller: &Caller, tenant: Option<Uuid>) -> bool {
    match scope(caller) {
        RowFilter::All => true,
        _ => tenant.is_none() || tenant == caller.tenant_id,
    }
}

/// Whether the caller may make or change catalogue rows of `tenant`
/// (none: public ones): platform staff any, a tenant's managers their own.
pub fn manages_catalogue(caller: &Caller, tenant: Option<Uuid>) -> bool {
    match scope(caller) {
        RowFilter::All => true,
        _ => tenant.is_some() && tenant == caller.tenant_id,
    }
}

/// The tenant a new catalogue row belongs to: the `tenant_id` given, else
/// none for platform staff (public) and the caller's own for others.
pub fn catalogue_tenant(caller: &Caller, given: Option<String>) -> Result<Option<Uuid>> {
    Ok(
        platform::input::uuid_param(given, "tenant_id")?.or(match scope(caller) {
            RowFilter::All => None,
            _ => caller.tenant_id,
        }),
    )
}

/// What a posting recorded (now or, for a repeated key, before), or why it
/// recorded nothing: `Insufficient` (a floor), `KeyReused`.
pub fn recorded(p: crate::repo::ledger::Posted) -> Result<crate::repo::ledger::Transaction> {
    use crate::repo::ledger::Posted;
    match p {
        Posted::New(t) | Posted::Repeat(t) => Ok(t),
        Posted::KeyReused => Err(Error::KeyReused),
        Posted::Insufficient => Err(Error::Insufficient),
    }
}
