//! Types and rules of `billing`, free of I/O: money, what each kind of
//! movement posts to which accounts, and per-minute metering.

pub mod metering;
pub mod money;
pub mod posting;
