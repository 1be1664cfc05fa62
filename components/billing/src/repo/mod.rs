//! All SQL of `billing`: the ledger, the accounts' views, and metering.

pub mod accounts;
pub mod ledger;
pub mod metering;
