//! The subset of Spin's application manifest (`spin_manifest_version = 2`) that
//! this host runs, parsed with the same field names and rules as Spin.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed and checked `spin.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Directory of the manifest: component sources are relative to it.
    pub dir: PathBuf,
    /// `[application] name`.
    pub name: String,
    /// `[application.trigger.redis] address`, a template.
    pub redis_address: Option<String>,
    /// Application variables, by name.
    pub variables: BTreeMap<String, VariableDecl>,
    /// `[[trigger.http]]` entries.
    pub http: Vec<HttpTrigger>,
    /// `[[trigger.redis]]` entries.
    pub redis: Vec<RedisTrigger>,
    /// `[[trigger.cron]]` entries.
    pub cron: Vec<CronTrigger>,
    /// Components, by id.
    pub components: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    authors: Vec<String>,
    #[serde(default)]
    trigger: RawAppTriggers,
}

#[derive(Debug, Default, Deserialize)]
struct RawAppTriggers {
    redis: Option<RawRedisAppConfig>,
}

#[derive(Debug, Deserialize)]
struct RawRedisAppConfig {
    address: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
    #[serde(default)]
    redis: Vec<RedisTrigger>,
    #[serde(default)]
    cron: Vec<CronTrigger>,
}

/// An application variable: either it has a default or it is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    /// Value used when no provider supplies one.
    pub default: Option<String>,
    /// The app refuses to start without a value.
    #[serde(default)]
    pub required: bool,
    /// The value is never logged (this host logs no variable values at all).
    #[serde(default)]
    #[allow(dead_code)]
    pub secret: bool,
}

/// `[[trigger.http]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    /// The route, or `{ private = true }` for a component reachable only by chaining.
    pub route: RouteDecl,
    /// Component id.
    pub component: String,
    /// Accepted for compatibility; this host runs every component the same way.
    #[serde(default)]
    #[allow(dead_code)]
    pub executor: Option<toml::Value>,
}

/// The `route` of an HTTP trigger.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteDecl {
    /// A public route such as `/api/v1/auth/...`.
    Path(String),
    /// `{ private = true }`.
    Private {
        /// Must be true.
        private: bool,
    },
}

/// `[[trigger.redis]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTrigger {
    /// Channel to subscribe to.
    pub channel: String,
    /// Component id.
    pub component: String,
    /// Overrides the application's Redis address; a template.
    pub address: Option<String>,
}

/// `[[trigger.cron]]`, as the cron trigger plugin reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// Component id.
    pub component: String,
    /// Seconds-first cron expression: `sec min hour dom month dow [year]`.
    pub cron_expression: String,
}

/// `[component.<id>]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ComponentDecl {
    /// Path of the `.wasm` file, relative to the manifest.
    pub source: String,
    /// Hosts the component may connect to.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables: templates over application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Environment variables of the guest.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Accepted for compatibility (`spin build` uses it).
    #[serde(default)]
    #[allow(dead_code)]
    pub build: Option<toml::Value>,
    /// Accepted for compatibility.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
}

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, dir)
    }

    /// Parses and checks manifest text.
    pub fn parse(text: &str, dir: PathBuf) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text).context("invalid spin.toml")?;
        if raw.spin_manifest_version != 2 {
            bail!("only spin_manifest_version = 2 is supported");
        }
        for (name, decl) in &raw.variables {
            check_variable_name(name)?;
            if decl.required && decl.default.is_some() {
                bail!("variable {name:?} cannot be both required and have a default");
            }
            if !decl.required && decl.default.is_none() {
                bail!("variable {name:?} must either be required or have a default");
            }
        }
        for (id, c) in &raw.component {
            check_component_id(id)?;
            for name in c.variables.keys() {
                check_variable_name(name)?;
            }
        }
        let known = |id: &str| -> Result<()> {
            if raw.component.contains_key(id) {
                Ok(())
            } else {
                bail!("trigger refers to unknown component {id:?}")
            }
        };
        let mut seen_routes = std::collections::HashSet::new();
        for t in &raw.trigger.http {
            known(&t.component)?;
            match &t.route {
                RouteDecl::Path(p) => {
                    if !p.starts_with('/') {
                        bail!("route {p:?} must start with '/'");
                    }
                    if p.starts_with("/.well-known/spin") {
                        bail!("route {p:?} is reserved by spin");
                    }
                    if !seen_routes.insert(p.clone()) {
                        bail!("duplicate route {p:?}");
                    }
                }
                RouteDecl::Private { private } => {
                    if !private {
                        bail!("route table for {:?} must set private = true", t.component);
                    }
                }
            }
        }
        for t in &raw.trigger.redis {
            known(&t.component)?;
            if t.address.is_none() && raw.application.trigger.redis.is_none() {
                bail!(
                    "redis trigger for {:?} has no address and [application.trigger.redis] sets none",
                    t.component
                );
            }
        }
        for t in &raw.trigger.cron {
            known(&t.component)?;
        }
        // Spin's host requirements: a component that lists a `*.spin.internal`
        // host requires local service chaining, which only the HTTP trigger
        // supports; the Redis and cron triggers refuse to start such an app.
        let needs_chaining = |id: &str| {
            raw.component.get(id).is_some_and(|c| {
                c.allowed_outbound_hosts
                    .iter()
                    .any(|h| is_service_chaining_host(h))
            })
        };
        for (kind, components) in [
            (
                "redis",
                raw.trigger
                    .redis
                    .iter()
                    .map(|t| t.component.as_str())
                    .collect::<Vec<_>>(),
            ),
            (
                "cron",
                raw.trigger
                    .cron
                    .iter()
                    .map(|t| t.component.as_str())
                    .collect(),
            ),
        ] {
            if components.into_iter().any(needs_chaining) {
                bail!(
                    "This application requires the following features that are not available in this version of the '{kind}' trigger: local_service_chaining"
                );
            }
        }
        Ok(Self {
            dir,
            name: raw.application.name,
            redis_address: raw.application.trigger.redis.map(|r| r.address),
            variables: raw.variables,
            http: raw.trigger.http,
            redis: raw.trigger.redis,
            cron: raw.trigger.cron,
            components: raw.component,
        })
    }
}

/// Whether an `allowed_outbound_hosts` entry names a service-chaining host
/// (`http://<component>.spin.internal`, or the wildcard `*.spin.internal`).
pub fn is_service_chaining_host(entry: &str) -> bool {
    let rest = entry.split_once("://").map_or(entry, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    host.ends_with(".spin.internal")
}

/// Spin's rule for variable names: lower-case ASCII letters, digits and
/// underscores, starting with a letter.
pub fn check_variable_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        bail!("invalid variable name {name:?}: use lower-case letters, digits and '_'")
    }
}

fn check_component_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        bail!("invalid component id {id:?}: use kebab-case")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "x"
[application.trigger.redis]
address = "redis://{{ redis_host }}"
[variables]
redis_host = { default = "127.0.0.1" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/a/..."
component = "a"
[[trigger.http]]
route = { private = true }
component = "b"
[[trigger.redis]]
channel = "events"
component = "a"
[[trigger.cron]]
component = "b"
cron_expression = "*/2 * * * * *"
[component.a]
source = "a.wasm"
allowed_outbound_hosts = ["redis://{{ redis_host }}"]
[component.a.variables]
token = "{{ token }}"
[component.b]
source = "b.wasm"
"#;

    #[test]
    fn parses_triggers_components_and_variables() {
        let m = Manifest::parse(MINIMAL, PathBuf::from(".")).unwrap();
        assert_eq!(m.http.len(), 2);
        assert_eq!(m.redis[0].channel, "events");
        assert_eq!(m.cron[0].cron_expression, "*/2 * * * * *");
        assert!(m.variables["token"].secret);
        assert_eq!(m.components["a"].variables["token"], "{{ token }}");
    }

    #[test]
    fn redis_and_cron_components_that_need_service_chaining_are_refused_as_spin_refuses_them() {
        let chained_redis = MINIMAL.replace(
            "allowed_outbound_hosts = [\"redis://{{ redis_host }}\"]",
            "allowed_outbound_hosts = [\"redis://{{ redis_host }}\", \"http://b.spin.internal\"]",
        );
        let e = Manifest::parse(&chained_redis, PathBuf::from(".")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "This application requires the following features that are not available in this version of the 'redis' trigger: local_service_chaining"
        );
        let chained_cron = MINIMAL.replace(
            "source = \"b.wasm\"",
            "source = \"b.wasm\"\nallowed_outbound_hosts = [\"http://*.spin.internal\"]",
        );
        let e = Manifest::parse(&chained_cron, PathBuf::from(".")).unwrap_err();
        assert!(e
            .to_string()
            .contains("'cron' trigger: local_service_chaining"));
        assert!(is_service_chaining_host("http://user.spin.internal"));
        assert!(is_service_chaining_host("https://x.spin.internal:443/"));
        assert!(!is_service_chaining_host("postgres://{{ db_host }}:5432"));
        assert!(!is_service_chaining_host(
            "http://spin.internal.example.com"
        ));
    }

    #[test]
    fn rejects_unknown_component_duplicate_route_and_bad_names() {
        let bad = MINIMAL.replace("component = \"b\"\ncron", "component = \"zz\"\ncron");
        assert!(Manifest::parse(&bad, PathBuf::from(".")).is_err());
        let dup = MINIMAL.replace("route = { private = true }", "route = \"/a/...\"");
        assert!(Manifest::parse(&dup, PathBuf::from(".")).is_err());
        assert!(check_variable_name("Token").is_err());
        assert!(check_variable_name("db_url2").is_ok());
        assert!(check_component_id("a_b").is_err());
    }
}
