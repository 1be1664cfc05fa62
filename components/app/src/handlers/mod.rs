//! Thin handlers: parse input, call the repo, build the response.
//! `uploads`: APKs sent in chunks and read on completion; `catalogue`:
//! the applications and versions a caller sees; `downloads`: files by
//! signed, expiring link (what agents install from); `installs`: versions
//! installed on devices through `device`; `reviews`: what goes public, and
//! withdrawals.

pub mod catalogue;
pub mod downloads;
pub mod installs;
pub mod reviews;
pub mod uploads;

use crate::error::{Error, Result};
use crate::repo::catalogue::Seen;
use access::Caller;
use platform::db::Db;

/// A matched, authenticated request of this component.
pub type Call<'a> = platform::router::Call<'a>;

/// Opens the component's database.
pub fn db() -> Result<Db> {
    Ok(Db::open()?)
}

/// Who is looking, for the catalogue's visibility rule.
pub fn seen(caller: &Caller) -> Seen {
    Seen {
        user: caller.user_id,
        tenant: caller.tenant_id,
        all: matches!(caller.filter("app"), access::RowFilter::All),
    }
}

/// An optional text of at most `max` characters on one line.
pub fn short_text(v: Option<String>, name: &str, max: usize) -> Result<Option<String>> {
    match v {
        Some(s)
            if s.trim().is_empty()
                || s.chars().count() > max
                || s.chars().any(char::is_control) =>
        {
            Err(Error::Invalid(format!(
                "{name} must be 1 to {max} characters on one line"
            )))
        }
        v => Ok(v),
    }
}

/// Logs this instance's linear memory after a handler that moves file
/// bytes. A linear memory only grows, so this is the instance's peak: what
/// one such request holds (the benchmarks report it).
pub fn log_memory(call: &Call, route: &str) {
    #[cfg(target_arch = "wasm32")]
    let bytes = core::arch::wasm32::memory_size::<0>() * 65536;
    #[cfg(not(target_arch = "wasm32"))]
    let bytes = 0usize;
    eprintln!(
        "{}",
        serde_json::json!({"level": "debug", "request_id": call.ctx.request_id, "msg": "linear memory", "route": route, "bytes": bytes})
    );
}
