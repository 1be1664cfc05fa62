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

/// A `cargo` command with the environment of a plain shell: `cargo run` (how
/// `cargo xtask` starts) adds variables that change build fingerprints, and
/// a nested build with them would rebuild everything a shell build made.
pub fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root()).env_clear();
    for (k, v) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        let keep = matches!(
            k_str.as_ref(),
            "PATH"
                | "HOME"
                | "USER"
                | "LANG"
                | "TERM"
                | "CI"
                | "CARGO_HOME"
                | "RUSTUP_HOME"
                | "CARGO_TARGET_DIR"
                | "RUST_BACKTRACE"
                | "RUST_LOG"
                | "DOCKER_HOST"
                | "TMPDIR"
        ) || k_str.ends_with("_proxy")
            || k_str.ends_with("_PROXY");
        if keep {
            c.env(k, v);
        }
    }
    c
}

/// `cargo <verb>` for `wasm32-wasip2`, with std rebuilt from Debian's
/// `rust-web-src` by Debian's compiler (rustup cannot download the target here).
fn wasm_cargo(verb: &str, packages: &[&str]) -> Command {
    let mut c = cargo();
    c.env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
            "-L native=/usr/lib/wasm32-wasip2",
        )
        .args([
            verb,
            "-Zbuild-std=std,panic_abort",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "wasm",
        ]);
    for p in packages {
        c.args(["-p", p]);
    }
    c
}

/// Builds packages to `target/wasm32-wasip2/wasm/<name>.wasm`.
pub fn wasm(packages: &[&str]) -> Result<()> {
    run(&mut wasm_cargo("build", packages))
}

/// `cargo fmt --check`, and clippy with warnings denied for the native
/// workspace and for the components on the wasm target (Debian's clippy, which
/// matches Debian's compiler).
pub fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let mut packages = COMPONENTS.to_vec();
    packages.push("probe");
    let mut c = wasm_cargo("check", &packages);
    c.env("RUSTC_WORKSPACE_WRAPPER", "/usr/bin/clippy-driver")
        .env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        );
    run(&mut c)
}

/// The components and the local host (debug build, used by tests and `up`).
pub fn all() -> Result<()> {
    wasm(COMPONENTS)?;
    let fixtures = root().join("tests/fixtures");
    if fixtures.join("probe/Cargo.toml").exists() {
        wasm(&["probe"])?;
    }
    run(cargo().args(["build", "-p", "local-host", "-p", "runtime-agent"]))
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
