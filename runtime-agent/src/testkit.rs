//! Test support shared by the integration tests and the benchmark: a small
//! image that behaves like redroid, a stand-in for the control plane's HTTP
//! endpoints (desired state, register, reports, pushed files' contents),
//! private `redis-server` processes, and a per-test environment that cleans
//! up after itself.
//! Nothing here is used by the agent itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::{Config, PortRange};
use crate::engine::docker::DockerEngine;
use crate::engine::Engine;
use crate::protocol::{
    self, Command, CommandResult, DesiredDevice, DesiredState, Envelope, NodeSecret, Operation,
    Reports, RunState,
};
use crate::spec::{
    DeviceId, DeviceSpec, Display, Gpu, ImageRef, NodeId, OperationId, Resources, LABEL_NODE,
};

/// The engine address from `DOCKER_HOST`; panics with instructions when it
/// is unset or the engine does not answer, so real-engine tests never pass
/// without an engine.
pub async fn engine_from_env() -> DockerEngine {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| {
        panic!(
            "DOCKER_HOST is not set: the runtime-agent tests need a real Docker-API engine. \
             Start one with `podman system service --time=0 unix:///run/cloudphone/podman.sock &` \
             and export DOCKER_HOST=unix:///run/cloudphone/podman.sock"
        )
    });
    let engine = DockerEngine::connect(&host)
        .unwrap_or_else(|e| panic!("DOCKER_HOST={host} is unusable: {e}"));
    if let Err(e) = engine.ping().await {
        panic!("the container engine at DOCKER_HOST={host} does not answer: {e}");
    }
    engine
}

/// Redis for tests: `CLOUDPHONE_TEST_REDIS_URL` or `redis://127.0.0.1:6379/`.
pub fn redis_url() -> String {
    std::env::var("CLOUDPHONE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

const INIT: &str = r#"#!/bin/sh
# Behaves like redroid's /init for the agent: takes the boot arguments,
# "boots" after a moment, answers getprop and listens on 5555.
trap 'exit 0' TERM INT
echo "$@" > /boot-args
mkdir -p /tmp /data
rm -f /tmp/boot_completed
( sleep 1; echo 1 > /tmp/boot_completed ) &
httpd -f -p 5555 -h /www &
while :; do sleep 1 & wait $!; done
"#;

const GETPROP: &str = r#"#!/bin/sh
# Without an argument, every property as Android prints them: the boot
# arguments stand in for the system's properties.
case "$1" in
  "")
    echo "[sys.boot_completed]: [$(cat /tmp/boot_completed 2>/dev/null)]"
    for a in $(cat /boot-args); do
      case "$a" in *=*) echo "[${a%%=*}]: [${a#*=}]" ;; esac
    done ;;
  sys.boot_completed) cat /tmp/boot_completed 2>/dev/null ;;
  *) tr ' ' '\n' < /boot-args | grep "^$1=" | cut -d= -f2- ;;
esac
"#;

/// A test "APK" names its package in a `package=<name>` line; `pm list
/// packages` shows two system packages and what was installed.
const PM: &str = r#"#!/bin/sh
case "$1" in
  install)
    shift; [ "$1" = "-r" ] && shift
    if [ -s "$1" ]; then
      echo "$1" >> /data/installed-apks
      name=$(grep -o 'package=[A-Za-z0-9_.]*' "$1" | head -n 1 | cut -d= -f2)
      [ -n "$name" ] && echo "$name" >> /data/packages
      echo Success
    else echo "Failure [INSTALL_FAILED_INVALID_APK]"; exit 1; fi ;;
  uninstall)
    if [ -f /data/packages ]; then grep -vx "$2" /data/packages > /data/packages.new; mv /data/packages.new /data/packages; fi
    echo Success ;;
  list)
    for p in android com.android.settings $(cat /data/packages 2>/dev/null); do echo "package:$p"; done ;;
  *) echo "unknown"; exit 1 ;;
esac
"#;

const SCREENCAP: &str = "#!/bin/sh\nprintf '\\211PNG\\r\\n\\032\\nfake-screen'\n";
const LOGCAT: &str = "#!/bin/sh\necho 'I/init: boot args:' $(cat /boot-args)\n";

const DOCKERFILE: &str = r#"FROM scratch
COPY rootfs/ /
ENV PATH=/system/bin:/bin
ENTRYPOINT ["/init", "qemu=1", "androidboot.hardware=redroid"]
"#;

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "mkdir", "rm", "grep", "cut", "tr", "httpd", "ls", "cp", "true",
    "printf", "test", "[", "kill", "ps", "touch", "wc", "head", "mv",
];

fn build_context() -> std::io::Result<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox").map_err(|e| {
        std::io::Error::other(format!(
            "/bin/busybox is needed to build the test image (apt-get install busybox-static): {e}"
        ))
    })?;
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        b.append_data(&mut h, path, data)
    };
    add("Dockerfile", DOCKERFILE.as_bytes(), 0o644)?;
    add("rootfs/bin/busybox", &busybox, 0o755)?;
    add("rootfs/init", INIT.as_bytes(), 0o755)?;
    add("rootfs/system/bin/getprop", GETPROP.as_bytes(), 0o755)?;
    add("rootfs/system/bin/pm", PM.as_bytes(), 0o755)?;
    add("rootfs/system/bin/screencap", SCREENCAP.as_bytes(), 0o755)?;
    add("rootfs/system/bin/logcat", LOGCAT.as_bytes(), 0o755)?;
    add("rootfs/www/index.html", b"adb\n", 0o644)?;
    add("rootfs/tmp/.keep", b"", 0o644)?;
    for applet in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_mtime(0);
        b.append_link(&mut h, format!("rootfs/bin/{applet}"), "busybox")?;
    }
    b.into_inner()
}

static IMAGE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// Builds (once per process, and only if missing) the fake redroid image; returns its tag.
pub async fn fake_redroid_image(engine: &DockerEngine) -> String {
    IMAGE
        .get_or_init(|| async {
            let ctx = build_context().expect("test image context");
            let digest = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&ctx)[..6]);
            let tag = format!("localhost/cloudphone-test-redroid:{digest}");
            if engine.image_exists(&tag).await.expect("inspect test image") {
                return tag;
            }
            let opts = BuildImageOptionsBuilder::new()
                .dockerfile("Dockerfile")
                .t(&tag)
                .rm(true)
                .build();
            let mut stream =
                engine
                    .client()
                    .build_image(opts, None, Some(bollard::body_full(Bytes::from(ctx))));
            while let Some(item) = stream.next().await {
                let info = item.unwrap_or_else(|e| panic!("building the test image failed: {e}"));
                if let Some(err) = info.error_detail {
                    panic!("building the test image failed: {err:?}");
                }
            }
            tag
        })
        .await
        .clone()
}

/// What the control-plane double serves and has seen.
#[derive(Debug, Default)]
pub struct ControlPlaneState {
    /// Desired devices per node.
    pub desired: Mutex<HashMap<String, Vec<DesiredDevice>>>,
    /// Registrations received, raw JSON.
    pub registrations: Mutex<Vec<serde_json::Value>>,
    /// Every reported message whose signature verified, once per envelope
    /// id, in arrival order: what a control plane applying each message
    /// idempotently would have applied.
    pub messages: Mutex<Vec<Envelope>>,
    /// Envelope ids received, to spot redeliveries.
    pub seen: Mutex<HashSet<String>>,
    /// Messages received again under an id already recorded (a batch resent
    /// after an answer that was lost).
    pub duplicates: AtomicU64,
    /// Reported messages refused: bad signature, other node or version, or
    /// a kind an agent does not report.
    pub rejected_messages: AtomicU64,
    /// Report requests recorded.
    pub reports: AtomicU64,
    /// Messages per recorded report request, in order.
    pub report_sizes: Mutex<Vec<usize>>,
    /// Report requests still to refuse with 503 before recording anything.
    pub refuse_reports: AtomicU64,
    /// Report requests still to answer with 503 after recording them, as if
    /// the answer had been lost on the way back.
    pub lose_report_answers: AtomicU64,
    /// Static files (for APK downloads) by path.
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    /// Contents of `push_file` operations by operation id, served to any
    /// node with a valid signature (the real control plane also checks the
    /// operation's node and that it still runs).
    pub contents: Mutex<HashMap<String, Vec<u8>>>,
    /// Content requests served, found or not.
    pub content_fetches: AtomicU64,
    /// Snapshot archive chunks by snapshot id and number, as uploaded (the
    /// real control plane also checks the snapshot's node and state).
    pub archives: Mutex<HashMap<(String, u32), Vec<u8>>>,
    /// When set, every API call answers 503.
    pub down: AtomicBool,
    /// When set, desired-state responses are signed with this key instead
    /// of the node's (a forged control plane).
    pub response_secret: Mutex<Option<NodeSecret>>,
    /// Desired-state requests served.
    pub pulls: AtomicU64,
    /// Requests refused for a bad signature.
    pub unauthorized: AtomicU64,
}

/// A stand-in for the device component's agent endpoints (protocol version 2).
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Base URL.
    pub url: String,
    /// Shared state.
    pub state: Arc<ControlPlaneState>,
}

impl ControlPlane {
    /// Serves on a random local port; `secret` is the node secret used for every node.
    pub async fn start(secret: NodeSecret) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind control plane");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let state = Arc::new(ControlPlaneState::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let secret = secret.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), secret.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Replaces the desired state of a node.
    pub fn set_desired(&self, node: &NodeId, devices: Vec<DesiredDevice>) {
        self.state
            .desired
            .lock()
            .expect("lock")
            .insert(node.to_string(), devices);
    }

    /// Serves `data` as the contents of the `push_file` operation `op`.
    pub fn serve_content(&self, op: &str, data: Vec<u8>) {
        self.state
            .contents
            .lock()
            .expect("lock")
            .insert(op.to_owned(), data);
    }

    /// Serves `data` at `/files/{name}`; returns its URL.
    pub fn serve_file(&self, name: &str, data: Vec<u8>) -> String {
        self.state
            .files
            .lock()
            .expect("lock")
            .insert(format!("/files/{name}"), data);
        format!("{}/files/{name}", self.url)
    }
}

async fn handle(
    st: Arc<ControlPlaneState>,
    secret: NodeSecret,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (node, ts, sig) = (
        header(protocol::HEADER_NODE),
        header(protocol::HEADER_TIMESTAMP),
        header(protocol::HEADER_SIGNATURE),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = |status: u16, body: Vec<u8>| {
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .expect("response"))
    };
    if let Some(data) = st.files.lock().expect("lock").get(&path) {
        return reply(200, data.clone());
    }
    if st.down.load(Ordering::SeqCst) {
        return reply(503, b"down".to_vec());
    }
    let input = protocol::http_signing_input("request", &method, &path, &node, &ts, &body);
    let prefix = format!("{}/{node}/", protocol::AGENT_API);
    let fresh = chrono::DateTime::parse_from_rfc3339(&ts)
        .is_ok_and(|t| (Utc::now() - t.with_timezone(&Utc)).num_seconds().abs() <= 300);
    if node.is_empty()
        || !path.starts_with(&prefix)
        || !secret.verify(input.as_bytes(), &sig)
        || !fresh
    {
        st.unauthorized.fetch_add(1, Ordering::SeqCst);
        return reply(401, b"unauthorized".to_vec());
    }
    match (method.as_str(), &path[prefix.len()..]) {
        ("GET", "desired-state") => {
            let signer = st
                .response_secret
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or(secret);
            st.pulls.fetch_add(1, Ordering::SeqCst);
            let devices = st
                .desired
                .lock()
                .expect("lock")
                .get(&node)
                .cloned()
                .unwrap_or_default();
            let state = DesiredState {
                node_id: NodeId::parse(&node).expect("node"),
                devices,
            };
            let body = serde_json::to_vec(&state).expect("json");
            let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
            let input = protocol::http_signing_input("response", "GET", &path, &node, &ts, &body);
            Ok(Response::builder()
                .header(protocol::HEADER_TIMESTAMP, ts)
                .header(protocol::HEADER_SIGNATURE, signer.sign(input.as_bytes()))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response"))
        }
        ("POST", "register") => {
            let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            st.registrations.lock().expect("lock").push(v);
            reply(204, Vec::new())
        }
        ("POST", "reports") => {
            if take_one(&st.refuse_reports) {
                return reply(503, b"refused".to_vec());
            }
            if body.len() > protocol::MAX_REPORT_BYTES {
                return reply(413, Vec::new());
            }
            let Ok(reports) = serde_json::from_slice::<Reports>(&body) else {
                return reply(400, b"malformed report".to_vec());
            };
            if reports.messages.len() > protocol::MAX_REPORT_MESSAGES {
                return reply(413, Vec::new());
            }
            record_reports(&st, &secret, &node, reports.messages);
            if take_one(&st.lose_report_answers) {
                return reply(503, b"answer lost".to_vec());
            }
            reply(204, Vec::new())
        }
        ("GET", rest) if rest.starts_with("operations/") && rest.ends_with("/content") => {
            st.content_fetches.fetch_add(1, Ordering::SeqCst);
            let op = &rest["operations/".len()..rest.len() - "/content".len()];
            match st.contents.lock().expect("lock").get(op) {
                Some(data) => reply(200, data.clone()),
                None => reply(404, Vec::new()),
            }
        }
        (m, rest) if rest.starts_with("snapshots/") && rest.contains("/archive/") => {
            let mut parts = rest["snapshots/".len()..].split("/archive/");
            let snap = parts.next().unwrap_or_default().to_owned();
            let Some(seq) = parts.next().and_then(|n| n.parse::<u32>().ok()) else {
                return reply(404, Vec::new());
            };
            let mut archives = st.archives.lock().expect("lock");
            match m {
                "PUT" if body.len() > protocol::ARCHIVE_CHUNK_BYTES => reply(413, Vec::new()),
                "PUT" => {
                    archives.insert((snap, seq), body.to_vec());
                    reply(204, Vec::new())
                }
                _ => match archives.get(&(snap, seq)) {
                    Some(data) => reply(200, data.clone()),
                    None => reply(404, Vec::new()),
                },
            }
        }
        _ => reply(404, Vec::new()),
    }
}

/// Takes one from a counter of things still to do; false when none are left.
fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Records a report's messages as a control plane applies them: each
/// authenticated message once, whatever else the request carries.
fn record_reports(
    st: &ControlPlaneState,
    secret: &NodeSecret,
    node: &str,
    messages: Vec<Envelope>,
) {
    let count = messages.len();
    for env in messages {
        if env.authenticate(secret, node).is_err()
            || !protocol::REPORT_KINDS.contains(&env.kind.as_str())
        {
            st.rejected_messages.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if !st.seen.lock().expect("lock").insert(env.id.clone()) {
            st.duplicates.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        st.messages.lock().expect("lock").push(env);
    }
    st.report_sizes.lock().expect("lock").push(count);
    st.reports.fetch_add(1, Ordering::SeqCst);
}

fn next_ports(n: u16) -> PortRange {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Below the kernel's ephemeral range (32768+), so other programs' client
    // sockets do not take the ports.
    let base = 20000 + (std::process::id() % 60) as u16 * 200;
    let off = NEXT.fetch_add(n, Ordering::SeqCst);
    PortRange {
        start: base + off,
        end: base + off + n - 1,
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A private `redis-server` for one test, without persistence, killed when
/// dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on (plain or TLS, as configured).
    pub port: u16,
    args: Vec<String>,
    child: tokio::process::Child,
}

impl RedisServer {
    /// Starts `redis-server` on 127.0.0.1:`port` with `args` added (for
    /// example `--aclfile` or the TLS settings, which may replace the port
    /// with `--port 0 --tls-port`), and waits until it accepts connections.
    pub async fn start(port: u16, args: &[String]) -> Self {
        let args = args.to_vec();
        let child = Self::spawn(port, &args);
        let server = Self { port, args, child };
        server.wait_listening().await;
        server
    }

    fn spawn(port: u16, args: &[String]) -> tokio::process::Child {
        let port = port.to_string();
        tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (apt-get install redis-server) is needed for this test")
    }

    async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "private redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server and waits for it to exit.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill redis-server");
    }

    /// Starts it again, with the same settings, after [`RedisServer::kill`].
    pub async fn restart(&mut self) {
        self.child = Self::spawn(self.port, &self.args);
        self.wait_listening().await;
    }
}

/// One test's world: a real engine, real Redis, a control-plane double, a
/// data root, a unique node id and port range. Dropping it removes the
/// node's containers, snapshot images and data.
#[derive(Debug)]
pub struct TestEnv {
    /// The engine.
    pub engine: Arc<DockerEngine>,
    /// The fake redroid image.
    pub image: String,
    /// This test's node id.
    pub node: NodeId,
    /// Node secret.
    pub secret: NodeSecret,
    /// Data root.
    pub data_root: PathBuf,
    /// The control-plane double.
    pub cp: ControlPlane,
    /// ADB ports of this test.
    pub ports: PortRange,
    /// The Redis URL the agent uses unless its configuration says otherwise.
    pub redis_url: String,
    /// The client the test publishes commands with, as the control plane.
    redis: redis::Client,
}

impl TestEnv {
    /// Sets up a fresh environment named after the test, with `ports` ADB ports.
    pub async fn new(name: &str, ports: u16) -> Self {
        Self::with_redis(name, ports, &redis_url()).await
    }

    /// Like [`TestEnv::new`] with a Redis of the test's own: the agent and
    /// the test both use `redis_url`.
    pub async fn with_redis(name: &str, ports: u16, redis_url: &str) -> Self {
        let client = redis::Client::open(redis_url).expect("redis url");
        Self::with_redis_client(name, ports, redis_url, client).await
    }

    /// Like [`TestEnv::new`] with a Redis of the test's own: the agent is
    /// configured with `redis_url`, and the test publishes commands through
    /// `client` (which may hold other credentials or trust another CA). No
    /// connection is made yet, so the server may start later.
    pub async fn with_redis_client(
        name: &str,
        ports: u16,
        redis_url: &str,
        client: redis::Client,
    ) -> Self {
        let engine = Arc::new(engine_from_env().await);
        let image = fake_redroid_image(&engine).await;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let node = NodeId::parse(
            &format!("t-{}-{}", &name[..name.len().min(30)], &suffix[..8]).replace('_', "-"),
        )
        .expect("node id");
        let secret = NodeSecret::new(format!("secret-{suffix}").into_bytes()).expect("secret");
        let data_root = std::env::temp_dir().join(format!("cloudphone-agent-test-{node}"));
        std::fs::create_dir_all(&data_root).expect("data root");
        let cp = ControlPlane::start(secret.clone()).await;
        Self {
            redis_url: redis_url.to_owned(),
            engine,
            image,
            node,
            secret,
            data_root,
            cp,
            ports: next_ports(ports),
            redis: client,
        }
    }

    /// A configuration with short intervals for tests.
    pub fn config(&self) -> Config {
        let mut c = Config::with_defaults(
            self.node.clone(),
            self.secret.clone(),
            &self.redis_url,
            &self.cp.url,
            &self.data_root,
        );
        c.port_range = self.ports;
        // Container names are global on the engine; tests run in parallel.
        c.container_name_prefix = format!("cp-{}-", self.node);
        c.reconcile_interval = Duration::from_millis(200);
        c.desired_state_interval = Duration::from_millis(300);
        c.heartbeat_interval = Duration::from_millis(300);
        c.removal_grace = Duration::from_millis(500);
        c.boot_timeout = Duration::from_secs(20);
        c.stop_timeout = Duration::from_secs(2);
        c
    }

    /// Starts an agent in-process with [`TestEnv::config`].
    pub async fn start_agent(&self) -> crate::AgentHandle {
        self.start_agent_with(self.config()).await
    }

    /// Starts an agent in-process with a given configuration.
    pub async fn start_agent_with(&self, cfg: Config) -> crate::AgentHandle {
        let engine: Arc<dyn Engine> = self.engine.clone();
        let h = crate::start(cfg, engine).await.expect("agent starts");
        // Commands published before the subscription is live would be lost.
        // The agent counts a subscription once Redis has confirmed it, which
        // needs no Redis permission beyond the node's own to observe.
        let deadline = Instant::now() + Duration::from_secs(10);
        while h
            .shared
            .metrics
            .command_subscriptions
            .load(Ordering::SeqCst)
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "the agent did not subscribe to its command channel within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h
    }

    /// Every message the control plane has recorded from this test's node.
    pub fn messages(&self) -> Vec<Envelope> {
        self.cp.state.messages.lock().expect("lock").clone()
    }

    /// A desired device running the fake image.
    pub fn device(&self, id: &str, state: RunState) -> DesiredDevice {
        DesiredDevice {
            device_id: DeviceId::parse(id).expect("device id"),
            generation: 1,
            state,
            spec: DeviceSpec {
                image: ImageRef::parse(&self.image).expect("image"),
                display: Display {
                    width: 720,
                    height: 1280,
                    dpi: 320,
                    fps: 30,
                },
                gpu: Gpu::default(),
                resources: Resources {
                    cpu_millis: 500,
                    memory_mb: 256,
                    pids: 256,
                },
                extra_boot_args: BTreeMap::new(),
            },
        }
    }

    /// Publishes a raw payload on this node's command channel, as the
    /// control plane does.
    pub async fn publish_raw(&self, payload: &str) {
        let mut conn = self
            .redis
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(protocol::commands_channel(&self.node))
            .arg(payload)
            .query_async(&mut conn)
            .await
            .expect("publish");
    }

    /// Signs and publishes a command; returns the envelope sent.
    pub async fn send(&self, op_id: &str, op: Operation) -> Envelope {
        let cmd = Command {
            operation_id: OperationId::parse(op_id).expect("op id"),
            op,
        };
        let env = Envelope::signed(
            &self.secret,
            &self.node,
            "command",
            serde_json::to_value(cmd).expect("json"),
            Utc::now(),
        );
        self.publish_raw(&serde_json::to_string(&env).expect("json"))
            .await;
        env
    }

    /// Waits for the `n`-th (1-based) result of an operation.
    pub async fn result(&self, op_id: &str, n: usize, timeout: Duration) -> CommandResult {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<CommandResult> = self
                .cp
                .state
                .messages
                .lock()
                .expect("lock")
                .iter()
                .filter(|e| e.kind == "command_result")
                .filter_map(|e| serde_json::from_value::<CommandResult>(e.body.clone()).ok())
                .filter(|r| r.operation_id == op_id)
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no result #{n} for operation {op_id} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a command and waits for its result.
    pub async fn call(&self, op_id: &str, op: Operation) -> CommandResult {
        let before = self.results_for(op_id);
        self.send(op_id, op).await;
        self.result(op_id, before + 1, Duration::from_secs(60))
            .await
    }

    fn results_for(&self, op_id: &str) -> usize {
        self.cp
            .state
            .messages
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e.kind == "command_result" && e.body["operation_id"] == op_id)
            .count()
    }

    /// Polls `check` every 50 ms until it is true; panics with `what` after `timeout`.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// This node's containers.
    pub async fn containers(&self) -> Vec<crate::engine::ContainerInfo> {
        self.engine
            .list(&[(LABEL_NODE, self.node.as_str())])
            .await
            .expect("list")
    }

    /// The container name of a device in this test.
    pub fn container(&self, id: &str) -> String {
        format!("cp-{}-{id}", self.node)
    }

    /// The data directory of a device on the host.
    pub fn data_dir(&self, id: &str) -> PathBuf {
        crate::spec::device_dir(&self.data_root, &DeviceId::parse(id).expect("id")).join("data")
    }

    /// The latest reported status of a device.
    pub fn last_status(&self, id: &str) -> Option<String> {
        self.cp
            .state
            .messages
            .lock()
            .expect("lock")
            .iter()
            .rev()
            .filter(|e| e.kind == "device_status" && e.body["device"]["device_id"] == id)
            .map(|e| {
                e.body["device"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .next()
    }
}

fn cleanup(host: &str, node: &str, data_root: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let Ok(engine) = DockerEngine::connect(host) else {
            return;
        };
        if let Ok(list) = engine.list(&[(LABEL_NODE, node)]).await {
            for c in list {
                let _ = engine.remove(&c.name).await;
            }
        }
        let mut filters = HashMap::new();
        filters.insert("label", vec![format!("{LABEL_NODE}={node}")]);
        let opts = ListImagesOptionsBuilder::new().filters(&filters).build();
        if let Ok(images) = engine.client().list_images(Some(opts)).await {
            for img in images {
                let opts = RemoveImageOptionsBuilder::new().force(true).build();
                let _ = engine
                    .client()
                    .remove_image(&img.id, Some(opts), None)
                    .await;
            }
        }
    });
    let _ = std::fs::remove_dir_all(data_root);
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let host = std::env::var("DOCKER_HOST").unwrap_or_default();
        let node = self.node.to_string();
        let root = self.data_root.clone();
        // Drop runs inside the test's runtime, so the async cleanup gets a thread of its own.
        let _ = std::thread::spawn(move || cleanup(&host, &node, &root)).join();
    }
}

/// An agent's shared state over the in-memory fake engine, with no Redis or
/// control plane behind it: for reconcile unit tests and the benchmark.
pub fn shared_on_fake(
    data_root: &Path,
) -> (
    Arc<crate::agent::Shared>,
    Arc<crate::engine::fake::FakeEngine>,
) {
    let mut cfg = Config::with_defaults(
        NodeId::parse("node-fake").expect("node id"),
        NodeSecret::new(b"0123456789abcdef".to_vec()).expect("secret"),
        "redis://127.0.0.1:1/",
        "http://127.0.0.1:1",
        data_root,
    );
    cfg.port_range = PortRange {
        start: 47000,
        end: 47999,
    };
    cfg.max_devices = 500;
    cfg.max_concurrency = 16;
    cfg.removal_grace = Duration::ZERO;
    cfg.reconcile_interval = Duration::from_millis(100);
    let engine = Arc::new(crate::engine::fake::FakeEngine::new());
    let shared = crate::agent::Shared::new(cfg, engine.clone()).expect("shared state");
    (Arc::new(shared), engine)
}
