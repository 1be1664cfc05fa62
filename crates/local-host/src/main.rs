//! `local-host` runs this Spin app on one machine from the same `spin.toml`
//! that real Spin (`spin up`, SpinKube, Fermyon) runs, because no `spin` CLI can
//! be installed here. It implements what the app uses with Spin's semantics:
//! the HTTP trigger (routes, `spin-*` headers, service chaining), the Redis
//! trigger, the cron trigger, outbound Postgres and Redis, variables and
//! `allowed_outbound_hosts`, a fresh instance per request or message. It is
//! started by `cargo xtask up` and by the end-to-end tests.

mod app;
mod cron_trigger;
mod http_trigger;
mod manifest;
mod outbound;
mod pg;
mod redis_host;
mod redis_trigger;
mod routes;
mod runtime_config;
mod state;
mod variables;

/// Host bindings generated from `wit/host`.
#[allow(missing_docs, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/host",
        world: "imports",
        imports: { default: async | trappable },
        with: {
            "spin:postgres/postgres.connection": crate::pg::PgConnection,
            "fermyon:spin/redis.connection": crate::redis_host::RedisConnection,
        },
    });
    pub use Imports as ImportsHost;

    mod redis_world {
        wasmtime::component::bindgen!({
            path: "../../wit/host",
            world: "redis-trigger",
            exports: { default: async },
        });
    }
    pub use redis_world::RedisTriggerPre;

    mod cron_world {
        wasmtime::component::bindgen!({
            path: "../../wit/host",
            world: "cron-trigger",
            exports: { default: async },
        });
        pub use self::fermyon as cron_fermyon;
    }
    pub use cron_world::CronTriggerPre;
    pub mod cron {
        pub use super::cron_world::cron_fermyon::spin_cron::cron_types::Metadata;
    }
}

use anyhow::{Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Command line, mirroring `spin up`'s flags.
#[derive(Parser, Debug)]
#[command(
    name = "local-host",
    about = "Run a Spin app locally (spin up compatible subset)"
)]
struct Cli {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// Address the HTTP trigger listens on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Sets an application variable (name=value); beats SPIN_VARIABLE_*.
    #[arg(long = "variable", value_parser = parse_kv)]
    variables: Vec<(String, String)>,
    /// Spin's runtime configuration; this host reads `[outbound_pg]
    /// max_connections` from it, with Spin's meaning.
    #[arg(long = "runtime-config-file")]
    runtime_config_file: Option<PathBuf>,
    /// Directory for compiled components, reused across starts.
    #[arg(long, env = "LOCAL_HOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Trigger types not to start (http, redis, cron), e.g. to stop a consumer.
    #[arg(long = "disable-trigger")]
    disabled_triggers: Vec<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOCAL_HOST_LOG_JSON")]
    json_logs: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
    });
    if cli.json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let listen = listener.local_addr()?;
    let runtime = match &cli.runtime_config_file {
        Some(path) => runtime_config::RuntimeConfig::load(path)?,
        None => runtime_config::RuntimeConfig::default(),
    };
    let load = app::LoadOptions {
        runtime,
        manifest: cli.from.clone(),
        cli_variables: cli.variables.clone(),
        cache_dir: cli.cache_dir.clone(),
    };
    let app = tokio::task::spawn_blocking(move || app::App::load(load)).await??;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let enabled = |t: &str| !cli.disabled_triggers.iter().any(|d| d == t);
    let mut tasks = Vec::new();
    let mut redis_tasks = Vec::new();
    if enabled("redis") {
        redis_tasks = redis_trigger::start(&app, rx.clone()).await?;
    }
    if enabled("cron") {
        tasks.extend(cron_trigger::start(&app, rx.clone())?);
    }
    // The banner is what scripts and tests wait for: print it once everything is up.
    tracing::info!(app = %app.manifest.name, "app loaded");
    println!("Serving http://{listen}");
    println!("Available Routes:");
    for (route, component) in app.routes() {
        println!("  {component}: http://{listen}{route}");
    }
    let http = if enabled("http") {
        Some(tokio::spawn(http_trigger::serve(
            app.clone(),
            listener,
            rx.clone(),
        )))
    } else {
        None
    };
    // Like `spin up`, the app stops when a trigger ends (a Redis trigger
    // whose server went away) as well as on a signal.
    let trigger_ended = async {
        if redis_tasks.is_empty() {
            std::future::pending::<()>().await;
        }
        let (res, _, _) = futures::future::select_all(redis_tasks.iter_mut()).await;
        let why = match res {
            Ok(Ok(())) => "ended".to_string(),
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => e.to_string(),
        };
        tracing::error!(error = %why, "A trigger exited unexpectedly. Terminating.");
    };
    let mut failed = false;
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = trigger_ended => failed = true,
    }
    tracing::info!("shutting down");
    let _ = tx.send(true);
    if let Some(http) = http {
        http.await??;
    }
    for t in tasks {
        let _ = t.await;
    }
    if failed {
        anyhow::bail!("a trigger exited unexpectedly");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
