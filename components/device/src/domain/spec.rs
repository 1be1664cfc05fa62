//! What a device is made of, parsed at the edge: its name, its tags and its
//! spec (CPU, memory, storage, display, Android image, GPU). Ranges are the
//! runtime agent's (docs/agent-protocol.md), so a device the API accepts is
//! one every agent can run; the caller's own limits (quota) are checked by
//! `user` when the resources are reserved.

use super::identity::{Identity, Network};
use crate::error::Error;
use serde::{Deserialize, Serialize};

/// A device's name: 1-64 characters, letters, digits, space, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DeviceName(String);

impl DeviceName {
    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let s = raw.trim();
        let ok = !s.is_empty()
            && s.chars().count() <= 64
            && s.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::Invalid(
                "name must be 1-64 letters, digits, spaces, '-', '_' or '.'".into(),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tags: at most 20, each 1-32 of `a-z0-9-_:.`.
pub fn parse_tags(raw: &[String]) -> Result<Vec<String>, Error> {
    if raw.len() > 20 {
        return Err(Error::Invalid("at most 20 tags".into()));
    }
    let mut tags = Vec::with_capacity(raw.len());
    for t in raw {
        let ok = !t.is_empty()
            && t.len() <= 32
            && t.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | ':' | '.')
            });
        if !ok {
            return Err(Error::Invalid(format!(
                "tag {t:?} must be 1-32 of a-z, 0-9, '-', '_', ':', '.'"
            )));
        }
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags.sort();
    Ok(tags)
}

/// GPU use of a device (redroid's `androidboot.redroid_gpu_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuMode {
    /// Software rendering in the guest; needs no GPU.
    Guest,
    /// The host's GPU (a GPU slot on the node).
    Host,
    /// redroid decides; counts as needing a GPU slot.
    Auto,
}

/// The display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Display {
    /// Pixels, 120-7680.
    pub width: i32,
    /// Pixels, 120-7680.
    pub height: i32,
    /// Dots per inch, 72-960.
    pub dpi: i32,
    /// Frames per second, 1-240.
    pub fps: i32,
}

/// A validated device spec, as stored and as sent to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Whole CPU cores, 1-64.
    pub cpu_cores: i32,
    /// Memory in MiB, 512-65536.
    pub memory_mb: i32,
    /// Storage in GiB, 2-512.
    pub storage_gb: i32,
    /// The display.
    pub display: Display,
    /// Android version, e.g. `14`.
    pub android_version: String,
    /// The container image.
    pub image: String,
    /// GPU use.
    pub gpu_mode: GpuMode,
    /// The Android properties it reports (absent: the image's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Its proxy and DNS servers (absent: the host's network as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// Android versions and their redroid images (the catalogue an operator
/// configures later lives in templates; these are the built-in defaults).
pub const ANDROID_IMAGES: &[(&str, &str)] = &[
    ("11", "redroid/redroid:11.0.0-latest"),
    ("12", "redroid/redroid:12.0.0-latest"),
    ("13", "redroid/redroid:13.0.0-latest"),
    ("14", "redroid/redroid:14.0.0-latest"),
];

/// A spec as a request gives it: every field optional, defaults below.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecInput {
    cpu_cores: Option<i32>,
    memory_mb: Option<i32>,
    storage_gb: Option<i32>,
    display: Option<Display>,
    android_version: Option<String>,
    image: Option<String>,
    gpu_mode: Option<GpuMode>,
    identity: Option<serde_json::Value>,
    network: Option<serde_json::Value>,
}

fn in_range(name: &str, v: i32, lo: i32, hi: i32) -> Result<i32, Error> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Error::Invalid(format!("{name} must be from {lo} to {hi}")))
    }
}

impl SpecInput {
    /// The spec, with defaults: 2 cores, 4096 MiB, 16 GiB, 720×1280 at 320
    /// dpi and 30 fps, Android 14, guest GPU.
    pub fn parse(self) -> Result<Spec, Error> {
        let display = self.display.unwrap_or(Display {
            width: 720,
            height: 1280,
            dpi: 320,
            fps: 30,
        });
        in_range("display.width", display.width, 120, 7680)?;
        in_range("display.height", display.height, 120, 7680)?;
        in_range("display.dpi", display.dpi, 72, 960)?;
        in_range("display.fps", display.fps, 1, 240)?;
        let version = self.android_version.unwrap_or_else(|| "14".into());
        let default_image = ANDROID_IMAGES
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, i)| i.to_string());
        let image = match (self.image, default_image) {
            (Some(i), _) if platform::input::image_reference(&i) => i,
            (Some(_), _) => {
                return Err(Error::Invalid(
                    "image must be a container image reference (lower-case, no spaces)".into(),
                ))
            }
            (None, Some(i)) => i,
            (None, None) => {
                return Err(Error::Invalid(format!(
                    "android_version must be one of {}",
                    ANDROID_IMAGES
                        .iter()
                        .map(|(v, _)| *v)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        if version.is_empty()
            || version.len() > 8
            || !version.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            return Err(Error::Invalid(
                "android_version must be a version number".into(),
            ));
        }
        Ok(Spec {
            cpu_cores: in_range("cpu_cores", self.cpu_cores.unwrap_or(2), 1, 64)?,
            memory_mb: in_range("memory_mb", self.memory_mb.unwrap_or(4096), 512, 65536)?,
            storage_gb: in_range("storage_gb", self.storage_gb.unwrap_or(16), 2, 512)?,
            display,
            android_version: version,
            image,
            gpu_mode: self.gpu_mode.unwrap_or(GpuMode::Guest),
            identity: self
                .identity
                .map(super::identity::parse_identity)
                .transpose()?,
            network: self
                .network
                .map(super::identity::parse_network)
                .transpose()?,
        })
    }
}

impl Spec {
    /// The boot arguments its identity and network settings take.
    pub fn extra_boot_args(&self) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        if let Some(i) = &self.identity {
            i.boot_args(&mut out);
        }
        if let Some(n) = &self.network {
            n.boot_args(&mut out);
        }
        out
    }

    /// Whether the device needs a GPU slot on its node.
    pub fn needs_gpu(&self) -> bool {
        !matches!(self.gpu_mode, GpuMode::Guest)
    }

    /// What the device takes on a node.
    pub fn resources(&self) -> super::placement::Resources {
        super::placement::Resources {
            cpu_millis: i64::from(self.cpu_cores) * 1000,
            memory_mb: i64::from(self.memory_mb),
            disk_gb: i64::from(self.storage_gb),
            devices: 1,
            gpus: i64::from(self.needs_gpu()),
        }
    }

    /// The quota it takes (`user`'s reservation resources).
    pub fn quota(&self) -> serde_json::Value {
        serde_json::json!({
            "devices": 1, "cpu_cores": self.cpu_cores,
            "memory_mb": self.memory_mb, "storage_gb": self.storage_gb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_an_empty_spec_and_ranges_are_enforced() {
        let s = SpecInput::default().parse().unwrap();
        assert_eq!((s.cpu_cores, s.memory_mb, s.storage_gb), (2, 4096, 16));
        assert_eq!(s.image, "redroid/redroid:14.0.0-latest");
        assert!(!s.needs_gpu());
        let bad = |v: serde_json::Value| {
            serde_json::from_value::<SpecInput>(v)
                .map_err(|e| e.to_string())
                .and_then(|i| i.parse().map_err(|e| format!("{e:?}")))
                .unwrap_err()
        };
        assert!(bad(serde_json::json!({"cpu_cores": 0})).contains("cpu_cores"));
        assert!(bad(serde_json::json!({"memory_mb": 100})).contains("memory_mb"));
        assert!(bad(
            serde_json::json!({"display": {"width": 50, "height": 800, "dpi": 320, "fps": 30}})
        )
        .contains("width"));
        assert!(bad(serde_json::json!({"android_version": "9"})).contains("android_version"));
        assert!(bad(serde_json::json!({"image": "--privileged"})).contains("image"));
        assert!(bad(serde_json::json!({"image": "../../etc"})).contains("image"));
        assert!(bad(serde_json::json!({"colour": "red"})).contains("unknown field"));
    }

    #[test]
    fn names_and_tags_are_checked_and_tags_normalized() {
        assert!(DeviceName::parse("qa phone 1").is_ok());
        assert!(DeviceName::parse("").is_err());
        assert!(DeviceName::parse("x/y").is_err());
        assert!(DeviceName::parse(&"a".repeat(65)).is_err());
        assert_eq!(
            parse_tags(&["b".into(), "a".into(), "b".into()]).unwrap(),
            vec!["a", "b"]
        );
        assert!(parse_tags(&["Bad Tag".into()]).is_err());
    }
}
