//! Monthly invoices (`docs/billing.md`, "Invoices"): the run that issues a
//! month's invoices (scheduler), what follows them (paid, overdue), users'
//! lists and documents, voiding, and operators' revenue and usage reports.

use super::{currency, db, scope, uuid_query, visible_owner, Call};
use crate::domain::invoice::{split_tax, statement, Counted, Month, StatementTotals};
use crate::domain::money::{Currency, Money};
use crate::error::{Error, Result};
use crate::repo::invoices::{self, Filter, Invoice, Issue};
use access::RowFilter;
use platform::db::Db;
use platform::events::catalogue::{
    EventType, INVOICE_ISSUED, INVOICE_OVERDUE, INVOICE_PAID, INVOICE_VOIDED,
};
use platform::events::payload::InvoiceChange;
use platform::input::Text;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

fn int_var(name: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64> {
    platform::var(name)?
        .parse()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            Error::Problem(platform::Problem::internal(format!(
                "{name} must be an integer from {} to {}",
                range.start(),
                range.end()
            )))
        })
}

fn change(i: &Invoice) -> InvoiceChange {
    InvoiceChange {
        invoice_id: i.id,
        number: i.number.clone(),
        user_id: i.user_id,
        tenant_id: i.tenant_id,
        period: i.period.clone(),
        status: i.status.clone(),
        currency: i.currency.clone(),
        total_minor: i.total_minor,
        tax_minor: i.tax_minor,
        amount_due_minor: i.amount_due_minor,
        due_at: i.due_at.clone(),
    }
}

/// `event` for each of `ids` (invoices after their change), in `tx`.
fn announce(tx: &Db, event: &EventType, ids: &[Uuid]) -> Result<()> {
    let items: Vec<_> = invoices::many(tx, ids)?
        .iter()
        .map(|i| (i.id.to_string(), i.version, change(i)))
        .collect();
    platform::outbox::enqueue_many(tx, event, &items)?;
    Ok(())
}

/// `POST /internal/invoices/run` (scheduler; `month=YYYY-MM`, default the
/// month before this one): issues the month's invoices not issued yet
/// (one per user and currency with anything charged, paid or refunded in
/// it), then marks open invoices paid or overdue; `{month, issued, paid,
/// overdue}`.
pub fn run(call: &Call) -> Result<Response> {
    let today = chrono::Utc::now().date_naive();
    let this_month = Month::of(today);
    let month = match call.query("month") {
        Some(m) => Month::parse(&m).map_err(Error::Invalid)?,
        None => this_month.previous(),
    };
    if month >= this_month {
        return Err(Error::Conflict(format!(
            "{} is not over: a month is invoiced once it ended",
            month.label()
        )));
    }
    let rate = i32::try_from(int_var("invoice_tax_rate_bp", 0..=10_000)?).unwrap_or(0);
    let due_days = int_var("invoice_due_days", 0..=365)?;
    let next = Month::of(month.first_day() + chrono::Duration::days(32)).first_day();
    let db = db()?;
    let (issued, paid, overdue) = db.transaction(|tx| {
        let mut last = invoices::lock_counter(tx, month.first_day())?;
        invoices::draft_month(tx, month.first_day(), next, rate)?;
        let drafts = invoices::drafts(tx, month.first_day())?;
        let due_at = chrono::Utc::now().naive_utc() + chrono::Duration::days(due_days);
        let issues: Vec<Issue> = drafts
            .iter()
            .map(|(id, total, owed)| {
                last += 1;
                let (subtotal, tax) = split_tax(*total, rate);
                Issue {
                    id: *id,
                    number: month.number(last),
                    subtotal,
                    tax,
                    due: (*owed).clamp(0, (*total).max(0)),
                }
            })
            .collect();
        let issued = invoices::issue(tx, &issues, due_at)?;
        let items: Vec<_> = issued
            .iter()
            .map(|i| (i.id.to_string(), i.version, change(i)))
            .collect();
        platform::outbox::enqueue_many(tx, &INVOICE_ISSUED, &items)?;
        invoices::set_counter(tx, month.first_day(), last)?;
        let (paid, overdue) = follow(tx)?;
        Ok::<_, Error>((drafts.len(), paid, overdue))
    })?;
    platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    Ok(platform::http::json(
        200,
        &serde_json::json!({"month": month.label(), "issued": issued, "paid": paid, "overdue": overdue}),
    ))
}

/// Open invoices paid or overdue now, announced, in `tx`.
fn follow(tx: &Db) -> Result<(usize, usize)> {
    let (paid, overdue) = invoices::follow_up(tx)?;
    announce(tx, &INVOICE_PAID, &paid)?;
    announce(tx, &INVOICE_OVERDUE, &overdue)?;
    Ok((paid.len(), overdue.len()))
}

/// An invoice the caller may see (its user in their data scope; never a
/// draft).
fn visible(db: &Db, call: &Call, id: Uuid) -> Result<Invoice> {
    let caller = call.caller()?;
    let i = invoices::find(db, id)?
        .filter(|i| i.status != "draft")
        .ok_or(Error::NotFound("invoice"))?;
    if i.user_id != caller.user_id {
        visible_owner(db, caller, i.user_id).map_err(|_| Error::NotFound("invoice"))?;
    }
    Ok(i)
}

/// `GET /invoices` (`billing:read`): invoices in the caller's data scope,
/// newest month first; `user_id`, `status`, `month`, `currency`, paging.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let status = call
        .query("status")
        .map(|s| match s.as_str() {
            "issued" | "paid" | "overdue" | "void" => Ok(s),
            _ => Err(Error::Invalid(
                "status must be one of issued, paid, overdue, void".into(),
            )),
        })
        .transpose()?;
    let month = call
        .query("month")
        .map(|m| {
            Month::parse(&m)
                .map(Month::first_day)
                .map_err(Error::Invalid)
        })
        .transpose()?;
    let currency = call
        .query("currency")
        .map(|c| currency(&c).map(|c| c.code().to_string()))
        .transpose()?;
    let filter = Filter {
        user: uuid_query(call, "user_id")?,
        status,
        month,
        currency,
    };
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        invoices::list(&db()?, &scope(caller), filter, page)?,
    ))
}

/// `GET /invoices/:id` (`billing:read`): an invoice with its `lines`.
pub fn get(call: &Call) -> Result<Response> {
    let db = db()?;
    let i = visible(&db, call, call.id("id", "invoice")?)?;
    let mut body =
        serde_json::to_value(&i).map_err(|e| platform::Problem::internal(e.to_string()))?;
    body["lines"] = serde_json::json!(invoices::lines(&db, i.id)?);
    Ok(platform::http::json(200, &body))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /invoices/:id/document` (`billing:read`): the invoice as an HTML
/// document (seller, buyer, number, dates, lines, net, tax, total, what is
/// due), every value escaped; printable to PDF from any browser.
pub fn document(call: &Call) -> Result<Response> {
    let db = db()?;
    let i = visible(&db, call, call.id("id", "invoice")?)?;
    let lines = invoices::lines(&db, i.id)?;
    let buyer = invoices::buyer(&db, i.user_id)?;
    let c = Currency::parse(&i.currency).map_err(Error::Invalid)?;
    let money = |m: i64| format!("{} {}", Money::display(m, c), c.code());
    let seller = platform::var("invoice_seller")?;
    let mut rows = String::new();
    for l in &lines {
        rows.push_str(&format!(
            "<tr><td>{}</td><td class=\"n\">{} {}</td><td class=\"n\">{}</td></tr>\n",
            escape(&l.description),
            l.quantity,
            escape(&l.unit),
            money(l.amount_minor)
        ));
    }
    let rate = format!("{}.{:02}", i.tax_rate_bp / 100, i.tax_rate_bp % 100);
    let date = |t: &Option<String>| {
        t.as_deref()
            .map(|t| t.get(..10).unwrap_or(t).to_string())
            .unwrap_or_default()
    };
    let html = format!(
        "<h1>Invoice {number}</h1>\n\
         <p><strong>From</strong> {seller}<br><strong>To</strong> {buyer}</p>\n\
         <p>Period {period} · Issued {issued} · Due {due} · Status {status}</p>\n\
         <table><thead><tr><th>Item</th><th class=\"n\">Quantity</th><th class=\"n\">Amount</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n\
         <table><tr><td>Net</td><td class=\"n\">{net}</td></tr><tr><td>Tax ({rate}%, included)</td><td class=\"n\">{tax}</td></tr>\
         <tr><th>Total</th><th class=\"n\">{total}</th></tr><tr><td>Due</td><td class=\"n\">{owed}</td></tr></table>\n\
         <p>Prices include tax. Amounts paid from the prepaid balance when charged are settled.</p>\n",
        number = escape(&i.number),
        seller = escape(&seller),
        buyer = escape(&buyer.map_or_else(|| i.user_id.to_string(), |(name, email)| format!("{name} <{email}>"))),
        period = escape(&i.period),
        issued = date(&i.issued_at),
        due = date(&i.due_at),
        status = escape(&i.status),
        rows = rows,
        net = money(i.subtotal_minor),
        rate = rate,
        tax = money(i.tax_minor),
        total = money(i.total_minor),
        owed = money(i.amount_due_minor),
    );
    Ok(html_document(
        &format!("Invoice {}", escape(&i.number)),
        &html,
        &format!("{}.html", i.number),
    ))
}

/// A printable HTML page (`text/html`, shown inline, saved as
/// `filename`): `title` and `body` are HTML, their values escaped already.
fn html_document(title: &str, body: &str, filename: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:sans-serif;max-width:56em;margin:2em auto}}table{{width:100%;border-collapse:collapse}}\
         td,th{{border-bottom:1px solid #ccc;padding:.3em;text-align:left}}.n{{text-align:right}}</style></head>\n\
         <body>{body}</body></html>\n"
    );
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header(
            "content-disposition",
            format!("inline; filename=\"{filename}\""),
        )
        .body(page)
        .build()
}

/// A tenant's statement for a month and currency: its members' invoices
/// and what they sum to.
struct Statement {
    tenant: Uuid,
    month: String,
    currency: Currency,
    members: Vec<invoices::Member>,
    totals: StatementTotals,
}

/// The statement `tenants/:id/statement` asks for: the tenant seen by
/// the caller (platform staff, or its own administrators with the
/// tenant's data scope; 404 otherwise or when billing knows nobody of
/// it), `month` (`YYYY-MM`, required), `currency` (default
/// `usage_currency`).
fn statement_of(call: &Call) -> Result<Statement> {
    let caller = call.caller()?;
    let tenant = call.id("id", "tenant")?;
    let sees = match scope(caller) {
        RowFilter::All => true,
        RowFilter::Tenant(Some(t)) => t == tenant,
        _ => false,
    };
    let db = db()?;
    if !sees || !invoices::tenant_known(&db, tenant)? {
        return Err(Error::NotFound("tenant"));
    }
    let raw = call
        .query("month")
        .ok_or_else(|| Error::Invalid("month (YYYY-MM) is required".into()))?;
    let month = Month::parse(&raw).map_err(Error::Invalid)?;
    let currency = currency(
        &call
            .query("currency")
            .map_or_else(|| platform::var("usage_currency"), Ok)?,
    )?;
    let members = invoices::of_tenant(&db, tenant, month.first_day(), currency.code())?;
    let counted: Vec<Counted> = members
        .iter()
        .map(|m| Counted {
            status: &m.invoice.status,
            subtotal_minor: m.invoice.subtotal_minor,
            tax_minor: m.invoice.tax_minor,
            total_minor: m.invoice.total_minor,
            amount_due_minor: m.invoice.amount_due_minor,
        })
        .collect();
    let totals = statement(&counted);
    Ok(Statement {
        tenant,
        month: raw,
        currency,
        members,
        totals,
    })
}

/// `GET /tenants/:id/statement` (`billing:read`): a tenant's month in one
/// currency: every member's invoice (with their name and email) and the
/// sums of those not void; see [`statement_of`].
pub fn tenant_statement(call: &Call) -> Result<Response> {
    let s = statement_of(call)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({
            "tenant_id": s.tenant, "period": s.month, "currency": s.currency.code(),
            "invoices": s.members, "totals": s.totals,
        }),
    ))
}

/// `GET /tenants/:id/statement/document` (`billing:read`): the statement
/// as an HTML document (seller, tenant, each member's invoice, the sums),
/// every value escaped.
pub fn tenant_statement_document(call: &Call) -> Result<Response> {
    let s = statement_of(call)?;
    let c = s.currency;
    let money = |m: i64| format!("{} {}", Money::display(m, c), c.code());
    let seller = platform::var("invoice_seller")?;
    let mut rows = String::new();
    for m in &s.members {
        let i = &m.invoice;
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{} &lt;{}&gt;</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            escape(&i.number),
            escape(&m.buyer_name),
            escape(&m.buyer_email),
            escape(&i.status),
            money(i.tax_minor),
            money(i.total_minor),
            money(if matches!(i.status.as_str(), "issued" | "overdue") { i.amount_due_minor } else { 0 }),
        ));
    }
    let t = &s.totals;
    let html = format!(
        "<h1>Statement for {period}</h1>\n\
         <p><strong>From</strong> {seller}<br><strong>Tenant</strong> {tenant} · Currency {currency} · Status {status}</p>\n\
         <table><thead><tr><th>Invoice</th><th>User</th><th>Status</th><th class=\"n\">Tax</th><th class=\"n\">Total</th><th class=\"n\">Due</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n\
         <table><tr><td>Invoices (not void)</td><td class=\"n\">{count}</td></tr><tr><td>Net</td><td class=\"n\">{net}</td></tr>\
         <tr><td>Tax (included)</td><td class=\"n\">{tax}</td></tr><tr><th>Total</th><th class=\"n\">{total}</th></tr>\
         <tr><td>Due</td><td class=\"n\">{due}</td></tr></table>\n\
         <p>A summary of the member invoices listed, each the document of record.</p>\n",
        tenant = s.tenant,
        period = escape(&s.month),
        seller = escape(&seller),
        currency = c.code(),
        status = t.status,
        rows = rows,
        count = t.invoices,
        net = money(t.subtotal_minor),
        tax = money(t.tax_minor),
        total = money(t.total_minor),
        due = money(t.amount_due_minor),
    );
    Ok(html_document(
        &format!("Statement {} {}", s.tenant, escape(&s.month)),
        &html,
        &format!("statement-{}-{}.html", s.tenant, s.month),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoidInput {
    reason: String,
}

/// `POST /invoices/:id/void` (`billing:manage`): `{reason}`; an issued or
/// overdue invoice becomes `void` (what it lists stays charged: a
/// correction is a posting); `409` for a paid or void one.
pub fn void(call: &Call) -> Result<Response> {
    let input: VoidInput = call.body()?;
    let reason = Text::parse(&input.reason, "reason", 500)?;
    let id = call.id("id", "invoice")?;
    let db = db()?;
    let i = visible(&db, call, id)?;
    db.transaction(|tx| {
        if !invoices::void(tx, i.id, reason.as_str())? {
            return Err(Error::Conflict(format!(
                "the invoice is {} and cannot be voided",
                i.status
            )));
        }
        announce(tx, &INVOICE_VOIDED, &[i.id])
    })?;
    platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    let i = invoices::find(&db, id)?.ok_or(Error::NotFound("invoice"))?;
    Ok(platform::http::json(200, &i))
}

/// The months `from`..`to` (inclusive, `YYYY-MM`; default the last 12).
fn months(call: &Call) -> Result<(chrono::NaiveDate, chrono::NaiveDate)> {
    let this = Month::of(chrono::Utc::now().date_naive());
    let parse = |name: &str| {
        call.query(name)
            .map(|m| Month::parse(&m).map_err(|e| Error::Invalid(format!("{name}: {e}"))))
            .transpose()
    };
    let to = parse("to")?.unwrap_or(this);
    let mut from = parse("from")?.unwrap_or(to);
    if call.query("from").is_none() {
        for _ in 0..11 {
            from = from.previous();
        }
    }
    if from > to {
        return Err(Error::Invalid("from must not be after to".into()));
    }
    let end = Month::of(to.first_day() + chrono::Duration::days(32)).first_day();
    Ok((from.first_day(), end))
}

fn staff_only(call: &Call) -> Result<()> {
    match scope(call.caller()?) {
        RowFilter::All => Ok(()),
        _ => Err(Error::Forbidden("reports are for platform staff")),
    }
}

/// `GET /reports/revenue` (`billing:manage`, platform staff): revenue per
/// month, currency and kind of movement (`usage`, `charge`, `settle`,
/// `refund`), from the ledger's revenue accounts; `from`, `to` (`YYYY-MM`).
pub fn revenue(call: &Call) -> Result<Response> {
    staff_only(call)?;
    let (from, to) = months(call)?;
    let rows = invoices::revenue(&db()?, from, to)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": rows}),
    ))
}

/// `GET /reports/usage` (`billing:manage`, platform staff): device time per
/// month and currency: users, devices, minutes and amount charged; `from`,
/// `to`.
pub fn usage(call: &Call) -> Result<Response> {
    staff_only(call)?;
    let (from, to) = months(call)?;
    let rows = invoices::usage(&db()?, from, to)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": rows}),
    ))
}
