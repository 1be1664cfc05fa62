//! Types and rules of `device`, free of I/O: device specs and names, the
//! desired and observed statuses with their transitions, placement, and
//! the operations the agent carries out inside a phone, and templates.

pub mod device_ops;
pub mod gpu;
pub mod placement;
pub mod spec;
pub mod status;
pub mod template;
