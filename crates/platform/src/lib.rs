//! What every cloudphone Spin component shares: the one JSON error shape,
//! request ids, JSON input with limits, Postgres access with transactions that
//! always end (Spin's pool does not roll back for us), caller authentication,
//! and the transactional outbox. Each component's `lib.rs` hands its router to
//! [`http::serve`].

pub mod auth;
pub mod consumer;
pub mod db;
pub mod http;
pub mod input;
pub mod outbox;
pub mod owners;
pub mod problem;
pub mod query;
pub mod router;

pub use problem::Problem;

/// The event catalogue, envelope, payloads and signatures (`crates/events`).
pub use events;

/// Reads a component variable; a missing one is a configuration error (500).
pub fn var(name: &str) -> Result<String, Problem> {
    spin_sdk::variables::get(name).map_err(|e| Problem::internal(format!("variable {name}: {e}")))
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
