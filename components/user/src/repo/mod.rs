//! All SQL of `user`, one module per aggregate. Handlers call these inside
//! transactions they open with `Db::transaction`; nothing here builds a
//! response.

pub mod admin_grants;
pub mod audit;
pub mod org;
pub mod quota_grants;
pub mod quotas;
pub mod roles;
pub mod snapshot;
pub mod tickets;
pub mod users;
