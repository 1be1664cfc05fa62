//! A device's two statuses: what its owner asked for (desired) and what its
//! node's agent reports (observed), and the node's status. Transitions are
//! explicit functions that refuse illegal moves, so a handler cannot, say,
//! start a deleted device.

use crate::error::Error;
use serde::Serialize;

/// What the owner asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Running.
    Running,
    /// Stopped (the container is stopped; data kept).
    Stopped,
    /// Deleted (the container and its data are removed).
    Deleted,
}

impl Desired {
    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "stopped" => Some(Self::Stopped),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }

    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
        }
    }
}

/// What the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// Placed; the agent has not created the container yet.
    Creating,
    /// The container runs; Android has not finished booting.
    Booting,
    /// Android booted (`sys.boot_completed` = 1).
    Running,
    /// The container is stopped.
    Stopped,
    /// The agent gave up on it (its reason says why).
    Failed,
    /// The container and data are gone.
    Deleted,
    /// Its node stopped reporting.
    Unknown,
}

impl Observed {
    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "booting" => Self::Booting,
            "running" => Self::Running,
            "stopped" => Self::Stopped,
            "failed" => Self::Failed,
            "deleted" => Self::Deleted,
            "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
            Self::Unknown => "unknown",
        }
    }

    /// The observed status for an agent's device status
    /// (`creating|booting|ready|stopped|failed|removed`).
    pub fn from_agent(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "booting" => Self::Booting,
            "ready" => Self::Running,
            "stopped" => Self::Stopped,
            "failed" => Self::Failed,
            "removed" => Self::Deleted,
            _ => return None,
        })
    }
}

/// What an agent's report means for a device its owner wants as
/// `desired`: `removed` is final only for a device being deleted; for one
/// that should exist, its container is merely gone (an agent briefly
/// without it in its desired state) and its node makes it again, so it
/// reads as `creating` rather than ending the device for good.
pub fn reported(desired: Desired, observed: Observed) -> Observed {
    match (desired, observed) {
        (Desired::Running | Desired::Stopped, Observed::Deleted) => Observed::Creating,
        (_, o) => o,
    }
}

/// The lifecycle actions a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run it.
    Start,
    /// Stop it.
    Stop,
    /// Stop and start it.
    Restart,
    /// Remove it and its data.
    Delete,
}

impl Action {
    /// The operation kind recorded for it.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Delete => "delete",
        }
    }
}

/// The desired status after `action`, or why it is refused.
pub fn transition(current: Desired, action: Action) -> Result<Desired, Error> {
    use Action::*;
    use Desired::*;
    match (current, action) {
        (Deleted, _) => Err(Error::Conflict("the device is deleted".into())),
        (_, Delete) => Ok(Deleted),
        (_, Start) => Ok(Running),
        (_, Stop) => Ok(Stopped),
        (Running, Restart) => Ok(Running),
        (Stopped, Restart) => Err(Error::Conflict(
            "the device is stopped: start it instead".into(),
        )),
    }
}

/// A node's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Enrolled; its agent has not reported yet.
    Pending,
    /// Heartbeats arrive.
    Online,
    /// Three heartbeats missed.
    Unreachable,
    /// Taken out of service by an operator (nothing placed; devices kept).
    Maintenance,
    /// Being emptied: nothing placed, devices stopped or moved.
    Draining,
    /// Revoked: its secret no longer opens anything.
    Disabled,
}

impl NodeStatus {
    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "online" => Self::Online,
            "unreachable" => Self::Unreachable,
            "maintenance" => Self::Maintenance,
            "draining" => Self::Draining,
            "disabled" => Self::Disabled,
            _ => return None,
        })
    }

    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Online => "online",
            Self::Unreachable => "unreachable",
            Self::Maintenance => "maintenance",
            Self::Draining => "draining",
            Self::Disabled => "disabled",
        }
    }

    /// The status after a heartbeat: the operator's states stay, the
    /// automatic ones become online.
    pub fn after_heartbeat(self) -> Self {
        match self {
            Self::Pending | Self::Online | Self::Unreachable => Self::Online,
            other => other,
        }
    }

    /// The status after an operator's action, or why it is refused.
    pub fn operator(self, to: NodeStatus) -> Result<Self, Error> {
        use NodeStatus::*;
        match (self, to) {
            (Disabled, _) => Err(Error::Conflict(
                "the node is disabled: enroll it again".into(),
            )),
            (_, Maintenance | Draining | Disabled) => Ok(to),
            // Back in service: online until heartbeats say otherwise.
            (Maintenance | Draining, Online) => Ok(Online),
            (s, Online) => Ok(s),
            (_, Pending | Unreachable) => {
                Err(Error::Invalid("not a status an operator sets".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_is_final_only_for_a_device_being_deleted() {
        assert_eq!(
            reported(Desired::Deleted, Observed::Deleted),
            Observed::Deleted
        );
        assert_eq!(
            reported(Desired::Running, Observed::Deleted),
            Observed::Creating
        );
        assert_eq!(
            reported(Desired::Stopped, Observed::Deleted),
            Observed::Creating
        );
        assert_eq!(
            reported(Desired::Running, Observed::Running),
            Observed::Running
        );
    }

    #[test]
    fn lifecycle_transitions_refuse_illegal_moves() {
        assert_eq!(
            transition(Desired::Running, Action::Stop).unwrap(),
            Desired::Stopped
        );
        assert_eq!(
            transition(Desired::Stopped, Action::Start).unwrap(),
            Desired::Running
        );
        assert_eq!(
            transition(Desired::Running, Action::Restart).unwrap(),
            Desired::Running
        );
        assert!(transition(Desired::Stopped, Action::Restart).is_err());
        assert!(transition(Desired::Deleted, Action::Start).is_err());
        assert!(transition(Desired::Deleted, Action::Delete).is_err());
        assert_eq!(
            transition(Desired::Stopped, Action::Delete).unwrap(),
            Desired::Deleted
        );
    }

    #[test]
    fn agent_statuses_map_and_node_statuses_follow_operators_and_heartbeats() {
        assert_eq!(Observed::from_agent("ready"), Some(Observed::Running));
        assert_eq!(Observed::from_agent("removed"), Some(Observed::Deleted));
        assert_eq!(Observed::from_agent("exploded"), None);
        assert_eq!(
            NodeStatus::Unreachable.after_heartbeat(),
            NodeStatus::Online
        );
        assert_eq!(
            NodeStatus::Maintenance.after_heartbeat(),
            NodeStatus::Maintenance
        );
        assert_eq!(
            NodeStatus::Draining.operator(NodeStatus::Online).unwrap(),
            NodeStatus::Online
        );
        assert!(NodeStatus::Disabled.operator(NodeStatus::Online).is_err());
        assert!(NodeStatus::Online
            .operator(NodeStatus::Unreachable)
            .is_err());
    }
}
