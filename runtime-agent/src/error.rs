//! The agent's error type and the stable codes it reports in command results.

use crate::config::UrlRefused;
use crate::engine::EngineError;
use crate::spec::SpecError;

/// Everything an operation or a reconcile action can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A name, path or spec broke a rule.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// No free ADB port.
    #[error("no free adb port in range {start}-{end} ({in_use} in use)")]
    PortRangeExhausted {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
        /// Ports in use or reserved.
        in_use: usize,
    },
    /// The node already holds its maximum number of devices.
    #[error("node is full: at most {0} devices")]
    NodeFull(u32),
    /// The device is unknown on this node.
    #[error("device {0} not found")]
    DeviceNotFound(String),
    /// The control plane removed the device while the operation waited for it.
    #[error("device {0} was removed from the desired state")]
    NoLongerDesired(String),
    /// The device must be running for this operation.
    #[error("device {0} is not running")]
    NotRunning(String),
    /// The device did not boot in time.
    #[error("device {0} did not boot within {1:?}")]
    BootTimeout(String, std::time::Duration),
    /// The downloaded file did not match its checksum; nothing was installed.
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// A pushed file's contents are not as long as the command said;
    /// nothing was written.
    #[error("length mismatch: expected {expected} bytes, got {actual}")]
    LengthMismatch {
        /// Length the command named.
        expected: u64,
        /// Length received (so far, when it ran over).
        actual: u64,
    },
    /// The control plane no longer serves an operation's contents (the
    /// operation finished, for example by its deadline); nothing was written.
    #[error("payload expired: {0}")]
    PayloadExpired(String),
    /// The URL is not one the agent may fetch; nothing was fetched.
    #[error(transparent)]
    UrlRefused(#[from] UrlRefused),
    /// Fetching a file failed.
    #[error("download failed: {0}")]
    Download(String),
    /// A command inside the device failed.
    #[error("{what} failed: {detail}")]
    DeviceCommand {
        /// Which step.
        what: &'static str,
        /// Its output.
        detail: String,
    },
    /// A request argument is wrong.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No such snapshot.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// Local file system failure.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

impl AgentError {
    /// Stable machine-readable code for command results.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(EngineError::NotFound(_)) => "not_found",
            Self::Engine(EngineError::Timeout(_)) => "timeout",
            Self::Engine(_) => "engine_error",
            Self::Spec(_) | Self::InvalidArgument(_) => "invalid_argument",
            Self::PortRangeExhausted { .. } => "port_range_exhausted",
            Self::NodeFull(_) => "node_full",
            Self::DeviceNotFound(_) | Self::SnapshotNotFound(_) => "not_found",
            Self::NotRunning(_) => "not_running",
            Self::NoLongerDesired(_) => "cancelled",
            Self::BootTimeout(..) => "boot_timeout",
            Self::ChecksumMismatch { .. } | Self::LengthMismatch { .. } => "checksum_mismatch",
            Self::PayloadExpired(_) => "payload_expired",
            Self::UrlRefused(UrlRefused::Invalid(_) | UrlRefused::Scheme) => "invalid_argument",
            Self::UrlRefused(_) => "url_not_allowed",
            Self::Download(_) => "download_failed",
            Self::DeviceCommand { .. } => "device_command_failed",
            Self::Io(_) => "io_error",
        }
    }
}
