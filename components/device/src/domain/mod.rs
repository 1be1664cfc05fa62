//! Types and rules of `device`, free of I/O: device specs and names, the
//! desired and observed statuses with their transitions, and placement.

pub mod placement;
pub mod spec;
pub mod status;
