//! Device time, charged per minute from `device`'s run intervals: the
//! metering tick (scheduler) charges each unsettled run up to now (while
//! it runs) or in full (once it ended), device time and the cores, memory
//! and GPU its spec draws where rules price them; users read their usage
//! records.

use super::{currency, db, scope, uuid_query, Call};
use crate::domain::metering::{draws, minutes, next, ResourceLine};
use crate::domain::money::{Currency, Money};
use crate::domain::posting::{Account, Kind, Posting};
use crate::domain::rules::{self, Pricing};
use crate::error::{Error, Result};
use crate::repo::{ledger, metering, rules as rule_repo};
use platform::db::Db;
use platform::input::rfc3339;
use spin_sdk::http::Response;

/// Runs charged per tick at most.
const TICK_RUNS: i64 = 500;

/// The price of device time (`usage_price_per_device_hour_minor` in
/// `usage_currency`): fixed on a run at its first charge.
fn price() -> Result<(Currency, i64)> {
    let c = currency(&platform::var("usage_currency")?)?;
    let p: i64 = platform::var("usage_price_per_device_hour_minor")?
        .parse()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| {
            Error::Problem(platform::Problem::internal(
                "usage_price_per_device_hour_minor is not a non-negative integer",
            ))
        })?;
    Ok((c, p))
}

/// `POST /internal/metering/tick` (scheduler): charges every unsettled run
/// (at most 500 a tick), each in its own transaction; `{runs, charged,
/// settled}`.
pub fn tick(call: &Call) -> Result<Response> {
    let (default_currency, default_price) = price()?;
    let db = db()?;
    let (mut charged, mut settled) = (0, 0);
    let runs = metering::unsettled(&db, TICK_RUNS)?;
    for run in &runs {
        let outcome = db.transaction(|tx| {
            meter(
                tx,
                *run,
                default_currency,
                default_price,
                &call.ctx.request_id,
            )
        });
        match outcome {
            Ok((c, s)) => {
                charged += usize::from(c);
                settled += usize::from(s);
            }
            // One run's trouble never stops the others; it is tried again
            // at the next tick.
            Err(e) => {
                let p: platform::Problem = e.into();
                eprintln!(
                    "{}",
                    serde_json::json!({"level": "warn", "request_id": call.ctx.request_id, "msg": "metering a run failed", "run_id": run, "cause": p.internal.unwrap_or(p.message)})
                );
            }
        }
    }
    if charged > 0 {
        platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"runs": runs.len(), "charged": charged, "settled": settled}),
    ))
}

/// A run's price, fixed at its first charge.
struct RunPrice {
    currency: Currency,
    /// Device time's.
    pricing: Pricing,
    rule: Option<uuid::Uuid>,
    /// The default an hour, when no rule priced device time.
    per_hour: Option<i64>,
    /// Cores, memory and GPU, where rules price them.
    lines: Vec<ResourceLine>,
}

/// The rule for `resource` that applies to `tenant` at `at` (in
/// `currency`, when given), by priority.
fn rule_for(
    tx: &Db,
    resource: &str,
    at: chrono::NaiveDateTime,
    tenant: Option<uuid::Uuid>,
    currency: Option<Currency>,
) -> Result<Option<rule_repo::Rule>> {
    let applying: Vec<_> = rule_repo::applying(tx, resource, at, tenant)?
        .into_iter()
        .filter(|r| currency.is_none_or(|c| r.currency == c.code()))
        .collect();
    let candidates = applying
        .iter()
        .map(|r| {
            Ok(rules::Candidate {
                priority: r.priority,
                tenant_own: r.tenant_id.is_some(),
                created_at: rfc3339(&r.created_at, "created_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(rules::choose(&candidates).map(|i| applying[i].clone()))
}

fn pricing_of(r: &rule_repo::Rule) -> Result<Pricing> {
    Ok(serde_json::from_value(r.pricing.clone())
        .map_err(|e| platform::Problem::internal(format!("rule {}: {e}", r.id)))?)
}

/// A run's price: the one fixed at its first charge, else the billing rule
/// for `device_time` that applies to its tenant when it started (else the
/// default per hour), with a line for each of cores, memory and GPU its
/// spec draws that a rule in the same currency prices.
fn fixed_price(
    tx: &Db,
    run: &metering::Locked,
    default_currency: Currency,
    default_price: i64,
) -> Result<RunPrice> {
    let per_hour = |p: i64| Pricing::PerUse {
        unit_price_minor: p,
        per: 60,
    };
    let internal = |what: &str, e: serde_json::Error| {
        platform::Problem::internal(format!("run {}: {what}: {e}", run.run_id))
    };
    if let Some(c) = &run.currency {
        let currency = currency(c)?;
        let lines = match &run.resource_lines {
            Some(l) => {
                serde_json::from_value(l.clone()).map_err(|e| internal("resource lines", e))?
            }
            None => Vec::new(),
        };
        return Ok(match &run.pricing {
            Some(p) => RunPrice {
                currency,
                pricing: serde_json::from_value(p.clone()).map_err(|e| internal("pricing", e))?,
                rule: run.rule_id,
                per_hour: run.price_per_hour,
                lines,
            },
            None => {
                let p = run.price_per_hour.unwrap_or(default_price);
                RunPrice {
                    currency,
                    pricing: per_hour(p),
                    rule: None,
                    per_hour: Some(p),
                    lines,
                }
            }
        });
    }
    let mut price = match rule_for(tx, "device_time", run.started_at, run.tenant_id, None)? {
        Some(r) => RunPrice {
            currency: currency(&r.currency)?,
            pricing: pricing_of(&r)?,
            rule: Some(r.id),
            per_hour: None,
            lines: Vec::new(),
        },
        None => RunPrice {
            currency: default_currency,
            pricing: per_hour(default_price),
            rule: None,
            per_hour: Some(default_price),
            lines: Vec::new(),
        },
    };
    for (resource, per_minute, divisor) in draws(&run.spec) {
        if let Some(r) = rule_for(
            tx,
            resource,
            run.started_at,
            run.tenant_id,
            Some(price.currency),
        )? {
            price.lines.push(ResourceLine {
                resource: resource.into(),
                per_minute,
                divisor,
                rule_id: r.id,
                pricing: pricing_of(&r)?,
            });
        }
    }
    Ok(price)
}

/// Charges one run, in `tx`: whether it charged, and whether it is settled.
fn meter(
    tx: &Db,
    run_id: i64,
    default_currency: Currency,
    default_price: i64,
    request_id: &str,
) -> Result<(bool, bool)> {
    let Some(run) = metering::lock(tx, run_id)? else {
        return Ok((false, false));
    };
    let price = fixed_price(tx, &run, default_currency, default_price)?;
    let currency = price.currency;
    let to_json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| platform::Problem::internal(e.to_string()))
    };
    let stored = to_json(serde_json::to_value(&price.pricing))?;
    let lines = to_json(serde_json::to_value(&price.lines))?;
    let fixed = metering::Fixed {
        currency: currency.code(),
        pricing: &stored,
        rule: price.rule,
        per_hour: price.per_hour,
        lines: &lines,
    };
    let total = minutes(run.elapsed_secs, run.ended);
    let bad = |e: String| platform::Problem::internal(format!("pricing run {}: {e}", run.run_id));
    let mut total_price: i64 = rules::price(&price.pricing, total, Some(run.started_at))
        .map_err(bad)?
        .iter()
        .map(|s| s.amount_minor)
        .sum();
    for line in &price.lines {
        total_price = total_price
            .checked_add(line.price(total, run.started_at).map_err(bad)?)
            .ok_or_else(|| bad("the amount is too large".into()))?;
    }
    let Some(step) = next(total, total_price, run.charged_minutes, run.charged_minor) else {
        if run.ended {
            metering::charged(tx, &run, &fixed, total, total, 0, None, true)?;
            return Ok((false, true));
        }
        return Ok((false, false));
    };
    let key = format!(
        "usage:{}:{}:{}",
        run.run_id, step.from_minute, step.to_minute
    );
    let reason = format!(
        "device time: minutes {} to {} of device {}",
        step.from_minute, step.to_minute, run.device_id
    );
    let posting = match step.amount {
        0 => None,
        a if a > 0 => {
            let account = ledger::account(tx, Account::Available, run.user_id, currency)?;
            let spendable = ledger::spendable(tx, account)?;
            Some(Posting::usage(
                Money::positive(a, currency).map_err(Error::Invalid)?,
                spendable,
            ))
        }
        a => Some(
            Posting::new(
                Kind::Refund,
                Money::positive(-a, currency).map_err(Error::Invalid)?,
            )
            .map_err(Error::Invalid)?,
        ),
    };
    let mut transaction = None;
    if let Some(posting) = &posting {
        let posted = ledger::post(
            tx,
            &ledger::NewTransaction {
                posting,
                user: run.user_id,
                tenant: run.tenant_id,
                actor: None,
                reason: &reason,
                reference: Some(&format!("run:{}", run.run_id)),
                key: &key,
                fingerprint: &key,
                request_id,
            },
        )?;
        let t = super::recorded(posted)?;
        transaction = Some(t.id);
        super::effects::after_movement(tx, run.user_id, run.tenant_id, currency, t.id, request_id)?;
    }
    let settled = run.ended && step.to_minute == total;
    metering::charged(
        tx,
        &run,
        &fixed,
        step.from_minute,
        step.to_minute,
        step.amount,
        transaction,
        settled,
    )?;
    Ok((true, settled))
}

/// `GET /usage` (`billing:read`): usage records in the caller's data
/// scope, newest first; filters `user_id`, `device_id`, `from`, `to`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let time =
        |name: &str| -> Result<_> { Ok(call.query(name).map(|t| rfc3339(&t, name)).transpose()?) };
    let (user, device, from, to) = (
        uuid_query(call, "user_id")?,
        uuid_query(call, "device_id")?,
        time("from")?,
        time("to")?,
    );
    let page = call.page()?;
    let db = db()?;
    Ok(platform::http::page_of(
        page,
        metering::list(&db, &scope(caller), user, device, from, to, page)?,
    ))
}
