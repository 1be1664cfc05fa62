//! Validated names and the redroid container spec builder.
//!
//! Everything the control plane sends that ends up in a container name, a label
//! or a host path goes through a newtype here first, so the rest of the agent
//! never sees an unchecked string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use agent_protocol::spec::*;

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
        // The identity properties may be set, with spaces but no quotes.
        let mut s = sample_spec();
        s.extra_boot_args
            .insert("ro.product.model".into(), "Pixel 8 Pro".into());
        s.extra_boot_args
            .insert("androidboot.serialno".into(), "AB12".into());
        assert!(s.validate().is_ok());
        assert!(s
            .boot_args()
            .contains(&"ro.product.model=Pixel 8 Pro".to_string()));
        s.extra_boot_args
            .insert("ro.product.model".into(), "a\"b".into());
        assert!(s.validate().is_err());
        let mut s = sample_spec();
        s.extra_boot_args
            .insert("androidboot.redroid_net_proxy_host".into(), "a b".into());
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
