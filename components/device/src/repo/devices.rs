//! Devices: their desired state (what owners ask for, with the generation
//! agents follow), their observed state (what agents report), placement and
//! the owner copies.

use crate::domain::spec::Spec;
use crate::domain::status::{Desired, Observed};
use access::RowFilter;
use chrono::NaiveDateTime;
use platform::db::{col, opt_timestamp, opt_uuid, strings, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to devices: by tenant, department and owner.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "d.tenant_id",
    department: Some("d.department_id"),
    owner: Some("d.owner_id"),
};

/// A device as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Owner.
    pub owner_id: Uuid,
    /// Owner's display name (copy).
    pub owner_name: String,
    /// Owner's email (copy).
    pub owner_email: String,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Department.
    pub department_id: Option<Uuid>,
    /// Node.
    pub node_id: Option<String>,
    /// Spec.
    pub spec: serde_json::Value,
    /// Tags.
    pub tags: Vec<String>,
    /// What the owner asked for.
    pub desired_status: String,
    /// What the agent reports.
    pub observed_status: String,
    /// Why (failures, unknown).
    pub status_reason: Option<String>,
    /// Desired-state generation.
    pub generation: i64,
    /// Container id on the node.
    #[serde(skip)]
    pub container_id: Option<String>,
    /// ADB host (the node's address).
    #[serde(skip)]
    pub adb_host: Option<String>,
    /// ADB port on the node.
    #[serde(skip)]
    pub adb_port: Option<i32>,
    /// Where and why it was placed.
    #[serde(skip)]
    pub placement: serde_json::Value,
    /// When the agent last reported its status.
    pub observed_at: Option<String>,
    /// The desired generation the agent's last report satisfied.
    pub observed_generation: Option<i64>,
    /// Created.
    pub created_at: String,
    /// Changed.
    pub updated_at: String,
    /// Version.
    pub version: i64,
    /// The template it was made from.
    pub template_id: Option<Uuid>,
    /// The template whose warm pool it waits in (nobody's yet).
    pub pool_template_id: Option<Uuid>,
    /// What happens when its node is lost: `none` or `fresh`.
    pub recover_policy: String,
    /// Its lifecycle policy and marks (the API shows them through
    /// `handlers::policy::view`).
    #[serde(skip)]
    pub lifecycle: Lifecycle,
}

/// A device's lifecycle columns (migrations/device/0010).
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// When it expires.
    pub expires_at: Option<NaiveDateTime>,
    /// When its owner was warned of that.
    pub expiry_warned_at: Option<NaiveDateTime>,
    /// Idle timeout (seconds).
    pub idle_timeout_secs: Option<i32>,
    /// Maximum session length (seconds).
    pub max_session_secs: Option<i32>,
    /// The last client heartbeat.
    pub last_client_heartbeat_at: Option<NaiveDateTime>,
    /// When its agent last saw it start running.
    pub session_started_at: Option<NaiveDateTime>,
    /// When its owner was last warned that it is idle.
    pub idle_warned_at: Option<NaiveDateTime>,
    /// When the lifecycle job must next look at it.
    pub due_at: Option<NaiveDateTime>,
}

/// The columns [`device`] decodes, for `SELECT ... FROM devices d` and
/// `RETURNING`.
pub const COLUMNS: &str = "d.id, d.name, d.owner_id, d.owner_name, d.owner_email, d.tenant_id, d.department_id, \
     d.node_id, d.spec, d.tags, d.desired_status, d.observed_status, d.status_reason, d.generation, \
     d.container_id, d.adb_host, d.adb_port, d.placement, d.observed_at, d.created_at, d.updated_at, d.version, d.observed_generation, \
     d.expires_at, d.expiry_warned_at, d.idle_timeout_secs, d.max_session_secs, d.last_client_heartbeat_at, \
     d.session_started_at, d.idle_warned_at, d.lifecycle_due_at, d.template_id, d.pool_template_id, d.recover_policy";

/// Decodes a row of [`COLUMNS`].
pub fn device(r: &[DbValue]) -> Result<Device, DbError> {
    Ok(Device {
        id: col(r, 0, "devices.id")?,
        name: col(r, 1, "devices.name")?,
        owner_id: col(r, 2, "devices.owner_id")?,
        owner_name: col(r, 3, "devices.owner_name")?,
        owner_email: col(r, 4, "devices.owner_email")?,
        tenant_id: col(r, 5, "devices.tenant_id")?,
        department_id: col(r, 6, "devices.department_id")?,
        node_id: col(r, 7, "devices.node_id")?,
        spec: col(r, 8, "devices.spec")?,
        tags: strings(r, 9, "devices.tags")?,
        desired_status: col(r, 10, "devices.desired_status")?,
        observed_status: col(r, 11, "devices.observed_status")?,
        status_reason: col(r, 12, "devices.status_reason")?,
        generation: col(r, 13, "devices.generation")?,
        container_id: col(r, 14, "devices.container_id")?,
        adb_host: col(r, 15, "devices.adb_host")?,
        adb_port: col(r, 16, "devices.adb_port")?,
        placement: col(r, 17, "devices.placement")?,
        observed_at: opt_timestamp(r, 18, "devices.observed_at")?,
        created_at: timestamp(r, 19, "devices.created_at")?,
        updated_at: timestamp(r, 20, "devices.updated_at")?,
        version: col(r, 21, "devices.version")?,
        observed_generation: col(r, 22, "devices.observed_generation")?,
        template_id: col(r, 31, "devices.template_id")?,
        pool_template_id: col(r, 32, "devices.pool_template_id")?,
        recover_policy: col(r, 33, "devices.recover_policy")?,
        lifecycle: Lifecycle {
            expires_at: col(r, 23, "devices.expires_at")?,
            expiry_warned_at: col(r, 24, "devices.expiry_warned_at")?,
            idle_timeout_secs: col(r, 25, "devices.idle_timeout_secs")?,
            max_session_secs: col(r, 26, "devices.max_session_secs")?,
            last_client_heartbeat_at: col(r, 27, "devices.last_client_heartbeat_at")?,
            session_started_at: col(r, 28, "devices.session_started_at")?,
            idle_warned_at: col(r, 29, "devices.idle_warned_at")?,
            due_at: col(r, 30, "devices.lifecycle_due_at")?,
        },
    })
}

impl Device {
    /// The desired status.
    pub fn desired(&self) -> Desired {
        Desired::parse(&self.desired_status).unwrap_or(Desired::Deleted)
    }

    /// The observed status.
    pub fn observed(&self) -> Observed {
        Observed::parse(&self.observed_status).unwrap_or(Observed::Unknown)
    }

    /// What the lifecycle rules read of it.
    pub fn lifecycle_state(&self) -> crate::domain::lifecycle::State {
        let l = &self.lifecycle;
        crate::domain::lifecycle::State {
            desired: self.desired(),
            observed: self.observed(),
            expires_at: l.expires_at,
            expiry_warned_at: l.expiry_warned_at,
            idle_timeout_secs: l.idle_timeout_secs.map(i64::from),
            max_session_secs: l.max_session_secs.map(i64::from),
            last_client_heartbeat_at: l.last_client_heartbeat_at,
            session_started_at: l.session_started_at,
            idle_warned_at: l.idle_warned_at,
        }
    }

    /// Its `row_ref` for the caller's data scope.
    pub fn row_ref(&self) -> access::RowRef {
        access::RowRef {
            tenant: self.tenant_id,
            department: self.department_id,
            owner: Some(self.owner_id),
        }
    }

    /// The payload of its `device.*` events.
    pub fn event(&self, previous: Option<&str>) -> events::payload::Device {
        events::payload::Device {
            id: self.id,
            name: self.name.clone(),
            owner_id: self.owner_id,
            tenant_id: self.tenant_id,
            node_id: self.node_id.clone(),
            desired_status: self.desired_status.clone(),
            observed_status: self.observed_status.clone(),
            previous_status: previous.map(str::to_string),
            reason: self.status_reason.clone(),
            spec: self.spec.clone(),
        }
    }
}

/// A device by id (deleted ones too: their operations still refer to them).
pub fn find(db: &Db, id: Uuid) -> Result<Option<Device>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM devices d WHERE d.id = $1"),
        &[P::Uuid(id.to_string())],
        device,
    )
}

/// A device by id, locked until the transaction ends.
pub fn lock(db: &Db, id: Uuid) -> Result<Option<Device>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM devices d WHERE d.id = $1 FOR UPDATE"),
        &[P::Uuid(id.to_string())],
        device,
    )
}

/// A new device, placed.
pub struct NewDevice<'a> {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: &'a str,
    /// Owner, tenant and department.
    pub owner: Uuid,
    /// Tenant.
    pub tenant: Option<Uuid>,
    /// Department.
    pub department: Option<Uuid>,
    /// Owner's name and email as known here, with their version.
    pub owner_copy: Option<(String, String, i64)>,
    /// Node.
    pub node: &'a str,
    /// Spec.
    pub spec: &'a Spec,
    /// Tags.
    pub tags: &'a [String],
    /// Desired status.
    pub desired: Desired,
    /// The placement decision.
    pub placement: serde_json::Value,
    /// The node's address (the ADB host).
    pub adb_host: &'a str,
    /// The template it is made from.
    pub template: Option<Uuid>,
    /// The template whose warm pool it waits in.
    pub pool: Option<Uuid>,
}

fn json(v: &impl Serialize) -> Result<P, DbError> {
    spin_sdk::pg4::jsonb(v).map_err(|e| DbError::Other(e.to_string()))
}

/// Inserts a placed device.
pub fn insert(db: &Db, d: &NewDevice) -> Result<(), DbError> {
    let r = d.spec.resources();
    let (name, email, version) = d.owner_copy.clone().unwrap_or_default();
    db.execute(
        "INSERT INTO devices (id, name, owner_id, tenant_id, department_id, owner_name, owner_email, owner_version, \
           node_id, spec, cpu_millis, memory_mb, disk_gb, gpus, tags, desired_status, observed_status, placement, adb_host, \
           template_id, pool_template_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'creating', $17, $18, $19, $20)",
        &[
            P::Uuid(d.id.to_string()),
            P::Str(d.name.into()),
            P::Uuid(d.owner.to_string()),
            opt_uuid(d.tenant),
            opt_uuid(d.department),
            P::Str(name),
            P::Str(email),
            P::Int64(version),
            P::Str(d.node.into()),
            json(d.spec)?,
            P::Int64(r.cpu_millis),
            P::Int64(r.memory_mb),
            P::Int64(r.disk_gb),
            P::Int32(r.gpus as i32),
            P::ArrayStr(d.tags.iter().cloned().map(Some).collect()),
            P::Str(d.desired.as_str().into()),
            json(&d.placement)?,
            P::Str(d.adb_host.into()),
            opt_uuid(d.template),
            opt_uuid(d.pool),
        ],
    )?;
    Ok(())
}

/// List filters.
#[derive(Debug, Default)]
pub struct Filter {
    /// Observed status.
    pub status: Option<String>,
    /// Desired status.
    pub desired: Option<String>,
    /// Node.
    pub node_id: Option<String>,
    /// Owner.
    pub owner_id: Option<Uuid>,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Tag.
    pub tag: Option<String>,
    /// Substring of the name.
    pub q: Option<String>,
    /// Include deleted devices.
    pub include_deleted: bool,
    /// Sort column and direction.
    pub sort: (&'static str, bool),
}

/// A page of the devices a caller sees.
pub fn list(
    db: &Db,
    scope: &RowFilter,
    f: &Filter,
    page: Page,
) -> Result<(Vec<Device>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    if !f.include_deleted && f.desired.as_deref() != Some("deleted") {
        w.and("d.desired_status <> 'deleted'");
    }
    if let Some(s) = &f.status {
        w.eq("d.observed_status", P::Str(s.clone()));
    }
    if let Some(s) = &f.desired {
        w.eq("d.desired_status", P::Str(s.clone()));
    }
    if let Some(n) = &f.node_id {
        w.eq("d.node_id", P::Str(n.clone()));
    }
    if let Some(o) = f.owner_id {
        w.eq("d.owner_id", P::Uuid(o.to_string()));
    }
    if let Some(t) = f.tenant_id {
        w.eq("d.tenant_id", P::Uuid(t.to_string()));
    }
    if let Some(t) = &f.tag {
        let p = w.bind(P::ArrayStr(vec![Some(t.clone())]));
        w.and(format!("d.tags @> {p}::text[]"));
    }
    if let Some(q) = &f.q {
        w.search(&["d.name"], q);
    }
    let (col_name, desc) = f.sort;
    let order = format!("{col_name} {}, d.id", if desc { "DESC" } else { "ASC" });
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM devices d"),
        "devices d",
        w,
        &order,
        page,
        device,
    )
}

/// Renames or retags a device.
pub fn update(
    db: &Db,
    id: Uuid,
    name: Option<&str>,
    tags: Option<&[String]>,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE devices SET name = coalesce($2, name), tags = coalesce($3, tags), \
           updated_at = now() AT TIME ZONE 'UTC', version = version + 1 WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            name.map_or(P::DbNull, |n| P::Str(n.into())),
            tags.map_or(P::DbNull, |t| {
                P::ArrayStr(t.iter().cloned().map(Some).collect())
            }),
        ],
    )?;
    Ok(())
}

/// Sets the desired status (and the next generation); returns the generation.
pub fn set_desired(db: &Db, id: Uuid, desired: Desired) -> Result<i64, DbError> {
    let rows = db.query(
        "UPDATE devices SET desired_status = $2, generation = generation + 1, \
           deleted_at = CASE WHEN $2 = 'deleted' THEN now() AT TIME ZONE 'UTC' ELSE deleted_at END, \
           updated_at = now() AT TIME ZONE 'UTC', version = version + 1 WHERE id = $1 RETURNING generation",
        &[P::Uuid(id.to_string()), P::Str(desired.as_str().into())],
    )?;
    col(&rows.rows[0], 0, "devices.generation")
}

/// What an agent says about one device.
pub struct Observation<'a> {
    /// Observed status.
    pub status: Observed,
    /// Container id.
    pub container_id: Option<&'a str>,
    /// ADB port.
    pub adb_port: Option<i32>,
    /// Why (failures).
    pub reason: Option<&'a str>,
    /// The generation the container was built from.
    pub generation: Option<i64>,
    /// When the agent sent it (RFC 3339): older reports never overwrite newer ones.
    pub sent_at: &'a str,
}

/// Applies an agent's report about a device of `node`, unless an equally
/// new or newer one was applied. Returns (device before, device after) when
/// something changed.
pub fn observe(
    db: &Db,
    node: &str,
    id: Uuid,
    o: &Observation,
) -> Result<Option<(Device, Device)>, DbError> {
    let Some(before) = lock(db, id)? else {
        return Ok(None);
    };
    if before.node_id.as_deref() != Some(node) {
        return Ok(None);
    }
    let status = crate::domain::status::reported(before.desired(), o.status);
    let updated = db.execute(
        "UPDATE devices SET observed_status = $2, container_id = coalesce($3, container_id), \
           adb_port = coalesce($4, adb_port), status_reason = $5, observed_at = $6::text::timestamptz AT TIME ZONE 'UTC', \
           observed_generation = coalesce($7, observed_generation), \
           updated_at = now() AT TIME ZONE 'UTC', \
           version = version + CASE WHEN observed_status <> $2 THEN 1 ELSE 0 END \
         WHERE id = $1 AND (observed_at IS NULL OR observed_at < $6::text::timestamptz AT TIME ZONE 'UTC') \
           AND observed_status <> 'deleted'",
        &[
            P::Uuid(id.to_string()),
            P::Str(status.as_str().into()),
            o.container_id.map_or(P::DbNull, |c| P::Str(c.into())),
            o.adb_port.map_or(P::DbNull, P::Int32),
            o.reason.map_or(P::DbNull, |r| P::Str(r.into())),
            P::Str(o.sent_at.into()),
            o.generation.map_or(P::DbNull, P::Int64),
        ],
    )?;
    if updated == 0 {
        return Ok(None);
    }
    let after = find(db, id)?.ok_or_else(|| DbError::Other("device vanished".into()))?;
    Ok(Some((before, after)))
}

/// Sets the observed status from the control plane's side (a node gone
/// silent, a device deleted before it was made); returns the device before
/// and after, when it changed.
pub fn set_observed(
    db: &Db,
    id: Uuid,
    status: Observed,
    reason: Option<&str>,
) -> Result<Option<(Device, Device)>, DbError> {
    let Some(before) = lock(db, id)? else {
        return Ok(None);
    };
    if before.observed_status == status.as_str() {
        return Ok(None);
    }
    db.execute(
        "UPDATE devices SET observed_status = $2, status_reason = $3, updated_at = now() AT TIME ZONE 'UTC', \
           version = version + 1 WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            P::Str(status.as_str().into()),
            reason.map_or(P::DbNull, |r| P::Str(r.into())),
        ],
    )?;
    let after = find(db, id)?.ok_or_else(|| DbError::Other("device vanished".into()))?;
    Ok(Some((before, after)))
}

/// Ids of the live devices of a node.
pub fn on_node(db: &Db, node: &str) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "SELECT id FROM devices WHERE node_id = $1 AND desired_status <> 'deleted' ORDER BY id",
        &[P::Str(node.into())],
        |r| col(r, 0, "devices.id"),
    )
}

/// A device as its node's desired state lists it.
pub struct DesiredRow {
    /// Id.
    pub id: Uuid,
    /// Desired-state generation.
    pub generation: i64,
    /// `running` or `stopped`.
    pub desired: String,
    /// Stored spec.
    pub spec: serde_json::Value,
    /// The render node of its GPU slot.
    pub gpu: Option<String>,
}

/// The node's desired state: every device not deleted, with its generation.
pub fn desired_on_node(db: &Db, node: &str) -> Result<Vec<DesiredRow>, DbError> {
    db.all(
        "SELECT id, generation, desired_status, spec, gpu_device FROM devices \
         WHERE node_id = $1 AND desired_status <> 'deleted' ORDER BY id",
        &[P::Str(node.into())],
        |r| {
            Ok(DesiredRow {
                id: col(r, 0, "devices.id")?,
                generation: col(r, 1, "devices.generation")?,
                desired: col(r, 2, "devices.desired_status")?,
                spec: col(r, 3, "devices.spec")?,
                gpu: col(r, 4, "devices.gpu_device")?,
            })
        },
    )
}

/// How many devices (not deleted) a tenant has.
pub fn count_in_tenant(db: &Db, tenant: Uuid) -> Result<i64, DbError> {
    let rows = db.query(
        "SELECT count(*) FROM devices WHERE tenant_id = $1 AND desired_status <> 'deleted'",
        &[P::Uuid(tenant.to_string())],
    )?;
    col(&rows.rows[0], 0, "count")
}

/// Holds the tenant's device-count lock until the transaction ends, so
/// concurrent creations in one tenant count one after another.
pub fn lock_tenant(db: &Db, tenant: Uuid) -> Result<(), DbError> {
    db.query(
        "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 7301))) x",
        &[P::Str(tenant.to_string())],
    )?;
    Ok(())
}

/// Updates the owner copies of a user's devices with a newer version.
pub fn update_owner(
    db: &Db,
    owner: Uuid,
    name: &str,
    email: &str,
    tenant: Option<Uuid>,
    version: i64,
) -> Result<u64, DbError> {
    db.execute(
        "UPDATE devices SET owner_name = $2, owner_email = $3, tenant_id = $4, owner_version = $5 \
         WHERE owner_id = $1 AND owner_version < $5",
        &[
            P::Uuid(owner.to_string()),
            P::Str(name.into()),
            P::Str(email.into()),
            opt_uuid(tenant),
            P::Int64(version),
        ],
    )
}

/// Replaces a device's spec (its identity or network) as a desired-state
/// change: the generation grows by one; returns it.
pub fn set_spec(db: &Db, id: Uuid, spec: &Spec) -> Result<i64, DbError> {
    let rows = db.query(
        "UPDATE devices SET spec = $2, generation = generation + 1, updated_at = now() AT TIME ZONE 'UTC', \
         version = version + 1 WHERE id = $1 RETURNING generation",
        &[P::Uuid(id.to_string()), json(spec)?],
    )?;
    match rows.rows.first() {
        Some(r) => col(r, 0, "devices.generation"),
        None => Err(DbError::Other(format!("device {id} is gone"))),
    }
}

/// The render node of a device's GPU slot, if it holds one.
pub fn gpu_of(db: &Db, id: Uuid) -> Result<Option<String>, DbError> {
    let rows = db.query(
        "SELECT gpu_device FROM devices WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    match rows.rows.first() {
        Some(r) => col(r, 0, "devices.gpu_device"),
        None => Ok(None),
    }
}
