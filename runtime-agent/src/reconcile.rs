//! The reconcile loop: desired state in, observed state from the engine,
//! idempotent actions between. [`plan`] is a pure function so its decisions
//! are unit-tested on plain data; [`run_pass`] observes, plans and acts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::agent::Shared;
use crate::engine::{ContainerInfo, EngineError};
use crate::error::AgentError;
use crate::metrics::Metrics;
use crate::protocol::{DesiredDevice, DeviceStatus, ObservedDevice, RunState};
use crate::spec::{
    self, DeviceId, LABEL_ADB_PORT, LABEL_DEVICE, LABEL_GENERATION, LABEL_MANAGED, LABEL_NODE,
    LABEL_SPEC_HASH,
};

/// What the agent remembers about one device between passes.
#[derive(Debug, Clone, Default)]
pub struct DeviceRuntime {
    /// Id of the container last seen answering `sys.boot_completed=1`.
    pub ready_container: Option<String>,
    /// When the current boot started (container start or first sighting).
    pub booting_since: Option<Instant>,
    /// Consecutive failed actions.
    pub failures: u32,
    /// No action before this instant (backoff).
    pub retry_at: Option<Instant>,
    /// The last error, reported with status `failed`.
    pub last_error: Option<String>,
    /// Since when the device has a container but is not desired.
    pub undesired_since: Option<Instant>,
    /// The status last reported.
    pub last_status: Option<DeviceStatus>,
    /// The generation last reported with it.
    pub last_generation: Option<u64>,
    /// The ADB port its container last had: a container made again (one
    /// removed behind the agent's back) takes it back, so the phone's
    /// address does not change.
    pub last_port: Option<u16>,
}

impl DeviceRuntime {
    /// Records a failure and schedules the next try with exponential backoff.
    pub fn failed(&mut self, now: Instant, base: Duration, error: String) {
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32 << self.failures.min(10);
        let delay = (base * factor).min(Duration::from_secs(300));
        self.retry_at = Some(now + delay);
        self.last_error = Some(error);
    }

    /// Clears the failure count.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.last_error = None;
    }
}

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No container: create and start it.
    Create(DesiredDevice),
    /// The container was built from another spec: replace it, keeping data and port.
    Recreate(DesiredDevice),
    /// Desired running, container stopped.
    Start(DesiredDevice),
    /// Desired stopped, container running.
    Stop(DesiredDevice),
    /// Running and not yet known ready: ask `getprop sys.boot_completed`.
    ProbeReady(DesiredDevice),
    /// Booting for longer than the boot timeout: restart it.
    RestartStuck(DesiredDevice),
    /// Not desired for longer than the grace period: remove container and data.
    Remove(DeviceId),
}

impl Action {
    /// The device the action is about.
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::Create(d)
            | Self::Recreate(d)
            | Self::Start(d)
            | Self::Stop(d)
            | Self::ProbeReady(d)
            | Self::RestartStuck(d) => &d.device_id,
            Self::Remove(id) => id,
        }
    }
}

/// Inputs of [`plan`] that are not state.
#[derive(Debug, Clone, Copy)]
pub struct PlanParams {
    /// Now.
    pub now: Instant,
    /// Grace before removing an undesired container.
    pub removal_grace: Duration,
    /// Boot timeout.
    pub boot_timeout: Duration,
    /// Whether the desired state was ever pulled: until then nothing is removed,
    /// so an agent that restarts while the control plane is down keeps every device.
    pub desired_loaded: bool,
}

/// Decides the actions of one pass. Devices in backoff get none.
pub fn plan(
    desired: &BTreeMap<DeviceId, DesiredDevice>,
    observed: &BTreeMap<DeviceId, ContainerInfo>,
    runtime: &BTreeMap<DeviceId, DeviceRuntime>,
    p: PlanParams,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let in_backoff = |id: &DeviceId| {
        runtime
            .get(id)
            .and_then(|r| r.retry_at)
            .is_some_and(|t| t > p.now)
    };
    for (id, want) in desired {
        if in_backoff(id) {
            continue;
        }
        let rt = runtime.get(id);
        let action = match observed.get(id) {
            None => Some(Action::Create(want.clone())),
            Some(c) if c.labels.get(LABEL_SPEC_HASH) != Some(&want.spec.hash()) => {
                Some(Action::Recreate(want.clone()))
            }
            Some(c) => match (want.state, c.running) {
                (RunState::Running, false) => Some(Action::Start(want.clone())),
                (RunState::Stopped, true) => Some(Action::Stop(want.clone())),
                (RunState::Stopped, false) => None,
                (RunState::Running, true) => {
                    let ready = rt.and_then(|r| r.ready_container.as_ref()) == Some(&c.id);
                    let stuck = rt
                        .and_then(|r| r.booting_since)
                        .is_some_and(|t| p.now.duration_since(t) > p.boot_timeout);
                    match (ready, stuck) {
                        (true, _) => None,
                        (false, true) => Some(Action::RestartStuck(want.clone())),
                        (false, false) => Some(Action::ProbeReady(want.clone())),
                    }
                }
            },
        };
        actions.extend(action);
    }
    if p.desired_loaded {
        for id in observed.keys().filter(|id| !desired.contains_key(*id)) {
            let since = runtime.get(id).and_then(|r| r.undesired_since);
            if since.is_some_and(|t| p.now.duration_since(t) >= p.removal_grace) && !in_backoff(id)
            {
                actions.push(Action::Remove(id.clone()));
            }
        }
    }
    actions
}

/// The status a device shows after a pass.
pub fn status_of(
    want: Option<&DesiredDevice>,
    container: Option<&ContainerInfo>,
    rt: Option<&DeviceRuntime>,
) -> DeviceStatus {
    let failing = rt.is_some_and(|r| r.failures >= 3);
    match container {
        None if failing => DeviceStatus::Failed,
        None if want.is_some() => DeviceStatus::Creating,
        None => DeviceStatus::Removed,
        Some(c) if !c.running => {
            if want.is_some_and(|w| w.state == RunState::Running) && failing {
                DeviceStatus::Failed
            } else {
                DeviceStatus::Stopped
            }
        }
        Some(c) => {
            if rt.and_then(|r| r.ready_container.as_ref()) == Some(&c.id) {
                DeviceStatus::Ready
            } else if failing {
                DeviceStatus::Failed
            } else {
                DeviceStatus::Booting
            }
        }
    }
}

/// Lists this node's containers by device id.
pub async fn observe(shared: &Shared) -> Result<BTreeMap<DeviceId, ContainerInfo>, EngineError> {
    let node = shared.cfg.node_id.as_str();
    let list = shared
        .engine
        .list(&[(LABEL_MANAGED, "true"), (LABEL_NODE, node)])
        .await?;
    let mut out = BTreeMap::new();
    for c in list {
        match c.labels.get(LABEL_DEVICE).map(|d| DeviceId::parse(d)) {
            Some(Ok(id)) => {
                out.insert(id, c);
            }
            _ => {
                tracing::warn!(container = %c.name, "managed container without a valid device label; ignored")
            }
        }
    }
    Ok(out)
}

/// One reconcile pass over every device. Returns how many actions failed.
pub async fn run_pass(shared: &Arc<Shared>) -> Result<usize, EngineError> {
    let started = Instant::now();
    let observed = observe(shared).await?;
    let (desired, loaded) = shared.desired_snapshot();
    let now = Instant::now();
    {
        let mut rts = shared.runtime.lock().expect("runtime lock");
        if !shared.adopted.swap(true, Ordering::SeqCst) && !observed.is_empty() {
            shared
                .metrics
                .containers_adopted
                .fetch_add(observed.len() as u64, Ordering::Relaxed);
            tracing::info!(count = observed.len(), "adopted existing containers");
        }
        for id in observed.keys() {
            let rt = rts.entry(id.clone()).or_default();
            if desired.contains_key(id) {
                rt.undesired_since = None;
            } else if rt.undesired_since.is_none() {
                rt.undesired_since = Some(now);
            }
        }
    }
    let actions = {
        let rts = shared.runtime.lock().expect("runtime lock");
        plan(
            &desired,
            &observed,
            &rts,
            PlanParams {
                now,
                removal_grace: shared.cfg.removal_grace,
                boot_timeout: shared.cfg.boot_timeout,
                desired_loaded: loaded,
            },
        )
    };
    let failures = std::sync::atomic::AtomicUsize::new(0);
    futures_util::stream::iter(actions)
        .for_each_concurrent(shared.cfg.max_concurrency, |action| {
            let failures = &failures;
            let observed = &observed;
            async move {
                if !matches!(action, Action::ProbeReady(_)) {
                    Metrics::inc(&shared.metrics.device_actions);
                }
                if let Err(e) = execute(shared, &action, observed.get(action.device())).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                    Metrics::inc(&shared.metrics.device_action_failures);
                    tracing::warn!(device = %action.device(), action = ?action_name(&action), error = %e, "device action failed");
                }
            }
        })
        .await;
    refresh_inventory(shared, &desired).await?;
    shared
        .metrics
        .reconcile_passes
        .fetch_add(1, Ordering::Relaxed);
    shared
        .metrics
        .reconcile_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    Ok(failures.into_inner())
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Create(_) => "create",
        Action::Recreate(_) => "recreate",
        Action::Start(_) => "start",
        Action::Stop(_) => "stop",
        Action::ProbeReady(_) => "probe_ready",
        Action::RestartStuck(_) => "restart_stuck",
        Action::Remove(_) => "remove",
    }
}

/// Runs one action under the device's lock, recording success or failure.
pub async fn execute(
    shared: &Arc<Shared>,
    action: &Action,
    seen: Option<&ContainerInfo>,
) -> Result<(), AgentError> {
    let id = action.device().clone();
    let lock = shared.device_lock(&id);
    let _guard = lock.lock().await;
    // Re-read the container under the lock: a command may have changed it
    // since the pass observed it.
    let current = shared.engine.inspect(&shared.container_name(&id)).await?;
    if current.as_ref().map(|c| (&c.id, c.running)) != seen.map(|c| (&c.id, c.running)) {
        return Ok(());
    }
    let result = match action {
        Action::Create(want) => create_device(shared, want, None).await.map(|_| ()),
        Action::Recreate(want) => recreate(shared, want, current.as_ref()).await,
        Action::Start(_) => start_device(shared, &id).await,
        Action::Stop(_) => shared
            .engine
            .stop(&shared.container_name(&id), shared.cfg.stop_timeout)
            .await
            .map_err(AgentError::from),
        Action::ProbeReady(_) => {
            probe_ready(shared, &id, current.as_ref()).await;
            Ok(())
        }
        Action::RestartStuck(_) => {
            let name = shared.container_name(&id);
            let r = shared.engine.restart(&name, shared.cfg.stop_timeout).await;
            shared.with_runtime(&id, |rt| {
                rt.ready_container = None;
                rt.booting_since = Some(Instant::now());
                rt.failed(
                    Instant::now(),
                    shared.cfg.reconcile_interval,
                    "boot timed out".into(),
                );
            });
            r.map_err(AgentError::from)
        }
        Action::Remove(_) => remove_device(shared, &id).await,
    };
    let now = Instant::now();
    match &result {
        Ok(()) if !matches!(action, Action::ProbeReady(_) | Action::RestartStuck(_)) => {
            shared.with_runtime(&id, DeviceRuntime::succeeded);
        }
        Ok(()) => {}
        Err(e) => {
            let base = shared.cfg.reconcile_interval;
            shared.with_runtime(&id, |rt| rt.failed(now, base, e.to_string()));
        }
    }
    result
}

/// Reconciles one device now, ignoring its backoff: an explicit command is a
/// reason to try again at once.
pub async fn reconcile_device(shared: &Arc<Shared>, id: &DeviceId) -> Result<(), AgentError> {
    let node = shared.cfg.node_id.as_str();
    let current = shared
        .engine
        .inspect(&shared.container_name(id))
        .await?
        .filter(|c| c.labels.get(LABEL_NODE).map(String::as_str) == Some(node));
    let (desired, _) = shared.desired_snapshot();
    let desired: BTreeMap<_, _> = desired.into_iter().filter(|(k, _)| k == id).collect();
    let observed: BTreeMap<_, _> = current.iter().map(|c| (id.clone(), c.clone())).collect();
    let rts: BTreeMap<_, _> = {
        let rts = shared.runtime.lock().expect("runtime lock");
        rts.get(id)
            .map(|r| {
                (
                    id.clone(),
                    DeviceRuntime {
                        retry_at: None,
                        ..r.clone()
                    },
                )
            })
            .into_iter()
            .collect()
    };
    let params = PlanParams {
        now: Instant::now(),
        removal_grace: shared.cfg.removal_grace,
        boot_timeout: shared.cfg.boot_timeout,
        desired_loaded: false,
    };
    for action in plan(&desired, &observed, &rts, params) {
        Metrics::inc(&shared.metrics.device_actions);
        if let Err(e) = execute(shared, &action, current.as_ref()).await {
            Metrics::inc(&shared.metrics.device_action_failures);
            return Err(e);
        }
    }
    Ok(())
}

/// Reserves `port` again for a device whose container had it, if no other
/// container of this node holds it and nothing else binds it; the engine
/// may take a moment to let go of a removed container's port, so it is
/// tried for up to two seconds.
async fn take_back(shared: &Shared, port: u16) -> Result<bool, AgentError> {
    let range = shared.cfg.port_range;
    if !(range.start..=range.end).contains(&port) {
        return Ok(false);
    }
    let node = shared.cfg.node_id.as_str();
    let held = shared
        .engine
        .list(&[(LABEL_MANAGED, "true"), (LABEL_NODE, node)])
        .await?
        .iter()
        .any(|c| c.labels.get(LABEL_ADB_PORT).and_then(|p| p.parse().ok()) == Some(port));
    if held {
        return Ok(false);
    }
    for _ in 0..20 {
        {
            let mut reserved = shared.reserved_ports.lock().expect("ports lock");
            if reserved.contains(&port) {
                return Ok(false);
            }
            if std::net::TcpListener::bind((shared.cfg.adb_bind_address.as_str(), port)).is_ok() {
                reserved.insert(port);
                return Ok(true);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// Picks the lowest free port in the range, skipping ports held by this
/// node's containers, ports reserved by creates in flight, and ports some
/// other process has bound.
pub async fn allocate_port(shared: &Shared) -> Result<u16, AgentError> {
    let node = shared.cfg.node_id.as_str();
    let containers = shared
        .engine
        .list(&[(LABEL_MANAGED, "true"), (LABEL_NODE, node)])
        .await?;
    let used: BTreeSet<u16> = containers
        .iter()
        .filter_map(|c| c.labels.get(LABEL_ADB_PORT)?.parse().ok())
        .collect();
    let range = shared.cfg.port_range;
    let mut reserved = shared.reserved_ports.lock().expect("ports lock");
    for port in range.start..=range.end {
        if used.contains(&port) || reserved.contains(&port) {
            continue;
        }
        match std::net::TcpListener::bind((shared.cfg.adb_bind_address.as_str(), port)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(AgentError::InvalidArgument(format!(
                    "adb_bind_address {} is not an address of this host",
                    shared.cfg.adb_bind_address
                )));
            }
            // Held by some other program: skip it.
            Err(_) => continue,
        }
        reserved.insert(port);
        return Ok(port);
    }
    Err(AgentError::PortRangeExhausted {
        start: range.start,
        end: range.end,
        in_use: used.len() + reserved.len(),
    })
}

/// Creates the container; when the name is taken by this node's container
/// (a create that finished just before an agent crash) adopts it. A foreign
/// container is never touched. A taken name with no container visible
/// behind it (a removal or create still in progress in the engine) is
/// retried for a few seconds.
async fn create_or_adopt(
    shared: &Shared,
    cspec: &spec::ContainerSpec,
) -> Result<String, AgentError> {
    let mut attempts = 0;
    loop {
        match shared.engine.create(cspec).await {
            Ok(cid) => return Ok(cid),
            Err(EngineError::Conflict(msg)) => match shared.engine.inspect(&cspec.name).await? {
                Some(c)
                    if c.labels.get(LABEL_NODE).map(String::as_str)
                        == Some(shared.cfg.node_id.as_str()) =>
                {
                    return Ok(c.id)
                }
                None if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => return Err(AgentError::Engine(EngineError::Conflict(msg))),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// Creates and starts the container of `want`; `port` reuses a known port.
pub async fn create_device(
    shared: &Arc<Shared>,
    want: &DesiredDevice,
    port: Option<u16>,
) -> Result<String, AgentError> {
    want.spec.validate()?;
    let id = &want.device_id;
    let owned = shared.observed_count().await?;
    if port.is_none() && owned >= shared.cfg.max_devices as usize {
        return Err(AgentError::NodeFull(shared.cfg.max_devices));
    }
    let port = match port {
        Some(p) => p,
        None => match shared.with_runtime(id, |rt| rt.last_port) {
            Some(p) if take_back(shared, p).await? => p,
            _ => allocate_port(shared).await?,
        },
    };
    let result = async {
        let dir = spec::device_dir(&shared.cfg.data_root, id);
        tokio::fs::create_dir_all(dir.join("data")).await?;
        let image_override =
            crate::ops::image_override(&shared.cfg.data_root, id, &want.spec.hash()).await;
        let place = spec::HostPlacement {
            node: &shared.cfg.node_id,
            data_root: &shared.cfg.data_root,
            adb_bind_address: &shared.cfg.adb_bind_address,
            adb_host_port: port,
            name_prefix: &shared.cfg.container_name_prefix,
        };
        let cspec = spec::build_container_spec(
            id,
            want.generation,
            &want.spec,
            &place,
            image_override.as_deref(),
        );
        let container_id = create_or_adopt(shared, &cspec).await?;
        if want.state == RunState::Running {
            start_device(shared, id).await?;
        }
        Ok(container_id)
    }
    .await;
    shared
        .reserved_ports
        .lock()
        .expect("ports lock")
        .remove(&port);
    result
}

async fn recreate(
    shared: &Arc<Shared>,
    want: &DesiredDevice,
    current: Option<&ContainerInfo>,
) -> Result<(), AgentError> {
    // Validate before removing so that a bad new spec never costs the old container.
    want.spec.validate()?;
    let port = current.and_then(|c| c.labels.get(LABEL_ADB_PORT)?.parse().ok());
    remove_container(shared, &shared.container_name(&want.device_id)).await?;
    create_device(shared, want, port).await.map(|_| ())
}

async fn start_device(shared: &Arc<Shared>, id: &DeviceId) -> Result<(), AgentError> {
    shared.engine.start(&shared.container_name(id)).await?;
    shared.with_runtime(id, |rt| {
        rt.ready_container = None;
        rt.booting_since = Some(Instant::now());
    });
    Ok(())
}

/// Asks the device whether it has booted; marks it ready when it has.
pub async fn probe_ready(
    shared: &Arc<Shared>,
    id: &DeviceId,
    current: Option<&ContainerInfo>,
) -> bool {
    let Some(c) = current.filter(|c| c.running) else {
        return false;
    };
    let out = shared
        .engine
        .exec(
            &c.name,
            &["getprop", "sys.boot_completed"],
            Duration::from_secs(5),
            64,
        )
        .await;
    let ready = matches!(&out, Ok(o) if o.exit_code == Some(0) && String::from_utf8_lossy(&o.stdout).trim() == "1");
    shared.with_runtime(id, |rt| {
        if ready {
            rt.ready_container = Some(c.id.clone());
        } else if rt.booting_since.is_none() {
            rt.booting_since = Some(Instant::now());
        }
    });
    ready
}

/// Removes a container and waits until the engine no longer lists it: with
/// Podman a removal can return before the name is free, and the create that
/// follows would then fail.
pub async fn remove_container(shared: &Shared, name: &str) -> Result<(), AgentError> {
    for _ in 0..20 {
        match shared.engine.remove(name).await {
            Ok(()) | Err(EngineError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if shared.engine.inspect(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(AgentError::Engine(EngineError::Other(format!(
        "container {name} is still there after removal"
    ))))
}

/// Removes the container and the device's data directory.
pub async fn remove_device(shared: &Arc<Shared>, id: &DeviceId) -> Result<(), AgentError> {
    remove_container(shared, &shared.container_name(id)).await?;
    let dir = spec::device_dir(&shared.cfg.data_root, id);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    shared.with_runtime(id, |rt| {
        rt.ready_container = None;
        rt.booting_since = None;
        rt.undesired_since = None;
    });
    Ok(())
}

/// The desired generation an observation satisfies: the one the agent
/// holds when the device is in its desired state (running and ready with
/// the desired spec, or stopped), else the one its container was built
/// from. The control plane finishes an operation of generation `g` only on
/// a status at `g` or later, so a stale `stopped` never completes a newer
/// stop, and a stop (which keeps the container) still completes.
fn observed_generation(
    desired: Option<&DesiredDevice>,
    c: Option<&ContainerInfo>,
    status: DeviceStatus,
) -> Option<u64> {
    let c = c?;
    let built = c.labels.get(LABEL_GENERATION).and_then(|g| g.parse().ok());
    let Some(d) = desired else {
        return built;
    };
    let converged = match d.state {
        RunState::Running => {
            status == DeviceStatus::Ready && c.labels.get(LABEL_SPEC_HASH) == Some(&d.spec.hash())
        }
        RunState::Stopped => status == DeviceStatus::Stopped,
    };
    if converged {
        Some(d.generation.max(built.unwrap_or(0)))
    } else {
        built
    }
}

/// Re-observes the inventory and reports every status change.
pub async fn refresh_inventory(
    shared: &Arc<Shared>,
    desired: &BTreeMap<DeviceId, DesiredDevice>,
) -> Result<(), EngineError> {
    let observed = observe(shared).await?;
    let mut inventory = Vec::new();
    let mut changes = Vec::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    {
        let mut rts = shared.runtime.lock().expect("runtime lock");
        // Devices known only from memory are the ones just removed: they get
        // one last `removed` status before they are forgotten.
        let ids: BTreeSet<DeviceId> = desired
            .keys()
            .chain(observed.keys())
            .chain(rts.keys())
            .cloned()
            .collect();
        for id in &ids {
            let c = observed.get(id);
            let rt = rts.entry(id.clone()).or_default();
            if let Some(p) = c.and_then(|c| c.labels.get(LABEL_ADB_PORT)?.parse().ok()) {
                rt.last_port = Some(p);
            }
            let status = status_of(desired.get(id), c, Some(rt));
            let dev = ObservedDevice {
                device_id: id.to_string(),
                status,
                container_id: c.map(|c| c.id.clone()),
                adb_port: c.and_then(|c| c.labels.get(LABEL_ADB_PORT)?.parse().ok()),
                spec_hash: c.and_then(|c| c.labels.get(LABEL_SPEC_HASH).cloned()),
                generation: observed_generation(desired.get(id), c, status),
                reason: if status == DeviceStatus::Failed {
                    rt.last_error.clone()
                } else {
                    None
                },
            };
            // A new generation is news too: it is what tells the control
            // plane that a stop (which keeps the status of a stopped
            // container) or a start has been carried out.
            if rt.last_status != Some(status) || rt.last_generation != dev.generation {
                changes.push((dev.clone(), rt.last_status));
                rt.last_status = Some(status);
                rt.last_generation = dev.generation;
            }
            if status != DeviceStatus::Removed {
                *counts
                    .entry(format!("{status:?}").to_lowercase())
                    .or_default() += 1;
                inventory.push(dev);
            }
        }
        rts.retain(|id, _| desired.contains_key(id) || observed.contains_key(id));
    }
    *shared
        .metrics
        .devices_by_status
        .lock()
        .expect("metrics lock") = counts;
    *shared.inventory.lock().expect("inventory lock") = inventory;
    for (dev, previous) in changes {
        shared.report_status(dev, previous);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RunState;
    use crate::spec::{DeviceSpec, Display, Gpu, ImageRef, Resources};

    fn want(id: &str, state: RunState) -> DesiredDevice {
        DesiredDevice {
            device_id: DeviceId::parse(id).unwrap(),
            generation: 1,
            state,
            spec: DeviceSpec {
                image: ImageRef::parse("img:1").unwrap(),
                display: Display {
                    width: 720,
                    height: 1280,
                    dpi: 320,
                    fps: 30,
                },
                gpu: Gpu::default(),
                resources: Resources {
                    cpu_millis: 1000,
                    memory_mb: 1024,
                    pids: 1024,
                },
                extra_boot_args: Default::default(),
            },
        }
    }

    fn container(d: &DesiredDevice, running: bool) -> ContainerInfo {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_SPEC_HASH.to_owned(), d.spec.hash());
        ContainerInfo {
            id: format!("c-{}", d.device_id),
            name: spec::container_name(spec::DEFAULT_NAME_PREFIX, &d.device_id),
            labels,
            running,
            image: "img:1".into(),
        }
    }

    fn params(now: Instant) -> PlanParams {
        PlanParams {
            now,
            removal_grace: Duration::from_secs(10),
            boot_timeout: Duration::from_secs(60),
            desired_loaded: true,
        }
    }

    fn map<T: Clone>(items: &[(&DesiredDevice, T)]) -> BTreeMap<DeviceId, T> {
        items
            .iter()
            .map(|(d, v)| (d.device_id.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn the_reported_generation_is_the_desired_one_only_once_it_is_reached() {
        let mut d = want("a", RunState::Stopped);
        d.generation = 2;
        let mut c = container(&d, false);
        c.labels.insert(LABEL_GENERATION.to_owned(), "1".into());
        // Stopped as desired: the stop of generation 2 is carried out,
        // though the container (and its label) is the one of generation 1.
        assert_eq!(
            observed_generation(Some(&d), Some(&c), DeviceStatus::Stopped),
            Some(2)
        );
        // Desired running at 3 but still stopped: only what it was built from.
        d.state = RunState::Running;
        d.generation = 3;
        assert_eq!(
            observed_generation(Some(&d), Some(&c), DeviceStatus::Stopped),
            Some(1)
        );
        // Ready, but with another spec than desired: not reached either.
        d.spec.display.dpi = 480;
        assert_eq!(
            observed_generation(Some(&d), Some(&c), DeviceStatus::Ready),
            Some(1)
        );
        // Ready with the desired spec: reached.
        let mut c = container(&d, true);
        c.labels.insert(LABEL_GENERATION.to_owned(), "3".into());
        assert_eq!(
            observed_generation(Some(&d), Some(&c), DeviceStatus::Ready),
            Some(3)
        );
        // No container, nothing to say; not desired, the label.
        assert_eq!(
            observed_generation(Some(&d), None, DeviceStatus::Creating),
            None
        );
        assert_eq!(
            observed_generation(None, Some(&c), DeviceStatus::Ready),
            Some(3)
        );
    }

    #[test]
    fn a_missing_container_is_created_and_a_stopped_one_started() {
        let a = want("a", RunState::Running);
        let b = want("b", RunState::Running);
        let desired = map(&[(&a, a.clone()), (&b, b.clone())]);
        let observed = map(&[(&b, container(&b, false))]);
        let actions = plan(
            &desired,
            &observed,
            &BTreeMap::new(),
            params(Instant::now()),
        );
        assert_eq!(actions, vec![Action::Create(a), Action::Start(b)]);
    }

    #[test]
    fn a_changed_spec_recreates_and_a_stopped_desire_stops() {
        let a = want("a", RunState::Running);
        let mut old = a.clone();
        old.spec.display.dpi = 240;
        let s = want("s", RunState::Stopped);
        let desired = map(&[(&a, a.clone()), (&s, s.clone())]);
        let observed = map(&[(&a, container(&old, true)), (&s, container(&s, true))]);
        let actions = plan(
            &desired,
            &observed,
            &BTreeMap::new(),
            params(Instant::now()),
        );
        assert_eq!(actions, vec![Action::Recreate(a), Action::Stop(s)]);
    }

    #[test]
    fn a_running_device_is_probed_until_ready_and_restarted_when_stuck() {
        let a = want("a", RunState::Running);
        let desired = map(&[(&a, a.clone())]);
        let c = container(&a, true);
        let observed = map(&[(&a, c.clone())]);
        let now = Instant::now();
        let mut rts = BTreeMap::new();
        assert_eq!(
            plan(&desired, &observed, &rts, params(now)),
            vec![Action::ProbeReady(a.clone())]
        );
        rts.insert(
            a.device_id.clone(),
            DeviceRuntime {
                ready_container: Some(c.id.clone()),
                ..Default::default()
            },
        );
        assert!(plan(&desired, &observed, &rts, params(now)).is_empty());
        rts.insert(
            a.device_id.clone(),
            DeviceRuntime {
                booting_since: Some(now - Duration::from_secs(61)),
                ..Default::default()
            },
        );
        assert_eq!(
            plan(&desired, &observed, &rts, params(now)),
            vec![Action::RestartStuck(a)]
        );
    }

    #[test]
    fn undesired_containers_are_removed_only_after_the_grace_period_and_a_first_pull() {
        let a = want("a", RunState::Running);
        let observed = map(&[(&a, container(&a, true))]);
        let desired = BTreeMap::new();
        let now = Instant::now();
        let mut rts = BTreeMap::new();
        rts.insert(
            a.device_id.clone(),
            DeviceRuntime {
                undesired_since: Some(now - Duration::from_secs(5)),
                ..Default::default()
            },
        );
        assert!(plan(&desired, &observed, &rts, params(now)).is_empty());
        rts.get_mut(&a.device_id).unwrap().undesired_since = Some(now - Duration::from_secs(11));
        assert_eq!(
            plan(&desired, &observed, &rts, params(now)),
            vec![Action::Remove(a.device_id.clone())]
        );
        let not_loaded = PlanParams {
            desired_loaded: false,
            ..params(now)
        };
        assert!(plan(&desired, &observed, &rts, not_loaded).is_empty());
    }

    #[test]
    fn devices_in_backoff_get_no_action_until_the_retry_time() {
        let a = want("a", RunState::Running);
        let desired = map(&[(&a, a.clone())]);
        let now = Instant::now();
        let mut rt = DeviceRuntime::default();
        rt.failed(now, Duration::from_millis(100), "boom".into());
        rt.failed(now, Duration::from_millis(100), "boom".into());
        assert_eq!(rt.retry_at, Some(now + Duration::from_millis(400)));
        let rts = map(&[(&a, rt)]);
        assert!(plan(&desired, &BTreeMap::new(), &rts, params(now)).is_empty());
        let later = now + Duration::from_millis(401);
        assert_eq!(
            plan(&desired, &BTreeMap::new(), &rts, params(later)),
            vec![Action::Create(a)]
        );
    }

    #[test]
    fn status_follows_container_and_readiness() {
        let a = want("a", RunState::Running);
        let c = container(&a, true);
        let ready = DeviceRuntime {
            ready_container: Some(c.id.clone()),
            ..Default::default()
        };
        assert_eq!(
            status_of(Some(&a), Some(&c), Some(&ready)),
            DeviceStatus::Ready
        );
        assert_eq!(status_of(Some(&a), Some(&c), None), DeviceStatus::Booting);
        assert_eq!(status_of(Some(&a), None, None), DeviceStatus::Creating);
        assert_eq!(status_of(None, None, None), DeviceStatus::Removed);
        let stopped = container(&a, false);
        assert_eq!(
            status_of(Some(&a), Some(&stopped), None),
            DeviceStatus::Stopped
        );
        let failing = DeviceRuntime {
            failures: 3,
            ..Default::default()
        };
        assert_eq!(
            status_of(Some(&a), None, Some(&failing)),
            DeviceStatus::Failed
        );
    }

    mod on_the_fake {
        use super::*;
        use crate::agent::Shared;
        use crate::spec::NodeId;

        use crate::testkit::shared_on_fake;

        fn set_desired(shared: &Shared, devices: Vec<DesiredDevice>) {
            shared
                .desired
                .lock()
                .unwrap()
                .merge_pulled(devices, std::time::Instant::now());
        }

        #[tokio::test]
        async fn one_failing_device_is_counted_and_backed_off_while_the_others_converge() {
            let dir = tempfile::tempdir().unwrap();
            let (shared, fake) = shared_on_fake(dir.path());
            set_desired(
                &shared,
                ["a", "b", "c"]
                    .iter()
                    .map(|i| want(i, RunState::Running))
                    .collect(),
            );
            fake.fail_creates_of("cloudphone-b", true);
            assert_eq!(run_pass(&shared).await.unwrap(), 1);
            let names: Vec<String> = fake.containers().keys().cloned().collect();
            assert_eq!(names, vec!["cloudphone-a", "cloudphone-c"]);
            assert!(fake.containers().values().all(|c| c.info.running));
            assert_eq!(
                shared
                    .metrics
                    .device_action_failures
                    .load(Ordering::Relaxed),
                1
            );
            // In backoff: the next pass does not retry b.
            assert_eq!(run_pass(&shared).await.unwrap(), 0);
            assert_eq!(fake.counters.creates.load(Ordering::Relaxed), 2);
            fake.fail_creates_of("cloudphone-b", false);
            tokio::time::sleep(Duration::from_millis(250)).await;
            run_pass(&shared).await.unwrap();
            assert!(fake.containers().contains_key("cloudphone-b"));
        }

        #[tokio::test]
        async fn containers_found_after_a_restart_are_adopted_not_recreated() {
            let dir = tempfile::tempdir().unwrap();
            let (shared, fake) = shared_on_fake(dir.path());
            let a = want("a", RunState::Running);
            let place = spec::HostPlacement {
                node: &shared.cfg.node_id,
                data_root: dir.path(),
                adb_bind_address: "127.0.0.1",
                adb_host_port: 47005,
                name_prefix: spec::DEFAULT_NAME_PREFIX,
            };
            fake.insert(
                spec::build_container_spec(&a.device_id, 1, &a.spec, &place, None),
                true,
            );
            set_desired(&shared, vec![a]);
            run_pass(&shared).await.unwrap();
            run_pass(&shared).await.unwrap();
            assert_eq!(fake.counters.creates.load(Ordering::Relaxed), 0);
            assert_eq!(fake.counters.removes.load(Ordering::Relaxed), 0);
            assert_eq!(shared.metrics.containers_adopted.load(Ordering::Relaxed), 1);
            let inv = shared.inventory.lock().unwrap().clone();
            assert_eq!(inv[0].status, DeviceStatus::Ready);
            assert_eq!(inv[0].adb_port, Some(47005));
        }

        #[tokio::test]
        async fn nothing_is_removed_before_the_first_successful_pull() {
            let dir = tempfile::tempdir().unwrap();
            let (shared, fake) = shared_on_fake(dir.path());
            let x = want("x", RunState::Running);
            let place = spec::HostPlacement {
                node: &shared.cfg.node_id,
                data_root: dir.path(),
                adb_bind_address: "127.0.0.1",
                adb_host_port: 47001,
                name_prefix: spec::DEFAULT_NAME_PREFIX,
            };
            fake.insert(
                spec::build_container_spec(&x.device_id, 1, &x.spec, &place, None),
                true,
            );
            run_pass(&shared).await.unwrap();
            assert_eq!(
                fake.containers().len(),
                1,
                "kept while the desired state is unknown"
            );
            set_desired(&shared, vec![]);
            run_pass(&shared).await.unwrap();
            assert!(
                fake.containers().is_empty(),
                "removed once the control plane says so"
            );
        }

        #[tokio::test]
        async fn containers_of_other_nodes_are_never_touched() {
            let dir = tempfile::tempdir().unwrap();
            let (shared, fake) = shared_on_fake(dir.path());
            let y = want("y", RunState::Running);
            let other = NodeId::parse("other-node").unwrap();
            let place = spec::HostPlacement {
                node: &other,
                data_root: dir.path(),
                adb_bind_address: "127.0.0.1",
                adb_host_port: 47002,
                name_prefix: spec::DEFAULT_NAME_PREFIX,
            };
            let mut cspec = spec::build_container_spec(&y.device_id, 1, &y.spec, &place, None);
            cspec.name = "someone-elses".into();
            fake.insert(cspec, true);
            set_desired(&shared, vec![]);
            run_pass(&shared).await.unwrap();
            assert_eq!(fake.containers().len(), 1);
        }

        #[tokio::test]
        async fn a_hundred_devices_converge_and_then_passes_are_quiet() {
            let dir = tempfile::tempdir().unwrap();
            let (shared, fake) = shared_on_fake(dir.path());
            let devices: Vec<_> = (0..100)
                .map(|i| want(&format!("d{i}"), RunState::Running))
                .collect();
            set_desired(&shared, devices);
            assert_eq!(run_pass(&shared).await.unwrap(), 0);
            assert_eq!(fake.containers().len(), 100);
            let ports: BTreeSet<String> = fake
                .containers()
                .values()
                .map(|c| c.info.labels[LABEL_ADB_PORT].clone())
                .collect();
            assert_eq!(ports.len(), 100, "every device has its own port");
            run_pass(&shared).await.unwrap();
            let ready = shared
                .inventory
                .lock()
                .unwrap()
                .iter()
                .filter(|d| d.status == DeviceStatus::Ready)
                .count();
            assert_eq!(ready, 100);
            let actions_before = shared.metrics.device_actions.load(Ordering::Relaxed);
            run_pass(&shared).await.unwrap();
            assert_eq!(
                shared.metrics.device_actions.load(Ordering::Relaxed),
                actions_before
            );
        }
    }
}
