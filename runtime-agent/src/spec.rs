//! Validated names and the redroid container spec builder.
//!
//! Everything the control plane sends that ends up in a container name, a label
//! or a host path goes through a newtype here first, so the rest of the agent
//! never sees an unchecked string.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Label that marks a container as managed by a cloudphone runtime agent.
pub const LABEL_MANAGED: &str = "io.cloudphone.managed";
/// Label holding the device id.
pub const LABEL_DEVICE: &str = "io.cloudphone.device-id";
/// Label holding the node id of the agent that owns the container.
pub const LABEL_NODE: &str = "io.cloudphone.node-id";
/// Label holding the hash of the desired spec the container was built from.
pub const LABEL_SPEC_HASH: &str = "io.cloudphone.spec-hash";
/// Label holding the host port that ADB is published on.
pub const LABEL_ADB_PORT: &str = "io.cloudphone.adb-port";
/// Label holding the desired-state generation the container was built from.
pub const LABEL_GENERATION: &str = "io.cloudphone.generation";
/// The port adbd listens on inside a redroid container.
pub const ADB_CONTAINER_PORT: u16 = 5555;

/// Why a name or a spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// The identifier breaks the naming rule.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which kind of name.
        what: &'static str,
        /// The refused input, for the log.
        value: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// A numeric setting is outside what redroid or the host accepts.
    #[error("invalid {field}: {reason}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The accepted range.
        reason: &'static str,
    },
}

/// Shared rule for every identifier that becomes part of a container name,
/// a label, an image tag or a path: ASCII letters, digits, `-`, `_` and `.`,
/// 1 to 63 characters, starting with a letter or digit and never containing `..`.
fn check_identifier(what: &'static str, value: &str) -> Result<(), SpecError> {
    let bad = |reason| SpecError::InvalidName {
        what,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("must not be empty"));
    }
    if value.len() > 63 {
        return Err(bad("must be at most 63 characters"));
    }
    if !value.is_ascii() {
        return Err(bad("must be ASCII"));
    }
    if value.contains('/') {
        return Err(bad("must not contain '/'"));
    }
    if value.contains("..") {
        return Err(bad("must not contain '..'"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad("may only contain letters, digits, '-', '_' and '.'"));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or digit"));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the identifier rule.
            pub fn parse(value: &str) -> Result<Self, SpecError> {
                check_identifier($what, value)?;
                Ok(Self(value.to_owned()))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A device (one cloud phone) id, as assigned by the device component.
    DeviceId,
    "device id"
);
identifier!(
    /// The id of a host node (one runtime agent).
    NodeId,
    "node id"
);
identifier!(
    /// The idempotency key of one operation.
    OperationId,
    "operation id"
);
identifier!(
    /// The id of a snapshot of one device.
    SnapshotId,
    "snapshot id"
);

/// An image reference such as `redroid/redroid:14.0.0-latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ImageRef(String);

impl ImageRef {
    /// Accepts printable ASCII references without whitespace or `..`, at most 255 bytes.
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        let bad = |reason| SpecError::InvalidName {
            what: "image reference",
            value: value.chars().take(80).collect(),
            reason,
        };
        if value.is_empty() || value.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("must be printable ASCII without spaces"));
        }
        if value.contains("..") || value.starts_with('/') || value.starts_with('-') {
            return Err(bad("must not contain '..' or start with '/' or '-'"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The reference as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An Android package name such as `com.example.app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PackageName(String);

impl PackageName {
    /// Accepts dotted Java-style names: segments of letters, digits and `_`.
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        let ok = !value.is_empty()
            && value.len() <= 255
            && value.split('.').all(|seg| {
                !seg.is_empty()
                    && seg.as_bytes()[0].is_ascii_alphabetic()
                    && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !ok {
            return Err(SpecError::InvalidName {
                what: "package name",
                value: value.chars().take(80).collect(),
                reason: "must be dotted segments of letters, digits and '_'",
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for PackageName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An absolute path inside a device, for push and pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DevicePath(String);

impl DevicePath {
    /// Accepts absolute ASCII paths without `..` segments or control characters.
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        let ok = value.starts_with('/')
            && value.len() > 1
            && value.len() <= 1024
            && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && !value.split('/').any(|seg| seg == ".." || seg == ".")
            && !value.ends_with('/');
        if !ok {
            return Err(SpecError::InvalidName {
                what: "device path",
                value: value.chars().take(80).collect(),
                reason: "must be an absolute file path without '..'",
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// The path as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory part and the file name.
    pub fn split(&self) -> (&str, &str) {
        let idx = self.0.rfind('/').unwrap_or(0);
        let dir = if idx == 0 { "/" } else { &self.0[..idx] };
        (dir, &self.0[idx + 1..])
    }
}

impl<'de> Deserialize<'de> for DevicePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// How redroid renders: on the host GPU, in software, or chosen at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// Let redroid pick.
    #[default]
    Auto,
    /// Use a host GPU through its render node.
    Host,
    /// Software rendering inside the guest.
    Guest,
}

impl GpuMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Host => "host",
            Self::Guest => "guest",
        }
    }
}

/// Display settings of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Display {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Density in dots per inch.
    pub dpi: u32,
    /// Frames per second.
    pub fps: u32,
}

/// GPU settings of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Gpu {
    /// Rendering mode.
    #[serde(default)]
    pub mode: GpuMode,
    /// Render node such as `/dev/dri/renderD128`, only with `host`.
    #[serde(default)]
    pub node: Option<String>,
}

/// Resource limits of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory limit in MiB.
    pub memory_mb: u32,
    /// Limit on the number of processes.
    pub pids: u32,
}

/// What the control plane wants one device to look like. Its hash goes into a
/// label so a changed spec is noticed and the container rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// The image of the device's template.
    pub image: ImageRef,
    /// Display settings.
    pub display: Display,
    /// GPU settings.
    #[serde(default)]
    pub gpu: Gpu,
    /// Resource limits.
    pub resources: Resources,
    /// Further `androidboot.*` boot arguments, such as DNS or proxy settings.
    #[serde(default)]
    pub extra_boot_args: BTreeMap<String, String>,
}

impl DeviceSpec {
    /// Checks the ranges that redroid and the host accept.
    pub fn validate(&self) -> Result<(), SpecError> {
        let range = |field, ok: bool, reason| {
            if ok {
                Ok(())
            } else {
                Err(SpecError::OutOfRange { field, reason })
            }
        };
        let d = &self.display;
        range(
            "display.width",
            (120..=7680).contains(&d.width),
            "must be 120 to 7680",
        )?;
        range(
            "display.height",
            (120..=7680).contains(&d.height),
            "must be 120 to 7680",
        )?;
        range(
            "display.dpi",
            (72..=960).contains(&d.dpi),
            "must be 72 to 960",
        )?;
        range(
            "display.fps",
            (1..=240).contains(&d.fps),
            "must be 1 to 240",
        )?;
        let r = &self.resources;
        range(
            "resources.cpu_millis",
            (100..=256_000).contains(&r.cpu_millis),
            "must be 100 to 256000",
        )?;
        range(
            "resources.memory_mb",
            (256..=1_048_576).contains(&r.memory_mb),
            "must be 256 to 1048576",
        )?;
        range(
            "resources.pids",
            (64..=1_000_000).contains(&r.pids),
            "must be 64 to 1000000",
        )?;
        if let Some(node) = &self.gpu.node {
            range(
                "gpu.node",
                node.starts_with("/dev/dri/") && !node.contains("..") && node.is_ascii(),
                "must be a /dev/dri/ path",
            )?;
        }
        for (k, v) in &self.extra_boot_args {
            range(
                "extra_boot_args",
                k.starts_with("androidboot.")
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'))
                    && v.bytes().all(|b| b.is_ascii_graphic()),
                "keys must be androidboot.* names and values printable ASCII without spaces",
            )?;
        }
        Ok(())
    }

    /// Stable hash of the spec: sha256 over its canonical JSON, first 16 hex digits.
    pub fn hash(&self) -> String {
        let json = crate::protocol::canonical_json(
            &serde_json::to_value(self).expect("a device spec always serializes"),
        );
        let digest = Sha256::digest(json.as_bytes());
        hex::encode(&digest[..8])
    }

    /// The boot arguments passed as the container command. Redroid reads its
    /// settings from the kernel-style command line, not from the environment.
    pub fn boot_args(&self) -> Vec<String> {
        let d = &self.display;
        let mut args = vec![
            format!("androidboot.redroid_width={}", d.width),
            format!("androidboot.redroid_height={}", d.height),
            format!("androidboot.redroid_dpi={}", d.dpi),
            format!("androidboot.redroid_fps={}", d.fps),
            format!("androidboot.redroid_gpu_mode={}", self.gpu.mode.as_str()),
        ];
        if let Some(node) = &self.gpu.node {
            args.push(format!("androidboot.redroid_gpu_node={node}"));
        }
        // Hosts without ashmem need memfd; every supported kernel has memfd.
        args.push("androidboot.use_memfd=true".to_owned());
        for (k, v) in &self.extra_boot_args {
            args.push(format!("{k}={v}"));
        }
        args
    }
}

/// Engine-neutral description of one device container, built from a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name, `<prefix><device id>` (`cloudphone-<device id>` by default).
    pub name: String,
    /// Image to run.
    pub image: String,
    /// Command (boot arguments) appended to the image's entrypoint.
    pub cmd: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Host directory mounted at `/data`.
    pub data_dir: PathBuf,
    /// Host address the ADB port is bound to.
    pub adb_bind_address: String,
    /// Host port published for ADB.
    pub adb_host_port: u16,
    /// CPU limit in billionths of a core.
    pub nano_cpus: i64,
    /// Memory limit in bytes.
    pub memory_bytes: i64,
    /// Process limit.
    pub pids_limit: i64,
    /// Whether the container runs privileged (redroid needs it).
    pub privileged: bool,
}

/// The default container name prefix.
pub const DEFAULT_NAME_PREFIX: &str = "cloudphone-";

/// The container name of a device: the node's prefix and the device id.
pub fn container_name(prefix: &str, device: &DeviceId) -> String {
    format!("{prefix}{device}")
}

/// The per-device directory under the data root; `data/` inside it is `/data`.
pub fn device_dir(data_root: &Path, device: &DeviceId) -> PathBuf {
    data_root.join("devices").join(device.as_str())
}

/// Inputs of [`build_container_spec`] that come from the agent, not the spec.
#[derive(Debug, Clone)]
pub struct HostPlacement<'a> {
    /// This agent's node id.
    pub node: &'a NodeId,
    /// Root of per-device data directories.
    pub data_root: &'a Path,
    /// Private address ADB is bound to.
    pub adb_bind_address: &'a str,
    /// Host port for ADB.
    pub adb_host_port: u16,
    /// Container name prefix.
    pub name_prefix: &'a str,
}

/// Builds the container for one device. `image_override` replaces the
/// template image after a restore from a snapshot.
pub fn build_container_spec(
    device: &DeviceId,
    generation: u64,
    spec: &DeviceSpec,
    place: &HostPlacement<'_>,
    image_override: Option<&str>,
) -> ContainerSpec {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
    labels.insert(LABEL_DEVICE.to_owned(), device.to_string());
    labels.insert(LABEL_NODE.to_owned(), place.node.to_string());
    labels.insert(LABEL_SPEC_HASH.to_owned(), spec.hash());
    labels.insert(LABEL_ADB_PORT.to_owned(), place.adb_host_port.to_string());
    labels.insert(LABEL_GENERATION.to_owned(), generation.to_string());
    ContainerSpec {
        name: container_name(place.name_prefix, device),
        image: image_override.unwrap_or(spec.image.as_str()).to_owned(),
        cmd: spec.boot_args(),
        labels,
        data_dir: device_dir(place.data_root, device).join("data"),
        adb_bind_address: place.adb_bind_address.to_owned(),
        adb_host_port: place.adb_host_port,
        nano_cpus: i64::from(spec.resources.cpu_millis) * 1_000_000,
        memory_bytes: i64::from(spec.resources.memory_mb) * 1024 * 1024,
        pids_limit: i64::from(spec.resources.pids),
        privileged: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_spec() -> DeviceSpec {
        DeviceSpec {
            image: ImageRef::parse("redroid/redroid:14.0.0-latest").unwrap(),
            display: Display {
                width: 720,
                height: 1280,
                dpi: 320,
                fps: 30,
            },
            gpu: Gpu {
                mode: GpuMode::Host,
                node: Some("/dev/dri/renderD128".into()),
            },
            resources: Resources {
                cpu_millis: 2000,
                memory_mb: 4096,
                pids: 4096,
            },
            extra_boot_args: BTreeMap::new(),
        }
    }

    #[test]
    fn identifiers_reject_traversal_slashes_non_ascii_and_long_input() {
        assert!(DeviceId::parse("dev-1_a.b").is_ok());
        for bad in [
            "",
            "..",
            "a..b",
            "a/b",
            "/abs",
            "émoji",
            "-lead",
            &"x".repeat(64),
            "sp ace",
        ] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn identifiers_are_validated_when_deserialized() {
        assert!(serde_json::from_str::<DeviceId>("\"../etc\"").is_err());
        assert!(serde_json::from_str::<NodeId>("\"node-1\"").is_ok());
    }

    #[test]
    fn display_and_gpu_settings_become_boot_arguments_not_env() {
        let args = sample_spec().boot_args();
        for want in [
            "androidboot.redroid_width=720",
            "androidboot.redroid_height=1280",
            "androidboot.redroid_dpi=320",
            "androidboot.redroid_fps=30",
            "androidboot.redroid_gpu_mode=host",
            "androidboot.redroid_gpu_node=/dev/dri/renderD128",
            "androidboot.use_memfd=true",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
    }

    #[test]
    fn container_spec_has_limits_labels_port_and_private_data_dir() {
        let node = NodeId::parse("node-a").unwrap();
        let dev = DeviceId::parse("d1").unwrap();
        let place = HostPlacement {
            node: &node,
            data_root: Path::new("/var/lib/cloudphone"),
            adb_bind_address: "10.0.0.5",
            adb_host_port: 40001,
            name_prefix: DEFAULT_NAME_PREFIX,
        };
        let spec = sample_spec();
        let c = build_container_spec(&dev, 7, &spec, &place, None);
        assert_eq!(c.name, "cloudphone-d1");
        assert_eq!(c.image, "redroid/redroid:14.0.0-latest");
        assert!(c.privileged);
        assert_eq!(c.nano_cpus, 2_000_000_000);
        assert_eq!(c.memory_bytes, 4096 * 1024 * 1024);
        assert_eq!(c.pids_limit, 4096);
        assert_eq!(c.data_dir, Path::new("/var/lib/cloudphone/devices/d1/data"));
        assert_eq!(c.adb_bind_address, "10.0.0.5");
        assert_eq!(c.adb_host_port, 40001);
        assert_eq!(c.labels[LABEL_DEVICE], "d1");
        assert_eq!(c.labels[LABEL_NODE], "node-a");
        assert_eq!(c.labels[LABEL_SPEC_HASH], spec.hash());
        assert_eq!(c.labels[LABEL_ADB_PORT], "40001");
        assert_eq!(c.labels[LABEL_GENERATION], "7");
        let other = build_container_spec(&dev, 7, &spec, &place, Some("snap:1"));
        assert_eq!(other.image, "snap:1");
    }

    #[test]
    fn spec_hash_changes_with_the_spec_and_only_then() {
        let a = sample_spec();
        let mut b = sample_spec();
        assert_eq!(a.hash(), b.hash());
        b.display.dpi = 240;
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let mut s = sample_spec();
        assert!(s.validate().is_ok());
        s.display.width = 5;
        assert!(s.validate().is_err());
        let mut s = sample_spec();
        s.extra_boot_args.insert("ro.evil".into(), "1".into());
        assert!(s.validate().is_err());
        let mut s = sample_spec();
        s.gpu.node = Some("/etc/passwd".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn device_paths_and_package_names_are_checked() {
        assert!(DevicePath::parse("/sdcard/a.txt").is_ok());
        assert!(DevicePath::parse("/sdcard/../etc").is_err());
        assert!(DevicePath::parse("rel").is_err());
        assert_eq!(
            DevicePath::parse("/a/b.txt").unwrap().split(),
            ("/a", "b.txt")
        );
        assert_eq!(DevicePath::parse("/b.txt").unwrap().split(), ("/", "b.txt"));
        assert!(PackageName::parse("com.example.app").is_ok());
        assert!(PackageName::parse("com.example;rm").is_err());
    }
}
