//! Refunds of orders: requested by an operator, completed at once or, over
//! the approval threshold, after a second operator approves.

use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A refund.
#[derive(Debug, Clone, Serialize)]
pub struct Refund {
    /// Id.
    pub id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// How much.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// Why.
    pub reason: String,
    /// `pending_approval`, `completed`, `rejected`.
    pub status: String,
    /// Who asked.
    pub requested_by: Uuid,
    /// Who approved.
    pub approved_by: Option<Uuid>,
    /// The ledger transaction.
    pub transaction_id: Option<Uuid>,
    /// When asked.
    pub created_at: String,
    /// When decided.
    pub decided_at: Option<String>,
    /// `balance` (the buyer's available balance) or `provider` (back
    /// through the provider that took the payment).
    pub destination: String,
    /// The provider's id of the refund, once it accepted it.
    pub provider_ref: Option<String>,
    /// Why the provider refused it (`failed`).
    pub failure: Option<String>,
}

const COLUMNS: &str = "id, order_id, amount_minor, currency::text, reason, status, requested_by, \
     approved_by, transaction_id, created_at, decided_at, destination, provider_ref, failure";

fn refund(r: &[DbValue]) -> Result<Refund, DbError> {
    Ok(Refund {
        id: col(r, 0, "refunds.id")?,
        order_id: col(r, 1, "refunds.order_id")?,
        amount_minor: col(r, 2, "refunds.amount_minor")?,
        currency: col(r, 3, "refunds.currency")?,
        reason: col(r, 4, "refunds.reason")?,
        status: col(r, 5, "refunds.status")?,
        requested_by: col(r, 6, "refunds.requested_by")?,
        approved_by: col(r, 7, "refunds.approved_by")?,
        transaction_id: col(r, 8, "refunds.transaction_id")?,
        created_at: timestamp(r, 9, "refunds.created_at")?,
        decided_at: opt_timestamp(r, 10, "refunds.decided_at")?,
        destination: col(r, 11, "refunds.destination")?,
        provider_ref: col(r, 12, "refunds.provider_ref")?,
        failure: col(r, 13, "refunds.failure")?,
    })
}

/// A refund asked for.
#[derive(Debug)]
pub struct Request<'a> {
    /// The order.
    pub order: Uuid,
    /// How much.
    pub amount: i64,
    /// In its currency.
    pub currency: &'a str,
    /// Why.
    pub reason: &'a str,
    /// Who asks.
    pub by: Uuid,
    /// Their key.
    pub key: &'a str,
    /// `pending_approval` or `approved`.
    pub status: &'a str,
    /// `balance` or `provider`.
    pub destination: &'a str,
}

/// Records a refund request, or finds the one made under the same key:
/// `(refund, made now)`.
pub fn request(tx: &Db, q: &Request) -> Result<(Refund, bool), DbError> {
    let made = tx.execute(
        "INSERT INTO refunds (id, order_id, amount_minor, currency, reason, status, requested_by, idempotency_key, \
           destination) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (requested_by, idempotency_key) DO NOTHING",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(q.order.to_string()),
            P::Int64(q.amount),
            P::Str(q.currency.into()),
            P::Str(q.reason.into()),
            P::Str(q.status.into()),
            P::Uuid(q.by.to_string()),
            P::Str(q.key.into()),
            P::Str(q.destination.into()),
        ],
    )? == 1;
    let r = tx
        .one(
            &format!(
                "SELECT {COLUMNS} FROM refunds WHERE requested_by = $1 AND idempotency_key = $2"
            ),
            &[P::Uuid(q.by.to_string()), P::Str(q.key.into())],
            refund,
        )?
        .ok_or_else(|| DbError::Other("refund vanished".into()))?;
    Ok((r, made))
}

/// A refund, locked.
pub fn lock(tx: &Db, id: Uuid) -> Result<Option<Refund>, DbError> {
    tx.one(
        &format!("SELECT {COLUMNS} FROM refunds WHERE id = $1 FOR UPDATE"),
        &[P::Uuid(id.to_string())],
        refund,
    )
}

/// Marks a refund completed (by its ledger transaction) or rejected.
pub fn decide(
    tx: &Db,
    id: Uuid,
    status: &str,
    approver: Option<Uuid>,
    transaction: Option<Uuid>,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE refunds SET status = $2, approved_by = coalesce($3, approved_by), transaction_id = $4, \
           decided_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            P::Str(status.into()),
            opt_uuid(approver),
            opt_uuid(transaction),
        ],
    )?;
    Ok(())
}

/// Records the provider's id of a refund it accepted.
pub fn accepted(db: &Db, id: Uuid, provider_ref: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE refunds SET provider_ref = $2 WHERE id = $1",
        &[P::Uuid(id.to_string()), P::Str(provider_ref.into())],
    )?;
    Ok(())
}

/// Marks a refund the provider refused `failed`, with why (only one still
/// to be carried out); whether it was.
pub fn failed(db: &Db, id: Uuid, why: &str) -> Result<bool, DbError> {
    Ok(db.execute(
        "UPDATE refunds SET status = 'failed', failure = $2, decided_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND status IN ('approved', 'pending_approval')",
        &[P::Uuid(id.to_string()), P::Str(why.into())],
    )? == 1)
}

/// An order's refunds, oldest first.
pub fn of_order(db: &Db, order: Uuid) -> Result<Vec<Refund>, DbError> {
    db.all(
        &format!("SELECT {COLUMNS} FROM refunds WHERE order_id = $1 ORDER BY created_at, id"),
        &[P::Uuid(order.to_string())],
        refund,
    )
}
