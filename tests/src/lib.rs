//! Test harness for the end-to-end tests: [`TestApp::spawn`] provisions fresh
//! databases and roles for one test, starts the local host with the compiled
//! components on a random port, and removes everything again in `Drop`.
//! Typed helpers (`register`, `login`, ...) keep the tests readable.

use anyhow::{bail, Context, Result};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

pub use consistency;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repo")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The local host binary; `cargo xtask test` builds it first.
pub fn host_binary() -> PathBuf {
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            manifest: "spin.toml".into(),
            databases: migrator::admin::DATABASES.to_vec(),
            env: Vec::new(),
            disable_triggers: Vec::new(),
            db_url_variables: Vec::new(),
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
    /// The shared internal token.
    pub internal_token: String,
    /// The token signer (auth's key), for forging or checking tokens.
    pub signing_key: String,
    child: Option<Child>,
    redis: Child,
    /// Port of this test's private Redis server.
    pub redis_port: u16,
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
        let mut app = Self {
            base: String::new(),
            db_urls,
            names,
            internal_token: random_suffix(),
            signing_key,
            child: None,
            redis,
            redis_port,
            log: std::env::temp_dir().join(format!("{run}.log")),
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            options,
            port: free_port(),
        };
        app.start();
        app
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
        env.push((
            "SPIN_VARIABLE_INTERNAL_TOKEN".into(),
            self.internal_token.clone(),
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

    /// Starts (or restarts) the host process and waits for its banner.
    pub fn start(&mut self) {
        if let Some(mut old) = self.child.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(host_binary());
        cmd.current_dir(root())
            .envs(self.env())
            .args([
                "--from",
                &self.options.manifest,
                "--listen",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args([
                "--cache-dir",
                &target_dir().join("host-cache").to_string_lossy(),
            ])
            .stdout(Stdio::piped())
            .stderr(log);
        for t in &self.options.disable_triggers {
            cmd.args(["--disable-trigger", t]);
        }
        let mut child = cmd.spawn().expect("start local host");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Serving http://") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = child.kill();
            panic!("local host did not start; log:\n{}", self.log_text());
        }
        self.base = format!("http://127.0.0.1:{}", self.port);
        self.child = Some(child);
    }

    /// Stops the host with SIGTERM (graceful) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the host with SIGKILL: no graceful anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `PATCH` that returns `None` instead of panicking when the host is gone.
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
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
        }
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

    /// `POST` to an internal endpoint with the internal token.
    pub fn post_internal(&self, path: &str) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-internal-token", &self.internal_token)
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

    /// Publishes an event as a producer of this app does: signed with the
    /// app's internal token (unsigned messages are dropped by consumers).
    pub fn publish_event(&self, channel: &str, event: &Value) {
        let mut signed = event.clone();
        signed[access::mac::SIG] = access::mac::sign_event(&self.internal_token, &signed).into();
        self.publish(channel, &signed.to_string());
    }

    /// Everything the host logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

    /// A direct connection to a component's database, as its own role.
    pub fn db(&self, component: &str) -> postgres::Client {
        postgres::Client::connect(self.db_url(component), postgres::NoTls).expect("connect")
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

    /// `POST` to an internal endpoint with a JSON body and the internal token.
    pub fn post_internal_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-internal-token", &self.internal_token)
            .json(body)
            .send()
            .expect("request")
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
        let r = self.post_internal_json(
            "/api/v1/user/internal/bootstrap-admin",
            &json!({"email": email}),
        );
        assert_eq!(r.status(), 200, "bootstrap admin");
        self.wait_for_identity(&id, |roles, _| roles.iter().any(|r| r == "super_admin"));
        let token = self.token(&email, PASSWORD);
        Session { id, email, token }
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
        if std::env::var_os("E2E_KEEP_LOGS").is_some() {
            eprintln!("host log kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
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
    let body: Value = resp.json().context("error body is not json")?;
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
