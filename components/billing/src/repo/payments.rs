//! Payments by providers and the webhooks received about them. A payment
//! moves once to a final status with a compare-and-set; events older than
//! the last one applied change nothing.

use platform::db::{col, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A payment.
#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    /// Id.
    pub id: Uuid,
    /// `stripe`.
    pub provider: String,
    /// The provider's id for it, once made.
    pub provider_ref: Option<String>,
    /// The order it pays (none: a top-up).
    pub order_id: Option<Uuid>,
    /// Payer.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Asked for.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// `pending`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// What the payer's client needs to pay (Stripe; only the payer is
    /// shown it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Where the payer pays (Alipay's signed page; only the payer is shown
    /// it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
    /// The provider's last failure.
    pub last_error: Option<String>,
    /// Received, once it succeeded.
    pub received_minor: Option<i64>,
    /// The recharge that credited it.
    pub transaction_id: Option<Uuid>,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
    /// Version: one more at each change of status (its events' order).
    pub version: i64,
}

impl Payment {
    /// Hides how to pay it (from anyone but the payer).
    pub fn hide_checkout(&mut self) {
        self.client_secret = None;
        self.checkout_url = None;
    }
}

const COLUMNS: &str = "id, provider, provider_ref, order_id, user_id, tenant_id, amount_minor, \
     currency::text, status, client_secret, last_error, received_minor, transaction_id, created_at, updated_at, \
     checkout_url, version";

fn payment(r: &[DbValue]) -> Result<Payment, DbError> {
    Ok(Payment {
        id: col(r, 0, "payments.id")?,
        provider: col(r, 1, "payments.provider")?,
        provider_ref: col(r, 2, "payments.provider_ref")?,
        order_id: col(r, 3, "payments.order_id")?,
        user_id: col(r, 4, "payments.user_id")?,
        tenant_id: col(r, 5, "payments.tenant_id")?,
        amount_minor: col(r, 6, "payments.amount_minor")?,
        currency: col(r, 7, "payments.currency")?,
        status: col(r, 8, "payments.status")?,
        client_secret: col(r, 9, "payments.client_secret")?,
        last_error: col(r, 10, "payments.last_error")?,
        received_minor: col(r, 11, "payments.received_minor")?,
        transaction_id: col(r, 12, "payments.transaction_id")?,
        created_at: timestamp(r, 13, "payments.created_at")?,
        updated_at: timestamp(r, 14, "payments.updated_at")?,
        checkout_url: col(r, 15, "payments.checkout_url")?,
        version: col(r, 16, "payments.version")?,
    })
}

/// A payment to ask a provider for.
#[derive(Debug)]
pub struct NewPayment<'a> {
    /// `stripe`.
    pub provider: &'a str,
    /// The order it pays.
    pub order: Option<Uuid>,
    /// Payer.
    pub user: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Amount.
    pub amount_minor: i64,
    /// Currency.
    pub currency: &'a str,
    /// The payer's key (an order's payment: `order:<id>`).
    pub key: &'a str,
}

/// Inserts a payment, or finds the one made under the same key:
/// `(payment, made now)`.
pub fn create(tx: &Db, p: &NewPayment) -> Result<(Payment, bool), DbError> {
    let made = tx.execute(
        "INSERT INTO payments (id, provider, order_id, user_id, tenant_id, amount_minor, currency, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Str(p.provider.into()),
            opt_uuid(p.order),
            P::Uuid(p.user.to_string()),
            opt_uuid(p.tenant),
            P::Int64(p.amount_minor),
            P::Str(p.currency.into()),
            P::Str(p.key.into()),
        ],
    )? == 1;
    let found = tx
        .one(
            &format!("SELECT {COLUMNS} FROM payments WHERE user_id = $1 AND idempotency_key = $2"),
            &[P::Uuid(p.user.to_string()), P::Str(p.key.into())],
            payment,
        )?
        .ok_or_else(|| DbError::Other("payment vanished".into()))?;
    Ok((found, made))
}

/// A payment by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Payment>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM payments WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        payment,
    )
}

/// An order's payment.
pub fn of_order(db: &Db, order: Uuid) -> Result<Option<Payment>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM payments WHERE order_id = $1"),
        &[P::Uuid(order.to_string())],
        payment,
    )
}

/// A payment by the provider's id, locked for the webhook's transaction.
pub fn by_ref_for_update(
    tx: &Db,
    provider: &str,
    reference: &str,
) -> Result<Option<Payment>, DbError> {
    tx.one(
        &format!(
            "SELECT {COLUMNS} FROM payments WHERE provider = $1 AND provider_ref = $2 FOR UPDATE"
        ),
        &[P::Str(provider.into()), P::Str(reference.into())],
        payment,
    )
}

/// Records what the provider made for a payment (once).
pub fn started(
    db: &Db,
    id: Uuid,
    reference: &str,
    client_secret: Option<&str>,
    checkout_url: Option<&str>,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE payments SET provider_ref = $2, client_secret = $3, checkout_url = $4, \
           updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1 AND provider_ref IS NULL",
        &[
            P::Uuid(id.to_string()),
            P::Str(reference.into()),
            client_secret.map_or(P::DbNull, |s| P::Str(s.into())),
            checkout_url.map_or(P::DbNull, |s| P::Str(s.into())),
        ],
    )?;
    Ok(())
}

/// Marks a payment received (from any status: money that arrives after a
/// payment was given up is still the payer's); whether it was not already.
pub fn succeeded(
    tx: &Db,
    id: Uuid,
    received: i64,
    event_at: i64,
    transaction: Uuid,
) -> Result<bool, DbError> {
    Ok(tx.execute(
        "UPDATE payments SET status = 'succeeded', received_minor = $2, event_at = $3, transaction_id = $4, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1 AND status <> 'succeeded'",
        &[
            P::Uuid(id.to_string()),
            P::Int64(received),
            P::Int64(event_at),
            P::Uuid(transaction.to_string()),
        ],
    )? == 1)
}

/// Records a failed attempt or a cancellation of a pending payment, unless
/// a later event was applied already; whether it changed.
pub fn not_paid(
    tx: &Db,
    id: Uuid,
    status: &str,
    error: Option<&str>,
    event_at: i64,
) -> Result<bool, DbError> {
    Ok(tx.execute(
        "UPDATE payments SET status = $2, last_error = coalesce($3, last_error), event_at = $4, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND status IN ('pending', 'failed') AND (event_at IS NULL OR event_at <= $4)",
        &[
            P::Uuid(id.to_string()),
            P::Str(status.into()),
            error.map_or(P::DbNull, |e| P::Str(e.into())),
            P::Int64(event_at),
        ],
    )? == 1)
}

/// A webhook received.
#[derive(Debug)]
pub struct Received<'a> {
    /// Provider.
    pub provider: &'a str,
    /// Its event id, when readable.
    pub event_id: Option<&'a str>,
    /// Its type.
    pub event_type: Option<&'a str>,
    /// The payment it is about.
    pub payment_ref: Option<&'a str>,
    /// `applied`, `ignored`, `duplicate`, `forged`, `stale`, `malformed`.
    pub verdict: &'a str,
    /// Why.
    pub detail: Option<&'a str>,
    /// SHA-256 of the body, hex.
    pub body_sha256: &'a str,
}

/// Records a webhook: its row's id, or none when an accepted one with the
/// same event id was recorded before (then nothing is written: the caller
/// records the duplicate).
pub fn record(db: &Db, w: &Received) -> Result<Option<i64>, DbError> {
    db.one(
        "INSERT INTO webhook_events (provider, event_id, event_type, payment_ref, verdict, detail, body_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id",
        &[
            P::Str(w.provider.into()),
            w.event_id.map_or(P::DbNull, |s| P::Str(s.into())),
            w.event_type.map_or(P::DbNull, |s| P::Str(s.into())),
            w.payment_ref.map_or(P::DbNull, |s| P::Str(s.into())),
            P::Str(w.verdict.into()),
            w.detail.map_or(P::DbNull, |s| P::Str(s.chars().take(500).collect())),
            P::Str(w.body_sha256.into()),
        ],
        |r| col(r, 0, "webhook_events.id"),
    )
}

/// Sets what applying a recorded webhook came to.
pub fn set_verdict(tx: &Db, id: i64, verdict: &str, detail: Option<&str>) -> Result<(), DbError> {
    tx.execute(
        "UPDATE webhook_events SET verdict = $2, detail = $3 WHERE id = $1",
        &[
            P::Int64(id),
            P::Str(verdict.into()),
            detail.map_or(P::DbNull, |s| P::Str(s.into())),
        ],
    )?;
    Ok(())
}

/// A page of payments in the caller's scope, newest first.
pub fn list(
    db: &Db,
    scope: &access::RowFilter,
    user: Option<Uuid>,
    status: Option<String>,
    page: Page,
) -> Result<(Vec<Payment>, i64), DbError> {
    super::owned_page(
        db,
        "payments",
        COLUMNS,
        super::owned_where(scope, user, status),
        "r.created_at DESC, r.id",
        page,
        payment,
    )
}

/// A page of webhooks received, newest first, optionally of one verdict.
pub fn webhooks(
    db: &Db,
    verdict: Option<String>,
    page: Page,
) -> Result<(Vec<serde_json::Value>, i64), DbError> {
    let mut w = Where::new();
    if let Some(v) = verdict {
        w.eq("verdict", P::Str(v));
    }
    paged(
        db,
        "SELECT id, provider, event_id, event_type, payment_ref, verdict, detail, body_sha256, received_at \
         FROM webhook_events",
        "webhook_events",
        w,
        "id DESC",
        page,
        |r| {
            Ok(serde_json::json!({
                "id": col::<i64>(r, 0, "id")?,
                "provider": col::<String>(r, 1, "provider")?,
                "event_id": col::<Option<String>>(r, 2, "event_id")?,
                "event_type": col::<Option<String>>(r, 3, "event_type")?,
                "payment_ref": col::<Option<String>>(r, 4, "payment_ref")?,
                "verdict": col::<String>(r, 5, "verdict")?,
                "detail": col::<Option<String>>(r, 6, "detail")?,
                "body_sha256": col::<String>(r, 7, "body_sha256")?,
                "received_at": timestamp(r, 8, "received_at")?,
            }))
        },
    )
}

/// Deletes webhook records past their keeping: refused ones and repeats
/// after `refused_days`, accepted ones (which make a redelivery a
/// duplicate; providers stop retrying within days) after `accepted_days`.
pub fn prune_webhooks(db: &Db, refused_days: i64, accepted_days: i64) -> Result<i64, DbError> {
    let n = db.execute(
        "DELETE FROM webhook_events WHERE received_at < now() AT TIME ZONE 'UTC' - \
           make_interval(days => (CASE WHEN verdict IN ('applied', 'ignored') THEN $2::bigint ELSE $1::bigint END)::int)",
        &[P::Int64(refused_days), P::Int64(accepted_days)],
    )?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}
