//! Operations: every lifecycle action and device command is one, answered
//! 202 at once and finished later (by the agent's result, or by the
//! observed state reaching what it waits for, or by its deadline).

use access::RowFilter;
use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to operations: those of the device's owner.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "o.tenant_id",
    department: Some("o.department_id"),
    owner: Some("o.owner_id"),
};

/// An operation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// Id.
    pub id: Uuid,
    /// `create`, `start`, `stop`, `restart`, `delete`, `shell`, ...
    pub kind: String,
    /// The device.
    pub device_id: Option<Uuid>,
    /// Its node.
    pub node_id: Option<String>,
    /// Who asked.
    pub requested_by: Option<Uuid>,
    /// The device's owner.
    pub owner_id: Option<Uuid>,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    /// 0-100.
    pub progress: i32,
    /// A stable code when it failed.
    pub error_code: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// What it produced.
    pub result: Option<serde_json::Value>,
    /// The desired-state generation it waits for.
    #[serde(skip)]
    pub generation: Option<i64>,
    /// Department (for scopes).
    #[serde(skip)]
    pub department_id: Option<Uuid>,
    /// When it gives up.
    pub deadline_at: String,
    /// Created.
    pub created_at: String,
    /// Changed.
    pub updated_at: String,
    /// Finished.
    pub finished_at: Option<String>,
}

const COLUMNS: &str = "o.id, o.kind, o.device_id, o.node_id, o.requested_by, o.owner_id, o.tenant_id, o.status, \
     o.progress, o.error_code, o.error, o.result, o.generation, o.department_id, o.deadline_at, o.created_at, \
     o.updated_at, o.finished_at";

fn operation(r: &[DbValue]) -> Result<Operation, DbError> {
    Ok(Operation {
        id: col(r, 0, "operations.id")?,
        kind: col(r, 1, "operations.kind")?,
        device_id: col(r, 2, "operations.device_id")?,
        node_id: col(r, 3, "operations.node_id")?,
        requested_by: col(r, 4, "operations.requested_by")?,
        owner_id: col(r, 5, "operations.owner_id")?,
        tenant_id: col(r, 6, "operations.tenant_id")?,
        status: col(r, 7, "operations.status")?,
        progress: col(r, 8, "operations.progress")?,
        error_code: col(r, 9, "operations.error_code")?,
        error: col(r, 10, "operations.error")?,
        result: col(r, 11, "operations.result")?,
        generation: col(r, 12, "operations.generation")?,
        department_id: col(r, 13, "operations.department_id")?,
        deadline_at: timestamp(r, 14, "operations.deadline_at")?,
        created_at: timestamp(r, 15, "operations.created_at")?,
        updated_at: timestamp(r, 16, "operations.updated_at")?,
        finished_at: opt_timestamp(r, 17, "operations.finished_at")?,
    })
}

impl Operation {
    /// Its `row_ref` for the caller's data scope.
    pub fn row_ref(&self) -> access::RowRef {
        access::RowRef {
            tenant: self.tenant_id,
            department: self.department_id,
            owner: self.owner_id,
        }
    }
}

/// A new operation.
pub struct NewOperation<'a> {
    /// Id.
    pub id: Uuid,
    /// Kind.
    pub kind: &'a str,
    /// Device.
    pub device: Option<Uuid>,
    /// Node.
    pub node: Option<&'a str>,
    /// Who asked.
    pub requested_by: Option<Uuid>,
    /// The device's owner, tenant and department.
    pub owner: Option<Uuid>,
    /// Tenant.
    pub tenant: Option<Uuid>,
    /// Department.
    pub department: Option<Uuid>,
    /// The generation it waits for.
    pub generation: Option<i64>,
    /// The caller's idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// Seconds until it times out.
    pub timeout_secs: i32,
}

/// Inserts an operation; `Err(existing id)` when the caller used the
/// idempotency key before (claim-then-run: only the inserter does the work).
pub fn insert(db: &Db, o: &NewOperation) -> Result<Result<(), Uuid>, DbError> {
    let inserted = db.query(
        "INSERT INTO operations (id, kind, device_id, node_id, requested_by, owner_id, tenant_id, department_id, \
           generation, idempotency_key, deadline_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, (now() AT TIME ZONE 'UTC') + make_interval(secs => $11::int)) \
         ON CONFLICT (requested_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id",
        &[
            P::Uuid(o.id.to_string()),
            P::Str(o.kind.into()),
            opt_uuid(o.device),
            o.node.map_or(P::DbNull, |n| P::Str(n.into())),
            opt_uuid(o.requested_by),
            opt_uuid(o.owner),
            opt_uuid(o.tenant),
            opt_uuid(o.department),
            o.generation.map_or(P::DbNull, P::Int64),
            o.idempotency_key.map_or(P::DbNull, |k| P::Str(k.into())),
            P::Int32(o.timeout_secs),
        ],
    )?;
    if !inserted.rows.is_empty() {
        return Ok(Ok(()));
    }
    let existing = db.query(
        "SELECT id FROM operations WHERE requested_by = $1 AND idempotency_key = $2",
        &[
            opt_uuid(o.requested_by),
            o.idempotency_key.map_or(P::DbNull, |k| P::Str(k.into())),
        ],
    )?;
    match existing.rows.first() {
        Some(r) => Ok(Err(col(r, 0, "operations.id")?)),
        None => Err(DbError::Other(
            "idempotency key conflict without a row".into(),
        )),
    }
}

/// The devices `requested_by` had made by `create` operations whose
/// idempotency key begins with `prefix` (an order's phones), in order.
pub fn made_with_keys(db: &Db, requested_by: Uuid, prefix: &str) -> Result<Vec<Uuid>, DbError> {
    let pattern = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let rows = db.query(
        "SELECT device_id FROM operations WHERE requested_by = $1 AND kind = 'create' \
           AND idempotency_key LIKE $2 AND device_id IS NOT NULL ORDER BY created_at, id",
        &[P::Uuid(requested_by.to_string()), P::Str(pattern)],
    )?;
    rows.rows
        .iter()
        .map(|r| col(r, 0, "operations.device_id"))
        .collect()
}

/// An operation by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Operation>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM operations o WHERE o.id = $1"),
        &[P::Uuid(id.to_string())],
        operation,
    )
}

/// Fills in where a create ended up (device, node, generation).
pub fn placed(db: &Db, id: Uuid, node: &str, generation: i64) -> Result<(), DbError> {
    db.execute(
        "UPDATE operations SET node_id = $2, generation = $3, progress = 20, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1",
        &[P::Uuid(id.to_string()), P::Str(node.into()), P::Int64(generation)],
    )?;
    Ok(())
}

/// Progress of a running operation.
pub fn progress(db: &Db, id: Uuid, pct: i32) -> Result<(), DbError> {
    db.execute(
        "UPDATE operations SET progress = greatest(progress, $2), updated_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND status = 'running'",
        &[P::Uuid(id.to_string()), P::Int32(pct)],
    )?;
    Ok(())
}

/// An operation, locked until the transaction ends.
pub fn lock(db: &Db, id: Uuid) -> Result<Option<Operation>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM operations o WHERE o.id = $1 FOR UPDATE"),
        &[P::Uuid(id.to_string())],
        operation,
    )
}

/// Finishes a running operation (a finished one stays as it is); returns
/// whether this call finished it.
pub fn finish(
    db: &Db,
    id: Uuid,
    ok: bool,
    result: Option<&serde_json::Value>,
    error: Option<(&str, &str)>,
) -> Result<bool, DbError> {
    let result = match result {
        Some(r) => spin_sdk::pg4::jsonb(r).map_err(|e| DbError::Other(e.to_string()))?,
        None => P::DbNull,
    };
    let n = db.execute(
        "UPDATE operations SET status = $2, progress = CASE WHEN $2 = 'succeeded' THEN 100 ELSE progress END, \
           result = coalesce($3, result), error_code = $4, error = $5, \
           updated_at = now() AT TIME ZONE 'UTC', finished_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND status = 'running'",
        &[
            P::Uuid(id.to_string()),
            P::Str(if ok { "succeeded" } else { "failed" }.into()),
            result,
            error.map_or(P::DbNull, |(c, _)| P::Str(c.into())),
            error.map_or(P::DbNull, |(_, m)| P::Str(m.chars().take(2000).collect())),
        ],
    )?;
    Ok(n == 1)
}

/// Running lifecycle operations of a device that wait for a generation at
/// most `generation` (what the agent now reports as built).
pub fn running_for_device(db: &Db, device: Uuid) -> Result<Vec<Operation>, DbError> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM operations o WHERE o.device_id = $1 AND o.status = 'running' ORDER BY o.created_at"
        ),
        &[P::Uuid(device.to_string())],
        operation,
    )
}

/// Running operations past their deadline, failed with `timeout`; returns them.
pub fn expire_due(db: &Db) -> Result<Vec<Operation>, DbError> {
    db.all(
        &format!(
            "UPDATE operations o SET status = 'failed', error_code = 'timeout', \
               error = 'the operation did not finish in time', updated_at = now() AT TIME ZONE 'UTC', \
               finished_at = now() AT TIME ZONE 'UTC' \
             WHERE o.status = 'running' AND o.deadline_at < now() AT TIME ZONE 'UTC' RETURNING {COLUMNS}"
        ),
        &[],
        operation,
    )
}

/// Drops the payload (file contents, screenshots, logs, shell output) from
/// the results of operations finished more than `secs` ago, marking them
/// `payload_expired` as the agent marks its own; returns how many. The
/// condition on `result` is the predicate of the partial index
/// `operations_payloads`, so only results that still hold a payload are
/// looked at.
pub fn expire_payloads(db: &Db, secs: i32) -> Result<u64, DbError> {
    db.execute(
        "UPDATE operations SET result = (result - 'content_base64' - 'png_base64' - 'text' - 'stdout' - 'stderr') \
           || '{\"payload_expired\": true}'::jsonb, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE result ?| ARRAY['content_base64', 'png_base64', 'text', 'stdout', 'stderr'] \
           AND finished_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => $1::int)",
        &[P::Int32(secs)],
    )
}

/// A page of the operations a caller sees.
pub fn list(
    db: &Db,
    scope: &RowFilter,
    device: Option<Uuid>,
    status: Option<&str>,
    kind: Option<&str>,
    page: Page,
) -> Result<(Vec<Operation>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    if let Some(d) = device {
        w.eq("o.device_id", P::Uuid(d.to_string()));
    }
    if let Some(s) = status {
        w.eq("o.status", P::Str(s.into()));
    }
    if let Some(k) = kind {
        w.eq("o.kind", P::Str(k.into()));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM operations o"),
        "operations o",
        w,
        "o.created_at DESC, o.id",
        page,
        operation,
    )
}
