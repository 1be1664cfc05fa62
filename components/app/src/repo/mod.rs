//! All SQL of `app`, one module per aggregate.

pub mod catalogue;
pub mod installs;
pub mod reviews;
pub mod uploads;
