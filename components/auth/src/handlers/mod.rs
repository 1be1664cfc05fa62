//! Thin handlers: parse input, call the domain and repo, build the response.

pub mod account;
pub mod login;
pub mod refresh;
pub mod register;
pub mod session;
