//! Invoices: the monthly run (set-based: drafts, their lines and totals in
//! a few statements whatever the number of usage records), their issue,
//! what follows (paid, overdue), lists and reports.

use chrono::{NaiveDate, NaiveDateTime};
use platform::db::{col, opt_timestamp, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::paged;
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// An invoice.
#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    /// Id.
    pub id: Uuid,
    /// `INV-YYYYMM-NNNNNN`.
    pub number: String,
    /// Whose.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// The month, `YYYY-MM`.
    pub period: String,
    /// Currency.
    pub currency: String,
    /// `draft`, `issued`, `paid`, `overdue`, `void`.
    pub status: String,
    /// Tax rate, basis points.
    pub tax_rate_bp: i32,
    /// Net of tax.
    pub subtotal_minor: i64,
    /// Tax.
    pub tax_minor: i64,
    /// Total, tax included.
    pub total_minor: i64,
    /// Left to pay at issue.
    pub amount_due_minor: i64,
    /// Due.
    pub due_at: Option<String>,
    /// Issued.
    pub issued_at: Option<String>,
    /// Paid.
    pub paid_at: Option<String>,
    /// Voided.
    pub voided_at: Option<String>,
    /// Why.
    pub void_reason: Option<String>,
    /// Version.
    pub version: i64,
    /// Made.
    pub created_at: String,
}

/// The columns of an invoice `r`.
const COLUMNS: &str = "r.id, r.number, r.user_id, r.tenant_id, to_char(r.period_start, 'YYYY-MM'), r.currency::text, \
     r.status, r.tax_rate_bp, r.subtotal_minor, r.tax_minor, r.total_minor, r.amount_due_minor, r.due_at, \
     r.issued_at, r.paid_at, r.voided_at, r.void_reason, r.version, r.created_at";

fn invoice(r: &[DbValue]) -> Result<Invoice, DbError> {
    Ok(Invoice {
        id: col(r, 0, "invoices.id")?,
        number: col(r, 1, "invoices.number")?,
        user_id: col(r, 2, "invoices.user_id")?,
        tenant_id: col(r, 3, "invoices.tenant_id")?,
        period: col(r, 4, "invoices.period")?,
        currency: col(r, 5, "invoices.currency")?,
        status: col(r, 6, "invoices.status")?,
        tax_rate_bp: col(r, 7, "invoices.tax_rate_bp")?,
        subtotal_minor: col(r, 8, "invoices.subtotal_minor")?,
        tax_minor: col(r, 9, "invoices.tax_minor")?,
        total_minor: col(r, 10, "invoices.total_minor")?,
        amount_due_minor: col(r, 11, "invoices.amount_due_minor")?,
        due_at: opt_timestamp(r, 12, "invoices.due_at")?,
        issued_at: opt_timestamp(r, 13, "invoices.issued_at")?,
        paid_at: opt_timestamp(r, 14, "invoices.paid_at")?,
        voided_at: opt_timestamp(r, 15, "invoices.voided_at")?,
        void_reason: col(r, 16, "invoices.void_reason")?,
        version: col(r, 17, "invoices.version")?,
        created_at: timestamp(r, 18, "invoices.created_at")?,
    })
}

fn day(d: NaiveDate) -> P {
    platform::db::datetime_param(d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// Locks the month's number counter (serialising runs of one month); the
/// last number given.
pub fn lock_counter(tx: &Db, month: NaiveDate) -> Result<i64, DbError> {
    tx.execute(
        "INSERT INTO invoice_counters (period_start) VALUES ($1::timestamp::date) ON CONFLICT DO NOTHING",
        &[day(month)],
    )?;
    let last: Option<i32> = tx.one(
        "SELECT last FROM invoice_counters WHERE period_start = $1::timestamp::date FOR UPDATE",
        &[day(month)],
        |r| col(r, 0, "last"),
    )?;
    Ok(i64::from(last.unwrap_or(0)))
}

/// Records the last number given.
pub fn set_counter(tx: &Db, month: NaiveDate, last: i64) -> Result<(), DbError> {
    tx.execute(
        "UPDATE invoice_counters SET last = $2 WHERE period_start = $1::timestamp::date",
        &[
            day(month),
            P::Int32(i32::try_from(last).unwrap_or(i32::MAX)),
        ],
    )?;
    Ok(())
}

/// Drafts the month's invoices not made yet: one per user and currency
/// with usage charged, an order paid or a refund made in the month, with
/// their lines (usage per device, each order, each refund) and totals.
pub fn draft_month(
    tx: &Db,
    month: NaiveDate,
    next: NaiveDate,
    rate_bp: i32,
) -> Result<(), DbError> {
    let params = [day(month), day(next)];
    tx.execute(
        "WITH activity AS ( \
           SELECT user_id, tenant_id, currency::text AS currency FROM usage_records \
            WHERE created_at >= $1 AND created_at < $2 \
           UNION ALL \
           SELECT user_id, tenant_id, currency::text FROM orders \
            WHERE paid_at >= $1 AND paid_at < $2 AND status <> 'failed' \
           UNION ALL \
           SELECT o.user_id, o.tenant_id, r.currency::text FROM refunds r JOIN orders o ON o.id = r.order_id \
            WHERE r.status = 'completed' AND r.decided_at >= $1 AND r.decided_at < $2) \
         INSERT INTO invoices (id, number, user_id, tenant_id, period_start, currency, status, tax_rate_bp) \
         SELECT gen_random_uuid(), 'draft-' || gen_random_uuid(), a.user_id, \
                (array_agg(a.tenant_id ORDER BY a.tenant_id NULLS LAST))[1], $1::timestamp::date, a.currency, 'draft', $3 \
           FROM activity a \
          WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.user_id = a.user_id \
                              AND i.period_start = $1::timestamp::date AND i.currency = a.currency) \
          GROUP BY a.user_id, a.currency",
        &[params[0].clone(), params[1].clone(), P::Int32(rate_bp)],
    )?;
    const DRAFTS: &str = "invoices i ON i.user_id = {u}.user_id AND i.currency = {c} \
                          AND i.period_start = $1::timestamp::date AND i.status = 'draft'";
    let drafts = |u: &str, c: &str| DRAFTS.replace("{u}", u).replace("{c}", c);
    tx.execute(
        &format!(
            "INSERT INTO invoice_lines (invoice_id, kind, description, quantity, unit, amount_minor, reference) \
             SELECT i.id, 'usage', 'Device time, device ' || u.device_id, sum(u.minutes), 'minutes', \
                    sum(u.amount_minor), 'device:' || u.device_id \
               FROM usage_records u JOIN {} \
              WHERE u.created_at >= $1 AND u.created_at < $2 \
              GROUP BY i.id, u.device_id",
            drafts("u", "u.currency")
        ),
        &params,
    )?;
    tx.execute(
        &format!(
            "INSERT INTO invoice_lines (invoice_id, kind, description, quantity, unit, amount_minor, reference) \
             SELECT i.id, 'order', (o.plan ->> 'name') || ', ' || o.cycles || ' × ' || (o.plan ->> 'cycle'), \
                    o.cycles, 'cycles', o.amount_minor, 'order:' || o.id \
               FROM orders o JOIN {} \
              WHERE o.paid_at >= $1 AND o.paid_at < $2 AND o.status <> 'failed'",
            drafts("o", "o.currency")
        ),
        &params,
    )?;
    tx.execute(
        &format!(
            "INSERT INTO invoice_lines (invoice_id, kind, description, quantity, unit, amount_minor, reference) \
             SELECT i.id, 'refund', 'Refund: ' || r.reason, 1, 'refund', -r.amount_minor, 'order:' || o.id \
               FROM refunds r JOIN orders o ON o.id = r.order_id JOIN {} \
              WHERE r.status = 'completed' AND r.decided_at >= $1 AND r.decided_at < $2",
            drafts("o", "r.currency")
        ),
        &params,
    )?;
    tx.execute(
        "UPDATE invoices i SET total_minor = l.total, subtotal_minor = l.total \
           FROM (SELECT invoice_id, sum(amount_minor)::bigint AS total FROM invoice_lines \
                  WHERE invoice_id IN (SELECT id FROM invoices WHERE period_start = $1::timestamp::date AND status = 'draft') \
                  GROUP BY invoice_id) l \
          WHERE i.id = l.invoice_id",
        &params[..1],
    )?;
    Ok(())
}

/// A draft to issue: `(id, total, what the user owes now in its currency)`.
pub type Draft = (Uuid, i64, i64);

/// The month's drafts, in the order they were made.
pub fn drafts(tx: &Db, month: NaiveDate) -> Result<Vec<Draft>, DbError> {
    tx.all(
        "SELECT i.id, i.total_minor, coalesce(-a.balance, 0)::bigint FROM invoices i \
           LEFT JOIN accounts a ON a.kind = 'owed' AND a.owner_id = i.user_id AND a.currency = i.currency \
          WHERE i.period_start = $1::timestamp::date AND i.status = 'draft' \
          ORDER BY i.created_at, i.user_id, i.currency",
        &[day(month)],
        |r| Ok((col(r, 0, "id")?, col(r, 1, "total")?, col(r, 2, "owed")?)),
    )
}

/// What issuing a draft sets.
#[derive(Debug)]
pub struct Issue {
    /// The draft.
    pub id: Uuid,
    /// Number.
    pub number: String,
    /// Net.
    pub subtotal: i64,
    /// Tax.
    pub tax: i64,
    /// Left to pay (none: `paid` at once).
    pub due: i64,
}

/// Issues drafts, all in one statement, due at `due_at`; the invoices
/// issued, in the order given.
pub fn issue(tx: &Db, drafts: &[Issue], due_at: NaiveDateTime) -> Result<Vec<Invoice>, DbError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = drafts.iter().map(|d| d.id).collect();
    tx.execute(
        "UPDATE invoices i SET number = u.number, subtotal_minor = u.subtotal, tax_minor = u.tax, \
           amount_due_minor = u.due, due_at = $6, issued_at = now() AT TIME ZONE 'UTC', \
           status = CASE WHEN u.due = 0 THEN 'paid' ELSE 'issued' END, \
           paid_at = CASE WHEN u.due = 0 THEN now() AT TIME ZONE 'UTC' END, \
           version = i.version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) \
              AS u(id, number, subtotal, tax, due) \
         WHERE i.id = u.id::uuid AND i.status = 'draft'",
        &[
            platform::db::uuid_array(&ids),
            P::ArrayStr(drafts.iter().map(|d| Some(d.number.clone())).collect()),
            P::ArrayInt64(drafts.iter().map(|d| Some(d.subtotal)).collect()),
            P::ArrayInt64(drafts.iter().map(|d| Some(d.tax)).collect()),
            P::ArrayInt64(drafts.iter().map(|d| Some(d.due)).collect()),
            platform::db::datetime_param(due_at),
        ],
    )?;
    many(tx, &ids)
}

/// Invoices by id, in the order given.
pub fn many(db: &Db, ids: &[Uuid]) -> Result<Vec<Invoice>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM unnest($1::text[]) WITH ORDINALITY AS w(id, n) \
               JOIN invoices r ON r.id = w.id::uuid ORDER BY w.n"
        ),
        &[platform::db::uuid_array(ids)],
        invoice,
    )
}

/// Open invoices whose user owes nothing any more in their currency
/// become `paid`; issued ones past due with money owed `overdue`:
/// `(paid, overdue)` ids.
pub fn follow_up(tx: &Db) -> Result<(Vec<Uuid>, Vec<Uuid>), DbError> {
    let paid = tx.all(
        "UPDATE invoices i SET status = 'paid', paid_at = now() AT TIME ZONE 'UTC', version = version + 1, \
           updated_at = now() AT TIME ZONE 'UTC' \
         WHERE i.status IN ('issued', 'overdue') AND NOT EXISTS ( \
           SELECT 1 FROM accounts a WHERE a.kind = 'owed' AND a.owner_id = i.user_id \
              AND a.currency = i.currency AND a.balance < 0) \
         RETURNING i.id",
        &[],
        |r| col(r, 0, "id"),
    )?;
    let overdue = tx.all(
        "UPDATE invoices SET status = 'overdue', version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE status = 'issued' AND due_at < now() AT TIME ZONE 'UTC' RETURNING id",
        &[],
        |r| col(r, 0, "id"),
    )?;
    Ok((paid, overdue))
}

/// An invoice by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Invoice>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM invoices r WHERE r.id = $1"),
        &[P::Uuid(id.to_string())],
        invoice,
    )
}

/// Voids an invoice not paid; whether it was open.
pub fn void(tx: &Db, id: Uuid, reason: &str) -> Result<bool, DbError> {
    Ok(tx.execute(
        "UPDATE invoices SET status = 'void', voided_at = now() AT TIME ZONE 'UTC', void_reason = $2, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND status IN ('issued', 'overdue')",
        &[P::Uuid(id.to_string()), P::Str(reason.into())],
    )? == 1)
}

/// An invoice line.
#[derive(Debug, Serialize)]
pub struct Line {
    /// `usage`, `order`, `refund`.
    pub kind: String,
    /// What it is.
    pub description: String,
    /// How much.
    pub quantity: i64,
    /// Of what.
    pub unit: String,
    /// Amount, tax included.
    pub amount_minor: i64,
    /// What it refers to.
    pub reference: Option<String>,
}

/// An invoice's lines.
pub fn lines(db: &Db, id: Uuid) -> Result<Vec<Line>, DbError> {
    db.all(
        "SELECT kind, description, quantity, unit, amount_minor, reference FROM invoice_lines \
          WHERE invoice_id = $1 ORDER BY kind DESC, id",
        &[P::Uuid(id.to_string())],
        |r| {
            Ok(Line {
                kind: col(r, 0, "kind")?,
                description: col(r, 1, "description")?,
                quantity: col(r, 2, "quantity")?,
                unit: col(r, 3, "unit")?,
                amount_minor: col(r, 4, "amount_minor")?,
                reference: col(r, 5, "reference")?,
            })
        },
    )
}

/// List filters.
#[derive(Debug, Default)]
pub struct Filter {
    /// One user.
    pub user: Option<Uuid>,
    /// One status.
    pub status: Option<String>,
    /// One month.
    pub month: Option<NaiveDate>,
    /// One currency.
    pub currency: Option<String>,
}

/// A page of invoices in the caller's scope (not drafts), newest first.
pub fn list(
    db: &Db,
    scope: &access::RowFilter,
    f: Filter,
    page: Page,
) -> Result<(Vec<Invoice>, i64), DbError> {
    let mut w = super::owned_where(scope, f.user, f.status);
    w.and("r.status <> 'draft'");
    if let Some(m) = f.month {
        let p = w.bind(day(m));
        w.and(format!("r.period_start = {p}::timestamp::date"));
    }
    if let Some(c) = f.currency {
        w.eq("r.currency", P::Str(c));
    }
    const FROM: &str = "invoices r JOIN owners o ON o.user_id = r.user_id";
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM {FROM}"),
        FROM,
        w,
        "r.period_start DESC, r.number DESC",
        page,
        invoice,
    )
}

/// Revenue of a month, currency and kind of movement.
#[derive(Debug, Serialize)]
pub struct RevenueRow {
    /// `YYYY-MM`.
    pub month: String,
    /// Currency.
    pub currency: String,
    /// Kind of movement (`usage`, `charge`, `settle`, `refund`).
    pub kind: String,
    /// Transactions.
    pub transactions: i64,
    /// Net revenue (refunds negative).
    pub revenue_minor: i64,
}

/// Revenue by month, currency and kind of movement, from the ledger's
/// revenue accounts.
pub fn revenue(db: &Db, from: NaiveDate, to: NaiveDate) -> Result<Vec<RevenueRow>, DbError> {
    db.all(
        "SELECT to_char(date_trunc('month', t.created_at), 'YYYY-MM'), a.currency::text, t.kind, \
                count(*)::bigint, sum(e.amount)::bigint \
           FROM ledger_entries e JOIN accounts a ON a.id = e.account_id \
           JOIN ledger_transactions t ON t.id = e.transaction_id \
          WHERE a.kind = 'revenue' AND t.created_at >= $1 AND t.created_at < $2 \
          GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        &[day(from), day(to)],
        |r| {
            Ok(RevenueRow {
                month: col(r, 0, "month")?,
                currency: col(r, 1, "currency")?,
                kind: col(r, 2, "kind")?,
                transactions: col(r, 3, "count")?,
                revenue_minor: col(r, 4, "net")?,
            })
        },
    )
}

/// Device time of a month and currency.
#[derive(Debug, Serialize)]
pub struct UsageRow {
    /// `YYYY-MM`.
    pub month: String,
    /// Currency.
    pub currency: String,
    /// Users charged.
    pub users: i64,
    /// Devices charged.
    pub devices: i64,
    /// Minutes.
    pub minutes: i64,
    /// Amount charged.
    pub amount_minor: i64,
}

/// Device time by month and currency, from the usage records.
pub fn usage(db: &Db, from: NaiveDate, to: NaiveDate) -> Result<Vec<UsageRow>, DbError> {
    db.all(
        "SELECT to_char(date_trunc('month', created_at), 'YYYY-MM'), currency::text, count(DISTINCT user_id)::bigint, \
                count(DISTINCT device_id)::bigint, sum(minutes)::bigint, sum(amount_minor)::bigint \
           FROM usage_records WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2 ORDER BY 1, 2",
        &[day(from), day(to)],
        |r| {
            Ok(UsageRow {
                month: col(r, 0, "month")?,
                currency: col(r, 1, "currency")?,
                users: col(r, 2, "users")?,
                devices: col(r, 3, "devices")?,
                minutes: col(r, 4, "minutes")?,
                amount_minor: col(r, 5, "amount")?,
            })
        },
    )
}

/// A member's invoice on their tenant's statement, with who they are.
#[derive(Debug, Serialize)]
pub struct Member {
    /// The invoice.
    #[serde(flatten)]
    pub invoice: Invoice,
    /// Their name, as billing's copy says.
    pub buyer_name: String,
    /// Their email.
    pub buyer_email: String,
}

/// The issued invoices (any status but draft) of a tenant's users for a
/// month in one currency, by number.
pub fn of_tenant(
    db: &Db,
    tenant: Uuid,
    month: NaiveDate,
    currency: &str,
) -> Result<Vec<Member>, DbError> {
    db.all(
        &format!(
            "SELECT {COLUMNS}, o.display_name, o.email FROM invoices r JOIN owners o ON o.user_id = r.user_id \
              WHERE r.tenant_id = $1 AND r.period_start = $2::timestamp::date AND r.currency = $3 \
                AND r.status <> 'draft' ORDER BY r.number"
        ),
        &[P::Uuid(tenant.to_string()), day(month), P::Str(currency.into())],
        |r| {
            Ok(Member {
                invoice: invoice(r)?,
                buyer_name: col(r, 19, "owners.display_name")?,
                buyer_email: col(r, 20, "owners.email")?,
            })
        },
    )
}

/// Whether billing knows a user of the tenant (its copies of owners).
pub fn tenant_known(db: &Db, tenant: Uuid) -> Result<bool, DbError> {
    Ok(db
        .one(
            "SELECT 1 FROM owners WHERE tenant_id = $1 LIMIT 1",
            &[P::Uuid(tenant.to_string())],
            |_| Ok(()),
        )?
        .is_some())
}

/// A buyer's name and email, as billing's copy of them says.
pub fn buyer(db: &Db, user: Uuid) -> Result<Option<(String, String)>, DbError> {
    db.one(
        "SELECT display_name, email FROM owners WHERE user_id = $1",
        &[P::Uuid(user.to_string())],
        |r| Ok((col(r, 0, "display_name")?, col(r, 1, "email")?)),
    )
}
