//! The runtime agent binary: one per host, turns the control plane's desired
//! state into running redroid containers and reports what is really there.
//! It reads a config file, flags and environment (see `--help`), logs JSON
//! lines, and on SIGTERM stops its tasks while leaving containers running.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use runtime_agent::config::{Args, Config};
use runtime_agent::engine::{docker::DockerEngine, Engine};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cfg = Config::load(Args::parse()).context("loading configuration")?;
    let engine = DockerEngine::connect(&cfg.engine_host)?;
    engine
        .ping()
        .await
        .with_context(|| format!("container engine at {}", cfg.engine_host))?;
    let handle = runtime_agent::start(cfg, Arc::new(engine))
        .await
        .context("starting agent")?;
    runtime_agent::agent::wait_for_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}
