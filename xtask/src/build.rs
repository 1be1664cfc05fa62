//! Builds the components to WebAssembly with Debian's compiler and the host
//! natively, and runs the tests.

use crate::root;
use crate::setup::{run, PODMAN_SOCKET};
use anyhow::Result;
use std::process::Command;

/// Every component, in `components/`.
pub const COMPONENTS: &[&str] = &[
    "auth",
    "user",
    "device",
    "app",
    "billing",
    "notification",
    "scheduler",
];

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// `cargo build` for `wasm32-wasip2` of the given packages, with std rebuilt
/// from Debian's `rust-web-src` (rustup cannot download the target here).
pub fn wasm(packages: &[&str]) -> Result<()> {
    let mut c = cargo();
    c.env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
            "-L native=/usr/lib/wasm32-wasip2",
        )
        .env_remove("RUSTFLAGS")
        .args([
            "build",
            "-Zbuild-std=std,panic_abort",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "wasm",
        ]);
    for p in packages {
        c.args(["-p", p]);
    }
    run(&mut c)
}

/// The components and the local host (debug build, used by tests and `up`).
pub fn all() -> Result<()> {
    wasm(COMPONENTS)?;
    let fixtures = root().join("tests/fixtures");
    if fixtures.join("probe/Cargo.toml").exists() {
        wasm(&["probe"])?;
    }
    run(cargo().args(["build", "-p", "local-host"]))
}

/// The local host, optimised, for benchmarks.
pub fn host_release() -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "local-host"]))
}

/// Every test of the workspace, with the engine socket for the agent's tests.
pub fn test(extra: &[String]) -> Result<()> {
    let mut c = cargo();
    c.env("DOCKER_HOST", format!("unix://{PODMAN_SOCKET}"))
        .args(["test", "--workspace"]);
    if !extra.is_empty() {
        c.arg("--").args(extra);
    }
    run(&mut c)
}
