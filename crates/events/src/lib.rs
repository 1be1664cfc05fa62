//! The one home of cloudphone's domain events, used by every producer and
//! consumer component (wasm32) and by native tests and tools alike:
//!
//! - [`catalogue`]: every event type with its source and schema version;
//! - [`Envelope`]: the shape every event travels in (`docs/events.md`);
//! - [`payload`]: the typed payloads of the catalogue's events;
//! - [`signing`]: Ed25519 signatures of pub/sub messages, one key per
//!   producer, and the exact wire format with its fixed test vector.
//!
//! Pure Rust with no Spin dependency.

pub mod catalogue;
pub mod payload;
pub mod signing;

pub use catalogue::{EventType, CATALOGUE};
pub use signing::{EventSigner, EventVerifier, SignatureError};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Redis channel of a source's events: `cloudphone.events.<source>`.
pub fn channel(source: &str) -> String {
    format!("cloudphone.events.{source}")
}

/// An event as it travels: the envelope documented in `docs/events.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique event id.
    pub id: Uuid,
    /// Event type, e.g. `user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: i32,
    /// Producing component.
    pub source: String,
    /// Id of the changed aggregate.
    pub aggregate_id: String,
    /// Version of the aggregate after the change.
    pub aggregate_version: i64,
    /// When the change committed (RFC 3339, UTC).
    pub occurred_at: String,
    /// Type-specific payload.
    pub payload: serde_json::Value,
}

impl Envelope {
    /// A new event of a catalogue type (tests and tools build events this
    /// way; components enqueue them through the outbox).
    pub fn new<P: Serialize>(
        event: &EventType,
        aggregate_id: impl Into<String>,
        aggregate_version: i64,
        occurred_at: impl Into<String>,
        payload: &P,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            event_type: event.name.to_string(),
            schema_version: event.schema_version,
            source: event.source.to_string(),
            aggregate_id: aggregate_id.into(),
            aggregate_version,
            occurred_at: occurred_at.into(),
            payload: serde_json::to_value(payload).expect("payload serializes"),
        }
    }

    /// Whether this is an event of `t` (name and source).
    pub fn is(&self, t: &EventType) -> bool {
        self.event_type == t.name && self.source == t.source
    }

    /// The payload as its typed shape; the error says what was wrong.
    pub fn payload<P: serde::de::DeserializeOwned>(&self) -> Result<P, String> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| format!("{} payload: {e}", self.event_type))
    }
}
