//! Batches and their items.

use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A batch as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    /// Id.
    pub id: Uuid,
    /// The action.
    pub action: String,
    /// Who made it.
    pub requested_by: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Their department.
    #[serde(skip)]
    pub department_id: Option<Uuid>,
    /// The action's input.
    pub input: serde_json::Value,
    /// Items running at once.
    pub concurrency: i32,
    /// `running` or `finished`.
    pub status: String,
    /// Items.
    pub total: i32,
    /// Items that succeeded.
    pub succeeded: i32,
    /// Items that failed.
    pub failed: i32,
    /// Made.
    pub created_at: String,
    /// Changed.
    pub updated_at: String,
    /// Finished.
    pub finished_at: Option<String>,
}

const COLUMNS: &str =
    "b.id, b.action, b.requested_by, b.tenant_id, b.department_id, b.input, b.concurrency, \
     b.status, b.total, b.succeeded, b.failed, b.created_at, b.updated_at, b.finished_at";

fn batch(r: &[DbValue]) -> Result<Batch, DbError> {
    Ok(Batch {
        id: col(r, 0, "batches.id")?,
        action: col(r, 1, "batches.action")?,
        requested_by: col(r, 2, "batches.requested_by")?,
        tenant_id: col(r, 3, "batches.tenant_id")?,
        department_id: col(r, 4, "batches.department_id")?,
        input: col(r, 5, "batches.input")?,
        concurrency: col(r, 6, "batches.concurrency")?,
        status: col(r, 7, "batches.status")?,
        total: col(r, 8, "batches.total")?,
        succeeded: col(r, 9, "batches.succeeded")?,
        failed: col(r, 10, "batches.failed")?,
        created_at: timestamp(r, 11, "batches.created_at")?,
        updated_at: timestamp(r, 12, "batches.updated_at")?,
        finished_at: opt_timestamp(r, 13, "batches.finished_at")?,
    })
}

impl Batch {
    /// Its `row_ref` for the caller's data scope: the requester's.
    pub fn row_ref(&self) -> access::RowRef {
        access::RowRef {
            tenant: self.tenant_id,
            department: self.department_id,
            owner: Some(self.requested_by),
        }
    }
}

/// One device's part of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Position (0 first).
    pub seq: i32,
    /// The device (for a create, once made).
    pub device_id: Option<Uuid>,
    /// Its operation, once started.
    pub operation_id: Option<Uuid>,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub status: String,
    /// A stable code when it failed.
    pub error_code: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Changed.
    pub updated_at: String,
}

fn item(r: &[DbValue]) -> Result<Item, DbError> {
    Ok(Item {
        seq: col(r, 0, "batch_items.seq")?,
        device_id: col(r, 1, "batch_items.device_id")?,
        operation_id: col(r, 2, "batch_items.operation_id")?,
        status: col(r, 3, "batch_items.status")?,
        error_code: col(r, 4, "batch_items.error_code")?,
        error: col(r, 5, "batch_items.error")?,
        updated_at: timestamp(r, 6, "batch_items.updated_at")?,
    })
}

const ITEM_COLUMNS: &str = "seq, device_id, operation_id, status, error_code, error, updated_at";

/// A new batch.
pub struct NewBatch<'a> {
    /// Id.
    pub id: Uuid,
    /// Action.
    pub action: &'a str,
    /// Requester.
    pub requested_by: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Their department.
    pub department: Option<Uuid>,
    /// Input.
    pub input: &'a serde_json::Value,
    /// Items at once.
    pub concurrency: i32,
    /// One entry per item: its device, if known.
    pub devices: &'a [Option<Uuid>],
    /// The requester's idempotency key.
    pub key: Option<&'a str>,
}

/// Inserts a batch and its pending items; `Err(existing)` when the
/// requester used the key before (nothing is inserted then).
pub fn insert(db: &Db, b: &NewBatch) -> Result<Result<(), Uuid>, DbError> {
    if let Some(key) = b.key {
        let existing = db.one(
            "SELECT id FROM batches WHERE requested_by = $1 AND idempotency_key = $2",
            &[P::Uuid(b.requested_by.to_string()), P::Str(key.into())],
            |r| col::<Uuid>(r, 0, "batches.id"),
        )?;
        if let Some(id) = existing {
            return Ok(Err(id));
        }
    }
    db.execute(
        "INSERT INTO batches (id, action, requested_by, tenant_id, department_id, input, concurrency, total, \
           idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            P::Uuid(b.id.to_string()),
            P::Str(b.action.into()),
            P::Uuid(b.requested_by.to_string()),
            opt_uuid(b.tenant),
            opt_uuid(b.department),
            spin_sdk::pg4::jsonb(b.input).map_err(|e| DbError::Other(e.to_string()))?,
            P::Int32(b.concurrency),
            P::Int32(b.devices.len() as i32),
            b.key.map_or(P::DbNull, |k| P::Str(k.into())),
        ],
    )?;
    // One statement for every item: a batch of a thousand is one round trip.
    db.execute(
        "INSERT INTO batch_items (batch_id, seq, device_id) \
         SELECT $1, i - 1, d::uuid FROM unnest($2::text[]) WITH ORDINALITY AS t(d, i)",
        &[
            P::Uuid(b.id.to_string()),
            P::ArrayStr(b.devices.iter().map(|d| d.map(|u| u.to_string())).collect()),
        ],
    )?;
    Ok(Ok(()))
}

/// Running items of a batch whose operation has ended (an end that came
/// before the item knew its operation): the item, and how it ended.
#[allow(clippy::type_complexity)]
pub fn ended_unrecorded(
    db: &Db,
    id: Uuid,
) -> Result<Vec<(i32, bool, Option<String>, Option<String>)>, DbError> {
    db.all(
        "SELECT i.seq, o.status = 'succeeded', o.error_code, o.error FROM batch_items i \
         JOIN operations o ON o.id = i.operation_id \
         WHERE i.batch_id = $1 AND i.status = 'running' AND o.status <> 'running'",
        &[P::Uuid(id.to_string())],
        |r| {
            Ok((
                col(r, 0, "seq")?,
                col(r, 1, "ok")?,
                col(r, 2, "error_code")?,
                col(r, 3, "error")?,
            ))
        },
    )
}

/// A batch by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Batch>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM batches b WHERE b.id = $1"),
        &[P::Uuid(id.to_string())],
        batch,
    )
}

/// A batch's items, in order.
pub fn items(db: &Db, id: Uuid) -> Result<Vec<Item>, DbError> {
    db.all(
        &format!("SELECT {ITEM_COLUMNS} FROM batch_items WHERE batch_id = $1 ORDER BY seq"),
        &[P::Uuid(id.to_string())],
        item,
    )
}

/// Running batches, oldest first.
pub fn running(db: &Db, limit: i64) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "SELECT id FROM batches WHERE status = 'running' ORDER BY created_at LIMIT $1",
        &[P::Int64(limit)],
        |r| col(r, 0, "batches.id"),
    )
}

/// Claims up to the batch's free room of pending items (marking them
/// running), under the batch's row lock so that two advances never exceed
/// its concurrency. Items marked running a minute ago that never got their
/// operation (a crash between claim and start) are claimed again; their
/// idempotency key makes the redo start nothing twice.
pub fn claim(db: &Db, id: Uuid) -> Result<Vec<(i32, Option<Uuid>)>, DbError> {
    let locked = db.one(
        "SELECT concurrency FROM batches WHERE id = $1 AND status = 'running' FOR UPDATE",
        &[P::Uuid(id.to_string())],
        |r| col::<i32>(r, 0, "concurrency"),
    )?;
    let Some(concurrency) = locked else {
        return Ok(Vec::new());
    };
    db.all(
        "WITH busy AS (SELECT count(*) AS n FROM batch_items WHERE batch_id = $1 AND status = 'running' \
             AND (operation_id IS NOT NULL OR updated_at > (now() AT TIME ZONE 'UTC') - interval '60 seconds')), \
         next AS (SELECT seq FROM batch_items WHERE batch_id = $1 AND (status = 'pending' \
             OR (status = 'running' AND operation_id IS NULL \
                 AND updated_at <= (now() AT TIME ZONE 'UTC') - interval '60 seconds')) \
           ORDER BY seq LIMIT greatest($2 - (SELECT n FROM busy), 0)) \
         UPDATE batch_items i SET status = 'running', updated_at = now() AT TIME ZONE 'UTC' \
         FROM next WHERE i.batch_id = $1 AND i.seq = next.seq RETURNING i.seq, i.device_id",
        &[P::Uuid(id.to_string()), P::Int64(i64::from(concurrency))],
        |r| Ok((col(r, 0, "seq")?, col(r, 1, "device_id")?)),
    )
}

/// Records an item's operation (and, for a create, its device).
pub fn started(db: &Db, id: Uuid, seq: i32, op: Uuid, device: Option<Uuid>) -> Result<(), DbError> {
    db.execute(
        "UPDATE batch_items SET operation_id = $3, device_id = coalesce($4, device_id), \
           updated_at = now() AT TIME ZONE 'UTC' WHERE batch_id = $1 AND seq = $2",
        &[
            P::Uuid(id.to_string()),
            P::Int32(seq),
            P::Uuid(op.to_string()),
            opt_uuid(device),
        ],
    )?;
    Ok(())
}

/// Finishes an item (once) and counts it; the batch finishes with its last
/// item. `at` names the item by its operation or by its position.
pub fn finish_item(
    db: &Db,
    at: ItemRef,
    ok: bool,
    error: Option<(&str, &str)>,
) -> Result<Option<Uuid>, DbError> {
    let (cond, key) = match at {
        ItemRef::Operation(op) => ("operation_id = $4", vec![P::Uuid(op.to_string())]),
        ItemRef::Seq(b, seq) => (
            "batch_id = $4 AND seq = $5",
            vec![P::Uuid(b.to_string()), P::Int32(seq)],
        ),
    };
    let mut params = vec![
        P::Str(if ok { "succeeded" } else { "failed" }.into()),
        error.map_or(P::DbNull, |(c, _)| P::Str(c.into())),
        error.map_or(P::DbNull, |(_, m)| P::Str(m.chars().take(2000).collect())),
    ];
    params.extend(key);
    let batch = db.one(
        &format!(
            "UPDATE batch_items SET status = $1, error_code = $2, error = $3, updated_at = now() AT TIME ZONE 'UTC' \
             WHERE {cond} AND status IN ('pending', 'running') RETURNING batch_id"
        ),
        &params,
        |r| col::<Uuid>(r, 0, "batch_id"),
    )?;
    let Some(batch) = batch else {
        return Ok(None);
    };
    db.execute(
        "UPDATE batches SET succeeded = succeeded + CASE WHEN $2 THEN 1 ELSE 0 END, \
           failed = failed + CASE WHEN $2 THEN 0 ELSE 1 END, updated_at = now() AT TIME ZONE 'UTC', \
           status = CASE WHEN succeeded + failed + 1 >= total THEN 'finished' ELSE status END, \
           finished_at = CASE WHEN succeeded + failed + 1 >= total THEN now() AT TIME ZONE 'UTC' END \
         WHERE id = $1",
        &[P::Uuid(batch.to_string()), P::Boolean(ok)],
    )?;
    Ok(Some(batch))
}

/// Which item.
#[derive(Debug, Clone, Copy)]
pub enum ItemRef {
    /// The item whose operation this is.
    Operation(Uuid),
    /// The item at this position of this batch.
    Seq(Uuid, i32),
}

/// A page of the batches a caller sees, newest first.
pub fn list(db: &Db, scope: &access::RowFilter, page: Page) -> Result<(Vec<Batch>, i64), DbError> {
    let mut w = Where::new();
    w.scope(
        scope,
        platform::query::ScopeColumns {
            tenant: "b.tenant_id",
            department: Some("b.department_id"),
            owner: Some("b.requested_by"),
        },
    );
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM batches b"),
        "batches b",
        w,
        "b.created_at DESC, b.id",
        page,
        batch,
    )
}
