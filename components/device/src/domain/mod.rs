//! Types and rules of `device`, free of I/O: device specs and names, the
//! desired and observed statuses with their transitions, placement, the
//! operations the agent carries out inside a phone, templates, GPU slots,
//! the lifecycle policy (expiry, idle timeout, session length) and the
//! snapshot policy (automatic backups, retention, storage charged).

pub mod batch;
pub mod device_ops;
pub mod gpu;
pub mod identity;
pub mod lifecycle;
pub mod placement;
pub mod snapshot_policy;
pub mod spec;
pub mod status;
pub mod template;
