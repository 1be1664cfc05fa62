//! Thin handlers: parse input, call the domain and repo, build the response.

pub mod internal;
pub mod me;
