//! Templates and the first-boot steps of the devices made from them.

use crate::domain::template::{Template, TemplateInput, Visibility};
use platform::db::{col, opt_uuid, strings, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A template as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Category.
    pub category: String,
    /// `public`, `tenant` or `private`.
    pub visibility: String,
    /// Who made it.
    pub owner_id: Uuid,
    /// Its tenant (none for public and private ones).
    pub tenant_id: Option<Uuid>,
    /// The spec its devices get.
    pub spec: serde_json::Value,
    /// Tags its devices get.
    pub tags: Vec<String>,
    /// Apps installed at first boot.
    pub preinstalled_apps: serde_json::Value,
    /// Properties set at first boot.
    pub properties: serde_json::Value,
    /// Commands run at first boot.
    pub init_commands: serde_json::Value,
    /// Lifetime default (seconds).
    pub default_lifetime_secs: Option<i32>,
    /// Idle timeout default (seconds).
    pub default_idle_timeout_secs: Option<i32>,
    /// Longest session default (seconds).
    pub default_max_session_secs: Option<i32>,
    /// The snapshot policy its devices get.
    pub default_snapshot_policy: Option<serde_json::Value>,
    /// Devices made from it.
    pub usage_count: i64,
    /// Created.
    pub created_at: String,
    /// Changed.
    pub updated_at: String,
    /// Version.
    pub version: i64,
}

const COLUMNS: &str = "t.id, t.name, t.description, t.category, t.visibility, t.owner_id, t.tenant_id, \
     t.spec, t.tags, t.preinstalled_apps, t.properties, t.init_commands, \
     t.default_lifetime_secs, t.default_idle_timeout_secs, t.default_max_session_secs, t.usage_count, \
     t.created_at, t.updated_at, t.version, t.default_snapshot_policy";

fn stored(r: &[DbValue]) -> Result<Stored, DbError> {
    Ok(Stored {
        id: col(r, 0, "templates.id")?,
        name: col(r, 1, "templates.name")?,
        description: col(r, 2, "templates.description")?,
        category: col(r, 3, "templates.category")?,
        visibility: col(r, 4, "templates.visibility")?,
        owner_id: col(r, 5, "templates.owner_id")?,
        tenant_id: col(r, 6, "templates.tenant_id")?,
        spec: col(r, 7, "templates.spec")?,
        tags: strings(r, 8, "templates.tags")?,
        preinstalled_apps: col(r, 9, "templates.preinstalled_apps")?,
        properties: col(r, 10, "templates.properties")?,
        init_commands: col(r, 11, "templates.init_commands")?,
        default_lifetime_secs: col(r, 12, "templates.default_lifetime_secs")?,
        default_idle_timeout_secs: col(r, 13, "templates.default_idle_timeout_secs")?,
        default_max_session_secs: col(r, 14, "templates.default_max_session_secs")?,
        usage_count: col(r, 15, "templates.usage_count")?,
        created_at: timestamp(r, 16, "templates.created_at")?,
        updated_at: timestamp(r, 17, "templates.updated_at")?,
        version: col(r, 18, "templates.version")?,
        default_snapshot_policy: col(r, 19, "templates.default_snapshot_policy")?,
    })
}

impl Stored {
    /// The visibility.
    pub fn visibility(&self) -> Visibility {
        Visibility::parse(&self.visibility).unwrap_or(Visibility::Private)
    }

    /// The stored template as input, to merge a change over and parse again.
    pub fn input(&self) -> TemplateInput {
        TemplateInput {
            name: Some(self.name.clone()),
            description: Some(self.description.clone()),
            category: Some(self.category.clone()),
            visibility: Some(self.visibility()),
            spec: Some(self.spec.clone()),
            tags: Some(self.tags.clone()),
            preinstalled_apps: serde_json::from_value(self.preinstalled_apps.clone()).ok(),
            properties: serde_json::from_value(self.properties.clone()).ok(),
            init_commands: serde_json::from_value(self.init_commands.clone()).ok(),
            default_lifetime_secs: Some(self.default_lifetime_secs),
            default_idle_timeout_secs: Some(self.default_idle_timeout_secs),
            default_max_session_secs: Some(self.default_max_session_secs),
            default_snapshot_policy: Some(self.default_snapshot_policy.clone()),
        }
    }
}

fn json(v: &impl Serialize) -> Result<P, DbError> {
    spin_sdk::pg4::jsonb(v).map_err(|e| DbError::Other(e.to_string()))
}

fn opt_i32(v: Option<i32>) -> P {
    v.map_or(P::DbNull, P::Int32)
}

/// Who makes a new template.
pub struct Maker {
    /// The user.
    pub owner: Uuid,
    /// Their tenant (for `tenant` templates).
    pub tenant: Option<Uuid>,
    /// Their department.
    pub department: Option<Uuid>,
}

/// A template's contents as parameters, in the column order of
/// [`CONTENT_COLUMNS`].
fn contents(t: &Template) -> Result<Vec<P>, DbError> {
    Ok(vec![
        P::Str(t.name.as_str().into()),
        P::Str(t.description.clone()),
        P::Str(t.category.clone()),
        json(&t.spec)?,
        P::ArrayStr(t.tags.iter().cloned().map(Some).collect()),
        json(&t.apps_json())?,
        json(&t.properties)?,
        json(&t.commands_json())?,
        opt_i32(t.lifetime_secs),
        opt_i32(t.idle_timeout_secs),
        opt_i32(t.max_session_secs),
        match &t.snapshot_policy {
            Some(p) => json(&p.to_json())?,
            None => P::DbNull,
        },
    ])
}

/// The columns [`contents`] fills.
const CONTENT_COLUMNS: [&str; 12] = [
    "name",
    "description",
    "category",
    "spec",
    "tags",
    "preinstalled_apps",
    "properties",
    "init_commands",
    "default_lifetime_secs",
    "default_idle_timeout_secs",
    "default_max_session_secs",
    "default_snapshot_policy",
];

/// Inserts a template; `None` when its name is taken where it is visible.
pub fn insert(
    db: &Db,
    id: Uuid,
    t: &Template,
    visibility: Visibility,
    by: &Maker,
) -> Result<Option<()>, DbError> {
    let tenant = match visibility {
        Visibility::Tenant => by.tenant,
        _ => None,
    };
    let mut params = vec![
        P::Uuid(id.to_string()),
        P::Str(visibility.as_str().into()),
        P::Uuid(by.owner.to_string()),
        opt_uuid(tenant),
        opt_uuid(by.department),
    ];
    params.extend(contents(t)?);
    let placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
    let r = db.query(
        &format!(
            "INSERT INTO templates (id, visibility, owner_id, tenant_id, department_id, {}) \
             VALUES ({}) ON CONFLICT DO NOTHING RETURNING id",
            CONTENT_COLUMNS.join(", "),
            placeholders.join(", ")
        ),
        &params,
    )?;
    Ok((!r.rows.is_empty()).then_some(()))
}

/// Replaces a template's contents (not its visibility or owner); `None`
/// when the new name is taken.
pub fn update(db: &Db, id: Uuid, t: &Template) -> Result<Option<()>, DbError> {
    let mut params = vec![P::Uuid(id.to_string())];
    params.extend(contents(t)?);
    let sets: Vec<String> = CONTENT_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 2))
        .collect();
    let r = db.execute(
        &format!(
            "UPDATE templates SET {}, updated_at = now() AT TIME ZONE 'UTC', version = version + 1 \
             WHERE id = $1 AND deleted_at IS NULL",
            sets.join(", ")
        ),
        &params,
    );
    match r {
        Ok(_) => Ok(Some(())),
        Err(DbError::Unique(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A template that is not deleted.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Stored>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM templates t WHERE t.id = $1 AND t.deleted_at IS NULL"),
        &[P::Uuid(id.to_string())],
        stored,
    )
}

/// A template locked until the transaction ends, counting one more use.
pub fn take_for_device(db: &Db, id: Uuid) -> Result<Option<Stored>, DbError> {
    db.one(
        &format!(
            "UPDATE templates t SET usage_count = usage_count + 1 \
             WHERE t.id = $1 AND t.deleted_at IS NULL RETURNING {COLUMNS}"
        ),
        &[P::Uuid(id.to_string())],
        stored,
    )
}

/// Marks a template deleted; returns whether it was there.
pub fn delete(db: &Db, id: Uuid) -> Result<bool, DbError> {
    Ok(db.execute(
        "UPDATE templates SET deleted_at = now() AT TIME ZONE 'UTC', updated_at = now() AT TIME ZONE 'UTC', \
           version = version + 1 WHERE id = $1 AND deleted_at IS NULL",
        &[P::Uuid(id.to_string())],
    )? == 1)
}

/// Which templates a caller sees: every public one, their tenant's, their
/// own; platform staff see all.
pub struct Seen {
    /// Platform staff.
    pub all: bool,
    /// The caller.
    pub user: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
}

/// List filters.
#[derive(Debug, Default)]
pub struct Filter {
    /// Category.
    pub category: Option<String>,
    /// Visibility.
    pub visibility: Option<String>,
    /// Substring of the name or description.
    pub q: Option<String>,
    /// Sort column and direction.
    pub sort: (&'static str, bool),
}

/// A page of the templates a caller sees.
pub fn list(db: &Db, seen: &Seen, f: &Filter, page: Page) -> Result<(Vec<Stored>, i64), DbError> {
    let mut w = Where::new();
    w.and("t.deleted_at IS NULL");
    if !seen.all {
        let user = w.bind(P::Uuid(seen.user.to_string()));
        match seen.tenant {
            Some(t) => {
                let tenant = w.bind(P::Uuid(t.to_string()));
                w.and(format!(
                    "(t.visibility = 'public' OR t.tenant_id = {tenant} OR t.owner_id = {user})"
                ));
            }
            None => w.and(format!("(t.visibility = 'public' OR t.owner_id = {user})")),
        }
    }
    if let Some(c) = &f.category {
        w.eq("t.category", P::Str(c.clone()));
    }
    if let Some(v) = &f.visibility {
        w.eq("t.visibility", P::Str(v.clone()));
    }
    if let Some(q) = &f.q {
        w.search(&["t.name", "t.description"], q);
    }
    let (col_name, desc) = f.sort;
    let order = format!("{col_name} {}, t.id", if desc { "DESC" } else { "ASC" });
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM templates t"),
        "templates t",
        w,
        &order,
        page,
        stored,
    )
}

/// How many live devices were made from a template.
pub fn active_devices(db: &Db, id: Uuid) -> Result<i64, DbError> {
    let r = db.query(
        "SELECT count(*) FROM devices WHERE template_id = $1 AND desired_status <> 'deleted'",
        &[P::Uuid(id.to_string())],
    )?;
    col(&r.rows[0], 0, "count")
}

/// One first-boot step of a device.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Position (0 first).
    pub seq: i32,
    /// `install_apk` or `shell`.
    pub kind: String,
    /// Its input.
    pub input: serde_json::Value,
    /// `pending`, `running`, `succeeded`, `failed` or `skipped`.
    pub status: String,
    /// The operation that runs it.
    pub operation_id: Option<Uuid>,
    /// Why it failed.
    pub error: Option<String>,
    /// Changed.
    pub updated_at: String,
}

fn step(r: &[DbValue]) -> Result<Step, DbError> {
    Ok(Step {
        seq: col(r, 0, "provision_steps.seq")?,
        kind: col(r, 1, "provision_steps.kind")?,
        input: col(r, 2, "provision_steps.input")?,
        status: col(r, 3, "provision_steps.status")?,
        operation_id: col(r, 4, "provision_steps.operation_id")?,
        error: col(r, 5, "provision_steps.error")?,
        updated_at: timestamp(r, 6, "provision_steps.updated_at")?,
    })
}

const STEP_COLUMNS: &str = "seq, kind, input, status, operation_id, error, updated_at";

/// Records a new device's first-boot steps.
pub fn insert_steps(
    db: &Db,
    device: Uuid,
    steps: &[crate::domain::template::Step],
) -> Result<(), DbError> {
    for (i, s) in steps.iter().enumerate() {
        db.execute(
            "INSERT INTO provision_steps (device_id, seq, kind, input) VALUES ($1, $2, $3, $4)",
            &[
                P::Uuid(device.to_string()),
                P::Int32(i as i32),
                P::Str(s.kind.into()),
                json(&s.input)?,
            ],
        )?;
    }
    Ok(())
}

/// A device's steps, in order.
pub fn steps(db: &Db, device: Uuid) -> Result<Vec<Step>, DbError> {
    db.all(
        &format!("SELECT {STEP_COLUMNS} FROM provision_steps WHERE device_id = $1 ORDER BY seq"),
        &[P::Uuid(device.to_string())],
        step,
    )
}

/// The device's next step to run, locked, when none is running.
pub fn next_step(db: &Db, device: Uuid) -> Result<Option<Step>, DbError> {
    let rows = db.all(
        &format!(
            "SELECT {STEP_COLUMNS} FROM provision_steps WHERE device_id = $1 \
               AND status IN ('pending', 'running') ORDER BY seq LIMIT 1 FOR UPDATE"
        ),
        &[P::Uuid(device.to_string())],
        step,
    )?;
    Ok(rows.into_iter().next().filter(|s| s.status == "pending"))
}

/// Marks a step running under an operation.
pub fn step_running(db: &Db, device: Uuid, seq: i32, op: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE provision_steps SET status = 'running', operation_id = $3, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE device_id = $1 AND seq = $2",
        &[
            P::Uuid(device.to_string()),
            P::Int32(seq),
            P::Uuid(op.to_string()),
        ],
    )?;
    Ok(())
}

/// Makes a device's apps, properties and commands pending again (it is
/// made afresh on another node, without what they did on the lost one).
pub fn reset_steps(db: &Db, device: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE provision_steps SET status = 'pending', operation_id = NULL, error = NULL, \
           updated_at = now() AT TIME ZONE 'UTC' WHERE device_id = $1 AND kind IN ('install_apk', 'shell')",
        &[P::Uuid(device.to_string())],
    )?;
    Ok(())
}

/// Fails a step that could not be started, and skips the steps after it.
pub fn fail_step(db: &Db, device: Uuid, seq: i32, error: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE provision_steps SET status = CASE WHEN seq = $2 THEN 'failed' ELSE 'skipped' END, \
           error = CASE WHEN seq = $2 THEN $3 ELSE error END, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE device_id = $1 AND seq >= $2 AND status = 'pending'",
        &[
            P::Uuid(device.to_string()),
            P::Int32(seq),
            P::Str(error.chars().take(2000).collect()),
        ],
    )?;
    Ok(())
}

/// Finishes the running step of an operation; returns its device when the
/// operation was one. A failed step skips the steps after it.
pub fn step_finished(
    db: &Db,
    op: Uuid,
    ok: bool,
    error: Option<&str>,
) -> Result<Option<Uuid>, DbError> {
    let device = db.one(
        "UPDATE provision_steps SET status = $2, error = $3, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE operation_id = $1 AND status = 'running' RETURNING device_id, seq",
        &[
            P::Uuid(op.to_string()),
            P::Str(if ok { "succeeded" } else { "failed" }.into()),
            error.map_or(P::DbNull, |e| P::Str(e.chars().take(2000).collect())),
        ],
        |r| Ok((col::<Uuid>(r, 0, "device_id")?, col::<i32>(r, 1, "seq")?)),
    )?;
    if let (Some((device, seq)), false) = (device, ok) {
        db.execute(
            "UPDATE provision_steps SET status = 'skipped', updated_at = now() AT TIME ZONE 'UTC' \
             WHERE device_id = $1 AND seq > $2 AND status = 'pending'",
            &[P::Uuid(device.to_string()), P::Int32(seq)],
        )?;
    }
    Ok(device.map(|(d, _)| d))
}
