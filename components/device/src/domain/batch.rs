//! Batch operations: one action over many devices, or N creates from a
//! template, parsed whole before anything is recorded. Which permission
//! each action needs, how many run at once, and the names of created
//! devices are decided here.

use super::device_ops::{timeout_ms, ApkUrl, Sha256Hex, ShellCommand};
use super::spec::DeviceName;
use super::status::Action;
use crate::error::Error;
use serde::Deserialize;
use uuid::Uuid;

/// Most devices one batch acts on.
pub const MAX_ITEMS: usize = 1000;
/// Most items of one batch running at once.
pub const MAX_CONCURRENCY: i32 = 100;
/// Items running at once when the request does not say.
pub const DEFAULT_CONCURRENCY: i32 = 10;

/// What a batch does to each device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchAction {
    /// Make a device from a template.
    Create,
    /// A lifecycle action.
    Lifecycle(Action),
    /// Install an APK.
    InstallApk,
    /// Run a shell command.
    Shell,
}

impl BatchAction {
    /// Parses the request's `action`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "create" => Self::Create,
            "start" => Self::Lifecycle(Action::Start),
            "stop" => Self::Lifecycle(Action::Stop),
            "restart" => Self::Lifecycle(Action::Restart),
            "delete" => Self::Lifecycle(Action::Delete),
            "install_apk" => Self::InstallApk,
            "shell" => Self::Shell,
            _ => {
                return Err(Error::Invalid(
                    "action must be create, start, stop, restart, delete, install_apk or shell"
                        .into(),
                ))
            }
        })
    }

    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Lifecycle(a) => a.kind(),
            Self::InstallApk => "install_apk",
            Self::Shell => "shell",
        }
    }

    /// The permission the same action on one device needs.
    pub fn permission(self) -> &'static str {
        match self {
            Self::Create => "device:create",
            Self::Lifecycle(Action::Delete) => "device:delete",
            Self::Lifecycle(_) | Self::InstallApk => "device:control",
            Self::Shell => "device:shell",
        }
    }
}

/// Which devices a batch acts on, as a request gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    /// A tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// An observed status.
    #[serde(default)]
    pub status: Option<String>,
    /// A substring of the name.
    #[serde(default)]
    pub q: Option<String>,
}

/// A batch request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// The action.
    pub action: String,
    /// The devices, by id.
    #[serde(default)]
    pub device_ids: Option<Vec<String>>,
    /// Or the devices a filter finds (within the caller's data scope).
    #[serde(default)]
    pub filter: Option<FilterInput>,
    /// Create: how many.
    #[serde(default)]
    pub count: Option<i32>,
    /// Create: from which template.
    #[serde(default)]
    pub template_id: Option<String>,
    /// Create: names are `<prefix>-1`, `<prefix>-2`, ...
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// Create: whether the devices start (default true).
    #[serde(default)]
    pub start: Option<bool>,
    /// install_apk: where from.
    #[serde(default)]
    pub url: Option<String>,
    /// install_apk: its digest.
    #[serde(default)]
    pub sha256: Option<String>,
    /// shell: the command.
    #[serde(default)]
    pub command: Option<String>,
    /// shell: its timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Items running at once (1-100, default 10).
    #[serde(default)]
    pub concurrency: Option<i32>,
}

/// The devices of a parsed batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// `count` new devices from a template.
    Create {
        /// How many.
        count: i32,
        /// The template.
        template: Uuid,
        /// Name prefix.
        prefix: String,
        /// Whether they start.
        start: bool,
    },
    /// These devices (deduplicated, in the request's order).
    Ids(Vec<Uuid>),
    /// The devices a filter finds.
    Filter(FilterInput),
}

/// A parsed batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The action.
    pub action: BatchAction,
    /// Its devices.
    pub targets: Targets,
    /// The action's input, as stored (`{url, sha256}`, `{command,
    /// timeout_ms}`, or for create `{template_id, name_prefix, start}`).
    pub input: serde_json::Value,
    /// Items running at once.
    pub concurrency: i32,
}

/// The name of a batch's `n`th device (from 1).
pub fn item_name(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n}")
}

impl BatchInput {
    /// The batch, every rule checked.
    pub fn parse(self) -> Result<Batch, Error> {
        let action = BatchAction::parse(&self.action)?;
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Error::Invalid(format!(
                "concurrency must be from 1 to {MAX_CONCURRENCY}"
            )));
        }
        let create_only = self.count.is_some()
            || self.template_id.is_some()
            || self.name_prefix.is_some()
            || self.start.is_some();
        let (targets, input) = if action == BatchAction::Create {
            if self.device_ids.is_some() || self.filter.is_some() {
                return Err(Error::Invalid(
                    "a create batch makes new devices: give count and template_id, not devices"
                        .into(),
                ));
            }
            let count = self
                .count
                .filter(|c| (1..=MAX_ITEMS as i32).contains(c))
                .ok_or_else(|| Error::Invalid(format!("count must be from 1 to {MAX_ITEMS}")))?;
            let template = self
                .template_id
                .as_deref()
                .and_then(|t| Uuid::parse_str(t).ok())
                .ok_or_else(|| Error::Invalid("template_id must be a template's UUID".into()))?;
            let prefix = self.name_prefix.unwrap_or_else(|| "device".into());
            // The longest name the batch makes must be a device name.
            DeviceName::parse(&item_name(&prefix, count as usize)).map_err(|_| {
                Error::Invalid(
                    "name_prefix must be 1-58 letters, digits, spaces, '-', '_' or '.'".into(),
                )
            })?;
            let start = self.start.unwrap_or(true);
            let input =
                serde_json::json!({"template_id": template, "name_prefix": prefix, "start": start});
            (
                Targets::Create {
                    count,
                    template,
                    prefix,
                    start,
                },
                input,
            )
        } else {
            if create_only {
                return Err(Error::Invalid(
                    "count, template_id, name_prefix and start are for create batches".into(),
                ));
            }
            let targets = match (self.device_ids, self.filter) {
                (Some(ids), None) => {
                    if ids.is_empty() || ids.len() > MAX_ITEMS {
                        return Err(Error::Invalid(format!(
                            "device_ids must hold 1 to {MAX_ITEMS} ids"
                        )));
                    }
                    let mut out = Vec::with_capacity(ids.len());
                    for raw in &ids {
                        let id = Uuid::parse_str(raw).map_err(|_| {
                            Error::Invalid(format!("device_ids: {raw:?} is not a UUID"))
                        })?;
                        if !out.contains(&id) {
                            out.push(id);
                        }
                    }
                    Targets::Ids(out)
                }
                (None, Some(f)) => Targets::Filter(f),
                _ => return Err(Error::Invalid("give either device_ids or a filter".into())),
            };
            let input = match action {
                BatchAction::InstallApk => {
                    let url = ApkUrl::parse(self.url.as_deref().unwrap_or_default())?;
                    let sha = Sha256Hex::parse(self.sha256.as_deref().unwrap_or_default())?;
                    serde_json::json!({"url": url.as_str(), "sha256": sha.as_str()})
                }
                BatchAction::Shell => {
                    let command = ShellCommand::parse(self.command.as_deref().unwrap_or_default())?;
                    let timeout = timeout_ms(self.timeout_ms)?;
                    serde_json::json!({"command": command.as_str(), "timeout_ms": timeout})
                }
                _ => serde_json::json!({}),
            };
            let stray = match action {
                BatchAction::InstallApk => self.command.is_some() || self.timeout_ms.is_some(),
                BatchAction::Shell => self.url.is_some() || self.sha256.is_some(),
                _ => {
                    self.url.is_some()
                        || self.sha256.is_some()
                        || self.command.is_some()
                        || self.timeout_ms.is_some()
                }
            };
            if stray {
                return Err(Error::Invalid(format!(
                    "fields given that a {} batch does not take",
                    action.as_str()
                )));
            }
            (targets, input)
        };
        Ok(Batch {
            action,
            targets,
            input,
            concurrency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Batch, String> {
        serde_json::from_value::<BatchInput>(v)
            .map_err(|e| e.to_string())
            .and_then(|b| b.parse().map_err(|e| format!("{e:?}")))
    }

    #[test]
    fn a_create_batch_names_its_devices_and_needs_a_template_and_a_count() {
        let t = Uuid::new_v4();
        let b = parse(serde_json::json!({"action": "create", "count": 20, "template_id": t, "name_prefix": "qa"})).unwrap();
        assert_eq!(
            b.targets,
            Targets::Create {
                count: 20,
                template: t,
                prefix: "qa".into(),
                start: true
            }
        );
        assert_eq!(
            (b.concurrency, b.action.permission()),
            (10, "device:create")
        );
        assert_eq!(item_name("qa", 3), "qa-3");
        assert!(
            parse(serde_json::json!({"action": "create", "template_id": t}))
                .unwrap_err()
                .contains("count")
        );
        assert!(
            parse(serde_json::json!({"action": "create", "count": 1001, "template_id": t}))
                .unwrap_err()
                .contains("count")
        );
        assert!(parse(serde_json::json!({"action": "create", "count": 2}))
            .unwrap_err()
            .contains("template_id"));
        assert!(parse(serde_json::json!({"action": "create", "count": 2, "template_id": t, "name_prefix": "a/b"})).unwrap_err().contains("name_prefix"));
        assert!(parse(
            serde_json::json!({"action": "create", "count": 2, "template_id": t, "device_ids": []})
        )
        .unwrap_err()
        .contains("not devices"));
    }

    #[test]
    fn a_batch_over_devices_takes_ids_or_a_filter_and_only_its_actions_input() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let got =
            parse(serde_json::json!({"action": "stop", "device_ids": [a, b, a], "concurrency": 5}))
                .unwrap();
        assert_eq!(got.targets, Targets::Ids(vec![a, b]));
        assert_eq!(
            (
                got.action.as_str(),
                got.action.permission(),
                got.concurrency
            ),
            ("stop", "device:control", 5)
        );
        assert_eq!(
            parse(serde_json::json!({"action": "delete", "filter": {"tag": "qa"}}))
                .unwrap()
                .action
                .permission(),
            "device:delete"
        );
        assert_eq!(
            parse(serde_json::json!({"action": "shell", "filter": {}, "command": "id"}))
                .unwrap()
                .action
                .permission(),
            "device:shell"
        );
        for (bad, says) in [
            (
                serde_json::json!({"action": "reboot", "device_ids": [a]}),
                "action",
            ),
            (serde_json::json!({"action": "stop"}), "either"),
            (
                serde_json::json!({"action": "stop", "device_ids": [a], "filter": {}}),
                "either",
            ),
            (
                serde_json::json!({"action": "stop", "device_ids": []}),
                "device_ids",
            ),
            (
                serde_json::json!({"action": "stop", "device_ids": ["x"]}),
                "UUID",
            ),
            (
                serde_json::json!({"action": "stop", "device_ids": [a], "concurrency": 0}),
                "concurrency",
            ),
            (
                serde_json::json!({"action": "stop", "device_ids": [a], "count": 3}),
                "create batches",
            ),
            (
                serde_json::json!({"action": "stop", "device_ids": [a], "command": "id"}),
                "does not take",
            ),
            (
                serde_json::json!({"action": "shell", "device_ids": [a]}),
                "command",
            ),
            (
                serde_json::json!({"action": "install_apk", "device_ids": [a], "url": "ftp://x"}),
                "url",
            ),
            (
                serde_json::json!({"action": "stop", "filter": {"colour": 1}}),
                "unknown field",
            ),
        ] {
            let e = parse(bad.clone()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
