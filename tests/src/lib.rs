//! Test harness for the end-to-end tests: [`TestApp::spawn`] provisions fresh
//! databases and roles and a private Redis for one test, starts the app with
//! the compiled components on a random port, and removes everything again in
//! `Drop`. The app runs on real Spin when a `spin` binary is found
//! (`SPIN_BIN`, or `spin` on `PATH`; `.ci/run` puts `../shared/tools` there)
//! and on the project's local host otherwise; [`host`] says which.
//! Typed helpers (`register`, `login`, ...) keep the tests readable.

pub mod agent;
pub mod alipay;
pub mod apks;
pub mod billing;
pub mod form;
pub mod nodes;
pub mod real_agent;
pub mod stripe;

use anyhow::{bail, Context, Result};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use access::service::ComponentKey;
pub use consistency;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repo")
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// What runs the app in these tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A real Spin CLI (`spin up`), at this path.
    Spin(PathBuf),
    /// The project's local host (`crates/local-host`), at this path.
    Local(PathBuf),
}

/// The host the end-to-end tests use: real Spin when a `spin` binary is
/// found (`SPIN_BIN`, else `spin` on `PATH`), the local host otherwise
/// (`LOCAL_HOST_BIN`, else `target/debug/local-host`). Printed once.
pub fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = match spin_binary() {
            Some(spin) => {
                // The project's `spin` wrapper unpacks the binary and the
                // cron plugin on first use, which is not safe to do from
                // several `spin up`s at once: do it here, once.
                let warm = Command::new(&spin).arg("--version").output();
                assert!(
                    warm.as_ref().is_ok_and(|o| o.status.success()),
                    "{} --version failed: {warm:?}",
                    spin.display()
                );
                Host::Spin(spin)
            }
            None => Host::Local(local_host_binary()),
        };
        eprintln!("e2e: the app runs on {host:?}");
        host
    })
}

/// A `spin` binary, if one is available.
pub fn spin_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SPIN_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("spin"))
            .find(|p| p.is_file())
    })
}

/// The local host binary; `cargo xtask test` builds it first.
pub fn local_host_binary() -> PathBuf {
    let bin = std::env::var_os("LOCAL_HOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/local-host"));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test` (it builds the host and the components)",
        bin.display()
    );
    bin
}

fn random_suffix() -> String {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).expect("randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The components that hold a key of their own (`<name>_key` in spin.toml).
pub const KEYED: &[&str] = &[
    "auth",
    "user",
    "device",
    "app",
    "billing",
    "notification",
    "scheduler",
];

/// Fresh random keys for every keyed component.
pub fn fresh_keys() -> Vec<(&'static str, ComponentKey)> {
    KEYED
        .iter()
        .map(|name| {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).expect("randomness");
            (*name, ComponentKey::from_bytes(b))
        })
        .collect()
}

/// How to start the app for a test.
#[derive(Clone)]
pub struct Options {
    /// Manifest path relative to the repo root.
    pub manifest: String,
    /// Databases to provision (component names).
    pub databases: Vec<&'static str>,
    /// Extra or overriding environment variables for the host.
    pub env: Vec<(String, String)>,
    /// Trigger types not to start.
    pub disable_triggers: Vec<&'static str>,
    /// Extra variables set to a provisioned database's URL: (variable, component).
    pub db_url_variables: Vec<(&'static str, &'static str)>,
    /// The host to run on, instead of [`host`]'s choice (the local host's
    /// own probe tests, and the conformance test that runs both).
    pub host: Option<Host>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            manifest: "spin.toml".into(),
            databases: migrator::admin::DATABASES.to_vec(),
            env: Vec::new(),
            disable_triggers: Vec::new(),
            db_url_variables: Vec::new(),
            host: None,
        }
    }
}

/// One running app with its own databases.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Component name -> database URL (the component's own role).
    pub db_urls: Vec<(&'static str, String)>,
    /// Database and role names, for cleanup.
    names: Vec<String>,
    /// The test's own inspection role (a member of every component role)
    /// and its password: [`TestApp::db`] connects as it.
    inspector: (String, String),
    /// Every keyed component's own key (`<name>_key`).
    pub keys: Vec<(&'static str, ComponentKey)>,
    /// The token signer (auth's key), for forging or checking tokens.
    pub signing_key: String,
    child: Option<Child>,
    redis: Child,
    /// Port of this test's private Redis server.
    pub redis_port: u16,
    /// This test's scratch directory: host log, component logs, manifests.
    dir: PathBuf,
    log: PathBuf,
    client: Client,
    options: Options,
    port: u16,
}

impl TestApp {
    /// Starts the whole app with fresh databases.
    pub fn spawn() -> Self {
        Self::spawn_with(Options::default())
    }

    /// Starts the app with options.
    pub fn spawn_with(options: Options) -> Self {
        Self::try_spawn_with(options)
            .unwrap_or_else(|log| panic!("the app did not start; log:\n{log}"))
    }

    /// Starts the app with options; the log if it does not start.
    pub fn try_spawn_with(options: Options) -> std::result::Result<Self, String> {
        let run = format!("cpt_{}", random_suffix());
        let password = random_suffix();
        let mut names = Vec::new();
        let mut db_urls = Vec::new();
        for db in &options.databases {
            let name = format!("{run}_{db}");
            migrator::admin::provision(&name, &password).expect("provision database");
            let url = migrator::admin::url(&name, &password, "127.0.0.1", 5432);
            migrator::migrate(&url, &root().join("migrations").join(db)).expect("migrate");
            names.push(name);
            db_urls.push((*db, url));
        }
        let inspector = (format!("{run}_inspect"), random_suffix());
        migrator::admin::provision_member(&inspector.0, &inspector.1, &names)
            .expect("provision the inspection role");
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("randomness");
        let signing_key = access::signing_key_setting("test-1", seed);
        // A private Redis per test: pub/sub channels are global to a server,
        // and tests running in parallel must not see each other's events.
        let redis_port = free_port();
        let redis = Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let ready = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
            assert!(Instant::now() < ready, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = target_dir().join("e2e").join(&run);
        std::fs::create_dir_all(&dir).expect("test directory");
        let mut app = Self {
            base: String::new(),
            db_urls,
            names,
            inspector,
            keys: fresh_keys(),
            signing_key,
            child: None,
            redis,
            redis_port,
            log: dir.join("host.log"),
            dir,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            options,
            port: free_port(),
        };
        app.try_start()?;
        Ok(app)
    }

    /// This test's own directory (logs, agents' data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host this app runs on.
    pub fn host(&self) -> Host {
        self.options.host.clone().unwrap_or_else(|| host().clone())
    }

    /// A keyed component's own key.
    pub fn key(&self, component: &str) -> &ComponentKey {
        &self
            .keys
            .iter()
            .find(|(c, _)| *c == component)
            .expect("keyed component")
            .1
    }

    /// The service token of a component (or `scheduler`).
    pub fn service_token(&self, component: &str) -> String {
        self.key(component).service_token(component)
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .db_urls
            .iter()
            .map(|(db, url)| {
                (
                    format!("SPIN_VARIABLE_{}_DB_URL", db.to_uppercase()),
                    url.clone(),
                )
            })
            .collect();
        // Components whose database this test did not provision still need a value.
        for db in migrator::admin::DATABASES {
            let key = format!("SPIN_VARIABLE_{}_DB_URL", db.to_uppercase());
            if !env.iter().any(|(k, _)| *k == key) {
                env.push((
                    key,
                    "postgres://nobody@127.0.0.1:5432/none?sslmode=disable".into(),
                ));
            }
        }
        let signer = access::TokenSigner::parse(&self.signing_key).expect("key");
        env.push((
            "SPIN_VARIABLE_JWT_SIGNING_KEY".into(),
            self.signing_key.clone(),
        ));
        env.push((
            "SPIN_VARIABLE_JWT_PUBLIC_KEYS".into(),
            signer.public_setting(),
        ));
        for (name, key) in &self.keys {
            env.push((
                format!("SPIN_VARIABLE_{}_KEY", name.to_uppercase()),
                key.setting(),
            ));
        }
        let (hashes, public) = events::signing::public_settings(&self.keys);
        env.push(("SPIN_VARIABLE_SERVICE_TOKEN_HASHES".into(), hashes));
        env.push(("SPIN_VARIABLE_EVENT_PUBLIC_KEYS".into(), public));
        env.push((
            "SPIN_VARIABLE_APP_URL".into(),
            format!("http://127.0.0.1:{}", self.port),
        ));
        env.push((
            "SPIN_VARIABLE_REDIS_PORT".into(),
            self.redis_port.to_string(),
        ));
        for (var, component) in &self.options.db_url_variables {
            env.push((
                format!("SPIN_VARIABLE_{}", var.to_uppercase()),
                self.db_url(component).to_string(),
            ));
        }
        env.extend(self.options.env.iter().cloned());
        env
    }

    /// The manifest to run: the option's manifest, or a copy without the
    /// disabled trigger types (component sources made absolute), since Spin
    /// has no switch to leave a trigger out.
    fn manifest(&self) -> PathBuf {
        let original = root().join(&self.options.manifest);
        if self.options.disable_triggers.is_empty() {
            return original;
        }
        let text = std::fs::read_to_string(&original).expect("manifest");
        let copy = without_triggers(
            &text,
            &self.options.disable_triggers,
            original.parent().expect("dir"),
        )
        .expect("manifest without triggers");
        let path = self.dir.join("spin.toml");
        std::fs::write(&path, copy).expect("write manifest");
        path
    }

    /// Starts (or restarts) the app and waits until it serves (and, on Spin,
    /// until every Redis channel is subscribed).
    pub fn start(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("the app did not start; log:\n{log}");
        }
    }

    /// [`TestApp::start`], with the log as the error if the app does not
    /// start (it exits, or does not serve within 120 s).
    pub fn try_start(&mut self) -> std::result::Result<(), String> {
        if let Some(mut old) = self.child.take() {
            kill_group(&old, "KILL");
            let _ = old.wait();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let manifest = self.manifest();
        let channels = redis_channels(&manifest);
        let listen = format!("127.0.0.1:{}", self.port);
        let host = self.host();
        let mut cmd = match &host {
            Host::Spin(spin) => {
                let mut c = Command::new(spin);
                c.args(["up", "--from"])
                    .arg(&manifest)
                    .args(["--listen", &listen, "--log-dir"])
                    .arg(self.dir.join("logs"))
                    .arg("--runtime-config-file")
                    .arg(root().join("runtime-config.toml"));
                c
            }
            Host::Local(bin) => {
                let mut c = Command::new(bin);
                c.arg("--from")
                    .arg(&manifest)
                    .args(["--listen", &listen, "--cache-dir"])
                    .arg(target_dir().join("host-cache"))
                    .arg("--runtime-config-file")
                    .arg(root().join("runtime-config.toml"));
                c
            }
        };
        cmd.current_dir(root())
            .envs(self.env())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group: `spin up` runs each trigger as a child
            // process, and stopping the app must stop all of them.
            .process_group(0);
        let mut child = cmd.spawn().expect("start the app");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let spin = matches!(host, Host::Spin(_));
        let log = self.log.clone();
        let reader = std::thread::spawn(move || {
            let mut serving = false;
            let mut pending: Vec<String> = if spin { channels } else { Vec::new() };
            let mut sent = false;
            let mut out = std::fs::OpenOptions::new().append(true).open(&log).ok();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = out.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if line.starts_with("Serving http://") {
                    serving = true;
                }
                // Spin's Redis trigger lists `\t<server>/<channel>: [...]` once subscribed.
                pending.retain(|c| !line.contains(&format!("/{c}: [")));
                if serving && pending.is_empty() && !sent {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(_) if Instant::now() > deadline => {
                    kill_group(&child, "KILL");
                    let _ = child.wait();
                    let _ = reader.join();
                    return Err(self.log_text());
                }
                Err(_) => {}
            }
            if let Ok(Some(_)) = child.try_wait() {
                kill_group(&child, "KILL");
                // The reader ends when the output closes: then the log is whole.
                let _ = reader.join();
                return Err(self.log_text());
            }
        }
        self.base = format!("http://127.0.0.1:{}", self.port);
        self.child = Some(child);
        Ok(())
    }

    /// Stops the app with SIGTERM (graceful) and waits for it; its exit
    /// status, or `None` if it had to be killed after 15 s.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        kill_group(&child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                // Spin's trigger processes exit with it; make sure.
                kill_group(&child, "KILL");
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_group(&child, "KILL");
        let _ = child.wait();
        None
    }

    /// Kills the app with SIGKILL: no graceful anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child, "KILL");
            let _ = child.wait();
        }
    }

    /// `PATCH` that returns `None` instead of panicking when the app is gone.
    pub fn client_patch_quiet(&self, path: &str, body: &Value, token: &str) -> Option<u16> {
        self.client
            .patch(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// SIGKILL through a shared reference (for use while other threads send requests).
    pub fn kill_quiet(&self) {
        if let Some(child) = &self.child {
            kill_group(child, "KILL");
        }
    }

    /// The process id of the app (`spin up` or the local host); its process
    /// group holds every process of the app.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The options, to change before the next [`TestApp::start`].
    pub fn options_mut(&mut self) -> &mut Options {
        &mut self.options
    }

    /// A token for any user id holding `permissions` everywhere (platform
    /// staff), signed with this app's key.
    pub fn mint_token(&self, user: uuid::Uuid, permissions: &[&str]) -> String {
        self.mint_token_in(user, None, permissions)
    }

    /// A token for a user of `tenant` (or none) holding `permissions` with
    /// scope `all` (which a tenant member's filters narrow to their tenant).
    pub fn mint_token_in(
        &self,
        user: uuid::Uuid,
        tenant: Option<uuid::Uuid>,
        permissions: &[&str],
    ) -> String {
        let signer = access::TokenSigner::parse(&self.signing_key).expect("key");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64;
        signer.sign(&access::Claims {
            sub: user,
            tid: tenant,
            dept: None,
            acc: access::Access {
                permissions: permissions.iter().map(|p| p.to_string()).collect(),
                scopes: [(
                    "*".to_string(),
                    access::Scope {
                        level: access::Level::All,
                        departments: vec![],
                    },
                )]
                .into(),
                ..access::Access::default()
            },
            roles: vec![],
            iat: now,
            exp: now + 600,
            iss: access::ISSUER.into(),
            jti: uuid::Uuid::new_v4(),
        })
    }

    /// `PATCH` with a JSON body.
    pub fn patch(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut r = self.client.patch(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// `POST` to an internal endpoint as `service` (a component or
    /// `scheduler`), with its service token and no body.
    pub fn post_as(&self, service: &str, path: &str) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header(access::service::HEADER, self.service_token(service))
            .send()
            .expect("request")
    }

    /// `POST` to an internal endpoint as `service` with a JSON body.
    pub fn post_json_as(&self, service: &str, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header(access::service::HEADER, self.service_token(service))
            .json(body)
            .send()
            .expect("request")
    }

    /// `GET` an internal endpoint as `service`.
    pub fn get_as(&self, service: &str, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header(access::service::HEADER, self.service_token(service))
            .send()
            .expect("request")
    }

    /// Publishes a raw message on this app's Redis.
    pub fn publish(&self, channel: &str, message: &str) {
        let client = redis::Client::open(self.redis_url()).expect("redis url");
        let mut conn = client.get_connection().expect("redis connection");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query(&mut conn)
            .expect("publish");
    }

    /// Publishes an event as its producer does: signed with the producer's
    /// event key (unsigned or forged messages are dropped by consumers).
    pub fn publish_event(&self, event: &events::Envelope) {
        let signer = events::EventSigner::from_seed(
            &event.source,
            self.key(&event.source).event_signing_seed(),
        );
        let message = signer.sign(event);
        let client = redis::Client::open(self.redis_url()).expect("redis url");
        let mut conn = client.get_connection().expect("redis connection");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(events::channel(&event.source))
            .arg(message)
            .query(&mut conn)
            .expect("publish");
    }

    /// The reset token in the newest password-reset email queued for `email`
    /// (read where the mail goes: the notification database's sealed spool,
    /// opened with notification's mail key).
    pub fn reset_token_from_mail(&self, email: &str) -> Option<String> {
        let row = self
            .db("notification")
            .query_opt(
                "SELECT sealed_body FROM outgoing_mail WHERE to_address = $1 AND kind = 'password_reset' \
                 ORDER BY created_at DESC LIMIT 1",
                &[&email],
            )
            .expect("mail query")?;
        let sealed: Vec<u8> = row.get(0);
        let key = self.key("notification").seal_key("outgoing-mail");
        let text = access::seal::open(&key, "outgoing-mail", &sealed).expect("mail opens");
        let text = String::from_utf8(text).expect("utf-8 mail");
        text.lines()
            .find_map(|l| l.strip_prefix("Your reset token: "))
            .map(|t| t.trim().to_string())
    }

    /// The in-app notifications of the holder of `token`, newest first.
    pub fn notifications(&self, token: &str) -> Vec<Value> {
        let page = expect_json(
            self.get("/api/v1/notification/notifications", Some(token)),
            200,
        );
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// Everything the app and its components logged so far.
    pub fn log_text(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(self.dir.join("logs")) {
            let mut files: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort();
            for f in files {
                text.push_str(&format!("\n== {} ==\n", f.display()));
                text.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
            }
        }
        text
    }

    /// The URL of this test's Redis.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// The database URL of a component.
    pub fn db_url(&self, component: &str) -> &str {
        &self
            .db_urls
            .iter()
            .find(|(c, _)| *c == component)
            .expect("database provisioned")
            .1
    }

    /// A direct connection to a component's database, with the component
    /// role's privileges (as the test's inspection role, a member of it, so
    /// that the component's own pools, which may hold every connection its
    /// role's CONNECTION LIMIT allows, never lock the test out).
    pub fn db(&self, component: &str) -> postgres::Client {
        let url = format!(
            "postgres://{}:{}@127.0.0.1:5432/{}?sslmode=disable",
            self.inspector.0,
            self.inspector.1,
            self.db_name(component)
        );
        postgres::Client::connect(&url, postgres::NoTls).expect("connect")
    }

    /// `SELECT count(*) ...` (or any single bigint) in a component's database.
    pub fn count(&self, component: &str, sql: &str) -> i64 {
        self.db(component)
            .query_one(sql, &[])
            .expect("count query")
            .get(0)
    }

    /// The database name of a component in this test.
    pub fn db_name(&self, component: &str) -> String {
        let url = self.db_url(component);
        url.rsplit('/')
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// `GET`.
    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// `POST` with a JSON body.
    pub fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut r = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// `POST` with a raw body and content type.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &'static str) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("request")
    }

    /// Registers a user; returns the response.
    pub fn register(&self, email: &str, password: &str, name: &str) -> Response {
        self.post(
            "/api/v1/auth/register",
            &json!({"email": email, "password": password, "display_name": name}),
            None,
        )
    }

    /// Logs in; returns the response.
    pub fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
            None,
        )
    }

    /// Registers and logs in a fresh user; returns (user id, access token).
    pub fn signed_up_user(&self) -> (String, String) {
        let email = format!("u{}@example.com", random_suffix());
        let r = self.register(&email, "correct horse battery", "Test User");
        assert_eq!(
            r.status(),
            201,
            "register: {}",
            r.text().unwrap_or_default()
        );
        let id = r.json::<Value>().expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let r = self.login(&email, "correct horse battery");
        assert_eq!(r.status(), 200);
        let token = r.json::<Value>().expect("json")["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        (id, token)
    }

    /// `PUT` with a JSON body.
    pub fn put(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut r = self.client.put(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// `DELETE`.
    pub fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut r = self.client.delete(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// Any method, with an optional JSON body and token; for table-driven tests.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self.client.request(m, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(b);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// `POST` with an `Idempotency-Key`.
    pub fn post_idempotent(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
        key: &str,
    ) -> Response {
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("idempotency-key", key)
            .json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// A request with a raw body, content type and token.
    pub fn call_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .client
            .request(m, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("request")
    }

    /// Waits until `auth`'s identity copy of a user satisfies `f` (given the
    /// roles and the access JSON), e.g. after a role change.
    pub fn wait_for_identity(&self, user: &str, mut f: impl FnMut(&[String], &Value) -> bool) {
        let id = uuid::Uuid::parse_str(user).expect("user id");
        let mut auth = self.db("auth");
        self.eventually(Duration::from_secs(30), || {
            let row = auth
                .query_opt(
                    "SELECT roles, access FROM identities WHERE user_id = $1",
                    &[&id],
                )
                .ok()??;
            let roles: Vec<String> = row.get(0);
            let access: Value = row.get(1);
            f(&roles, &access).then_some(())
        })
        .unwrap_or_else(|_| panic!("auth's copy of {user} did not reach the expected state"));
    }

    /// Logs in; returns the access token (panics on failure).
    pub fn token(&self, email: &str, password: &str) -> String {
        let r = self.login(email, password);
        assert_eq!(r.status(), 200, "login of {email}");
        r.json::<Value>().expect("json")["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// A platform administrator (`super_admin`, no tenant), signed in.
    pub fn platform_admin(&self) -> Session {
        let email = format!("admin{}@example.com", random_suffix());
        let r = self.register(&email, PASSWORD, "Platform Admin");
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string();
        self.grant_admin(&email);
        self.wait_for_identity(&id, |roles, _| roles.iter().any(|r| r == "super_admin"));
        let token = self.token(&email, PASSWORD);
        Session { id, email, token }
    }

    /// Makes a registered user platform administrator the only way there
    /// is: a grant written into `user`'s database (as `cargo xtask admin`
    /// does), applied by the scheduler's job, run here at once.
    pub fn grant_admin(&self, email: &str) {
        self.db("user")
            .execute("INSERT INTO admin_grants (email) VALUES ($1)", &[&email])
            .expect("insert admin grant");
        // The scheduler's own run may hold the grant at this moment (it
        // skips locked rows), so the outcome is awaited, not assumed.
        let r = self.post_as("scheduler", "/api/v1/user/internal/admin-grants/apply");
        assert_eq!(r.status(), 200, "apply admin grants");
        let outcome = self
            .eventually(Duration::from_secs(15), || {
                self.db("user")
                    .query_one(
                        "SELECT outcome FROM admin_grants WHERE email = $1 ORDER BY requested_at DESC LIMIT 1",
                        &[&email],
                    )
                    .expect("grant")
                    .get::<_, Option<String>>(0)
            })
            .ok();
        assert_eq!(
            outcome.as_deref(),
            Some("granted"),
            "admin grant of {email}"
        );
    }

    /// Creates a tenant as `admin`; returns its id.
    pub fn create_tenant(&self, admin: &str, code: &str) -> String {
        let r = self.post(
            "/api/v1/user/tenants",
            &json!({"code": code, "name": code}),
            Some(admin),
        );
        assert_eq!(
            r.status(),
            201,
            "create tenant: {}",
            r.text().unwrap_or_default()
        );
        r.json::<Value>().expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Creates a user through `POST /user/users` with `extra` fields
    /// (tenant_id, department_id, role_ids, phone) and signs them in.
    pub fn create_user(&self, admin: &str, extra: Value) -> Session {
        let email = format!("u{}@example.com", random_suffix());
        let mut body = json!({"email": email, "display_name": "Member", "password": PASSWORD});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = self.post("/api/v1/user/users", &body, Some(admin));
        assert_eq!(
            r.status(),
            201,
            "create user: {}",
            r.text().unwrap_or_default()
        );
        let id = r.json::<Value>().expect("json")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let token = self.token(&email, PASSWORD);
        Session { id, email, token }
    }

    /// Polls `f` until it returns `Some` or the timeout passes.
    pub fn eventually<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("condition not met within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
        let _ = self.redis.kill();
        let _ = self.redis.wait();
        for name in &self.names {
            if let Err(e) = migrator::admin::drop(name) {
                eprintln!("cleanup of {name} failed: {e}");
            }
        }
        if let Err(e) = migrator::admin::drop_role(&self.inspector.0) {
            eprintln!("cleanup of {} failed: {e}", self.inspector.0);
        }
        if std::env::var_os("E2E_KEEP_LOGS").is_some() || std::thread::panicking() {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends `send` again, as a well-behaved client does, while the answer is
/// 502 or 503 (an overloaded app or a dependency): after `Retry-After`
/// (at most 1 s here), up to 30 times. Requests that change something must
/// be idempotent (an `Idempotency-Key` or a key in the body) for this.
pub fn retrying(mut send: impl FnMut() -> Response) -> Response {
    let mut tries = 0;
    loop {
        let r = send();
        let status = r.status().as_u16();
        if !matches!(status, 502 | 503) || tries == 30 {
            return r;
        }
        tries += 1;
        let wait = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_millis(200), |s| {
                Duration::from_secs(s.min(1))
            });
        std::thread::sleep(wait);
    }
}

/// A `user.*` event carrying the snapshot of a plain, active, tenantless user.
pub fn identity_event(
    kind: &events::EventType,
    user: uuid::Uuid,
    version: i64,
    email: &str,
) -> events::Envelope {
    let identity = events::payload::Identity {
        id: user,
        email: email.into(),
        display_name: "X".into(),
        tenant_id: None,
        department_id: None,
        status: "active".into(),
        tenant_active: true,
        roles: vec!["user".into()],
        access: Default::default(),
        locale: "en".into(),
    };
    events::Envelope::new(
        kind,
        user.to_string(),
        version,
        "2026-11-23T00:00:00.000000Z",
        &identity,
    )
}

/// Sends `signal` (`TERM`, `KILL`) to the process group of `child`.
fn kill_group(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

/// The Redis channels a manifest subscribes to.
fn redis_channels(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut channels: Vec<String> = doc
        .get("trigger")
        .and_then(|t| t.get("redis"))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    t.get("channel")
                        .and_then(|c| c.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    channels.sort();
    channels.dedup();
    channels
}

/// A manifest without the given trigger types, its component sources made
/// absolute (relative to `dir`) so the copy can live anywhere.
pub fn without_triggers(text: &str, kinds: &[&str], dir: &Path) -> Result<String> {
    let mut doc: toml::Table = text.parse().context("manifest")?;
    if let Some(triggers) = doc.get_mut("trigger").and_then(|t| t.as_table_mut()) {
        for k in kinds {
            triggers.remove(*k);
        }
    }
    if kinds.contains(&"redis") {
        if let Some(app_triggers) = doc
            .get_mut("application")
            .and_then(|a| a.get_mut("trigger"))
            .and_then(|t| t.as_table_mut())
        {
            app_triggers.remove("redis");
        }
    }
    // Components no trigger uses any more are left out, as an app would.
    let used: Vec<String> = doc
        .get("trigger")
        .and_then(|t| t.as_table())
        .map(|t| {
            t.values()
                .filter_map(|v| v.as_array())
                .flatten()
                .filter_map(|e| {
                    e.get("component")
                        .and_then(|c| c.as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(components) = doc.get_mut("component").and_then(|c| c.as_table_mut()) {
        components.retain(|id, _| used.iter().any(|u| u == id));
        for (_, c) in components.iter_mut() {
            if let Some(src) = c.get_mut("source") {
                if let Some(rel) = src.as_str() {
                    *src = toml::Value::String(dir.join(rel).to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(toml::to_string(&doc)?)
}

/// Every route `docs/api.md` lists: (method, path pattern, access).
pub fn documented_routes() -> Vec<(String, String, String)> {
    let doc = std::fs::read_to_string(root().join("docs/api.md")).expect("docs/api.md");
    doc.lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            (c.len() > 4 && c[2].starts_with("`/api/v1/")).then(|| {
                (
                    c[1].to_string(),
                    c[2].trim_matches('`').to_string(),
                    c[3].trim_matches('`').to_string(),
                )
            })
        })
        .collect()
}

/// The password every helper-made user has.
pub const PASSWORD: &str = "correct horse battery";

/// The fixed ids of the built-in roles (migrations/user/0004).
pub mod roles {
    /// Every permission, every tenant.
    pub const SUPER_ADMIN: &str = "00000000-0000-0000-0000-00000000a001";
    /// Administers one tenant.
    pub const TENANT_ADMIN: &str = "00000000-0000-0000-0000-00000000a002";
    /// Support staff.
    pub const SUPPORT: &str = "00000000-0000-0000-0000-00000000a003";
    /// A plain user.
    pub const USER: &str = "00000000-0000-0000-0000-00000000a004";
}

/// A signed-in user of a test.
#[derive(Debug, Clone)]
pub struct Session {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Access token.
    pub token: String,
}

impl Session {
    /// The token as an `Option`, for the request helpers.
    pub fn t(&self) -> Option<&str> {
        Some(&self.token)
    }
}

/// The JSON body of a response, asserting its status first.
pub fn expect_json(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The ids of a page of items.
pub fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the common error shape and returns the error code.
pub fn error_code(resp: Response) -> Result<(u16, String)> {
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().context("reading the error body")?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("error body is not json ({status}): {text:.200}"))?;
    let err = body.get("error").context("no error object")?;
    let code = err["code"].as_str().context("no error.code")?.to_string();
    err["message"].as_str().context("no error.message")?;
    let rid = err["request_id"].as_str().context("no error.request_id")?;
    if request_id.as_deref() != Some(rid) {
        bail!("error.request_id {rid} differs from the x-request-id header {request_id:?}");
    }
    if body.as_object().map(|o| o.len()) != Some(1) || err.as_object().map(|o| o.len()) != Some(3) {
        bail!("error body has extra fields: {body}");
    }
    Ok((status, code))
}
