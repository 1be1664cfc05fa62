//! Orders and where their purchase saga stands. Every move is a
//! compare-and-set on `step` (a runner that lost a race moves nothing) with
//! a row in `order_history`.

use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;

use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// An order.
#[derive(Debug, Clone, Serialize)]
pub struct Order {
    /// Id.
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// The plan.
    pub plan_id: Uuid,
    /// The plan as bought.
    pub plan: serde_json::Value,
    /// Cycles bought.
    pub cycles: i32,
    /// Total.
    pub amount_minor: i64,
    /// Refunded so far.
    pub refunded_minor: i64,
    /// Currency.
    pub currency: String,
    /// How it is paid.
    pub pay_with: String,
    /// `pending`, `paid`, `fulfilled`, `cancelled`, `expired`, `refunded`, `failed`.
    pub status: String,
    /// Where its saga stands.
    pub step: String,
    /// Why it failed.
    pub failure: Option<String>,
    /// The quota grant in `user`.
    pub grant_id: Option<Uuid>,
    /// Steps tried again after a failure to reach another component.
    pub attempts: i32,
    /// When a saga still running is given up (and compensated).
    pub deadline: String,
    /// What it grants from.
    pub period_start: Option<String>,
    /// What it grants until.
    pub period_end: Option<String>,
    /// When.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Paid.
    pub paid_at: Option<String>,
    /// Fulfilled.
    pub fulfilled_at: Option<String>,
    /// Ended otherwise.
    pub closed_at: Option<String>,
    /// Version (each move adds one).
    pub version: i64,
    /// The phones it made (its plan's included devices): `device` ids.
    pub devices: serde_json::Value,
}

const COLUMNS: &str =
    "id, user_id, tenant_id, plan_id, plan, cycles, amount_minor, refunded_minor, \
     currency::text, pay_with, status, step, failure, grant_id, attempts, deadline, period_start, \
     period_end, created_at, updated_at, paid_at, fulfilled_at, closed_at, version, devices";

fn order(r: &[DbValue]) -> Result<Order, DbError> {
    Ok(Order {
        id: col(r, 0, "orders.id")?,
        user_id: col(r, 1, "orders.user_id")?,
        tenant_id: col(r, 2, "orders.tenant_id")?,
        plan_id: col(r, 3, "orders.plan_id")?,
        plan: col(r, 4, "orders.plan")?,
        cycles: col(r, 5, "orders.cycles")?,
        amount_minor: col(r, 6, "orders.amount_minor")?,
        refunded_minor: col(r, 7, "orders.refunded_minor")?,
        currency: col(r, 8, "orders.currency")?,
        pay_with: col(r, 9, "orders.pay_with")?,
        status: col(r, 10, "orders.status")?,
        step: col(r, 11, "orders.step")?,
        failure: col(r, 12, "orders.failure")?,
        grant_id: col(r, 13, "orders.grant_id")?,
        attempts: col(r, 14, "orders.attempts")?,
        deadline: timestamp(r, 15, "orders.deadline")?,
        period_start: opt_timestamp(r, 16, "orders.period_start")?,
        period_end: opt_timestamp(r, 17, "orders.period_end")?,
        created_at: timestamp(r, 18, "orders.created_at")?,
        updated_at: timestamp(r, 19, "orders.updated_at")?,
        paid_at: opt_timestamp(r, 20, "orders.paid_at")?,
        fulfilled_at: opt_timestamp(r, 21, "orders.fulfilled_at")?,
        closed_at: opt_timestamp(r, 22, "orders.closed_at")?,
        version: col(r, 23, "orders.version")?,
        devices: col(r, 24, "orders.devices")?,
    })
}

/// A new order.
#[derive(Debug)]
pub struct NewOrder<'a> {
    /// Buyer.
    pub user: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// The plan as bought.
    pub plan: &'a super::plans::Plan,
    /// Cycles.
    pub cycles: i32,
    /// Total.
    pub amount_minor: i64,
    /// `balance`, or a provider.
    pub pay_with: &'a str,
    /// The buyer's key.
    pub key: &'a str,
    /// Seconds the saga may run before it is compensated.
    pub deadline_secs: i64,
}

/// Inserts an order (claimed by its creator for 60 s), or finds the one
/// made under the same key: `(order, made now)`.
pub fn create(tx: &Db, o: &NewOrder) -> Result<(Order, bool), DbError> {
    let id = Uuid::new_v4();
    let snapshot = serde_json::to_value(o.plan).map_err(|e| DbError::Other(e.to_string()))?;
    let made = tx.execute(
        "INSERT INTO orders (id, user_id, tenant_id, plan_id, plan, cycles, amount_minor, currency, pay_with, \
           status, step, idempotency_key, deadline, lease_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $11, 'pending', 'created', $9, \
           now() AT TIME ZONE 'UTC' + make_interval(secs => $10::bigint), now() AT TIME ZONE 'UTC' + interval '60 seconds') \
         ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        &[
            P::Uuid(id.to_string()),
            P::Uuid(o.user.to_string()),
            opt_uuid(o.tenant),
            P::Uuid(o.plan.id.to_string()),
            spin_sdk::pg4::jsonb(&snapshot).map_err(|e| DbError::Other(e.to_string()))?,
            P::Int32(o.cycles),
            P::Int64(o.amount_minor),
            P::Str(o.plan.currency.clone()),
            P::Str(o.key.into()),
            P::Int64(o.deadline_secs),
            P::Str(o.pay_with.into()),
        ],
    )? == 1;
    let found = tx
        .one(
            &format!("SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND idempotency_key = $2"),
            &[P::Uuid(o.user.to_string()), P::Str(o.key.into())],
            order,
        )?
        .ok_or_else(|| DbError::Other("order vanished".into()))?;
    if made {
        history(tx, found.id, "pending", "created", None)?;
    }
    Ok((found, made))
}

/// An order by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Order>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM orders WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        order,
    )
}

/// Appends to an order's history.
pub fn history(
    tx: &Db,
    id: Uuid,
    status: &str,
    step: &str,
    note: Option<&str>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO order_history (order_id, status, step, note) VALUES ($1, $2, $3, $4)",
        &[
            P::Uuid(id.to_string()),
            P::Str(status.into()),
            P::Str(step.into()),
            note.map_or(P::DbNull, |n| P::Str(n.into())),
        ],
    )?;
    Ok(())
}

/// What a move sets besides the step.
#[derive(Debug, Default)]
pub struct Move<'a> {
    /// A new status.
    pub status: Option<&'a str>,
    /// Why it failed.
    pub failure: Option<&'a str>,
    /// The grant made.
    pub grant: Option<Uuid>,
    /// Cycle length to set the period from now (fulfilment).
    pub period_end: Option<chrono::NaiveDateTime>,
    /// The devices made.
    pub devices: Option<&'a serde_json::Value>,
}

/// Moves an order from step `from` to `to` (with what `m` sets); whether it
/// was at `from`.
pub fn advance(tx: &Db, id: Uuid, from: &str, to: &str, m: &Move) -> Result<bool, DbError> {
    let n = tx.execute(
        "UPDATE orders SET step = $3, status = coalesce($4, status), failure = coalesce($5, failure), \
           grant_id = coalesce($6, grant_id), \
           period_start = CASE WHEN $7::timestamp IS NULL THEN period_start ELSE now() AT TIME ZONE 'UTC' END, \
           period_end = coalesce($7::timestamp, period_end), \
           paid_at = CASE WHEN $4 = 'paid' THEN now() AT TIME ZONE 'UTC' ELSE paid_at END, \
           fulfilled_at = CASE WHEN $4 = 'fulfilled' THEN now() AT TIME ZONE 'UTC' ELSE fulfilled_at END, \
           closed_at = CASE WHEN $4 IN ('cancelled', 'expired', 'failed', 'refunded') THEN now() AT TIME ZONE 'UTC' ELSE closed_at END, \
           devices = coalesce($8::jsonb, devices), \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND step = $2",
        &[
            P::Uuid(id.to_string()),
            P::Str(from.into()),
            P::Str(to.into()),
            m.status.map_or(P::DbNull, |s| P::Str(s.into())),
            m.failure.map_or(P::DbNull, |s| P::Str(s.into())),
            opt_uuid(m.grant),
            m.period_end.map_or(P::DbNull, platform::db::datetime_param),
            match m.devices {
                Some(d) => spin_sdk::pg4::jsonb(d).map_err(|e| DbError::Other(e.to_string()))?,
                None => P::DbNull,
            },
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    let o = find(tx, id)?.ok_or_else(|| DbError::Other("order vanished".into()))?;
    history(tx, id, &o.status, to, m.failure)?;
    Ok(true)
}

/// Counts a failed attempt to reach another component.
pub fn attempted(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE orders SET attempts = attempts + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// Whether an order's deadline has passed.
pub fn past_deadline(db: &Db, id: Uuid) -> Result<bool, DbError> {
    Ok(db
        .one(
            "SELECT deadline < now() AT TIME ZONE 'UTC' FROM orders WHERE id = $1",
            &[P::Uuid(id.to_string())],
            |r| col::<bool>(r, 0, "past"),
        )?
        .unwrap_or(false))
}

/// Claims up to `limit` running sagas no one holds (a lease of 60 s); one
/// waiting for a provider's payment only once its deadline passed (the
/// provider's webhook carries it on before).
pub fn claim_running(db: &Db, limit: i64) -> Result<Vec<Uuid>, DbError> {
    db.all(
        "UPDATE orders SET lease_until = now() AT TIME ZONE 'UTC' + interval '60 seconds' \
          WHERE id IN (SELECT id FROM orders WHERE step <> 'done' \
                         AND (step <> 'awaiting_payment' OR deadline < now() AT TIME ZONE 'UTC') \
                         AND (lease_until IS NULL OR lease_until < now() AT TIME ZONE 'UTC') \
                       ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
          RETURNING id",
        &[P::Int64(limit)],
        |r| col(r, 0, "orders.id"),
    )
}

/// Lets go of an order's lease.
pub fn release(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE orders SET lease_until = NULL WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// Adds to what was refunded, within the amount; whether it fitted.
pub fn refunded(tx: &Db, id: Uuid, amount: i64, full: bool) -> Result<bool, DbError> {
    let n = tx.execute(
        "UPDATE orders SET refunded_minor = refunded_minor + $2, \
           status = CASE WHEN $3 THEN 'refunded' ELSE status END, \
           closed_at = CASE WHEN $3 THEN now() AT TIME ZONE 'UTC' ELSE closed_at END, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND refunded_minor + $2 <= amount_minor AND status = 'fulfilled'",
        &[P::Uuid(id.to_string()), P::Int64(amount), P::Boolean(full)],
    )?;
    Ok(n == 1)
}

/// An order's history, oldest first.
pub fn history_of(db: &Db, id: Uuid) -> Result<Vec<serde_json::Value>, DbError> {
    db.all(
        "SELECT status, step, note, created_at FROM order_history WHERE order_id = $1 ORDER BY id",
        &[P::Uuid(id.to_string())],
        |r| {
            Ok(serde_json::json!({
                "status": col::<String>(r, 0, "status")?,
                "step": col::<String>(r, 1, "step")?,
                "note": col::<Option<String>>(r, 2, "note")?,
                "at": timestamp(r, 3, "created_at")?,
            }))
        },
    )
}

/// A page of orders in the caller's scope, newest first.
pub fn list(
    db: &Db,
    scope: &access::RowFilter,
    user: Option<Uuid>,
    status: Option<String>,
    page: Page,
) -> Result<(Vec<Order>, i64), DbError> {
    super::owned_page(
        db,
        "orders",
        COLUMNS,
        super::owned_where(scope, user, status),
        "r.created_at DESC, r.id",
        page,
        order,
    )
}
