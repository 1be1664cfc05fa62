//! Reading the ledger: a caller's (or, within their data scope, their
//! users') transactions with filters and paging, one transaction with its
//! entries, a CSV export, statistics per user and tenant, and the ledger's
//! own check of its invariants for operators.

use super::{currency, db, scope, uuid_query, visible_owner, Call};
use crate::domain::posting::Kind;
use crate::error::{Error, Result};
use crate::repo::accounts::{self, Filter};
use crate::repo::ledger::{self, Transaction};
use platform::input::rfc3339;
use spin_sdk::http::Response;

/// The most rows one export carries (narrow the dates for more).
pub const EXPORT_MAX_ROWS: i64 = 100_000;

/// The filters of the query string.
fn filter(call: &Call) -> Result<Filter> {
    let time =
        |name: &str| -> Result<_> { Ok(call.query(name).map(|t| rfc3339(&t, name)).transpose()?) };
    let f = Filter {
        user: uuid_query(call, "user_id")?,
        tenant: uuid_query(call, "tenant_id")?,
        kind: call
            .query("kind")
            .map(|k| Kind::parse(&k).map(Kind::name).map_err(Error::Invalid))
            .transpose()?,
        currency: call.query("currency").map(|c| currency(&c)).transpose()?,
        reference: call.query("reference"),
        from: time("from")?,
        to: time("to")?,
    };
    if let (Some(from), Some(to)) = (f.from, f.to) {
        if from >= to {
            return Err(Error::Invalid("from must be before to".into()));
        }
    }
    Ok(f)
}

/// `GET /transactions` (`billing:read`): newest first, filtered by
/// `user_id`, `tenant_id`, `kind`, `currency`, `reference`, `from`, `to`;
/// within the caller's data scope (their own, by default).
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let f = filter(call)?;
    let page = call.page()?;
    let db = db()?;
    Ok(platform::http::page_of(
        page,
        accounts::transactions(&db, &scope(caller), &f, page)?,
    ))
}

/// `GET /transactions/:id` (`billing:read`): one transaction and its
/// entries, if its user is one the caller sees.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "transaction")?;
    let db = db()?;
    let mut t = ledger::find(&db, id)?.ok_or(Error::NotFound("transaction"))?;
    if t.user_id != caller.user_id {
        visible_owner(&db, caller, t.user_id).map_err(|_| Error::NotFound("transaction"))?;
    }
    t.entries = Some(ledger::entries(&db, id)?);
    Ok(platform::http::json(200, &t))
}

/// A CSV field: quoted when it must be, and text that a spreadsheet would
/// run as a formula (`=`, `+`, `-`, `@` first) made inert with a `'`.
fn csv_field(s: &str, text: bool) -> String {
    let s = if text && s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV of transactions, header first.
fn csv(rows: &[Transaction]) -> String {
    let mut out = String::from(
        "id,created_at,user_id,tenant_id,kind,currency,amount_minor,available_after_minor,frozen_after_minor,actor_id,reference,reason\n",
    );
    let opt = |v: Option<String>| v.unwrap_or_default();
    for t in rows {
        let line = [
            t.id.to_string(),
            t.created_at.clone(),
            t.user_id.to_string(),
            opt(t.tenant_id.map(|x| x.to_string())),
            t.kind.clone(),
            t.currency.clone(),
            t.amount_minor.to_string(),
            opt(t.available_after_minor.map(|x| x.to_string())),
            opt(t.frozen_after_minor.map(|x| x.to_string())),
            opt(t.actor_id.map(|x| x.to_string())),
            csv_field(t.reference.as_deref().unwrap_or(""), true),
            csv_field(&t.reason, true),
        ];
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// `GET /transactions/export` (`billing:read`): the same filters as the
/// list, oldest first, as `text/csv` (at most [`EXPORT_MAX_ROWS`] rows;
/// `X-Truncated: true` when there were more).
pub fn export(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let f = filter(call)?;
    let db = db()?;
    let mut rows = accounts::export(&db, &scope(caller), &f, EXPORT_MAX_ROWS + 1)?;
    let truncated = rows.len() as i64 > EXPORT_MAX_ROWS;
    rows.truncate(EXPORT_MAX_ROWS as usize);
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/csv; charset=utf-8")
        .header(
            "content-disposition",
            "attachment; filename=\"transactions.csv\"",
        )
        .header("x-truncated", if truncated { "true" } else { "false" })
        .body(csv(&rows).into_bytes())
        .build())
}

/// `GET /statistics` (`billing:read`): per currency and kind, the count,
/// net and volume of transactions (filters as the list), and what the
/// users in scope (one `user_id` or `tenant_id`, if given) hold now.
pub fn statistics(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let f = filter(call)?;
    let db = db()?;
    let s = scope(caller);
    Ok(platform::http::json(
        200,
        &serde_json::json!({
            "by_kind": accounts::totals(&db, &s, &f)?,
            "held": accounts::held(&db, &s, f.user, f.tenant)?,
        }),
    ))
}

/// `GET /admin/ledger/check` (`billing:manage`, platform staff): the
/// ledger's invariants over every row: each transaction balances, each
/// currency's accounts sum to zero, each balance is the sum of its
/// entries, no balance is below its floor. `ok` is whether all hold.
pub fn check(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    if !matches!(scope(caller), access::RowFilter::All) {
        return Err(Error::Forbidden(
            "the whole ledger is checked by platform staff",
        ));
    }
    let c = ledger::check(&db()?)?;
    let ok = c.unbalanced_transactions.is_empty()
        && c.mismatched_accounts.is_empty()
        && c.below_floor.is_empty()
        && c.currency_totals.iter().all(|(_, sum)| *sum == 0);
    let mut body =
        serde_json::to_value(&c).map_err(|e| platform::Problem::internal(e.to_string()))?;
    body["ok"] = ok.into();
    Ok(platform::http::json(200, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_it_must_and_defuses_formulas() {
        assert_eq!(csv_field("plain", true), "plain");
        assert_eq!(csv_field("a,b", true), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)", true), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-5", false), "-5");
        assert_eq!(csv_field("line\nbreak", true), "\"line\nbreak\"");
    }
}
