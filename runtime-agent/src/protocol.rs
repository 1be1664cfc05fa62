//! The agent protocol (`crates/agent-protocol`, shared with the device
//! component), re-exported under the agent's own module path.

pub use agent_protocol::messages::*;
