//! The platform benchmark lives in `tests/benches`; this runs it.

use anyhow::Result;

/// Runs `cargo bench -p e2e` and lets it print its figures.
pub fn run() -> Result<()> {
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(crate::root()).args(["bench", "-p", "e2e"]);
    crate::setup::run(&mut c)
}
