//! A scripted runtime agent for end-to-end tests of the control plane's side
//! of the agent protocol: it signs its requests and messages with a node's
//! secret exactly as the real agent does (the shared `agent-protocol`
//! crate), so a test can register, heartbeat, report device statuses and
//! command results, pull the desired state and read its commands, and also
//! forge, replay or misaddress them. The real agent is tested end to end
//! with `runtime-agent` against Podman.

use agent_protocol::messages::{
    self as proto, Capacity, CommandResult, DesiredState, DeviceStatus, DeviceStatusChange,
    Envelope, Heartbeat, NodeSecret, ObservedDevice, Registration, Reports, Usage,
};
use agent_protocol::spec::NodeId;
use chrono::{SecondsFormat, Utc};
use reqwest::blocking::Client;
use std::collections::BTreeMap;

/// One node's agent, as a test drives it.
pub struct ScriptedAgent {
    /// The node.
    pub node: NodeId,
    /// Its secret.
    pub secret: NodeSecret,
    /// The GPUs (render nodes) it reports.
    pub gpus: Vec<String>,
    base: String,
    client: Client,
}

impl ScriptedAgent {
    /// An agent for `node` with `secret`, talking to the app at `base`.
    pub fn new(base: &str, node: &str, secret: &str) -> Self {
        Self {
            node: NodeId::parse(node).expect("node id"),
            secret: NodeSecret::new(secret.as_bytes().to_vec()).expect("secret"),
            gpus: Vec::new(),
            base: base.to_string(),
            client: Client::new(),
        }
    }

    /// A signed request of this agent.
    pub fn request(&self, method: &str, path: &str, body: Vec<u8>) -> reqwest::blocking::Response {
        let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        self.request_at(method, path, body, &ts, &self.secret)
    }

    /// A signed request with a content type of the caller's choice (for the
    /// systematic bad-input test).
    pub fn request_typed(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> reqwest::blocking::Response {
        let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let input =
            proto::http_signing_input("request", method, path, self.node.as_str(), &ts, &body);
        self.client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", self.base),
            )
            .header(proto::HEADER_NODE, self.node.as_str())
            .header(proto::HEADER_TIMESTAMP, ts)
            .header(proto::HEADER_SIGNATURE, self.secret.sign(input.as_bytes()))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("request")
    }

    /// A request signed at `ts` with `secret` (to test stale and forged ones).
    pub fn request_at(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        ts: &str,
        secret: &NodeSecret,
    ) -> reqwest::blocking::Response {
        let input =
            proto::http_signing_input("request", method, path, self.node.as_str(), ts, &body);
        self.client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", self.base),
            )
            .header(proto::HEADER_NODE, self.node.as_str())
            .header(proto::HEADER_TIMESTAMP, ts)
            .header(proto::HEADER_SIGNATURE, secret.sign(input.as_bytes()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request")
    }

    /// The registration this agent reports: 8 cores, 16 GiB, 200 GiB, 10
    /// devices, its GPUs.
    pub fn registration(&self) -> Registration {
        Registration {
            node_id: self.node.clone(),
            address: "10.0.0.17".into(),
            capacity: Capacity {
                cpus: 8,
                memory_mb: 16384,
                disk_mb: 200 * 1024,
                max_devices: 10,
                gpus: self.gpus.clone(),
            },
            labels: BTreeMap::new(),
            agent_version: "test".into(),
        }
    }

    /// `POST .../register`; the status.
    pub fn register(&self) -> u16 {
        let body = serde_json::to_vec(&self.registration()).expect("json");
        self.request("POST", &proto::register_path(self.node.as_str()), body)
            .status()
            .as_u16()
    }

    /// A signed message of this agent.
    pub fn message(&self, kind: &str, body: serde_json::Value) -> Envelope {
        Envelope::signed(&self.secret, &self.node, kind, body, Utc::now())
    }

    /// `POST .../reports` with these messages; the status and the answer.
    pub fn report(&self, messages: Vec<Envelope>) -> (u16, serde_json::Value) {
        let body = serde_json::to_vec(&Reports { messages }).expect("json");
        let r = self.request("POST", &proto::reports_path(self.node.as_str()), body);
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// A heartbeat with these devices.
    pub fn heartbeat(&self, devices: Vec<ObservedDevice>) -> Envelope {
        let hb = Heartbeat {
            node: self.registration(),
            usage: Usage {
                devices: devices.len() as u32,
                ready: 0,
                memory_used_mb: 1024,
                disk_free_mb: 100_000,
                load1: 0.1,
            },
            devices,
            uptime_s: 1,
        };
        self.message("heartbeat", serde_json::to_value(hb).expect("json"))
    }

    /// A device status message.
    pub fn status(&self, device: &str, status: DeviceStatus, generation: u64) -> Envelope {
        let change = DeviceStatusChange {
            device: observed(device, status, generation),
            previous: None,
        };
        self.message("device_status", serde_json::to_value(change).expect("json"))
    }

    /// A command result message.
    pub fn result(&self, operation: &str, ok: bool, output: serde_json::Value) -> Envelope {
        let r = CommandResult {
            operation_id: operation.to_string(),
            ok,
            output,
            error_code: (!ok).then(|| "device_command_failed".to_string()),
            error: (!ok).then(|| "it failed".to_string()),
            payload_expired: false,
        };
        self.message("command_result", serde_json::to_value(r).expect("json"))
    }

    /// `GET .../desired-state`, with the response's signature checked.
    pub fn desired_state(&self) -> DesiredState {
        let path = proto::desired_state_path(self.node.as_str());
        let r = self.request("GET", &path, Vec::new());
        assert_eq!(r.status(), 200, "desired state");
        let ts = r
            .headers()
            .get(proto::HEADER_TIMESTAMP)
            .and_then(|v| v.to_str().ok())
            .expect("signed response")
            .to_string();
        let sig = r
            .headers()
            .get(proto::HEADER_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .expect("signed response")
            .to_string();
        let body = r.bytes().expect("body");
        let input =
            proto::http_signing_input("response", "GET", &path, self.node.as_str(), &ts, &body);
        assert!(
            self.secret.verify(input.as_bytes(), &sig),
            "the desired state is signed with the node's secret"
        );
        serde_json::from_slice(&body).expect("desired state")
    }
}

/// A device as an agent observes it.
pub fn observed(device: &str, status: DeviceStatus, generation: u64) -> ObservedDevice {
    ObservedDevice {
        device_id: device.to_string(),
        status,
        container_id: Some(format!("c-{device}")),
        adb_port: Some(40001),
        spec_hash: None,
        generation: Some(generation),
        reason: (status == DeviceStatus::Failed).then(|| "it broke".to_string()),
    }
}
