//! The real runtime agent (the `runtime-agent` binary) as a child process of
//! a test, against the real container engine at `DOCKER_HOST` (Podman's
//! Docker-compatible API in CI) and the test's app: it enrols with the
//! secret the app gave its node, pulls desired state and reports over HTTP,
//! takes commands from the app's Redis. The test can kill it (SIGKILL),
//! freeze it (SIGSTOP) and start it again; dropping it removes its
//! containers and data.

use crate::{target_dir, TestApp};
use runtime_agent::engine::docker::DockerEngine;
use runtime_agent::engine::{ContainerInfo, Engine};
use runtime_agent::spec::{LABEL_DEVICE, LABEL_NODE};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Where CI's Podman serves the Docker API (`cargo xtask setup` starts it).
const PODMAN_SOCKET: &str = "unix:///run/cloudphone/podman.sock";

/// The engine address: `DOCKER_HOST`, else CI's Podman socket.
pub fn engine_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| PODMAN_SOCKET.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn engine(rt: &tokio::runtime::Runtime) -> DockerEngine {
    let host = engine_host();
    let engine = DockerEngine::connect(&host)
        .unwrap_or_else(|e| panic!("DOCKER_HOST={host} is unusable: {e}"));
    rt.block_on(engine.ping()).unwrap_or_else(|e| {
        panic!(
            "no container engine answers at {host} ({e}): these tests need one; \
             `cargo xtask setup` starts Podman's API there"
        )
    });
    engine
}

/// The image that behaves like redroid for the agent (built once, offline,
/// from busybox: there is no image registry here); its tag.
pub fn fake_redroid_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let rt = runtime();
        let engine = engine(&rt);
        rt.block_on(runtime_agent::testkit::fake_redroid_image(&engine))
    })
    .clone()
}

/// The prefix every tag of [`fake_redroid_image`] starts with (for the
/// app's `device_images` variable).
pub const FAKE_IMAGE_PREFIX: &str = "localhost/cloudphone-test-redroid:";

/// The agent binary, built once per test process (a no-op when it is
/// already up to date; `cargo xtask build` builds it too).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(crate::root())
            .args([
                "build",
                "-q",
                "-p",
                "runtime-agent",
                "--bin",
                "runtime-agent",
            ])
            .status()
            .expect("run cargo build for the runtime agent");
        assert!(status.success(), "building the runtime agent failed");
        target_dir().join("debug/runtime-agent")
    })
}

/// ADB ports for one agent: below the ephemeral range and apart from the
/// runtime agent's own tests (20000-31999).
fn ports(n: u16) -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 12000 + (std::process::id() % 70) as u16 * 100;
    let off = NEXT.fetch_add(n, Ordering::SeqCst) % 100;
    (base + off, base + off + n - 1)
}

/// A runtime agent process for one node of a test's app.
pub struct RealAgent {
    /// The node id.
    pub node: String,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl RealAgent {
    /// Writes the node's configuration (the secret the app gave at
    /// enrolment, short intervals, APK downloads off) and starts the agent.
    pub fn start(app: &TestApp, node: &str, secret: &str) -> Self {
        Self::start_with(app, node, secret, &[])
    }

    /// [`RealAgent::start`], downloading APKs only from under these URL
    /// prefixes (the agent's `apk_url_prefixes`; none turns downloads off).
    pub fn start_with(app: &TestApp, node: &str, secret: &str, apk_url_prefixes: &[&str]) -> Self {
        Self::start_sized(app, node, secret, apk_url_prefixes, 8)
    }

    /// [`RealAgent::start_with`] for a node that takes `max_devices`
    /// devices (with as many ADB ports), working on up to 16 at once.
    pub fn start_sized(
        app: &TestApp,
        node: &str,
        secret: &str,
        apk_url_prefixes: &[&str],
        max_devices: u16,
    ) -> Self {
        let dir = app.dir().join(format!("agent-{node}"));
        std::fs::create_dir_all(dir.join("data")).expect("agent dir");
        let secret_file = dir.join("node.secret");
        std::fs::write(&secret_file, secret).expect("secret file");
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let (first, last) = ports(max_devices + 2);
        let config = dir.join("agent.toml");
        let text = format!(
            r#"node_id = "{node}"
node_address = "127.0.0.1"
secret_file = "{secret}"
engine_host = "{engine}"
redis_url = "{redis}"
control_plane_url = "{base}"
adb_bind_address = "127.0.0.1"
port_range = "{first}-{last}"
data_root = "{data}"
metrics_addr = "{metrics}"
reconcile_interval_ms = 200
desired_state_interval_ms = 500
heartbeat_interval_ms = 300
removal_grace_ms = 500
boot_timeout_ms = 30000
stop_timeout_ms = 2000
max_concurrency = {concurrency}
max_devices = {max_devices}
apk_url_prefixes = {prefixes}
# Every test agent shares one engine, as two hosts never would: its own
# container names keep a device moved between them from clashing.
container_name_prefix = "cp-{node}-"

[labels]
zone = "sh-1"
"#,
            secret = secret_file.display(),
            engine = engine_host(),
            redis = app.redis_url(),
            base = app.base,
            data = dir.join("data").display(),
            concurrency = if max_devices > 8 { 16 } else { 4 },
            prefixes = toml::Value::Array(
                apk_url_prefixes
                    .iter()
                    .map(|p| toml::Value::String(p.to_string()))
                    .collect()
            ),
        );
        std::fs::write(&config, text).expect("agent config");
        let mut agent = Self {
            node: node.to_string(),
            dir,
            config,
            child: None,
        };
        agent.spawn();
        agent
    }

    /// Starts the agent process (again).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the agent is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("agent log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .env_remove("DOCKER_HOST")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the runtime agent");
        self.child = Some(child);
    }

    /// SIGKILL: no flush, no goodbye (a crashed or power-cut agent).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP or SIGCONT: a frozen agent sends nothing, like a partitioned host.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// The `/data` directory of a device on this node, as the agent keeps it.
    pub fn device_data(&self, id: &str) -> PathBuf {
        self.dir.join("data").join("devices").join(id).join("data")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// This node's containers as the engine has them.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        let rt = runtime();
        let engine = engine(&rt);
        rt.block_on(engine.list(&[(LABEL_NODE, self.node.as_str())]))
            .expect("list containers")
    }

    /// The container of device `id`, if the engine has one.
    pub fn container_of(&self, id: &str) -> Option<ContainerInfo> {
        self.containers()
            .into_iter()
            .find(|c| c.labels.get(LABEL_DEVICE).map(String::as_str) == Some(id))
    }

    /// Runs `cmd` in a container; its stdout.
    pub fn exec(&self, container: &str, cmd: &[&str]) -> String {
        let rt = runtime();
        let engine = engine(&rt);
        let out = rt
            .block_on(engine.exec(container, cmd, Duration::from_secs(10), 64 * 1024))
            .expect("exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A frozen agent must be thawed to die cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
        let rt = runtime();
        let engine = engine(&rt);
        if let Ok(list) = rt.block_on(engine.list(&[(LABEL_NODE, self.node.as_str())])) {
            for c in list {
                let _ = rt.block_on(engine.remove(&c.name));
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// Enrols node `id` for many of the small test phones (CPU and memory
/// overcommitted), starts its agent for `max_devices` and waits until the
/// node is online.
pub fn dense_node(app: &TestApp, admin: &crate::Session, id: &str, max_devices: u16) -> RealAgent {
    dense_node_with(app, admin, id, max_devices, &[])
}

/// [`dense_node`] whose agent downloads APKs from under these prefixes.
pub fn dense_node_with(
    app: &TestApp,
    admin: &crate::Session,
    id: &str,
    max_devices: u16,
    apk_url_prefixes: &[&str],
) -> RealAgent {
    let path = "/api/v1/device/nodes";
    let node = crate::expect_json(
        app.post(
            path,
            &serde_json::json!({"id": id, "cpu_overcommit_pct": 1600, "memory_overcommit_pct": 800}),
            admin.t(),
        ),
        201,
    );
    let secret = node["secret"].as_str().expect("the secret, once");
    let agent = RealAgent::start_sized(app, id, secret, apk_url_prefixes, max_devices);
    app.eventually(Duration::from_secs(60), || {
        let n = crate::expect_json(app.get(&format!("{path}/{id}"), admin.t()), 200);
        (n["status"] == "online").then_some(())
    })
    .unwrap_or_else(|_| panic!("node {id} never came online; agent log:\n{}", agent.log()));
    agent
}

/// A public template of the smallest test phone (1 core, 512 MiB, 2 GiB);
/// its id.
pub fn small_template(app: &TestApp, admin: &crate::Session, name: &str) -> String {
    let t = crate::expect_json(
        app.post(
            "/api/v1/device/templates",
            &serde_json::json!({"name": name, "visibility": "public",
                    "spec": {"image": fake_redroid_image(), "cpu_cores": 1, "memory_mb": 512, "storage_gb": 2}}),
            admin.t(),
        ),
        201,
    );
    t["id"].as_str().expect("template id").to_string()
}
