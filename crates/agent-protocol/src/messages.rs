//! The agent protocol: message shapes, the HTTP paths and their HMAC-SHA256
//! authentication, shared by the runtime agent and the device component so
//! that both ends speak exactly one protocol. `docs/agent-protocol.md` is
//! the prose version of this module; the two change together, and its fixed
//! test vectors are checked here.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::{DeviceId, DevicePath, DeviceSpec, NodeId, OperationId, PackageName, SnapshotId};

/// The protocol version both ends speak. Version 2 moved everything an agent
/// reports (registration, heartbeats, device status, command results) from
/// shared Redis channels to signed HTTP requests: no host can read another
/// host's results, a report is handled once by one control-plane replica
/// (where every replica would receive every Redis message), and large
/// results do not pass through pub/sub.
pub const PROTOCOL_VERSION: u32 = 2;
/// Prefix of every Redis channel.
pub const CHANNEL_PREFIX: &str = "cloudphone.agent.";
/// Base of the control plane's agent endpoints.
pub const AGENT_API: &str = "/api/v1/device/agent/nodes";
/// Most messages in one report request.
pub const MAX_REPORT_MESSAGES: usize = 256;
/// Largest report request body the control plane accepts (bytes).
pub const MAX_REPORT_BYTES: usize = 24 << 20;
/// HTTP header naming the node.
pub const HEADER_NODE: &str = "x-cloudphone-node";
/// HTTP header with the RFC 3339 time of signing.
pub const HEADER_TIMESTAMP: &str = "x-cloudphone-timestamp";
/// HTTP header with the hex HMAC-SHA256 signature.
pub const HEADER_SIGNATURE: &str = "x-cloudphone-signature";

/// The channel that carries commands to one node (the only channel an
/// agent uses: it subscribes to it and publishes nothing).
pub fn commands_channel(node: &NodeId) -> String {
    format!("{CHANNEL_PREFIX}node.{node}.commands")
}

/// `GET`: the node's desired state (signed response).
pub fn desired_state_path(node: &str) -> String {
    format!("{AGENT_API}/{node}/desired-state")
}

/// `POST`: the node's registration.
pub fn register_path(node: &str) -> String {
    format!("{AGENT_API}/{node}/register")
}

/// `POST`: a batch of the node's messages ([`Reports`]).
pub fn reports_path(node: &str) -> String {
    format!("{AGENT_API}/{node}/reports")
}

/// `GET`: the contents of a `push_file` operation sent to the node (raw
/// bytes, checked against the `bytes` and `sha256` of the signed command).
pub fn operation_content_path(node: &str, operation: &str) -> String {
    format!("{AGENT_API}/{node}/operations/{operation}/content")
}

/// `PUT` (one chunk of a snapshot's archive, from the snapshot's node while
/// it is taken) and `GET` (the same chunk, to the node a device restored
/// from it is placed on): raw bytes, at most [`ARCHIVE_CHUNK_BYTES`].
pub fn snapshot_archive_path(node: &str, snapshot: &str, seq: u32) -> String {
    format!("{AGENT_API}/{node}/snapshots/{snapshot}/archive/{seq}")
}

/// The size of every chunk of a snapshot archive but the last.
pub const ARCHIVE_CHUNK_BYTES: usize = 4 << 20;

/// Lower-case hex sha256 of `data`: the digest a `push_file` command names
/// for the contents the agent fetches.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The kinds of message an agent reports in `POST .../reports`.
pub const REPORT_KINDS: [&str; 3] = ["heartbeat", "device_status", "command_result"];

/// Body of `POST .../reports`: signed envelopes of kind `heartbeat`,
/// `device_status` or `command_result`, oldest first. The control plane
/// answers 2xx once every message is recorded (or refused for good); on any
/// other answer the agent sends them again, with the same ids, and the
/// control plane applies each message idempotently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reports {
    /// The messages.
    pub messages: Vec<Envelope>,
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Not valid JSON or not the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Signature missing or wrong.
    #[error("bad signature")]
    BadSignature,
    /// Addressed to another node.
    #[error("message for node {0} reached the wrong node")]
    WrongNode(String),
    /// A protocol version this agent does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u32),
    /// Signed too long ago or in the future: a replay or a broken clock.
    #[error("stale message: sent at {0}")]
    Stale(String),
}

/// A per-node shared secret. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct NodeSecret(Vec<u8>);

impl NodeSecret {
    /// Wraps the secret; refuses secrets shorter than 16 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ProtocolError> {
        let bytes = bytes.into();
        if bytes.len() < 16 {
            return Err(ProtocolError::Malformed(
                "node secret must be at least 16 bytes".into(),
            ));
        }
        Ok(Self(bytes))
    }

    /// Hex HMAC-SHA256 of `data`.
    pub fn sign(&self, data: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Constant-time check of a hex signature.
    pub fn verify(&self, data: &[u8], signature_hex: &str) -> bool {
        let Ok(sig) = hex::decode(signature_hex) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(data);
        mac.verify_slice(&sig).is_ok()
    }
}

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

/// Compact JSON with object keys sorted by byte order at every level. Both
/// ends compute signatures over this form, so the field order of whatever
/// serializer wrote the message does not matter.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// One signed message: a command or sync on a node's Redis channel, or one
/// message of a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Unique id of this message.
    pub id: String,
    /// The node the message is from (agent to control plane) or for.
    pub node_id: String,
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// RFC 3339 UTC time of sending.
    pub sent_at: String,
    /// What the body is: `command` or `sync` (to an agent); `command_result`,
    /// `device_status` or `heartbeat` (from an agent, in a report).
    pub kind: String,
    /// The payload.
    pub body: serde_json::Value,
    /// Hex HMAC-SHA256 over [`Envelope::signing_input`] with the node's secret.
    #[serde(default)]
    pub signature: String,
}

impl Envelope {
    /// Builds and signs a message.
    pub fn signed(
        secret: &NodeSecret,
        node: &NodeId,
        kind: &str,
        body: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            node_id: node.to_string(),
            protocol_version: PROTOCOL_VERSION,
            sent_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            kind: kind.to_owned(),
            body,
            signature: String::new(),
        }
        .sign(secret)
    }

    /// Sets the signature over the current fields.
    pub fn sign(mut self, secret: &NodeSecret) -> Self {
        self.signature = secret.sign(self.signing_input().as_bytes());
        self
    }

    /// Checks the signature, the protocol version and the node, in that
    /// order, but not the age: a message of a report may have waited in the
    /// agent's queue through an outage of the control plane, and the report
    /// request's own signed timestamp is what proves the request fresh.
    pub fn authenticate(&self, secret: &NodeSecret, node: &str) -> Result<(), ProtocolError> {
        // The signature goes first so that an unauthenticated sender learns nothing.
        if self.signature.is_empty()
            || !secret.verify(self.signing_input().as_bytes(), &self.signature)
        {
            return Err(ProtocolError::BadSignature);
        }
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(self.protocol_version));
        }
        if self.node_id != node {
            return Err(ProtocolError::WrongNode(self.node_id.clone()));
        }
        Ok(())
    }

    /// The exact string that is signed, as `docs/agent-protocol.md` defines
    /// it: the fields joined by LF, the protocol version both as the prefix
    /// and as a line of its own, the body in canonical JSON.
    pub fn signing_input(&self) -> String {
        format!(
            "cloudphone-agent-v{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.protocol_version,
            self.id,
            self.node_id,
            self.protocol_version,
            self.sent_at,
            self.kind,
            canonical_json(&self.body)
        )
    }

    /// Parses and authenticates a message addressed to `node` that must be
    /// fresh: a command or sync, which is acted on once it arrives.
    pub fn open(
        raw: &[u8],
        secret: &NodeSecret,
        node: &NodeId,
        now: DateTime<Utc>,
        max_skew: chrono::Duration,
    ) -> Result<Self, ProtocolError> {
        let env: Self =
            serde_json::from_slice(raw).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        env.authenticate(secret, node.as_str())?;
        let sent = DateTime::parse_from_rfc3339(&env.sent_at)
            .map_err(|_| ProtocolError::Malformed("sent_at is not RFC 3339".into()))?
            .with_timezone(&Utc);
        if (now - sent).abs() > max_skew {
            return Err(ProtocolError::Stale(env.sent_at));
        }
        Ok(env)
    }
}

/// The canonical string of an HTTP request or response signature.
pub fn http_signing_input(
    direction: &str,
    method: &str,
    path: &str,
    node: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    format!(
        "cloudphone-agent-v{PROTOCOL_VERSION}\n{direction}\n{method}\n{path}\n{node}\n{timestamp}\n{}",
        sha256_hex(body)
    )
}

/// Desired run state of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// The container exists and runs.
    Running,
    /// The container exists and is stopped; data kept.
    Stopped,
}

/// One device the control plane wants on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredDevice {
    /// Device id.
    pub device_id: DeviceId,
    /// Increases with every change the control plane makes to this device;
    /// an older copy never overwrites a newer one.
    pub generation: u64,
    /// Running or stopped.
    pub state: RunState,
    /// Container settings.
    pub spec: DeviceSpec,
}

/// Body of `GET .../nodes/{node_id}/desired-state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The node.
    pub node_id: NodeId,
    /// Every device that should exist on the node; anything else is removed.
    pub devices: Vec<DesiredDevice>,
}

/// What a device is doing, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Container being created.
    Creating,
    /// Running, not yet `sys.boot_completed=1`.
    Booting,
    /// Booted and usable.
    Ready,
    /// Container exists and is stopped.
    Stopped,
    /// Repeated failures; see `reason`.
    Failed,
    /// Container and data removed.
    Removed,
}

/// One device as observed on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedDevice {
    /// Device id.
    pub device_id: String,
    /// Status.
    pub status: DeviceStatus,
    /// Engine container id, if a container exists.
    pub container_id: Option<String>,
    /// Host port of ADB.
    pub adb_port: Option<u16>,
    /// Spec hash of the running container.
    pub spec_hash: Option<String>,
    /// Desired generation the container was built from.
    pub generation: Option<u64>,
    /// Why it failed, if it did.
    pub reason: Option<String>,
}

/// Body of a `device_status` message, sent on every status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatusChange {
    /// The new state.
    pub device: ObservedDevice,
    /// The status before, if known.
    pub previous: Option<DeviceStatus>,
}

/// What the host offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU cores.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk under the data root, MiB.
    pub disk_mb: u64,
    /// Maximum devices this node takes.
    pub max_devices: u32,
    /// GPU render nodes.
    pub gpus: Vec<String>,
}

/// Body of `POST .../register`, repeated in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Node id.
    pub node_id: NodeId,
    /// Address the control plane and clients reach the host at.
    pub address: String,
    /// Capacity.
    pub capacity: Capacity,
    /// Free-form labels (zone, hardware class).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Agent version.
    pub agent_version: String,
}

/// Current use of the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Devices with a container.
    pub devices: u32,
    /// Devices ready.
    pub ready: u32,
    /// Memory in use, MiB.
    pub memory_used_mb: u64,
    /// Free disk under the data root, MiB.
    pub disk_free_mb: u64,
    /// One-minute load average.
    pub load1: f64,
}

/// Body of a `heartbeat` message: full node info and full inventory, so a
/// control plane that missed every earlier message is whole again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Registration data, repeated.
    pub node: Registration,
    /// Usage.
    pub usage: Usage,
    /// Every device with a container owned by this node.
    pub devices: Vec<ObservedDevice>,
    /// Seconds since the agent started.
    pub uptime_s: u64,
}

/// A snapshot archive the control plane keeps: a tar of the snapshot's
/// `/data` copy (numeric owners, modes and links kept), in chunks of
/// [`ARCHIVE_CHUNK_BYTES`] numbered from 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    /// The snapshot.
    pub snapshot_id: SnapshotId,
    /// Bytes of the whole archive.
    pub bytes: u64,
    /// Lower-case hex sha256 of the whole archive.
    pub sha256: String,
    /// How many chunks.
    pub chunks: u32,
}

/// Body of a `command` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Idempotency key: the same id always gets the same result, once.
    pub operation_id: OperationId,
    /// What to do.
    #[serde(flatten)]
    pub op: Operation,
}

/// Every operation a command can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Create (and start) a device; also updates the local desired state.
    Create {
        /// The device as desired.
        device: DesiredDevice,
        /// The archived snapshot whose `/data` the device starts with
        /// (a failover from a snapshot); without it, an empty `/data`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        import: Option<ArchiveRef>,
    },
    /// A new phone: remove the container and empty the data directory, then
    /// make the device again from `device` (its new identity). Android makes
    /// a new Android id on the empty `/data`.
    Reset {
        /// The device as desired after the reset.
        device: DesiredDevice,
    },
    /// Start a stopped device.
    Start {
        /// Device.
        device_id: DeviceId,
        /// Generation of the desired-state change this belongs to.
        generation: u64,
    },
    /// Stop a device, keeping the container and data.
    Stop {
        /// Device.
        device_id: DeviceId,
        /// Generation of the desired-state change this belongs to.
        generation: u64,
    },
    /// Restart the container.
    Restart {
        /// Device.
        device_id: DeviceId,
    },
    /// Remove the container and its data directory.
    Delete {
        /// Device.
        device_id: DeviceId,
        /// Generation of the desired-state change this belongs to.
        generation: u64,
    },
    /// Commit the container and copy its data directory.
    Snapshot {
        /// Device.
        device_id: DeviceId,
        /// Snapshot id.
        snapshot_id: SnapshotId,
        /// Also upload a tar archive of the `/data` copy to the control
        /// plane ([`snapshot_archive_path`]), so that another node can make
        /// the device from it; the result then names it under `archive`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        archive: bool,
    },
    /// Remove a snapshot's image and data copy.
    DeleteSnapshot {
        /// Device.
        device_id: DeviceId,
        /// Snapshot id.
        snapshot_id: SnapshotId,
    },
    /// Replace the container and data with a snapshot.
    Restore {
        /// Device.
        device_id: DeviceId,
        /// Snapshot id.
        snapshot_id: SnapshotId,
        /// The device the snapshot was taken of, when it is another one (a
        /// clone); absent: `device_id` itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_device_id: Option<DeviceId>,
    },
    /// Download, verify and install an APK.
    InstallApk {
        /// Device.
        device_id: DeviceId,
        /// Where to fetch the APK.
        url: String,
        /// Expected lower-case hex sha256.
        sha256: String,
    },
    /// Uninstall a package.
    UninstallApk {
        /// Device.
        device_id: DeviceId,
        /// Package.
        package: PackageName,
    },
    /// Run a shell command.
    Shell {
        /// Device.
        device_id: DeviceId,
        /// Command for `sh -c`.
        command: String,
        /// Timeout; default 30 s, at most 300 s.
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// Output cap; default 64 KiB, at most 1 MiB.
        #[serde(default)]
        max_output_bytes: Option<usize>,
    },
    /// Take a PNG screenshot (base64 in the result).
    Screenshot {
        /// Device.
        device_id: DeviceId,
    },
    /// The last lines of logcat.
    Logcat {
        /// Device.
        device_id: DeviceId,
        /// Lines; default 200, at most 5000.
        #[serde(default)]
        lines: Option<u32>,
    },
    /// Write a file into the device. The contents do not travel in the
    /// command: the agent fetches them with a signed request to
    /// [`operation_content_path`] and checks them against `bytes` and
    /// `sha256` before anything reaches the device.
    PushFile {
        /// Device.
        device_id: DeviceId,
        /// Absolute path inside the device.
        path: DevicePath,
        /// Length of the contents.
        bytes: u64,
        /// Lower-case hex sha256 of the contents.
        sha256: String,
    },
    /// Read a file from the device (base64 in the result).
    PullFile {
        /// Device.
        device_id: DeviceId,
        /// Absolute path inside the device.
        path: DevicePath,
    },
}

/// Outcome of an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The operation's idempotency key.
    pub operation_id: String,
    /// `true` when it succeeded.
    pub ok: bool,
    /// Operation-specific output.
    pub output: serde_json::Value,
    /// Machine-readable error code on failure.
    pub error_code: Option<String>,
    /// Human-readable error on failure.
    pub error: Option<String>,
    /// Set on a replay answered after the replay window, when the stored
    /// result no longer holds its payload fields (file contents, screenshots,
    /// logs, shell output); status, error and the other fields are kept.
    /// Absent on the wire when false, so results look as they always did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_expired: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> NodeSecret {
        NodeSecret::new(b"0123456789abcdef-secret".to_vec()).unwrap()
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":"x"}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn signed_messages_open_and_tampered_ones_do_not() {
        let node = NodeId::parse("n1").unwrap();
        let now = Utc::now();
        let env = Envelope::signed(
            &secret(),
            &node,
            "command",
            serde_json::json!({"a": 1}),
            now,
        );
        let raw = serde_json::to_vec(&env).unwrap();
        let skew = chrono::Duration::seconds(60);
        assert!(Envelope::open(&raw, &secret(), &node, now, skew).is_ok());

        let mut forged = env.clone();
        forged.body = serde_json::json!({"a": 2});
        let raw = serde_json::to_vec(&forged).unwrap();
        assert!(matches!(
            Envelope::open(&raw, &secret(), &node, now, skew),
            Err(ProtocolError::BadSignature)
        ));

        let mut unsigned = env.clone();
        unsigned.signature.clear();
        let raw = serde_json::to_vec(&unsigned).unwrap();
        assert!(matches!(
            Envelope::open(&raw, &secret(), &node, now, skew),
            Err(ProtocolError::BadSignature)
        ));

        let raw = serde_json::to_vec(&env).unwrap();
        let other = NodeId::parse("n2").unwrap();
        assert!(matches!(
            Envelope::open(&raw, &secret(), &other, now, skew),
            Err(ProtocolError::WrongNode(_))
        ));
        let later = now + chrono::Duration::minutes(10);
        assert!(matches!(
            Envelope::open(&raw, &secret(), &node, later, skew),
            Err(ProtocolError::Stale(_))
        ));
    }

    #[test]
    fn commands_round_trip_through_json() {
        let raw = r#"{"operation_id":"op-1","op":"shell","device_id":"d1","command":"echo hi"}"#;
        let cmd: Command = serde_json::from_str(raw).unwrap();
        assert!(matches!(cmd.op, Operation::Shell { .. }));
        let bad = r#"{"operation_id":"op-1","op":"pull_file","device_id":"d1","path":"/a/../b"}"#;
        assert!(serde_json::from_str::<Command>(bad).is_err());
    }

    #[test]
    fn a_push_file_command_names_the_contents_length_and_digest_not_the_contents() {
        let digest = sha256_hex(b"hello");
        // Computed with coreutils' sha256sum, apart from this crate.
        assert_eq!(
            digest,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let raw = format!(
            r#"{{"operation_id":"op-1","op":"push_file","device_id":"d1","path":"/data/a.txt","bytes":5,"sha256":"{digest}"}}"#
        );
        let cmd: Command = serde_json::from_str(&raw).unwrap();
        assert!(
            matches!(&cmd.op, Operation::PushFile { bytes: 5, sha256, .. } if *sha256 == digest)
        );
        let old = r#"{"operation_id":"op-1","op":"push_file","device_id":"d1","path":"/data/a.txt","content_base64":"aGVsbG8="}"#;
        assert!(
            serde_json::from_str::<Command>(old).is_err(),
            "a command with the contents inline is refused"
        );
    }

    /// The test vectors of `docs/agent-protocol.md` (version 2). The expected
    /// strings and signatures were computed with Python's `hmac`, `hashlib`
    /// and `json` modules, not with this crate, so a change to the signing
    /// input on this side cannot pass by changing the expectation with it.
    mod vectors {
        use super::*;

        const SECRET: &[u8] = b"cloudphone-test-vector-secret-01";
        const ENVELOPE: &str = r#"{"id":"5f0c2e7e-7c55-4f8e-9a53-3c1b8e2f3a10","node_id":"host-17","protocol_version":2,"sent_at":"2026-11-23T05:01:02.345Z","kind":"command","body":{"operation_id":"op-123","op":"restart","device_id":"dev-42"},"signature":"3f1ea2ec07bcc40af4b01cbfa805cc2a634c9e6411cc681c7bffe00092fefba1"}"#;
        const ENVELOPE_INPUT: &str = "cloudphone-agent-v2\n5f0c2e7e-7c55-4f8e-9a53-3c1b8e2f3a10\nhost-17\n2\n2026-11-23T05:01:02.345Z\ncommand\n{\"device_id\":\"dev-42\",\"op\":\"restart\",\"operation_id\":\"op-123\"}";
        const ENVELOPE_SIGNATURE: &str =
            "3f1ea2ec07bcc40af4b01cbfa805cc2a634c9e6411cc681c7bffe00092fefba1";
        const PATH: &str = "/api/v1/device/agent/nodes/host-17/desired-state";
        const REQUEST_INPUT: &str = "cloudphone-agent-v2\nrequest\nGET\n/api/v1/device/agent/nodes/host-17/desired-state\nhost-17\n2026-11-23T05:01:02.345Z\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        const REQUEST_SIGNATURE: &str =
            "694c00def448a87a0a53edf12868874cb233cc2f09a1fcc34a33ba8ae393c850";
        const RESPONSE_BODY: &[u8] = br#"{"node_id":"host-17","devices":[]}"#;
        const RESPONSE_INPUT: &str = "cloudphone-agent-v2\nresponse\nGET\n/api/v1/device/agent/nodes/host-17/desired-state\nhost-17\n2026-11-23T05:01:02.500Z\n145699203fde25fc478cc2ae975c073b26d6987783fa0e3ed58260fde6cacb96";
        const RESPONSE_SIGNATURE: &str =
            "1bfd7c0fd81755015463c93d7a32cf66a1ad165f095f0464d04ca77672e5d803";
        const REPORT_PATH: &str = "/api/v1/device/agent/nodes/host-17/reports";
        const REPORT_BODY: &[u8] = br#"{"messages":[{"id":"b3d1c0a2-4e5f-4a6b-8c7d-9e0f1a2b3c4d","node_id":"host-17","protocol_version":2,"sent_at":"2026-11-23T05:01:03.000Z","kind":"command_result","body":{"operation_id":"op-123","ok":true,"output":{"device_id":"dev-42","status":"ready"},"error_code":null,"error":null},"signature":"642e5ae3ae9ab4a428f850b551e8b094cbdbbbf02c1ec272db82a4be1833fcfd"}]}"#;
        const REPORT_MESSAGE_INPUT: &str = "cloudphone-agent-v2\nb3d1c0a2-4e5f-4a6b-8c7d-9e0f1a2b3c4d\nhost-17\n2\n2026-11-23T05:01:03.000Z\ncommand_result\n{\"error\":null,\"error_code\":null,\"ok\":true,\"operation_id\":\"op-123\",\"output\":{\"device_id\":\"dev-42\",\"status\":\"ready\"}}";
        const REPORT_MESSAGE_SIGNATURE: &str =
            "642e5ae3ae9ab4a428f850b551e8b094cbdbbbf02c1ec272db82a4be1833fcfd";
        const REPORT_INPUT: &str = "cloudphone-agent-v2\nrequest\nPOST\n/api/v1/device/agent/nodes/host-17/reports\nhost-17\n2026-11-23T05:01:03.100Z\n16798e248f24dc6890bab2ce9d2735ca519db4f1c28a4bd9631cf6842336136e";
        const REPORT_SIGNATURE: &str =
            "75df561c7c9b0050623ad14ce66fe6057339f47889072e9e574f4146dfacbd76";

        fn secret() -> NodeSecret {
            NodeSecret::new(SECRET.to_vec()).unwrap()
        }

        fn sent_at() -> DateTime<Utc> {
            DateTime::parse_from_rfc3339("2026-11-23T05:01:02.345Z")
                .unwrap()
                .with_timezone(&Utc)
        }

        #[test]
        fn canonical_json_matches_the_documented_vector() {
            let v: serde_json::Value = serde_json::from_str(
                r#"{"b": [3, {"z": null, "y": true}], "a": {"d": "tab\there \"quoted\" é", "c": -1.5}, "A": 0}"#,
            )
            .unwrap();
            assert_eq!(
                canonical_json(&v),
                r#"{"A":0,"a":{"c":-1.5,"d":"tab\there \"quoted\" é"},"b":[3,{"y":true,"z":null}]}"#
            );
        }

        #[test]
        fn the_documented_envelope_is_signed_with_the_documented_input_and_signature() {
            let mut env: Envelope = serde_json::from_str(ENVELOPE).unwrap();
            assert_eq!(env.signing_input(), ENVELOPE_INPUT);
            env.signature.clear();
            assert_eq!(env.sign(&secret()).signature, ENVELOPE_SIGNATURE);
        }

        #[test]
        fn the_documented_envelope_verifies_and_a_changed_one_does_not() {
            let node = NodeId::parse("host-17").unwrap();
            let skew = chrono::Duration::seconds(300);
            let env = Envelope::open(ENVELOPE.as_bytes(), &secret(), &node, sent_at(), skew)
                .expect("the documented envelope opens");
            assert_eq!(env.body["op"], "restart");
            // The same bytes with one field changed must fail under the documented signature.
            let changed = ENVELOPE.replace("\"restart\"", "\"delete\"");
            assert!(matches!(
                Envelope::open(changed.as_bytes(), &secret(), &node, sent_at(), skew),
                Err(ProtocolError::BadSignature)
            ));
            assert!(secret().verify(ENVELOPE_INPUT.as_bytes(), ENVELOPE_SIGNATURE));
        }

        #[test]
        fn the_documented_http_request_and_response_have_the_documented_inputs_and_signatures() {
            let ts = "2026-11-23T05:01:02.345Z";
            let input = http_signing_input("request", "GET", PATH, "host-17", ts, b"");
            assert_eq!(input, REQUEST_INPUT);
            assert_eq!(secret().sign(input.as_bytes()), REQUEST_SIGNATURE);
            assert!(secret().verify(REQUEST_INPUT.as_bytes(), REQUEST_SIGNATURE));

            let ts = "2026-11-23T05:01:02.500Z";
            let input = http_signing_input("response", "GET", PATH, "host-17", ts, RESPONSE_BODY);
            assert_eq!(input, RESPONSE_INPUT);
            assert_eq!(secret().sign(input.as_bytes()), RESPONSE_SIGNATURE);
            assert!(secret().verify(RESPONSE_INPUT.as_bytes(), RESPONSE_SIGNATURE));
            assert!(!secret().verify(REQUEST_INPUT.as_bytes(), RESPONSE_SIGNATURE));
        }

        #[test]
        fn the_documented_paths_are_the_ones_the_helpers_build() {
            assert_eq!(desired_state_path("host-17"), PATH);
            assert_eq!(reports_path("host-17"), REPORT_PATH);
            assert_eq!(
                register_path("host-17"),
                "/api/v1/device/agent/nodes/host-17/register"
            );
            assert_eq!(
                operation_content_path("host-17", "op-123"),
                "/api/v1/device/agent/nodes/host-17/operations/op-123/content"
            );
        }

        #[test]
        fn the_documented_report_request_and_its_message_have_the_documented_inputs_and_signatures()
        {
            let ts = "2026-11-23T05:01:03.100Z";
            let input =
                http_signing_input("request", "POST", REPORT_PATH, "host-17", ts, REPORT_BODY);
            assert_eq!(input, REPORT_INPUT);
            assert_eq!(secret().sign(input.as_bytes()), REPORT_SIGNATURE);

            let reports: Reports = serde_json::from_slice(REPORT_BODY).unwrap();
            assert_eq!(reports.messages.len(), 1);
            let mut env = reports.messages[0].clone();
            assert_eq!(env.signing_input(), REPORT_MESSAGE_INPUT);
            // A report's message is authenticated without an age check: it
            // may have waited in the agent's queue through an outage.
            env.authenticate(&secret(), "host-17")
                .expect("the documented message authenticates");
            assert!(matches!(
                env.authenticate(&secret(), "host-18"),
                Err(ProtocolError::WrongNode(_))
            ));
            env.signature.clear();
            assert_eq!(
                env.clone().sign(&secret()).signature,
                REPORT_MESSAGE_SIGNATURE
            );
            env.body["ok"] = serde_json::Value::Bool(false);
            env.signature = REPORT_MESSAGE_SIGNATURE.to_owned();
            assert!(matches!(
                env.authenticate(&secret(), "host-17"),
                Err(ProtocolError::BadSignature)
            ));
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(NodeSecret::new(b"short".to_vec()).is_err());
    }
}
