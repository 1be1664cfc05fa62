//! The benchmarks live in `tests/benches`; this runs them with the release host.

use anyhow::Result;

/// Runs `cargo bench -p e2e` (platform and events) and lets it print its figures.
pub fn run() -> Result<()> {
    let mut c = crate::build::cargo();
    c.env(
        "LOCAL_HOST_BIN",
        crate::root().join("target/release/local-host"),
    )
    .args(["bench", "-p", "e2e"]);
    crate::setup::run(&mut c)
}
