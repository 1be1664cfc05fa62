//! Wiring: the shared state and the long-running tasks of one agent
//! (desired-state pull, reconcile loop, command subscriber, heartbeats, the
//! reporter, metrics), and a handle that shuts them down without touching
//! containers. Redis carries only the commands to this node; everything the
//! agent tells the control plane goes over signed HTTP (see [`crate::report`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::ops::Ledger;
use crate::protocol::{
    self, Command, CommandResult, DesiredDevice, DesiredState, DeviceStatus, DeviceStatusChange,
    Envelope, Heartbeat, ObservedDevice, Registration,
};
use crate::reconcile::{self, DeviceRuntime};
pub use crate::report::Outgoing;
use crate::report::ReportQueue;
use crate::spec::{DeviceId, LABEL_MANAGED, LABEL_NODE};

/// The local copy of the desired state.
#[derive(Debug, Default)]
pub struct DesiredCache {
    /// Devices by id.
    pub devices: BTreeMap<DeviceId, DesiredDevice>,
    /// Generations of devices deleted by command, so an older pull cannot bring them back.
    pub tombstones: BTreeMap<DeviceId, u64>,
    /// When a command last set each device, so a pull answered before the
    /// control plane recorded the command does not drop it.
    pub set_by_command: BTreeMap<DeviceId, Instant>,
    /// Whether a pull ever succeeded.
    pub loaded: bool,
}

impl DesiredCache {
    /// Merges a state whose request was sent at `requested_at`: the pull
    /// decides which devices exist, except for devices a command set after
    /// the request; for a device in both, the higher generation wins.
    pub fn merge_pulled(&mut self, pulled: Vec<DesiredDevice>, requested_at: Instant) {
        let mut next = BTreeMap::new();
        for d in pulled {
            if self
                .tombstones
                .get(&d.device_id)
                .is_some_and(|g| *g >= d.generation)
            {
                continue;
            }
            let keep_local = self
                .devices
                .get(&d.device_id)
                .is_some_and(|local| local.generation > d.generation);
            let chosen = if keep_local {
                self.devices[&d.device_id].clone()
            } else {
                d
            };
            next.insert(chosen.device_id.clone(), chosen);
        }
        for (id, at) in &self.set_by_command {
            if *at >= requested_at && !next.contains_key(id) {
                if let Some(d) = self.devices.get(id) {
                    next.insert(id.clone(), d.clone());
                }
            }
        }
        self.set_by_command.retain(|_, at| *at >= requested_at);
        self.devices = next;
        self.loaded = true;
    }

    /// Applies one device from a command if it is not older than what is known.
    pub fn upsert(&mut self, d: DesiredDevice) -> bool {
        if self
            .tombstones
            .get(&d.device_id)
            .is_some_and(|g| *g >= d.generation)
        {
            return false;
        }
        if self
            .devices
            .get(&d.device_id)
            .is_some_and(|cur| cur.generation > d.generation)
        {
            return false;
        }
        self.set_by_command
            .insert(d.device_id.clone(), Instant::now());
        self.devices.insert(d.device_id.clone(), d);
        true
    }

    /// Deletes a device by command.
    pub fn delete(&mut self, id: &DeviceId, generation: u64) {
        self.devices.remove(id);
        self.set_by_command.remove(id);
        let t = self.tombstones.entry(id.clone()).or_default();
        *t = (*t).max(generation);
    }
}

/// State shared by every task of one agent.
pub struct Shared {
    /// Configuration.
    pub cfg: Config,
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Desired state.
    pub desired: Mutex<DesiredCache>,
    /// Per-device memory between passes.
    pub runtime: Mutex<BTreeMap<DeviceId, DeviceRuntime>>,
    /// Ports reserved by creates in flight.
    pub reserved_ports: Mutex<std::collections::BTreeSet<u16>>,
    /// The inventory as of the last pass.
    pub inventory: Mutex<Vec<ObservedDevice>>,
    /// Whether the first pass (adoption) happened.
    pub adopted: AtomicBool,
    /// Operation results by id.
    pub ledger: Ledger,
    /// Wakes the reconcile loop early.
    pub reconcile_now: Notify,
    /// Wakes the desired-state pull early.
    pub pull_now: Notify,
    /// Messages waiting to be reported to the control plane.
    pub reports: Arc<ReportQueue>,
    /// Commands in flight.
    pub commands: Mutex<tokio::task::JoinSet<()>>,
    /// Limits how many commands run at once.
    pub command_slots: Arc<tokio::sync::Semaphore>,
    device_locks: Mutex<HashMap<DeviceId, Arc<tokio::sync::Mutex<()>>>>,
    started: Instant,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.cfg.node_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Builds the shared state with an empty report queue.
    pub fn new(cfg: Config, engine: Arc<dyn Engine>) -> std::io::Result<Self> {
        let ledger = Ledger::open(&cfg.data_root)?;
        let metrics = Arc::new(Metrics::default());
        let reports = Arc::new(ReportQueue::new(
            cfg.node_id.clone(),
            cfg.secret.clone(),
            metrics.clone(),
            crate::report::Limits::default(),
        ));
        Ok(Self {
            cfg,
            engine,
            metrics,
            desired: Mutex::default(),
            runtime: Mutex::default(),
            reserved_ports: Mutex::default(),
            inventory: Mutex::default(),
            adopted: AtomicBool::new(false),
            ledger,
            reconcile_now: Notify::new(),
            pull_now: Notify::new(),
            reports,
            commands: Mutex::default(),
            command_slots: Arc::new(tokio::sync::Semaphore::new(32)),
            device_locks: Mutex::default(),
            started: Instant::now(),
        })
    }

    /// The lock that serializes every action on one device.
    pub fn device_lock(&self, id: &DeviceId) -> Arc<tokio::sync::Mutex<()>> {
        self.device_locks
            .lock()
            .expect("locks lock")
            .entry(id.clone())
            .or_default()
            .clone()
    }

    /// Runs `f` on the device's runtime record.
    pub fn with_runtime<T>(&self, id: &DeviceId, f: impl FnOnce(&mut DeviceRuntime) -> T) -> T {
        f(self
            .runtime
            .lock()
            .expect("runtime lock")
            .entry(id.clone())
            .or_default())
    }

    /// A copy of the desired devices and whether a pull ever succeeded.
    pub fn desired_snapshot(&self) -> (BTreeMap<DeviceId, DesiredDevice>, bool) {
        let d = self.desired.lock().expect("desired lock");
        (d.devices.clone(), d.loaded)
    }

    /// How many containers this node owns.
    pub async fn observed_count(&self) -> Result<usize, EngineError> {
        let node = self.cfg.node_id.as_str();
        Ok(self
            .engine
            .list(&[(LABEL_MANAGED, "true"), (LABEL_NODE, node)])
            .await?
            .len())
    }

    /// Queues a status change for reporting.
    pub fn report_status(&self, device: ObservedDevice, previous: Option<DeviceStatus>) {
        tracing::info!(device = %device.device_id, status = ?device.status, previous = ?previous, "device status changed");
        self.reports
            .push(Outgoing::Status(DeviceStatusChange { device, previous }));
    }

    /// Registration data of this node.
    pub async fn registration(&self) -> Registration {
        Registration {
            node_id: self.cfg.node_id.clone(),
            address: self.cfg.node_address.clone(),
            capacity: crate::node::capacity(&self.cfg).await,
            labels: self.cfg.labels.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// The container name of a device on this node.
    pub fn container_name(&self, id: &DeviceId) -> String {
        crate::spec::container_name(&self.cfg.container_name_prefix, id)
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    /// Shared state, for tests and benchmarks.
    pub shared: Arc<Shared>,
    /// Where metrics are served, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Stops every task and waits for in-flight work. Containers keep running.
    pub async fn shutdown(self) {
        // Commands in flight finish first so their results still go out.
        let mut commands =
            std::mem::take(&mut *self.shared.commands.lock().expect("commands lock"));
        let drain = async { while commands.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), drain)
            .await
            .is_err()
        {
            tracing::warn!("commands still running after 30 s; abandoned");
        }
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .is_err()
            {
                tracing::warn!("a task did not stop within 30 s");
            }
        }
        tracing::info!("agent stopped; containers left running");
    }

    /// Stops everything at once, mid-operation, as `kill -9` would; for tests
    /// of crash recovery.
    pub fn crash(self) {
        self.shared
            .commands
            .lock()
            .expect("commands lock")
            .abort_all();
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Runs one reconcile pass now.
    pub async fn reconcile_once(&self) -> Result<usize, EngineError> {
        reconcile::run_pass(&self.shared).await
    }
}

/// Starts an agent with the given engine.
pub async fn start(cfg: Config, engine: Arc<dyn Engine>) -> std::io::Result<AgentHandle> {
    tokio::fs::create_dir_all(&cfg.data_root).await?;
    let redis = redis_client(&cfg)?;
    let shared = Arc::new(Shared::new(cfg, engine)?);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let metrics_addr = match shared.cfg.metrics_addr {
        Some(addr) => {
            Some(crate::metrics::serve(addr, shared.metrics.clone(), shutdown_rx.clone()).await?)
        }
        None => None,
    };
    tasks.push(tokio::spawn(crate::report::reporter(
        shared.reports.clone(),
        shared.cfg.clone(),
        shared.metrics.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(subscriber(
        shared.clone(),
        redis,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(desired_state_loop(
        shared.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(reconcile_loop(
        shared.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(heartbeat_loop(
        shared.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(ledger_sweep_loop(
        shared.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(register_loop(shared.clone(), shutdown_rx)));
    tracing::info!(node = %shared.cfg.node_id, "agent started");
    Ok(AgentHandle {
        shared,
        metrics_addr,
        shutdown,
        tasks,
    })
}

/// The Redis client of the command subscriber: `redis://` or `rediss://`
/// (TLS, verified against the system's roots or, when `redis_ca_file` is
/// set, against that file's certificates only).
pub fn redis_client(cfg: &Config) -> std::io::Result<redis::Client> {
    let invalid = |e: redis::RedisError| std::io::Error::other(format!("invalid redis url: {e}"));
    match &cfg.redis_ca_file {
        None => redis::Client::open(cfg.redis_url.as_str()).map_err(invalid),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                std::io::Error::other(format!("cannot read redis_ca_file {}: {e}", path.display()))
            })?;
            redis::Client::build_with_tls(
                cfg.redis_url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(invalid)
        }
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

async fn reconcile_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = reconcile::run_pass(&shared).await {
            tracing::warn!(error = %e, "reconcile pass could not observe the engine");
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.cfg.reconcile_interval) => {}
            _ = shared.reconcile_now.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Sweeps the operation ledger while the agent runs: results are kept for a
/// day and their payloads for the replay window only, and an agent that runs
/// for weeks must not keep them until its next restart.
async fn ledger_sweep_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if sleep_or_shutdown(crate::ops::LEDGER_SWEEP_INTERVAL, &mut shutdown).await {
            return;
        }
        match shared.ledger.sweep().await {
            Ok(report) => {
                shared
                    .metrics
                    .ledger_results_removed
                    .fetch_add(report.removed as u64, std::sync::atomic::Ordering::Relaxed);
                shared
                    .metrics
                    .ledger_payloads_expired
                    .fetch_add(report.expired as u64, std::sync::atomic::Ordering::Relaxed);
                if report != crate::ops::SweepReport::default() {
                    tracing::info!(
                        removed = report.removed,
                        expired = report.expired,
                        "swept the operation ledger"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot sweep the operation ledger"),
        }
    }
}

async fn desired_state_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let client = http_client();
    let mut failures = 0u32;
    loop {
        let requested_at = Instant::now();
        match fetch_desired_state(&shared, &client).await {
            Ok(state) => {
                failures = 0;
                shared
                    .desired
                    .lock()
                    .expect("desired lock")
                    .merge_pulled(state.devices, requested_at);
                Metrics::inc(&shared.metrics.desired_state_pulls);
                shared.reconcile_now.notify_one();
            }
            Err(e) => {
                failures += 1;
                Metrics::inc(&shared.metrics.desired_state_failures);
                tracing::warn!(error = %e, failures, "desired-state pull failed");
            }
        }
        // Retry sooner after a failure, but not in a tight loop.
        let wait = if failures > 0 {
            (Duration::from_millis(200) * failures.min(20)).min(shared.cfg.desired_state_interval)
        } else {
            shared.cfg.desired_state_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.pull_now.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client builds")
}

/// Signs an HTTP request with a JSON body (or none) to the control plane.
pub fn signed_request(
    client: &reqwest::Client,
    cfg: &Config,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    signed_request_of(client, cfg, method, path, body, "application/json")
}

/// Signs an HTTP request to the control plane with a body of `content_type`.
pub fn signed_request_of(
    client: &reqwest::Client,
    cfg: &Config,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> reqwest::RequestBuilder {
    let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let input = protocol::http_signing_input(
        "request",
        method.as_str(),
        path,
        cfg.node_id.as_str(),
        &ts,
        &body,
    );
    client
        .request(method, format!("{}{}", cfg.control_plane_url, path))
        .header(protocol::HEADER_NODE, cfg.node_id.as_str())
        .header(protocol::HEADER_TIMESTAMP, ts)
        .header(
            protocol::HEADER_SIGNATURE,
            cfg.secret.sign(input.as_bytes()),
        )
        .header("content-type", content_type)
        .body(body)
}

/// Pulls and authenticates the full desired state.
pub async fn fetch_desired_state(
    shared: &Shared,
    client: &reqwest::Client,
) -> Result<DesiredState, String> {
    let cfg = &shared.cfg;
    let path = protocol::desired_state_path(cfg.node_id.as_str());
    let resp = signed_request(client, cfg, reqwest::Method::GET, &path, Vec::new())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let ts = header(protocol::HEADER_TIMESTAMP);
    let sig = header(protocol::HEADER_SIGNATURE);
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading body failed: {e}"))?;
    if !status.is_success() {
        return Err(format!("control plane answered {status}"));
    }
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return Err("response is not signed".into());
    };
    let input =
        protocol::http_signing_input("response", "GET", &path, cfg.node_id.as_str(), &ts, &body);
    if !cfg.secret.verify(input.as_bytes(), &sig) {
        Metrics::inc(&shared.metrics.messages_rejected);
        return Err("response signature is wrong".into());
    }
    check_fresh(&ts, cfg.max_message_skew)?;
    let state: DesiredState =
        serde_json::from_slice(&body).map_err(|e| format!("invalid desired state: {e}"))?;
    if state.node_id != cfg.node_id {
        return Err(format!("desired state is for node {}", state.node_id));
    }
    Ok(state)
}

/// How long fetching a pushed file's contents may take, in all.
const CONTENT_FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Fetches the contents of a `push_file` operation with a signed request,
/// and checks them against the `bytes` and `sha256` of its command (signed
/// with the node's secret) before anyone writes them anywhere: a body that
/// is longer is cut off as soon as it runs over, and one that is shorter or
/// differs fails with `checksum_mismatch`. The response itself carries no
/// signature; the digest in the signed command binds the contents more
/// tightly than one would. A 404 or 410 means the control plane no longer
/// serves them (the operation finished): `payload_expired`.
pub async fn fetch_operation_content(
    cfg: &Config,
    operation: &str,
    bytes: u64,
    sha256: &str,
) -> Result<Vec<u8>, AgentError> {
    let client = reqwest::Client::builder()
        .timeout(CONTENT_FETCH_TIMEOUT)
        .build()
        .map_err(|e| AgentError::Download(format!("http client: {e}")))?;
    let path = protocol::operation_content_path(cfg.node_id.as_str(), operation);
    let mut resp = signed_request(&client, cfg, reqwest::Method::GET, &path, Vec::new())
        .send()
        .await
        .map_err(|e| AgentError::Download(format!("operation content: {e}")))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Err(AgentError::PayloadExpired(format!(
            "the control plane no longer serves the contents of operation {operation} ({status})"
        )));
    }
    if !status.is_success() {
        return Err(AgentError::Download(format!(
            "operation content: the control plane answered {status}"
        )));
    }
    let too_long = |actual: u64| AgentError::LengthMismatch {
        expected: bytes,
        actual,
    };
    if let Some(n) = resp.content_length().filter(|n| *n > bytes) {
        return Err(too_long(n));
    }
    let mut data = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0).min(64 << 20));
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| AgentError::Download(format!("operation content: {e}")))?
    {
        let total = data.len() as u64 + chunk.len() as u64;
        if total > bytes {
            return Err(too_long(total));
        }
        data.extend_from_slice(&chunk);
    }
    if data.len() as u64 != bytes {
        return Err(too_long(data.len() as u64));
    }
    let actual = protocol::sha256_hex(&data);
    if actual != sha256 {
        return Err(AgentError::ChecksumMismatch {
            expected: sha256.to_owned(),
            actual,
        });
    }
    Ok(data)
}

fn check_fresh(ts: &str, max_skew: Duration) -> Result<(), String> {
    let sent = chrono::DateTime::parse_from_rfc3339(ts).map_err(|_| "bad timestamp".to_owned())?;
    let skew = (Utc::now() - sent.with_timezone(&Utc)).abs();
    if skew > chrono::Duration::from_std(max_skew).unwrap_or(chrono::Duration::MAX) {
        return Err(format!("stale response signed at {ts}"));
    }
    Ok(())
}

async fn register_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let reg = shared.registration().await;
    let client = http_client();
    let path = protocol::register_path(shared.cfg.node_id.as_str());
    let body = serde_json::to_vec(&reg).expect("registration serializes");
    let mut delay = Duration::from_millis(500);
    loop {
        let r = signed_request(
            &client,
            &shared.cfg,
            reqwest::Method::POST,
            &path,
            body.clone(),
        )
        .send()
        .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                tracing::info!("registered with the control plane");
                return;
            }
            Ok(resp) => tracing::warn!(status = %resp.status(), "registration refused; retrying"),
            Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
        }
        if sleep_or_shutdown(delay, &mut shutdown).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let hb = Heartbeat {
            node: shared.registration().await,
            usage: crate::node::usage(&shared).await,
            devices: shared.inventory.lock().expect("inventory lock").clone(),
            uptime_s: shared.uptime().as_secs(),
        };
        shared.reports.push(Outgoing::Heartbeat(Box::new(hb)));
        if sleep_or_shutdown(shared.cfg.heartbeat_interval, &mut shutdown).await {
            return;
        }
    }
}

async fn subscriber(
    shared: Arc<Shared>,
    redis: redis::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let channel = protocol::commands_channel(&shared.cfg.node_id);
    let mut delay = Duration::from_millis(200);
    loop {
        let sub = async {
            check_subscribe_permission(&redis, &channel).await?;
            let mut ps = redis.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        }
        .await;
        match sub {
            Ok(mut ps) => {
                delay = Duration::from_millis(200);
                Metrics::inc(&shared.metrics.command_subscriptions);
                tracing::info!(channel, "subscribed to commands");
                // Anything sent while we were away is lost on pub/sub: pull the full state.
                shared.pull_now.notify_one();
                let mut stream = ps.on_message();
                loop {
                    let msg = tokio::select! {
                        m = stream.next() => m,
                        _ = shutdown.changed() => return,
                    };
                    let Some(msg) = msg else { break };
                    handle_message(&shared, msg.get_payload_bytes());
                }
                Metrics::inc(&shared.metrics.command_subscriptions_lost);
                tracing::warn!("command subscription lost; reconnecting");
            }
            Err(e) => {
                Metrics::inc(&shared.metrics.command_subscription_failures);
                tracing::warn!(error = %e, channel, "cannot subscribe to commands; retrying");
            }
        }
        if sleep_or_shutdown(delay, &mut shutdown).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Fails when Redis refuses this node's user the subscription (`NOPERM`).
/// The redis crate (0.27) takes a refused `SUBSCRIBE` on a pub/sub
/// connection for a success, so an agent whose ACL user lacks the channel
/// would wait for commands that can never come, and say it is subscribed. On
/// an ordinary connection the same refusal is an error; the connection is
/// dropped right after.
async fn check_subscribe_permission(
    redis: &redis::Client,
    channel: &str,
) -> redis::RedisResult<()> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let _: redis::Value = redis::cmd("SUBSCRIBE")
        .arg(channel)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Authenticates one raw command message and runs it in the background.
pub fn handle_message(shared: &Arc<Shared>, raw: &[u8]) {
    let skew =
        chrono::Duration::from_std(shared.cfg.max_message_skew).unwrap_or(chrono::Duration::MAX);
    let env = match Envelope::open(
        raw,
        &shared.cfg.secret,
        &shared.cfg.node_id,
        Utc::now(),
        skew,
    ) {
        Ok(env) => env,
        Err(e) => {
            Metrics::inc(&shared.metrics.messages_rejected);
            tracing::warn!(error = %e, "rejected a message on the command channel");
            return;
        }
    };
    match env.kind.as_str() {
        "command" => {}
        "sync" => {
            shared.pull_now.notify_one();
            return;
        }
        other => {
            Metrics::inc(&shared.metrics.messages_rejected);
            tracing::warn!(kind = other, "unknown message kind");
            return;
        }
    }
    let cmd: Command = match serde_json::from_value(env.body.clone()) {
        Ok(c) => c,
        Err(e) => {
            Metrics::inc(&shared.metrics.messages_rejected);
            tracing::warn!(error = %e, message = %env.id, "malformed command");
            if let Some(op) = env.body.get("operation_id").and_then(|v| v.as_str()) {
                shared.reports.push(Outgoing::Result(CommandResult {
                    operation_id: op.to_owned(),
                    ok: false,
                    output: serde_json::Value::Null,
                    error_code: Some("invalid_argument".into()),
                    error: Some(format!("malformed command: {e}")),
                    payload_expired: false,
                }));
            }
            return;
        }
    };
    let task_shared = shared.clone();
    let permits = shared.command_slots.clone();
    let mut commands = shared.commands.lock().expect("commands lock");
    // Reap finished tasks so the set does not grow without bound.
    while commands.try_join_next().is_some() {}
    commands.spawn(async move {
        // Bounded, so a burst of commands cannot exhaust the host.
        let _permit = permits.acquire_owned().await;
        let result = crate::ops::run_command(&task_shared, cmd).await;
        // Waits while the queue is full of undelivered results, so the
        // slot stays taken and a long outage of the control plane stops
        // new commands instead of piling up results in memory.
        task_shared.reports.push_result(result).await;
    });
}

/// Whether the process should stop: the first SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{NodeSecret, RunState};
    use crate::spec::NodeId;

    fn config(secret: &[u8], control_plane: &str, dir: &std::path::Path) -> Config {
        Config::with_defaults(
            NodeId::parse("n1").unwrap(),
            NodeSecret::new(secret.to_vec()).unwrap(),
            "redis://127.0.0.1:1/",
            control_plane,
            dir,
        )
    }

    #[tokio::test]
    async fn a_pushed_files_contents_are_fetched_signed_and_checked_against_the_command() {
        const SECRET: &[u8] = b"0123456789abcdef";
        let cp =
            crate::testkit::ControlPlane::start(NodeSecret::new(SECRET.to_vec()).unwrap()).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(SECRET, &cp.url, dir.path());
        let data = b"hello".to_vec();
        // Computed with coreutils' sha256sum.
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        cp.serve_content("op-1", data.clone());

        let fetched = fetch_operation_content(&cfg, "op-1", 5, sha).await.unwrap();
        assert_eq!(fetched, data);

        // Contents other than the signed command names are refused: another
        // digest, or another length either way.
        for (bytes, digest) in [
            (5, "0".repeat(64)),
            (4, sha.to_owned()),
            (6, sha.to_owned()),
        ] {
            let err = fetch_operation_content(&cfg, "op-1", bytes, &digest)
                .await
                .unwrap_err();
            assert_eq!(err.code(), "checksum_mismatch", "{bytes} {digest}: {err}");
        }
        let err = fetch_operation_content(&cfg, "op-1", 4, sha)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "length mismatch: expected 4 bytes, got 5");

        // Contents the control plane no longer serves (404): payload_expired.
        let err = fetch_operation_content(&cfg, "op-2", 5, sha)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "payload_expired", "{err}");

        // A request not signed with the node's secret gets nothing.
        let forged = config(b"not-the-node-secret", &cp.url, dir.path());
        let err = fetch_operation_content(&forged, "op-1", 5, sha)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "download_failed", "{err}");
        assert_eq!(
            cp.state
                .unauthorized
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    fn dev(id: &str, generation: u64) -> DesiredDevice {
        serde_json::from_value(serde_json::json!({
            "device_id": id, "generation": generation, "state": "running",
            "spec": {"image": "img:1", "display": {"width": 720, "height": 1280, "dpi": 320, "fps": 30},
                     "resources": {"cpu_millis": 1000, "memory_mb": 1024, "pids": 1024}}
        }))
        .unwrap()
    }

    #[test]
    fn a_pull_never_overwrites_a_newer_local_copy_or_revives_a_deleted_device() {
        let mut cache = DesiredCache::default();
        let mut newer = dev("a", 5);
        newer.state = RunState::Stopped;
        assert!(cache.upsert(newer.clone()));
        cache.delete(&DeviceId::parse("b").unwrap(), 3);
        cache.merge_pulled(vec![dev("a", 4), dev("b", 3), dev("c", 1)], Instant::now());
        assert_eq!(cache.devices[&newer.device_id].state, RunState::Stopped);
        assert!(!cache.devices.contains_key(&DeviceId::parse("b").unwrap()));
        assert!(cache.devices.contains_key(&DeviceId::parse("c").unwrap()));
        assert!(cache.loaded);
        assert!(!cache.upsert(dev("a", 2)));
        cache.merge_pulled(vec![dev("b", 4)], Instant::now());
        assert!(cache.devices.contains_key(&DeviceId::parse("b").unwrap()));
        assert!(!cache.devices.contains_key(&newer.device_id));
    }

    #[test]
    fn a_pull_requested_before_a_create_command_does_not_drop_the_device() {
        let mut cache = DesiredCache::default();
        let requested_at = Instant::now();
        assert!(cache.upsert(dev("a", 1)));
        cache.merge_pulled(vec![], requested_at);
        assert!(cache.devices.contains_key(&DeviceId::parse("a").unwrap()));
        // A pull requested after the command is authoritative again.
        cache.merge_pulled(vec![], Instant::now());
        assert!(cache.devices.is_empty());
    }
}
