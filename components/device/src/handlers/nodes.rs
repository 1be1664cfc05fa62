//! Nodes, for platform operators (`node:read`, `node:manage`): enrolment
//! with a secret shown once, settings (labels, taints, priority, zone,
//! overcommit), cordon and uncordon, maintenance, drain, secret rotation
//! and revocation, and statistics.
//!
//! Drain policy: a drained node is cordoned and every device on it is
//! stopped (its container and data stay on the node; the owner starts it
//! again once the node is back). Moving devices to other nodes needs
//! snapshots of their data and comes with them.

use super::{db, devices, one_of, paged, publish_after_commit, Call};
use crate::domain::placement::{Effect, Taint};
use crate::domain::status::{Action, NodeStatus};
use crate::error::{Error, Result};
use crate::repo::{self, nodes::NodeChange};
use base64::Engine as _;
use events::catalogue::NODE_ENROLLED;
use serde::Deserialize;
use spin_sdk::http::Response;
use std::collections::BTreeMap;

fn node_id(call: &Call) -> Result<String> {
    let id = call.params.get("id");
    agent_protocol::spec::NodeId::parse(id)
        .map(|n| n.as_str().to_string())
        .map_err(|_| Error::NotFound("node"))
}

fn found(db: &platform::db::Db, id: &str) -> Result<repo::nodes::Node> {
    repo::nodes::find(db, id)?.ok_or(Error::NotFound("node"))
}

/// `GET /nodes?status=&region=&zone=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let status = one_of(
        call,
        "status",
        &[
            "pending",
            "online",
            "unreachable",
            "maintenance",
            "draining",
            "disabled",
        ],
    )?;
    let short = |name: &str| -> Result<Option<String>> {
        match call.query(name) {
            Some(v) if v.len() > 64 => Err(Error::Invalid(format!(
                "{name} must be at most 64 characters"
            ))),
            v => Ok(v),
        }
    };
    let (region, zone) = (short("region")?, short("zone")?);
    let page = call.page()?;
    let (items, total) = repo::nodes::list(
        &db()?,
        status.as_deref(),
        region.as_deref(),
        zone.as_deref(),
        page,
    )?;
    Ok(paged(items, page, total))
}

/// `GET /nodes/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let id = node_id(call)?;
    Ok(platform::http::json(200, &found(&db()?, &id)?))
}

/// `GET /nodes/stats`.
pub fn stats(_call: &Call) -> Result<Response> {
    Ok(platform::http::json(200, &repo::nodes::stats(&db()?)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaintInput {
    key: String,
    #[serde(default)]
    value: String,
    effect: String,
}

fn taints(raw: Vec<TaintInput>) -> Result<Vec<Taint>> {
    if raw.len() > 20 {
        return Err(Error::Invalid("at most 20 taints".into()));
    }
    raw.into_iter()
        .map(|t| {
            label_part("taint key", &t.key, false)?;
            label_part("taint value", &t.value, true)?;
            let effect = match t.effect.as_str() {
                "NoSchedule" => Effect::NoSchedule,
                "PreferNoSchedule" => Effect::PreferNoSchedule,
                "NoExecute" => Effect::NoExecute,
                _ => {
                    return Err(Error::Invalid(
                        "taint effect must be NoSchedule, PreferNoSchedule or NoExecute".into(),
                    ))
                }
            };
            Ok(Taint {
                key: t.key,
                value: t.value,
                effect,
            })
        })
        .collect()
}

fn label_part(what: &str, s: &str, empty_ok: bool) -> Result<()> {
    let ok = (empty_ok || !s.is_empty())
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} must be 1-63 of letters, digits, '-', '_', '.', '/'"
        )))
    }
}

fn labels(raw: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    if raw.len() > 50 {
        return Err(Error::Invalid("at most 50 labels".into()));
    }
    for (k, v) in &raw {
        label_part("label key", k, false)?;
        label_part("label value", v, true)?;
    }
    Ok(raw)
}

fn place_name(what: &str, s: &str) -> Result<String> {
    label_part(what, s, false)?;
    Ok(s.to_string())
}

fn overcommit(what: &str, v: i32, max: i32) -> Result<i32> {
    if (100..=max).contains(&v) {
        Ok(v)
    } else {
        Err(Error::Invalid(format!(
            "{what} must be from 100 to {max} (percent)"
        )))
    }
}

fn address(s: &str) -> Result<String> {
    if s.len() > 255 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(
            "address must be a host name or IP address".into(),
        ));
    }
    Ok(s.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enroll {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    taints: Vec<TaintInput>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    cpu_overcommit_pct: Option<i32>,
    #[serde(default)]
    memory_overcommit_pct: Option<i32>,
}

/// A fresh node secret (32 random bytes, base64url) and its sealed form.
fn new_secret() -> Result<(String, Vec<u8>)> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| platform::Problem::internal(format!("no randomness: {e}")))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let sealed = access::seal::seal(
        &super::dispatch::seal_key()?,
        super::dispatch::NODE_SECRET_PURPOSE,
        secret.as_bytes(),
    )
    .map_err(|e| platform::Problem::internal(e.to_string()))?;
    Ok((secret, sealed))
}

/// `POST /nodes`: enrolls a node; the answer holds its secret, shown once
/// (the agent's `secret_file`). Stored sealed, never in the clear.
pub fn enroll(call: &Call) -> Result<Response> {
    let b: Enroll = call.body()?;
    let id =
        agent_protocol::spec::NodeId::parse(&b.id).map_err(|e| Error::Invalid(e.to_string()))?;
    let name = match &b.name {
        Some(n) => crate::domain::spec::DeviceName::parse(n)?
            .as_str()
            .to_string(),
        None => id.to_string(),
    };
    let address = address(b.address.as_deref().unwrap_or(""))?;
    let region = b
        .region
        .as_deref()
        .map(|r| place_name("region", r))
        .transpose()?;
    let zone = b
        .zone
        .as_deref()
        .map(|z| place_name("zone", z))
        .transpose()?;
    let labels = labels(b.labels)?;
    let taints = taints(b.taints)?;
    let priority = b.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(Error::Invalid("priority must be from -1000 to 1000".into()));
    }
    let cpu = overcommit(
        "cpu_overcommit_pct",
        b.cpu_overcommit_pct.unwrap_or(400),
        1600,
    )?;
    let mem = overcommit(
        "memory_overcommit_pct",
        b.memory_overcommit_pct.unwrap_or(200),
        800,
    )?;
    let (secret, sealed) = new_secret()?;
    let db = db()?;
    let node = db.transaction(|tx| {
        repo::nodes::insert(
            tx,
            &repo::nodes::NewNode {
                id: id.as_str(),
                name: &name,
                address: &address,
                region: region.as_deref(),
                zone: zone.as_deref(),
                labels: &labels,
                taints: &taints,
                priority,
                cpu_overcommit_pct: cpu,
                memory_overcommit_pct: mem,
                secret_sealed: sealed,
            },
        )?
        .ok_or_else(|| Error::Conflict(format!("node {id} is enrolled already")))?;
        platform::outbox::enqueue(
            tx,
            &NODE_ENROLLED,
            id.as_str(),
            1,
            &events::payload::Node {
                id: id.to_string(),
                status: "pending".into(),
                previous_status: None,
            },
        )?;
        found(tx, id.as_str())
    })?;
    publish_after_commit(call, &db);
    let mut v = serde_json::to_value(&node).expect("node serializes");
    v["secret"] = secret.into();
    Ok(platform::http::json(201, &v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default, deserialize_with = "platform::input::nullable")]
    region: Option<Option<String>>,
    #[serde(default, deserialize_with = "platform::input::nullable")]
    zone: Option<Option<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    taints: Option<Vec<TaintInput>>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    cpu_overcommit_pct: Option<i32>,
    #[serde(default)]
    memory_overcommit_pct: Option<i32>,
    #[serde(default)]
    gpu_slots: Option<i32>,
}

/// `PATCH /nodes/:id`: the operator's settings.
pub fn patch(call: &Call) -> Result<Response> {
    let id = node_id(call)?;
    let b: Patch = call.body()?;
    if b.priority.is_some_and(|p| !(-1000..=1000).contains(&p)) {
        return Err(Error::Invalid("priority must be from -1000 to 1000".into()));
    }
    let change = NodeChange {
        name: b
            .name
            .as_deref()
            .map(|n| crate::domain::spec::DeviceName::parse(n).map(|n| n.as_str().to_string()))
            .transpose()?,
        address: b.address.as_deref().map(address).transpose()?,
        region: b
            .region
            .map(|r| r.as_deref().map(|r| place_name("region", r)).transpose())
            .transpose()?,
        zone: b
            .zone
            .map(|z| z.as_deref().map(|z| place_name("zone", z)).transpose())
            .transpose()?,
        labels: b.labels.map(labels).transpose()?,
        taints: b.taints.map(taints).transpose()?,
        priority: b.priority,
        cpu_overcommit_pct: b
            .cpu_overcommit_pct
            .map(|v| overcommit("cpu_overcommit_pct", v, 1600))
            .transpose()?,
        memory_overcommit_pct: b
            .memory_overcommit_pct
            .map(|v| overcommit("memory_overcommit_pct", v, 800))
            .transpose()?,
        gpu_slots: match b.gpu_slots {
            Some(n) if !(1..=64).contains(&n) => {
                return Err(Error::Invalid("gpu_slots must be from 1 to 64".into()))
            }
            n => n,
        },
    };
    let db = db()?;
    let node = db.transaction(|tx| {
        found(tx, &id)?;
        if let Some(slots) = change.gpu_slots {
            // Under the node's row lock, which creates take too: fewer
            // slots than devices hold would give a slot twice.
            repo::nodes::lock_one(tx, &id)?;
            if repo::gpus::on_node(tx, &id)?
                .iter()
                .any(|a| a.slot >= slots)
            {
                return Err(Error::Conflict(format!(
                    "devices hold gpu slots beyond {slots}: move or delete them first"
                )));
            }
        }
        repo::nodes::update(tx, &id, &change)?;
        found(tx, &id)
    })?;
    Ok(platform::http::json(200, &node))
}

/// `GET /nodes/:id/gpus` (`node:read`): each GPU of the node with its
/// slots and the devices holding them.
pub fn gpus(call: &Call) -> Result<Response> {
    let id = node_id(call)?;
    let db = db()?;
    let node = found(&db, &id)?;
    let held = repo::gpus::on_node(&db, &id)?;
    let gpus: Vec<_> = node
        .gpu_devices
        .iter()
        .map(|g| {
            let slots: Vec<_> = held.iter().filter(|a| &a.gpu == g).collect();
            serde_json::json!({"gpu": g, "slots": node.gpu_slots, "used": slots.len(), "allocations": slots})
        })
        .collect();
    Ok(platform::http::json(
        200,
        &serde_json::json!({"node_id": id, "gpu_slots": node.gpu_slots, "gpus": gpus}),
    ))
}

/// Sets a node's status and/or schedulability, with its event.
fn set_state(
    call: &Call,
    status: Option<NodeStatus>,
    schedulable: Option<bool>,
) -> Result<repo::nodes::Node> {
    let id = node_id(call)?;
    let db = db()?;
    let node = db.transaction(|tx| {
        let current = found(tx, &id)?;
        let to = match status {
            Some(s) => Some(
                NodeStatus::parse(&current.status)
                    .ok_or_else(|| platform::Problem::internal("stored node status"))?
                    .operator(s)?,
            ),
            None => {
                if current.status == "disabled" {
                    return Err(Error::Conflict("the node is disabled".into()));
                }
                None
            }
        };
        let before =
            repo::nodes::set_state(tx, &id, to, schedulable)?.ok_or(Error::NotFound("node"))?;
        if let Some(to) = to {
            if before != to.as_str() {
                super::agent::node_status_event(tx, &id, &before, to.as_str())?;
            }
        }
        found(tx, &id)
    })?;
    publish_after_commit(call, &db);
    Ok(node)
}

/// `POST /nodes/:id/cordon`: nothing new is placed there; devices stay.
pub fn cordon(call: &Call) -> Result<Response> {
    Ok(platform::http::json(
        200,
        &set_state(call, None, Some(false))?,
    ))
}

/// `POST /nodes/:id/uncordon`.
pub fn uncordon(call: &Call) -> Result<Response> {
    Ok(platform::http::json(
        200,
        &set_state(call, None, Some(true))?,
    ))
}

/// `POST /nodes/:id/maintenance`: out of service; devices stay as they are.
pub fn maintenance(call: &Call) -> Result<Response> {
    Ok(platform::http::json(
        200,
        &set_state(call, Some(NodeStatus::Maintenance), None)?,
    ))
}

/// `POST /nodes/:id/activate`: back in service after maintenance or a
/// drain (and uncordoned).
pub fn activate(call: &Call) -> Result<Response> {
    Ok(platform::http::json(
        200,
        &set_state(call, Some(NodeStatus::Online), Some(true))?,
    ))
}

/// `POST /nodes/:id/drain`: cordons the node and stops every device on it
/// (the drain policy above); answers the node and the stop operations.
pub fn drain(call: &Call) -> Result<Response> {
    let node = set_state(call, Some(NodeStatus::Draining), Some(false))?;
    let ids = repo::devices::on_node(&db()?, &node.id)?;
    let mut operations = Vec::new();
    for id in ids {
        match devices::act(
            call.ctx,
            devices::Actor::Operator(call.caller()?),
            id,
            Action::Stop,
            None,
            None,
        ) {
            Ok(op) => operations.push(op),
            // Already stopped, or deleted meanwhile.
            Err(Error::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(platform::http::json(
        202,
        &serde_json::json!({"node": node, "operations": operations}),
    ))
}

/// `POST /nodes/:id/secret`: a new secret, shown once; the old one stops
/// working at once (restart the agent with the new one).
pub fn rotate(call: &Call) -> Result<Response> {
    let id = node_id(call)?;
    let (secret, sealed) = new_secret()?;
    let db = db()?;
    db.transaction(|tx| {
        let n = found(tx, &id)?;
        if n.status == "disabled" {
            return Err(Error::Conflict(
                "the node is disabled: enroll it again".into(),
            ));
        }
        repo::nodes::set_secret(tx, &id, Some(sealed))?;
        Ok(())
    })?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"id": id, "secret": secret}),
    ))
}

/// `POST /nodes/:id/revoke`: the node's secret is destroyed and it is
/// disabled: its agent can neither pull, report nor receive commands.
pub fn revoke(call: &Call) -> Result<Response> {
    let id = node_id(call)?;
    let db = db()?;
    db.transaction(|tx| {
        found(tx, &id)?;
        repo::nodes::set_secret(tx, &id, None)?;
        Ok::<_, Error>(())
    })?;
    drop(db);
    let node = set_state(call, Some(NodeStatus::Disabled), Some(false))?;
    Ok(platform::http::json(200, &node))
}
