//! Thin handlers: parse input, call the repo, build the response.

pub mod deliveries;
pub mod notifications;
