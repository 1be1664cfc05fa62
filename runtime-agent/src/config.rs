//! Agent configuration: a TOML file, overridden by flags and environment
//! variables (flags win over env, env over the file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::NodeSecret;
use crate::spec::NodeId;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A required setting is missing.
    #[error("missing setting {0}")]
    Missing(&'static str),
    /// A setting has a bad value.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// An inclusive range of host ports for ADB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port, inclusive.
    pub end: u16,
}

impl PortRange {
    /// Parses `40000-40999`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::Invalid {
            name: "port_range",
            message: format!("{s:?} is not START-END with 1024 <= START <= END"),
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start: u16 = a.trim().parse().map_err(|_| bad())?;
        let end: u16 = b.trim().parse().map_err(|_| bad())?;
        if start < 1024 || start > end {
            return Err(bad());
        }
        Ok(Self { start, end })
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }

    /// Always false: a parsed range has at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why a URL may not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// Not a URL at all.
    #[error("url is not valid: {0}")]
    Invalid(String),
    /// Another scheme than http or https.
    #[error("url must be http or https")]
    Scheme,
    /// A user name or password in the URL, which would be sent to the server.
    #[error("url must not carry a user name or password")]
    Userinfo,
    /// Not under any allowed prefix.
    #[error("url {0} is not under an allowed apk download prefix (apk_url_prefixes)")]
    NotAllowed(String),
    /// A redirect that leads outside the allowed prefixes.
    #[error(
        "redirect to {0} refused: not under an allowed apk download prefix (apk_url_prefixes)"
    )]
    Redirect(String),
}

/// One allowed place: scheme, host and port must be equal, and the path must
/// start with the prefix's path, which always ends in `/`. Comparing parsed
/// URLs, not strings, is what keeps `https://cp.example.evil.com/` out of
/// the prefix `https://cp.example`, and `/files/../admin` out of `/files/`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlPrefix {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

impl UrlPrefix {
    fn matches(&self, url: &reqwest::Url) -> bool {
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == self.port
            && url.path().starts_with(&self.path)
    }
}

/// Where `install_apk` may download from. Everything else is refused before
/// a connection is made, so a command cannot make the agent fetch from the
/// host's network (metadata services, internal admin ports) on its behalf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApkUrlPolicy {
    prefixes: Vec<UrlPrefix>,
}

impl ApkUrlPolicy {
    /// Parses the allowed prefixes: absolute http or https URLs without a
    /// user name, password, query or fragment.
    pub fn parse<S: AsRef<str>>(prefixes: &[S]) -> Result<Self, ConfigError> {
        let invalid = |p: &str, why: &str| ConfigError::Invalid {
            name: "apk_url_prefixes",
            message: format!("{p:?} {why}"),
        };
        let mut out = Vec::new();
        for p in prefixes {
            let p = p.as_ref();
            let url =
                reqwest::Url::parse(p).map_err(|e| invalid(p, &format!("is not a url: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(p, "is not http or https"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid(p, "carries a user name or password"));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(p, "has a query or fragment"));
            }
            let host = url.host_str().ok_or_else(|| invalid(p, "has no host"))?;
            let mut path = url.path().to_owned();
            if !path.ends_with('/') {
                path.push('/');
            }
            out.push(UrlPrefix {
                scheme: url.scheme().to_owned(),
                host: host.to_owned(),
                port: url.port_or_known_default(),
                path,
            });
        }
        Ok(Self { prefixes: out })
    }

    /// The default: the control plane's base URL, or nothing if that does not parse.
    pub fn for_control_plane(control_plane_url: &str) -> Self {
        Self::parse(&[control_plane_url]).unwrap_or_default()
    }

    /// Parses `url` and checks it against the prefixes.
    pub fn check(&self, url: &str) -> Result<reqwest::Url, UrlRefused> {
        let parsed = reqwest::Url::parse(url).map_err(|e| UrlRefused::Invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlRefused::Scheme);
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(UrlRefused::Userinfo);
        }
        if !self.allows(&parsed) {
            return Err(UrlRefused::NotAllowed(parsed.to_string()));
        }
        Ok(parsed)
    }

    /// Whether an already parsed URL (a redirect target) is allowed.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        url.username().is_empty()
            && url.password().is_none()
            && self.prefixes.iter().any(|p| p.matches(url))
    }
}

/// The settings file, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Node id.
    pub node_id: Option<String>,
    /// Address published in registration.
    pub node_address: Option<String>,
    /// Per-node secret (prefer `secret_file`).
    pub secret: Option<String>,
    /// File holding the per-node secret.
    pub secret_file: Option<PathBuf>,
    /// Engine address, like `DOCKER_HOST`.
    pub engine_host: Option<String>,
    /// Redis URL, `redis://` or `rediss://` (TLS), with the node's ACL user and password.
    pub redis_url: Option<String>,
    /// PEM file of the CA certificates that a `rediss://` server is checked against, instead of the system's roots.
    pub redis_ca_file: Option<PathBuf>,
    /// Control-plane base URL.
    pub control_plane_url: Option<String>,
    /// Private address ADB ports are bound to.
    pub adb_bind_address: Option<String>,
    /// `START-END`.
    pub port_range: Option<String>,
    /// Root of device data.
    pub data_root: Option<PathBuf>,
    /// Metrics listener, `host:port`.
    pub metrics_addr: Option<String>,
    /// Reconcile interval in ms.
    pub reconcile_interval_ms: Option<u64>,
    /// Desired-state pull interval in ms.
    pub desired_state_interval_ms: Option<u64>,
    /// Heartbeat interval in ms.
    pub heartbeat_interval_ms: Option<u64>,
    /// Grace before an undesired container is removed, ms.
    pub removal_grace_ms: Option<u64>,
    /// Boot timeout, ms.
    pub boot_timeout_ms: Option<u64>,
    /// Stop timeout, ms.
    pub stop_timeout_ms: Option<u64>,
    /// Parallel device actions.
    pub max_concurrency: Option<usize>,
    /// Most devices this node takes.
    pub max_devices: Option<u32>,
    /// GPU render nodes offered.
    pub gpus: Option<Vec<String>>,
    /// Node labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// URL prefixes `install_apk` may download from; default: `control_plane_url`.
    pub apk_url_prefixes: Option<Vec<String>>,
    /// Prefix of container names (default `cloudphone-`); only agents
    /// sharing one engine, as in tests, need another.
    pub container_name_prefix: Option<String>,
}

/// Flags and environment variables; each overrides the file.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "runtime-agent",
    version,
    about = "Runs the cloud phones of one host"
)]
pub struct Args {
    /// TOML config file.
    #[arg(long, env = "CLOUDPHONE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node id.
    #[arg(long, env = "CLOUDPHONE_NODE_ID")]
    pub node_id: Option<String>,
    /// Address published in registration.
    #[arg(long, env = "CLOUDPHONE_NODE_ADDRESS")]
    pub node_address: Option<String>,
    /// File with the per-node secret.
    #[arg(long, env = "CLOUDPHONE_NODE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Per-node secret (prefer the file; env only, never a flag, so it stays out of `ps`).
    #[arg(skip)]
    pub secret: Option<String>,
    /// Engine address, `unix:///run/docker.sock` or `tcp://host:2375`.
    #[arg(long, env = "DOCKER_HOST")]
    pub engine_host: Option<String>,
    /// Redis URL, `redis://` or `rediss://` (TLS); it carries the node's Redis
    /// password, so prefer the file or the environment to this flag.
    #[arg(long, env = "CLOUDPHONE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PEM file of the CA certificates trusted for a `rediss://` URL.
    #[arg(long, env = "CLOUDPHONE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Control-plane base URL.
    #[arg(long, env = "CLOUDPHONE_CONTROL_PLANE_URL")]
    pub control_plane_url: Option<String>,
    /// Private address ADB ports are bound to.
    #[arg(long, env = "CLOUDPHONE_ADB_BIND_ADDRESS")]
    pub adb_bind_address: Option<String>,
    /// ADB host port range `START-END`.
    #[arg(long, env = "CLOUDPHONE_PORT_RANGE")]
    pub port_range: Option<String>,
    /// Root of device data.
    #[arg(long, env = "CLOUDPHONE_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
    /// Metrics listener `host:port`.
    #[arg(long, env = "CLOUDPHONE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub node_id: NodeId,
    /// Address published in registration.
    pub node_address: String,
    /// Per-node secret.
    pub secret: NodeSecret,
    /// Engine address.
    pub engine_host: String,
    /// Redis URL (`redis://` or `rediss://`), used only to subscribe to this node's commands.
    pub redis_url: String,
    /// CA certificates (PEM) a `rediss://` server is checked against, in
    /// place of the system's roots.
    pub redis_ca_file: Option<PathBuf>,
    /// Control-plane base URL, without a trailing `/`.
    pub control_plane_url: String,
    /// Private address ADB ports are bound to.
    pub adb_bind_address: String,
    /// ADB host ports.
    pub port_range: PortRange,
    /// Root of device data.
    pub data_root: PathBuf,
    /// Metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Reconcile interval.
    pub reconcile_interval: Duration,
    /// Desired-state pull interval.
    pub desired_state_interval: Duration,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Grace before an undesired container is removed.
    pub removal_grace: Duration,
    /// How long a device may take to report `sys.boot_completed=1`.
    pub boot_timeout: Duration,
    /// How long a stop waits before killing.
    pub stop_timeout: Duration,
    /// Parallel device actions in one pass.
    pub max_concurrency: usize,
    /// Most devices this node takes.
    pub max_devices: u32,
    /// GPU render nodes offered.
    pub gpus: Vec<String>,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Largest accepted clock difference on signed messages.
    pub max_message_skew: Duration,
    /// Prefix of container names; only two agents sharing one engine (tests) need another.
    pub container_name_prefix: String,
    /// Where `install_apk` may download from.
    pub apk_url_policy: ApkUrlPolicy,
}

impl Config {
    /// Defaults for everything but identity, secret and URLs; tests start here.
    pub fn with_defaults(
        node_id: NodeId,
        secret: NodeSecret,
        redis_url: &str,
        control_plane_url: &str,
        data_root: &Path,
    ) -> Self {
        Self {
            node_id,
            node_address: "127.0.0.1".into(),
            secret,
            engine_host: "unix:///var/run/docker.sock".into(),
            redis_url: redis_url.into(),
            redis_ca_file: None,
            control_plane_url: control_plane_url.trim_end_matches('/').into(),
            adb_bind_address: "127.0.0.1".into(),
            port_range: PortRange {
                start: 40000,
                end: 40999,
            },
            data_root: data_root.into(),
            metrics_addr: None,
            reconcile_interval: Duration::from_secs(5),
            desired_state_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            removal_grace: Duration::from_secs(60),
            boot_timeout: Duration::from_secs(180),
            stop_timeout: Duration::from_secs(10),
            max_concurrency: 8,
            max_devices: 32,
            gpus: Vec::new(),
            labels: BTreeMap::new(),
            max_message_skew: Duration::from_secs(300),
            container_name_prefix: crate::spec::DEFAULT_NAME_PREFIX.to_owned(),
            apk_url_policy: ApkUrlPolicy::for_control_plane(control_plane_url),
        }
    }

    /// Merges file, env and flags.
    pub fn load(mut args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        if args.secret.is_none() {
            args.secret = std::env::var("CLOUDPHONE_NODE_SECRET").ok();
        }
        Self::merge(file, args)
    }

    /// Merges an already parsed file with flags.
    pub fn merge(file: FileConfig, args: Args) -> Result<Self, ConfigError> {
        let invalid = |name, message: String| ConfigError::Invalid { name, message };
        let node_id = args
            .node_id
            .or(file.node_id)
            .ok_or(ConfigError::Missing("node_id"))?;
        let node_id = NodeId::parse(&node_id).map_err(|e| invalid("node_id", e.to_string()))?;
        let secret = match (
            args.secret.or(file.secret),
            args.secret_file.or(file.secret_file),
        ) {
            (Some(s), _) => s.into_bytes(),
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::Read { path, source })?
                .trim()
                .as_bytes()
                .to_vec(),
            (None, None) => return Err(ConfigError::Missing("secret or secret_file")),
        };
        let secret = NodeSecret::new(secret).map_err(|e| invalid("secret", e.to_string()))?;
        let redis_url = args
            .redis_url
            .or(file.redis_url)
            .ok_or(ConfigError::Missing("redis_url"))?;
        let control_plane_url = args
            .control_plane_url
            .or(file.control_plane_url)
            .ok_or(ConfigError::Missing("control_plane_url"))?;
        let data_root = args
            .data_root
            .or(file.data_root)
            .unwrap_or_else(|| PathBuf::from("/var/lib/cloudphone"));
        let mut c =
            Self::with_defaults(node_id, secret, &redis_url, &control_plane_url, &data_root);
        if let Some(v) = args.node_address.or(file.node_address) {
            c.node_address = v;
        }
        if let Some(v) = args.engine_host.or(file.engine_host) {
            c.engine_host = v;
        }
        if let Some(v) = args.redis_ca_file.or(file.redis_ca_file) {
            // The redis crate takes a CA only for a TLS connection; refusing
            // here says so at start-up rather than on the first connection.
            if !c.redis_url.starts_with("rediss://") {
                return Err(invalid(
                    "redis_ca_file",
                    "is only used with a rediss:// redis_url".into(),
                ));
            }
            c.redis_ca_file = Some(v);
        }
        if let Some(v) = args.adb_bind_address.or(file.adb_bind_address) {
            v.parse::<std::net::IpAddr>()
                .map_err(|e| invalid("adb_bind_address", e.to_string()))?;
            c.adb_bind_address = v;
        }
        if let Some(v) = args.port_range.or(file.port_range) {
            c.port_range = PortRange::parse(&v)?;
        }
        if let Some(v) = args.metrics_addr.or(file.metrics_addr) {
            c.metrics_addr = Some(
                v.parse()
                    .map_err(|e| invalid("metrics_addr", format!("{e}")))?,
            );
        }
        let ms = Duration::from_millis;
        if let Some(v) = file.reconcile_interval_ms {
            c.reconcile_interval = ms(v.max(50));
        }
        if let Some(v) = file.desired_state_interval_ms {
            c.desired_state_interval = ms(v.max(100));
        }
        if let Some(v) = file.heartbeat_interval_ms {
            c.heartbeat_interval = ms(v.max(100));
        }
        if let Some(v) = file.removal_grace_ms {
            c.removal_grace = ms(v);
        }
        if let Some(v) = file.boot_timeout_ms {
            c.boot_timeout = ms(v);
        }
        if let Some(v) = file.stop_timeout_ms {
            c.stop_timeout = ms(v);
        }
        if let Some(v) = file.max_concurrency {
            c.max_concurrency = v.max(1);
        }
        if let Some(v) = file.max_devices {
            c.max_devices = v;
        }
        if let Some(v) = file.gpus {
            c.gpus = v;
        }
        if let Some(v) = file.labels {
            c.labels = v;
        }
        if let Some(v) = file.container_name_prefix {
            // A container name is [a-zA-Z0-9][a-zA-Z0-9_.-]*; the device id follows.
            let ok = v.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && v.len() <= 64
                && v.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch));
            if !ok {
                return Err(invalid(
                    "container_name_prefix",
                    "must be 1-64 of letters, digits, '_', '.', '-', starting with a letter or digit".into(),
                ));
            }
            c.container_name_prefix = v;
        }
        if let Some(v) = file.apk_url_prefixes {
            c.apk_url_policy = ApkUrlPolicy::parse(&v)?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_ranges_are_checked() {
        let file: FileConfig = toml::from_str(
            r#"
            node_id = "node-file"
            secret = "0123456789abcdef0123"
            redis_url = "redis://127.0.0.1/"
            control_plane_url = "http://cp/"
            port_range = "41000-41009"
            reconcile_interval_ms = 200
            "#,
        )
        .unwrap();
        let args = Args {
            node_id: Some("node-flag".into()),
            ..Default::default()
        };
        let c = Config::merge(file, args).unwrap();
        assert_eq!(c.node_id.as_str(), "node-flag");
        assert_eq!(c.port_range.len(), 10);
        assert_eq!(c.control_plane_url, "http://cp");
        assert_eq!(c.reconcile_interval, Duration::from_millis(200));
        assert!(PortRange::parse("5-4").is_err());
        assert!(PortRange::parse("abc").is_err());
    }

    fn policy(prefixes: &[&str]) -> ApkUrlPolicy {
        ApkUrlPolicy::parse(prefixes).unwrap()
    }

    #[test]
    fn apk_urls_are_allowed_only_under_a_configured_prefix() {
        let p = policy(&["https://cp.example/files", "http://10.0.0.3:3000/"]);
        assert!(p.check("https://cp.example/files/app.apk").is_ok());
        assert!(p.check("https://cp.example:443/files/a/b.apk?x=1").is_ok());
        assert!(p.check("http://10.0.0.3:3000/anything.apk").is_ok());
        let refused = |url: &str| p.check(url).unwrap_err();
        // Another host that merely starts with the same text.
        assert!(matches!(
            refused("https://cp.example.evil.com/files/a.apk"),
            UrlRefused::NotAllowed(_)
        ));
        // A path outside the prefix, also through dot segments or a name that only shares the text.
        assert!(matches!(
            refused("https://cp.example/admin"),
            UrlRefused::NotAllowed(_)
        ));
        assert!(matches!(
            refused("https://cp.example/files/../admin"),
            UrlRefused::NotAllowed(_)
        ));
        assert!(matches!(
            refused("https://cp.example/files/%2e%2e/admin"),
            UrlRefused::NotAllowed(_)
        ));
        assert!(matches!(
            refused("https://cp.example/filesystem.apk"),
            UrlRefused::NotAllowed(_)
        ));
        // Another scheme or port on the same host.
        assert!(matches!(
            refused("http://cp.example/files/a.apk"),
            UrlRefused::NotAllowed(_)
        ));
        assert!(matches!(
            refused("https://cp.example:8443/files/a.apk"),
            UrlRefused::NotAllowed(_)
        ));
        assert!(matches!(
            refused("http://10.0.0.3:3001/a.apk"),
            UrlRefused::NotAllowed(_)
        ));
        // The host network's usual targets.
        assert!(matches!(
            refused("http://169.254.169.254/latest/meta-data/"),
            UrlRefused::NotAllowed(_)
        ));
        assert!(matches!(
            refused("http://127.0.0.1:2375/containers/json"),
            UrlRefused::NotAllowed(_)
        ));
        // Credentials in the URL, even under an allowed prefix.
        assert_eq!(
            refused("https://user:pw@cp.example/files/a.apk"),
            UrlRefused::Userinfo
        );
        assert_eq!(
            refused("https://user@cp.example/files/a.apk"),
            UrlRefused::Userinfo
        );
        assert_eq!(refused("file:///etc/passwd"), UrlRefused::Scheme);
        assert!(matches!(refused("not a url"), UrlRefused::Invalid(_)));
        assert_eq!(
            refused("https://cp.example/admin").to_string(),
            "url https://cp.example/admin is not under an allowed apk download prefix (apk_url_prefixes)"
        );
    }

    #[test]
    fn apk_downloads_default_to_the_control_plane_and_bad_prefixes_are_refused() {
        let file: FileConfig = toml::from_str(
            "node_id = \"n\"\nsecret = \"0123456789abcdef0123\"\nredis_url = \"redis://x\"\ncontrol_plane_url = \"http://cp:3000/\"",
        )
        .unwrap();
        let c = Config::merge(file, Args::default()).unwrap();
        assert!(c.apk_url_policy.check("http://cp:3000/files/a.apk").is_ok());
        assert!(c
            .apk_url_policy
            .check("http://cp:3001/files/a.apk")
            .is_err());

        let with = |prefixes: &str| {
            let file: FileConfig = toml::from_str(&format!(
                "node_id = \"n\"\nsecret = \"0123456789abcdef0123\"\nredis_url = \"redis://x\"\ncontrol_plane_url = \"http://cp:3000\"\napk_url_prefixes = {prefixes}",
            ))
            .unwrap();
            Config::merge(file, Args::default())
        };
        let c = with(r#"["https://apks.example/"]"#).unwrap();
        assert!(c.apk_url_policy.check("https://apks.example/a.apk").is_ok());
        assert!(c.apk_url_policy.check("http://cp:3000/a.apk").is_err());
        // An empty list turns APK downloads off.
        let c = with("[]").unwrap();
        assert!(c.apk_url_policy.check("http://cp:3000/a.apk").is_err());
        for bad in [
            r#"["ftp://x/"]"#,
            r#"["https://u:p@x/"]"#,
            r#"["https://x/?q=1"]"#,
            r#"["x"]"#,
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid setting apk_url_prefixes: "),
                "{err}"
            );
        }
    }

    #[test]
    fn a_redis_ca_file_needs_a_tls_redis_url() {
        let with = |url: &str| {
            let file: FileConfig = toml::from_str(&format!(
                "node_id = \"n\"\nsecret = \"0123456789abcdef0123\"\ncontrol_plane_url = \"http://cp\"\nredis_url = \"{url}\"\nredis_ca_file = \"/etc/cloudphone/redis-ca.pem\"",
            ))
            .unwrap();
            Config::merge(file, Args::default())
        };
        let c = with("rediss://node-n:pw@redis.internal:6380/").unwrap();
        assert_eq!(
            c.redis_ca_file.as_deref(),
            Some(Path::new("/etc/cloudphone/redis-ca.pem"))
        );
        assert_eq!(
            with("redis://redis.internal/").unwrap_err().to_string(),
            "invalid setting redis_ca_file: is only used with a rediss:// redis_url"
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let file: FileConfig =
            toml::from_str(include_str!("../deploy/agent.example.toml")).unwrap();
        // The secret file of the example does not exist here; a secret from
        // the environment takes its place.
        let args = Args {
            secret: Some("0123456789abcdef0123".into()),
            ..Default::default()
        };
        let c = Config::merge(file, args).unwrap();
        assert!(c.redis_url.starts_with("rediss://node-host-17:"));
        assert!(c.redis_ca_file.is_some());
    }

    #[test]
    fn a_missing_secret_is_a_clear_error() {
        let file: FileConfig = toml::from_str(
            "node_id = \"n\"\nredis_url = \"redis://x\"\ncontrol_plane_url = \"http://cp\"",
        )
        .unwrap();
        let err = Config::merge(file, Args::default()).unwrap_err();
        assert_eq!(err.to_string(), "missing setting secret or secret_file");
    }
}
