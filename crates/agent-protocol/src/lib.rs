//! The protocol between the control plane (the `device` component) and the
//! runtime agent on every host, in one place so that both ends speak exactly
//! the same one: [`messages`] (envelopes, bodies, HTTP paths, HMAC signing
//! with the fixed test vectors of `docs/agent-protocol.md`) and [`spec`]
//! (identifiers and the device spec, validated where they are parsed).
//!
//! Pure Rust with no I/O: the agent (native) and the device component
//! (wasm32) both compile it.

pub mod messages;
pub mod spec;
