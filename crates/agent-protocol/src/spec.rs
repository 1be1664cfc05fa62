//! Names and specs that cross the wire between the control plane and the
//! runtime agent, checked where they are parsed: identifiers that become
//! container names, labels, image tags or paths (no `/`, no `..`, ASCII
//! only), image references, package names, device paths, and the device
//! spec with the ranges redroid and the host accept.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// The name as the boot argument spells it.
    pub fn as_str(self) -> &'static str {
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

/// The `ro.*` properties a device spec may set through redroid's boot
/// arguments (its identity); every other extra boot argument is an
/// `androidboot.*` one.
pub const IDENTITY_PROPERTIES: &[&str] = &[
    "ro.product.brand",
    "ro.product.manufacturer",
    "ro.product.model",
    "ro.product.device",
    "ro.product.name",
    "ro.build.fingerprint",
];

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
    /// Further boot arguments: `androidboot.*` ones (DNS, proxy, serial
    /// number) and the identity properties ([`IDENTITY_PROPERTIES`]).
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
            let name_ok = k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'));
            let ok = if IDENTITY_PROPERTIES.contains(&k.as_str()) {
                // Model names have spaces ("Pixel 8 Pro"): each boot argument
                // is its own container argument, never split by a shell.
                !v.is_empty()
                    && v.len() <= 92
                    && v.bytes()
                        .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\'))
            } else {
                k.starts_with("androidboot.") && v.bytes().all(|b| b.is_ascii_graphic())
            };
            range(
                "extra_boot_args",
                name_ok && ok,
                "keys must be androidboot.* names or identity properties, values printable ASCII (spaces only in identity properties)",
            )?;
        }
        Ok(())
    }

    /// Stable hash of the spec: sha256 over its canonical JSON, first 16 hex digits.
    pub fn hash(&self) -> String {
        let json = crate::messages::canonical_json(
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
