//! All SQL of `device`, one module per aggregate. Handlers call these inside
//! transactions they open with `Db::transaction`; nothing here builds a
//! response or talks to another component.

pub mod archives;
pub mod batches;
pub mod claims;
pub mod commands;
pub mod contents;
pub mod devices;
pub mod gpus;
pub mod lifecycle;
pub mod nodes;
pub mod operations;
pub mod owners;
pub mod pools;
pub mod recoveries;
pub mod runs;
pub mod snapshot_policies;
pub mod snapshots;
pub mod suspensions;
pub mod templates;
