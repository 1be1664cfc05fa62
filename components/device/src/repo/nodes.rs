//! Nodes: enrolment, their operators' settings, what their agents report,
//! and the view placement takes of them.

use crate::domain::placement::{NodeView, Resources, Taint};
use crate::domain::status::NodeStatus;
use platform::db::{col, opt_timestamp, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use std::collections::BTreeMap;

/// A node as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Node id (the agent's `node_id`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Address the agent reported (or the operator set).
    pub address: String,
    /// Region.
    pub region: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Higher wins placement ties.
    pub priority: i32,
    /// Status.
    pub status: String,
    /// False while cordoned.
    pub schedulable: bool,
    /// Capacity reported by the agent.
    pub capacity: Capacity,
    /// CPU overcommit, percent.
    pub cpu_overcommit_pct: i32,
    /// Memory overcommit, percent.
    pub memory_overcommit_pct: i32,
    /// What devices placed here take.
    pub allocated: Resources,
    /// The host's own usage, as the agent reports it.
    pub usage: serde_json::Value,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Last heartbeat, RFC 3339.
    pub last_heartbeat_at: Option<String>,
    /// Whether a secret is set (it is never shown after enrolment).
    pub has_secret: bool,
    /// Enrolled at.
    pub created_at: String,
    /// Changed at.
    pub updated_at: String,
    /// Version.
    pub version: i64,
    /// The GPUs (render nodes) the agent reported.
    pub gpu_devices: Vec<String>,
    /// How many devices share one GPU (operator setting).
    pub gpu_slots: i32,
}

/// What the host offers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub cpu_millis: i64,
    /// Memory, MiB.
    pub memory_mb: i64,
    /// Disk, GiB.
    pub disk_gb: i64,
    /// Most devices.
    pub max_devices: i32,
    /// GPU slots: GPUs × slots per GPU.
    pub gpus: i32,
}

const COLUMNS: &str = "n.id, n.name, n.address, n.region, n.zone, n.labels, n.taints, n.priority, n.status, \
     n.schedulable, n.cpu_millis, n.memory_mb, n.disk_gb, n.max_devices, n.gpus, n.cpu_overcommit_pct, \
     n.memory_overcommit_pct, n.usage, n.agent_version, n.last_heartbeat_at, n.secret_sealed IS NOT NULL, \
     n.created_at, n.updated_at, n.version, \
     coalesce(a.cpu, 0)::int8, coalesce(a.mem, 0)::int8, coalesce(a.disk, 0)::int8, coalesce(a.devices, 0)::int8, coalesce(g.slots, 0)::int8, n.gpu_devices, n.gpu_slots";

/// What the devices of each node take (every device not deleted counts,
/// stopped ones too: their data and reservation stay on the node).
const ALLOCATED: &str = "LEFT JOIN (SELECT node_id, sum(cpu_millis) AS cpu, sum(memory_mb) AS mem, \
     sum(disk_gb) AS disk, count(*) AS devices FROM devices \
     WHERE desired_status <> 'deleted' AND node_id IS NOT NULL GROUP BY node_id) a ON a.node_id = n.id \
     LEFT JOIN (SELECT node_id, count(*) AS slots FROM gpu_allocations GROUP BY node_id) g ON g.node_id = n.id";

fn node(r: &[DbValue]) -> Result<Node, DbError> {
    let labels: serde_json::Value = col(r, 5, "nodes.labels")?;
    let taints: serde_json::Value = col(r, 6, "nodes.taints")?;
    Ok(Node {
        id: col(r, 0, "nodes.id")?,
        name: col(r, 1, "nodes.name")?,
        address: col(r, 2, "nodes.address")?,
        region: col(r, 3, "nodes.region")?,
        zone: col(r, 4, "nodes.zone")?,
        labels: serde_json::from_value(labels)
            .map_err(|e| platform::db::decode_error("nodes.labels", e))?,
        taints: serde_json::from_value(taints)
            .map_err(|e| platform::db::decode_error("nodes.taints", e))?,
        priority: col(r, 7, "nodes.priority")?,
        status: col(r, 8, "nodes.status")?,
        schedulable: col(r, 9, "nodes.schedulable")?,
        capacity: Capacity {
            cpu_millis: col(r, 10, "nodes.cpu_millis")?,
            memory_mb: col(r, 11, "nodes.memory_mb")?,
            disk_gb: col(r, 12, "nodes.disk_gb")?,
            max_devices: col(r, 13, "nodes.max_devices")?,
            gpus: col(r, 14, "nodes.gpus")?,
        },
        cpu_overcommit_pct: col(r, 15, "nodes.cpu_overcommit_pct")?,
        memory_overcommit_pct: col(r, 16, "nodes.memory_overcommit_pct")?,
        usage: col(r, 17, "nodes.usage")?,
        agent_version: col(r, 18, "nodes.agent_version")?,
        last_heartbeat_at: opt_timestamp(r, 19, "nodes.last_heartbeat_at")?,
        has_secret: col(r, 20, "nodes.has_secret")?,
        created_at: timestamp(r, 21, "nodes.created_at")?,
        updated_at: timestamp(r, 22, "nodes.updated_at")?,
        version: col(r, 23, "nodes.version")?,
        allocated: Resources {
            cpu_millis: col(r, 24, "allocated.cpu")?,
            memory_mb: col(r, 25, "allocated.memory")?,
            disk_gb: col(r, 26, "allocated.disk")?,
            devices: col(r, 27, "allocated.devices")?,
            gpus: col(r, 28, "allocated.gpus")?,
        },
        gpu_devices: platform::db::strings(r, 29, "nodes.gpu_devices")?,
        gpu_slots: col(r, 30, "nodes.gpu_slots")?,
    })
}

impl Node {
    /// The node as placement sees it.
    pub fn view(&self) -> NodeView {
        let status = NodeStatus::parse(&self.status);
        NodeView {
            id: self.id.clone(),
            schedulable: self.schedulable && status == Some(NodeStatus::Online),
            region: self.region.clone(),
            zone: self.zone.clone(),
            labels: self.labels.clone(),
            taints: self.taints.clone(),
            priority: self.priority,
            capacity: Resources {
                cpu_millis: self.capacity.cpu_millis,
                memory_mb: self.capacity.memory_mb,
                disk_gb: self.capacity.disk_gb,
                devices: i64::from(self.capacity.max_devices),
                gpus: i64::from(self.capacity.gpus),
            },
            cpu_overcommit_pct: i64::from(self.cpu_overcommit_pct),
            memory_overcommit_pct: i64::from(self.memory_overcommit_pct),
            used: self.allocated,
        }
    }
}

/// A node by id.
pub fn find(db: &Db, id: &str) -> Result<Option<Node>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM nodes n {ALLOCATED} WHERE n.id = $1"),
        &[P::Str(id.into())],
        node,
    )
}

/// Every node that could take a device, locked until the transaction ends:
/// concurrent placements queue here, so two can never both take the last
/// room on a node. Locked in id order, so they never deadlock.
pub fn lock_candidates(db: &Db) -> Result<Vec<Node>, DbError> {
    // Lock first (FOR UPDATE cannot be used with the aggregate join), then
    // read with what is allocated, now that no placement can change it.
    db.query(
        "SELECT id FROM nodes WHERE status = 'online' AND schedulable ORDER BY id FOR UPDATE",
        &[],
    )?;
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM nodes n {ALLOCATED} WHERE n.status = 'online' AND n.schedulable ORDER BY n.id"
        ),
        &[],
        node,
    )
}

/// Locks a node's row until the transaction ends (as placement does).
pub fn lock_one(db: &Db, id: &str) -> Result<(), DbError> {
    db.query(
        "SELECT id FROM nodes WHERE id = $1 FOR UPDATE",
        &[P::Str(id.into())],
    )?;
    Ok(())
}

/// A page of nodes with optional filters.
pub fn list(
    db: &Db,
    status: Option<&str>,
    region: Option<&str>,
    zone: Option<&str>,
    page: Page,
) -> Result<(Vec<Node>, i64), DbError> {
    let mut w = Where::new();
    if let Some(s) = status {
        w.eq("n.status", P::Str(s.into()));
    }
    if let Some(r) = region {
        w.eq("n.region", P::Str(r.into()));
    }
    if let Some(z) = zone {
        w.eq("n.zone", P::Str(z.into()));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM nodes n {ALLOCATED}"),
        "nodes n",
        w,
        "n.id",
        page,
        node,
    )
}

/// A new node.
pub struct NewNode<'a> {
    /// Id.
    pub id: &'a str,
    /// Name.
    pub name: &'a str,
    /// Address.
    pub address: &'a str,
    /// Region.
    pub region: Option<&'a str>,
    /// Zone.
    pub zone: Option<&'a str>,
    /// Labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Taints.
    pub taints: &'a [Taint],
    /// Priority.
    pub priority: i32,
    /// CPU overcommit, percent.
    pub cpu_overcommit_pct: i32,
    /// Memory overcommit, percent.
    pub memory_overcommit_pct: i32,
    /// The sealed secret.
    pub secret_sealed: Vec<u8>,
}

fn json(v: &impl Serialize) -> Result<P, DbError> {
    spin_sdk::pg4::jsonb(v).map_err(|e| DbError::Other(e.to_string()))
}

fn opt_str(s: Option<&str>) -> P {
    s.map_or(P::DbNull, |s| P::Str(s.into()))
}

/// Enrolls a node; `None` if the id is taken.
pub fn insert(db: &Db, n: &NewNode) -> Result<Option<()>, DbError> {
    let inserted = db.execute(
        "INSERT INTO nodes (id, name, address, region, zone, labels, taints, priority, \
           cpu_overcommit_pct, memory_overcommit_pct, secret_sealed, secret_rotated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() AT TIME ZONE 'UTC') ON CONFLICT (id) DO NOTHING",
        &[
            P::Str(n.id.into()),
            P::Str(n.name.into()),
            P::Str(n.address.into()),
            opt_str(n.region),
            opt_str(n.zone),
            json(n.labels)?,
            json(&n.taints)?,
            P::Int32(n.priority),
            P::Int32(n.cpu_overcommit_pct),
            P::Int32(n.memory_overcommit_pct),
            P::Binary(n.secret_sealed.clone()),
        ],
    )?;
    Ok((inserted == 1).then_some(()))
}

/// The operator's changes of a node (each `Some` replaces the field).
#[derive(Default)]
pub struct NodeChange {
    /// Name.
    pub name: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Region (`Some(None)` clears it).
    pub region: Option<Option<String>>,
    /// Zone (`Some(None)` clears it).
    pub zone: Option<Option<String>>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Taints.
    pub taints: Option<Vec<Taint>>,
    /// Priority.
    pub priority: Option<i32>,
    /// CPU overcommit.
    pub cpu_overcommit_pct: Option<i32>,
    /// Memory overcommit.
    pub memory_overcommit_pct: Option<i32>,
    /// Devices per GPU.
    pub gpu_slots: Option<i32>,
}

/// Applies an operator's change.
pub fn update(db: &Db, id: &str, c: &NodeChange) -> Result<(), DbError> {
    let opt_opt = |v: &Option<Option<String>>| match v {
        None => (P::Boolean(false), P::DbNull),
        Some(None) => (P::Boolean(true), P::DbNull),
        Some(Some(s)) => (P::Boolean(true), P::Str(s.clone())),
    };
    let (set_region, region) = opt_opt(&c.region);
    let (set_zone, zone) = opt_opt(&c.zone);
    db.execute(
        "UPDATE nodes SET name = coalesce($2, name), address = coalesce($3, address), \
           region = CASE WHEN $4 THEN $5 ELSE region END, zone = CASE WHEN $6 THEN $7 ELSE zone END, \
           labels = coalesce($8, labels), taints = coalesce($9, taints), priority = coalesce($10, priority), \
           cpu_overcommit_pct = coalesce($11, cpu_overcommit_pct), \
           memory_overcommit_pct = coalesce($12, memory_overcommit_pct), \
           gpu_slots = coalesce($13, gpu_slots), gpus = cardinality(gpu_devices) * coalesce($13, gpu_slots), \
           updated_at = now() AT TIME ZONE 'UTC', version = version + 1 WHERE id = $1",
        &[
            P::Str(id.into()),
            c.name.clone().map_or(P::DbNull, P::Str),
            c.address.clone().map_or(P::DbNull, P::Str),
            set_region,
            region,
            set_zone,
            zone,
            match &c.labels {
                Some(l) => json(l)?,
                None => P::DbNull,
            },
            match &c.taints {
                Some(t) => json(t)?,
                None => P::DbNull,
            },
            c.priority.map_or(P::DbNull, P::Int32),
            c.cpu_overcommit_pct.map_or(P::DbNull, P::Int32),
            c.memory_overcommit_pct.map_or(P::DbNull, P::Int32),
            c.gpu_slots.map_or(P::DbNull, P::Int32),
        ],
    )?;
    Ok(())
}

/// Sets status and/or schedulability; returns the status before (`None`
/// if there is no such node).
pub fn set_state(
    db: &Db,
    id: &str,
    status: Option<NodeStatus>,
    schedulable: Option<bool>,
) -> Result<Option<String>, DbError> {
    db.one(
        "WITH old AS (SELECT status FROM nodes WHERE id = $1 FOR UPDATE) \
         UPDATE nodes n SET status = coalesce($2, n.status), schedulable = coalesce($3, n.schedulable), \
           updated_at = now() AT TIME ZONE 'UTC', version = n.version + 1 \
         FROM old WHERE n.id = $1 RETURNING old.status",
        &[
            P::Str(id.into()),
            status.map_or(P::DbNull, |s| P::Str(s.as_str().into())),
            schedulable.map_or(P::DbNull, P::Boolean),
        ],
        |r| col(r, 0, "nodes.status"),
    )
}

/// Replaces the sealed secret (`None` revokes it).
pub fn set_secret(db: &Db, id: &str, sealed: Option<Vec<u8>>) -> Result<bool, DbError> {
    let n = db.execute(
        "UPDATE nodes SET secret_sealed = $2, secret_rotated_at = now() AT TIME ZONE 'UTC', \
           updated_at = now() AT TIME ZONE 'UTC', version = version + 1 WHERE id = $1",
        &[P::Str(id.into()), sealed.map_or(P::DbNull, P::Binary)],
    )?;
    Ok(n == 1)
}

/// A node's sealed secret (none before enrolment) and its status.
pub type SealedSecret = (Option<Vec<u8>>, String);

/// The sealed secret and status of a node (for checking its agent's signatures).
pub fn secret(db: &Db, id: &str) -> Result<Option<SealedSecret>, DbError> {
    db.one(
        "SELECT secret_sealed, status FROM nodes WHERE id = $1",
        &[P::Str(id.into())],
        |r| {
            Ok((
                col(r, 0, "nodes.secret_sealed")?,
                col(r, 1, "nodes.status")?,
            ))
        },
    )
}

/// What a registration or heartbeat says about the host.
pub struct Report<'a> {
    /// Address.
    pub address: &'a str,
    /// Capacity.
    pub capacity: Capacity,
    /// Usage as the agent measured it.
    pub usage: Option<serde_json::Value>,
    /// Agent version.
    pub agent_version: &'a str,
    /// The GPUs (render nodes) it has.
    pub gpu_devices: &'a [String],
    /// Whether this is a heartbeat (it counts for liveness).
    pub heartbeat: bool,
}

/// Records a registration or heartbeat; returns (status before, status
/// after) when the status changed.
pub fn record_report(db: &Db, id: &str, r: &Report) -> Result<Option<(String, String)>, DbError> {
    let before: Option<String> = db.one(
        "SELECT status FROM nodes WHERE id = $1 FOR UPDATE",
        &[P::Str(id.into())],
        |row| col(row, 0, "nodes.status"),
    )?;
    let Some(before) = before else {
        return Ok(None);
    };
    let after = if r.heartbeat {
        NodeStatus::parse(&before)
            .map(NodeStatus::after_heartbeat)
            .map_or(before.clone(), |s| s.as_str().to_string())
    } else {
        before.clone()
    };
    db.execute(
        "UPDATE nodes SET address = CASE WHEN $2 = '' THEN address ELSE $2 END, cpu_millis = $3, memory_mb = $4, \
           disk_gb = $5, max_devices = $6, gpu_devices = $7, gpus = cardinality($7::text[]) * gpu_slots, \
           usage = coalesce($8, usage), agent_version = $9, \
           last_heartbeat_at = CASE WHEN $10 THEN now() AT TIME ZONE 'UTC' ELSE last_heartbeat_at END, \
           status = $11, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Str(id.into()),
            P::Str(r.address.into()),
            P::Int64(r.capacity.cpu_millis),
            P::Int64(r.capacity.memory_mb),
            P::Int64(r.capacity.disk_gb),
            P::Int32(r.capacity.max_devices),
            P::ArrayStr(r.gpu_devices.iter().cloned().map(Some).collect()),
            match &r.usage {
                Some(u) => json(u)?,
                None => P::DbNull,
            },
            P::Str(r.agent_version.into()),
            P::Boolean(r.heartbeat),
            P::Str(after.clone()),
        ],
    )?;
    Ok((before != after).then_some((before, after)))
}

/// Online nodes whose last heartbeat is older than `secs`: marked
/// unreachable; returns their ids.
pub fn mark_unreachable(db: &Db, secs: i32) -> Result<Vec<String>, DbError> {
    db.all(
        "UPDATE nodes SET status = 'unreachable', updated_at = now() AT TIME ZONE 'UTC', version = version + 1 \
         WHERE status = 'online' AND (last_heartbeat_at IS NULL \
           OR last_heartbeat_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => $1::int)) RETURNING id",
        &[P::Int32(secs)],
        |r| col(r, 0, "nodes.id"),
    )
}

/// Counts for operators.
pub fn stats(db: &Db) -> Result<serde_json::Value, DbError> {
    let by_status = db.all(
        "SELECT status, count(*) FROM nodes GROUP BY status ORDER BY status",
        &[],
        |r| Ok((col::<String>(r, 0, "status")?, col::<i64>(r, 1, "count")?)),
    )?;
    let totals = db.query(
        "SELECT coalesce(sum(cpu_millis), 0)::int8, coalesce(sum(memory_mb), 0)::int8, coalesce(sum(disk_gb), 0)::int8, \
           coalesce(sum(max_devices), 0)::int8, coalesce(sum(gpus), 0)::int8, \
           coalesce(sum(cpu_millis * cpu_overcommit_pct / 100), 0)::int8, \
           coalesce(sum(memory_mb * memory_overcommit_pct / 100), 0)::int8 \
         FROM nodes WHERE status <> 'disabled'",
        &[],
    )?;
    let t = &totals.rows[0];
    let used = db.query(
        "SELECT coalesce(sum(cpu_millis), 0)::int8, coalesce(sum(memory_mb), 0)::int8, coalesce(sum(disk_gb), 0)::int8, \
           count(*), coalesce(sum(gpus), 0)::int8 FROM devices WHERE desired_status <> 'deleted' AND node_id IS NOT NULL",
        &[],
    )?;
    let u = &used.rows[0];
    let devices = db.all(
        "SELECT observed_status, count(*) FROM devices WHERE desired_status <> 'deleted' GROUP BY observed_status ORDER BY 1",
        &[],
        |r| Ok((col::<String>(r, 0, "status")?, col::<i64>(r, 1, "count")?)),
    )?;
    Ok(serde_json::json!({
        "nodes": by_status.into_iter().collect::<BTreeMap<_, _>>(),
        "capacity": {
            "cpu_millis": col::<i64>(t, 0, "cpu")?, "memory_mb": col::<i64>(t, 1, "mem")?,
            "disk_gb": col::<i64>(t, 2, "disk")?, "max_devices": col::<i64>(t, 3, "devices")?,
            "gpus": col::<i64>(t, 4, "gpus")?,
            "cpu_millis_with_overcommit": col::<i64>(t, 5, "cpu oc")?,
            "memory_mb_with_overcommit": col::<i64>(t, 6, "mem oc")?,
        },
        "allocated": {
            "cpu_millis": col::<i64>(u, 0, "cpu")?, "memory_mb": col::<i64>(u, 1, "mem")?,
            "disk_gb": col::<i64>(u, 2, "disk")?, "devices": col::<i64>(u, 3, "devices")?,
            "gpus": col::<i64>(u, 4, "gpus")?,
        },
        "devices": devices.into_iter().collect::<BTreeMap<_, _>>(),
    }))
}
