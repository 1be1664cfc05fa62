//! Types and rules of `auth`, free of I/O.

pub mod input;
pub mod keys;
pub mod password;
pub mod session;
