//! The benchmarks live in `tests/benches`; this runs them with the release host.

use anyhow::Result;

/// Runs the benchmarks and lets them print their figures: `e2e` (platform,
/// events, load, devices and apps on the whole stack), `device` (placement) and
/// `runtime-agent` (the agent alone next to the raw engine).
pub fn run() -> Result<()> {
    let mut c = crate::build::cargo();
    c.env(
        "LOCAL_HOST_BIN",
        crate::root().join("target/release/local-host"),
    )
    .env(
        "DOCKER_HOST",
        format!("unix://{}", crate::setup::PODMAN_SOCKET),
    )
    .args(["bench", "-p", "e2e", "-p", "device", "-p", "runtime-agent"]);
    crate::setup::run(&mut c)
}
