//! Device templates: a spec and image, tags, the apps installed and the
//! system properties and commands applied at a device's first boot, and the
//! defaults of its lifecycle and snapshot policies. Parsed here whole, so that a stored
//! template is always one a device can be made from; `provision_plan` turns
//! one into the ordered steps the first boot runs.

use super::device_ops::{ApkUrl, Sha256Hex, ShellCommand, MAX_COMMAND_CHARS};
use super::snapshot_policy::{Policy, PolicyInput, MAX_PER_DEVICE};
use super::spec::{parse_tags, DeviceName, Spec, SpecInput};
use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most apps one template installs.
pub const MAX_APPS: usize = 20;
/// Most first-boot commands.
pub const MAX_COMMANDS: usize = 20;
/// Most system properties.
pub const MAX_PROPERTIES: usize = 64;
/// Shortest and longest lifecycle default, in seconds (one minute, one year).
pub const POLICY_SECS: (i32, i32) = (60, 366 * 24 * 3600);

/// Who sees a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Everyone (the platform's own; made by platform staff).
    Public,
    /// The tenant it was made in.
    Tenant,
    /// Its owner (a user without a tenant).
    Private,
}

impl Visibility {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Tenant => "tenant",
            Self::Private => "private",
        }
    }

    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Self::Public),
            "tenant" => Some(Self::Tenant),
            "private" => Some(Self::Private),
            _ => None,
        }
    }

    /// The visibility a caller's new template gets: `public` only for
    /// platform staff; otherwise the caller's tenant's, or their own when
    /// they have no tenant.
    pub fn for_caller(
        asked: Option<Self>,
        has_tenant: bool,
        platform_staff: bool,
    ) -> Result<Self, Error> {
        match (asked, has_tenant) {
            (Some(Self::Public), _) if platform_staff => Ok(Self::Public),
            (Some(Self::Public), _) => Err(Error::Forbidden(
                "only platform staff make public templates".into(),
            )),
            (Some(Self::Tenant), false) => Err(Error::Invalid(
                "visibility tenant needs a caller who belongs to a tenant".into(),
            )),
            (Some(Self::Private), true) => Err(Error::Invalid(
                "a tenant's templates are shared in the tenant: use visibility tenant".into(),
            )),
            (Some(v), _) => Ok(v),
            (None, true) => Ok(Self::Tenant),
            (None, false) => Ok(Self::Private),
        }
    }
}

/// An app installed at first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppInput {
    /// Where the node's agent downloads it (under its `apk_url_prefixes`).
    pub url: String,
    /// Its sha256.
    pub sha256: String,
}

/// A template as a request gives it (every field optional for PATCH; the
/// whole object, merged over the stored one, is parsed again).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Visibility (create only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    /// Tags given to its devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Apps installed at first boot, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preinstalled_apps: Option<Vec<AppInput>>,
    /// System properties set at first boot (`setprop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
    /// Shell commands run at first boot, after the apps and properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_commands: Option<Vec<String>>,
    /// Default lifetime of its devices (seconds from creation).
    #[serde(default, deserialize_with = "platform::input::nullable")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_lifetime_secs: Option<Option<i32>>,
    /// Default idle timeout of its devices.
    #[serde(default, deserialize_with = "platform::input::nullable")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_idle_timeout_secs: Option<Option<i32>>,
    /// Default longest session of its devices.
    #[serde(default, deserialize_with = "platform::input::nullable")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_max_session_secs: Option<Option<i32>>,
    /// The snapshot policy its devices get (as `PUT
    /// /devices/:id/snapshot-policy` takes it).
    #[serde(default, deserialize_with = "platform::input::nullable")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_snapshot_policy: Option<Option<serde_json::Value>>,
}

/// A category: 1-32 of `a-z0-9-_`.
pub fn category(raw: &str) -> Result<String, Error> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Error::Invalid(
            "category must be 1-32 of a-z, 0-9, '-', '_'".into(),
        ))
    }
}

/// A system property name as `setprop` takes it: 1-96 of letters, digits,
/// `.`, `_`, `-`, starting with a letter; `ro.` properties are refused
/// (they are set once, at boot, by Android itself).
fn property_name(k: &str) -> Result<(), Error> {
    let ok = !k.is_empty()
        && k.len() <= 96
        && k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(Error::Invalid(format!(
            "property {k:?} must be 1-96 of letters, digits, '.', '_', '-', starting with a letter"
        )));
    }
    if k.starts_with("ro.") {
        return Err(Error::Invalid(format!(
            "property {k:?} is read-only after boot: device identity is set through the device's identity settings"
        )));
    }
    Ok(())
}

/// A property value: at most 91 printable ASCII characters (Android's
/// limit), no single quote (it is quoted for the shell).
fn property_value(k: &str, v: &str) -> Result<(), Error> {
    if v.len() <= 91 && v.chars().all(|c| (' '..='~').contains(&c) && c != '\'') {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "property {k:?}: the value must be at most 91 printable ASCII characters without a single quote"
        )))
    }
}

fn policy_secs(field: &str, v: Option<Option<i32>>) -> Result<Option<i32>, Error> {
    match v.flatten() {
        Some(s) if !(POLICY_SECS.0..=POLICY_SECS.1).contains(&s) => Err(Error::Invalid(format!(
            "{field} must be from {} to {} seconds",
            POLICY_SECS.0, POLICY_SECS.1
        ))),
        s => Ok(s),
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Name.
    pub name: DeviceName,
    /// Free text, at most 500 characters.
    pub description: String,
    /// Category.
    pub category: String,
    /// The spec its devices get.
    pub spec: Spec,
    /// Tags its devices get.
    pub tags: Vec<String>,
    /// Apps installed at first boot.
    pub apps: Vec<(ApkUrl, Sha256Hex)>,
    /// Properties set at first boot.
    pub properties: BTreeMap<String, String>,
    /// Commands run at first boot.
    pub init_commands: Vec<ShellCommand>,
    /// Lifetime default (seconds).
    pub lifetime_secs: Option<i32>,
    /// Idle timeout default (seconds).
    pub idle_timeout_secs: Option<i32>,
    /// Longest session default (seconds).
    pub max_session_secs: Option<i32>,
    /// The snapshot policy its devices get.
    pub snapshot_policy: Option<Policy>,
}

impl TemplateInput {
    /// Overlays the fields `patch` gives.
    pub fn merged(mut self, patch: TemplateInput) -> Self {
        macro_rules! over {
            ($($f:ident),*) => { $( if patch.$f.is_some() { self.$f = patch.$f; } )* };
        }
        over!(
            name,
            description,
            category,
            visibility,
            spec,
            tags,
            preinstalled_apps,
            properties,
            init_commands,
            default_lifetime_secs,
            default_idle_timeout_secs,
            default_max_session_secs,
            default_snapshot_policy
        );
        self
    }

    /// The template, every rule checked.
    pub fn parse(&self) -> Result<Template, Error> {
        let name = DeviceName::parse(
            self.name
                .as_deref()
                .ok_or_else(|| Error::Invalid("name is required".into()))?,
        )?;
        let description = self.description.clone().unwrap_or_default();
        if description.chars().count() > 500
            || description
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
        {
            return Err(Error::Invalid(
                "description must be at most 500 characters".into(),
            ));
        }
        let spec_input: SpecInput = match &self.spec {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| Error::Invalid(format!("spec: {e}")))?,
            None => SpecInput::default(),
        };
        let apps_in = self.preinstalled_apps.clone().unwrap_or_default();
        if apps_in.len() > MAX_APPS {
            return Err(Error::Invalid(format!(
                "at most {MAX_APPS} preinstalled apps"
            )));
        }
        let apps = apps_in
            .iter()
            .map(|a| Ok((ApkUrl::parse(&a.url)?, Sha256Hex::parse(&a.sha256)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let properties = self.properties.clone().unwrap_or_default();
        if properties.len() > MAX_PROPERTIES {
            return Err(Error::Invalid(format!(
                "at most {MAX_PROPERTIES} properties"
            )));
        }
        for (k, v) in &properties {
            property_name(k)?;
            property_value(k, v)?;
        }
        let commands = self.init_commands.clone().unwrap_or_default();
        if commands.len() > MAX_COMMANDS {
            return Err(Error::Invalid(format!(
                "at most {MAX_COMMANDS} init commands"
            )));
        }
        Ok(Template {
            name,
            description: description.trim().to_string(),
            category: category(self.category.as_deref().unwrap_or("general"))?,
            spec: spec_input.parse()?,
            tags: parse_tags(&self.tags.clone().unwrap_or_default())?,
            apps,
            properties,
            init_commands: commands
                .iter()
                .map(|c| ShellCommand::parse(c))
                .collect::<Result<_, _>>()?,
            lifetime_secs: policy_secs("default_lifetime_secs", self.default_lifetime_secs)?,
            idle_timeout_secs: policy_secs(
                "default_idle_timeout_secs",
                self.default_idle_timeout_secs,
            )?,
            max_session_secs: policy_secs(
                "default_max_session_secs",
                self.default_max_session_secs,
            )?,
            snapshot_policy: match self.default_snapshot_policy.clone().flatten() {
                None => None,
                Some(v) => Some(
                    serde_json::from_value::<PolicyInput>(v)
                        .map_err(|e| Error::Invalid(format!("default_snapshot_policy: {e}")))?
                        .parse(i64::from(POLICY_SECS.0), MAX_PER_DEVICE)?,
                ),
            },
        })
    }
}

/// One step of a device's first boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `install_apk` or `shell`.
    pub kind: &'static str,
    /// Its input: `{url, sha256}` or `{command}`.
    pub input: serde_json::Value,
}

impl Template {
    /// What a device made from it does at its first boot, in order: install
    /// each app, set the properties (one `setprop` command), run each
    /// command.
    pub fn provision_plan(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .apps
            .iter()
            .map(|(url, sha)| Step {
                kind: "install_apk",
                input: serde_json::json!({"url": url.as_str(), "sha256": sha.as_str()}),
            })
            .collect();
        // As few `setprop` commands as fit the shell command's limit.
        let mut command = String::new();
        for (k, v) in &self.properties {
            let one = format!("setprop {k} '{v}'");
            if !command.is_empty() && command.len() + 4 + one.len() > MAX_COMMAND_CHARS {
                steps.push(Step {
                    kind: "shell",
                    input: serde_json::json!({"command": std::mem::take(&mut command)}),
                });
            }
            if !command.is_empty() {
                command.push_str(" && ");
            }
            command.push_str(&one);
        }
        if !command.is_empty() {
            steps.push(Step {
                kind: "shell",
                input: serde_json::json!({"command": command}),
            });
        }
        steps.extend(self.init_commands.iter().map(|c| Step {
            kind: "shell",
            input: serde_json::json!({"command": c.as_str()}),
        }));
        steps
    }

    /// The stored form of the first-boot settings and policy defaults, as
    /// the API shows them.
    pub fn apps_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.apps
                .iter()
                .map(|(u, s)| serde_json::json!({"url": u.as_str(), "sha256": s.as_str()}))
                .collect(),
        )
    }

    /// The init commands as stored.
    pub fn commands_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.init_commands
                .iter()
                .map(|c| serde_json::Value::String(c.as_str().to_string()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: serde_json::Value) -> TemplateInput {
        serde_json::from_value(v).unwrap()
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_template_parses_with_defaults_and_plans_apps_then_properties_then_commands() {
        let t = input(serde_json::json!({
            "name": "qa base",
            "spec": {"cpu_cores": 4},
            "tags": ["qa"],
            "preinstalled_apps": [{"url": "https://cp.example/apks/a.apk", "sha256": SHA}],
            "properties": {"persist.sys.timezone": "Asia/Shanghai", "debug.qa": "on"},
            "init_commands": ["echo ready > /data/local/tmp/ready"],
            "default_idle_timeout_secs": 600
        }))
        .parse()
        .unwrap();
        assert_eq!(t.category, "general");
        assert_eq!(t.spec.cpu_cores, 4);
        assert_eq!(t.idle_timeout_secs, Some(600));
        let plan = t.provision_plan();
        assert_eq!(
            plan.iter().map(|s| s.kind).collect::<Vec<_>>(),
            ["install_apk", "shell", "shell"]
        );
        assert_eq!(
            plan[1].input["command"],
            "setprop debug.qa 'on' && setprop persist.sys.timezone 'Asia/Shanghai'"
        );
        assert_eq!(
            plan[2].input["command"],
            "echo ready > /data/local/tmp/ready"
        );
    }

    #[test]
    fn many_long_properties_become_several_commands_each_within_the_limit() {
        let properties: serde_json::Map<String, serde_json::Value> = (0..MAX_PROPERTIES)
            .map(|i| {
                (
                    format!("persist.qa.{i:02}.{}", "p".repeat(80)),
                    serde_json::json!("v".repeat(91)),
                )
            })
            .collect();
        let t = input(serde_json::json!({"name": "t", "properties": properties}))
            .parse()
            .unwrap();
        let plan = t.provision_plan();
        assert!(plan.len() > 1);
        let mut set = 0;
        for s in &plan {
            let c = s.input["command"].as_str().unwrap();
            assert!(ShellCommand::parse(c).is_ok(), "{} characters", c.len());
            set += c.matches("setprop ").count();
        }
        assert_eq!(set, MAX_PROPERTIES);
    }

    #[test]
    fn every_rule_refuses_bad_input() {
        let bad = |v: serde_json::Value| {
            serde_json::from_value::<TemplateInput>(v)
                .map_err(|e| e.to_string())
                .and_then(|i| i.parse().map_err(|e| format!("{e:?}")))
                .unwrap_err()
        };
        assert!(bad(serde_json::json!({})).contains("name"));
        assert!(bad(serde_json::json!({"name": "x/y"})).contains("name"));
        assert!(bad(serde_json::json!({"name": "t", "category": "Games!"})).contains("category"));
        assert!(
            bad(serde_json::json!({"name": "t", "spec": {"cpu_cores": 0}})).contains("cpu_cores")
        );
        assert!(bad(serde_json::json!({"name": "t", "spec": {"bogus": 1}})).contains("spec"));
        assert!(bad(serde_json::json!({"name": "t", "preinstalled_apps": [{"url": "ftp://x/a.apk", "sha256": SHA}]})).contains("url"));
        assert!(bad(serde_json::json!({"name": "t", "preinstalled_apps": [{"url": "https://x/a.apk", "sha256": "abc"}]})).contains("sha256"));
        assert!(
            bad(serde_json::json!({"name": "t", "properties": {"ro.product.model": "x"}}))
                .contains("read-only")
        );
        assert!(
            bad(serde_json::json!({"name": "t", "properties": {"a b": "x"}})).contains("property")
        );
        assert!(
            bad(serde_json::json!({"name": "t", "properties": {"debug.x": "it's"}}))
                .contains("single quote")
        );
        assert!(bad(serde_json::json!({"name": "t", "init_commands": [" "]})).contains("command"));
        assert!(
            bad(serde_json::json!({"name": "t", "default_lifetime_secs": 5}))
                .contains("default_lifetime_secs")
        );
        assert!(bad(serde_json::json!({"name": "t", "colour": "red"})).contains("unknown field"));
        let many: Vec<_> = (0..=MAX_APPS)
            .map(|_| serde_json::json!({"url": "https://x/a.apk", "sha256": SHA}))
            .collect();
        assert!(
            bad(serde_json::json!({"name": "t", "preinstalled_apps": many})).contains("at most")
        );
    }

    #[test]
    fn a_patch_overlays_only_what_it_gives_and_null_clears_a_default() {
        let stored = input(
            serde_json::json!({"name": "a", "category": "games", "default_idle_timeout_secs": 600}),
        );
        let merged = stored.merged(input(
            serde_json::json!({"description": "new", "default_idle_timeout_secs": null}),
        ));
        let t = merged.parse().unwrap();
        assert_eq!(
            (t.name.as_str(), t.category.as_str(), t.description.as_str()),
            ("a", "games", "new")
        );
        assert_eq!(t.idle_timeout_secs, None);
    }

    #[test]
    fn visibility_follows_who_makes_the_template() {
        use Visibility::*;
        assert_eq!(Visibility::for_caller(None, true, false).unwrap(), Tenant);
        assert_eq!(Visibility::for_caller(None, false, false).unwrap(), Private);
        assert_eq!(
            Visibility::for_caller(Some(Public), false, true).unwrap(),
            Public
        );
        assert!(Visibility::for_caller(Some(Public), true, false).is_err());
        assert!(Visibility::for_caller(Some(Tenant), false, true).is_err());
        assert!(Visibility::for_caller(Some(Private), true, false).is_err());
    }
}
