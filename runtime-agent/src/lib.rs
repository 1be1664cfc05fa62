//! The runtime agent as a library: one agent runs on every host that carries
//! cloud phones, turns the control plane's desired state into redroid
//! containers and reports what is really there. `main.rs` is a thin binary
//! over [`agent::start`]; tests and benchmarks drive the same code in-process.
//! The wire protocol (version 2: commands over Redis, reports over signed
//! HTTP) is described in `docs/agent-protocol.md`.

pub mod agent;
pub mod archive;
pub mod config;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod protocol;
pub mod reconcile;
pub mod report;
pub mod spec;
pub mod testkit;

pub use agent::{start, AgentHandle};
pub use config::Config;
pub use error::AgentError;
