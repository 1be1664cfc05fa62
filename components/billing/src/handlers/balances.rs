//! A user's balances, and their credit limit (an operator's decision, with
//! a reason, recorded in `account_changes`).

use super::{currency, db, uuid_query, visible_owner, Call};
use crate::domain::money::{Currency, Money, MAX_MINOR};
use crate::error::{Error, Result};
use crate::repo::accounts::{self, Balance};
use platform::input::Text;
use serde::{Deserialize, Serialize};
use spin_sdk::http::Response;
use uuid::Uuid;

/// The currency shown for a user who has no account yet.
pub const DEFAULT_CURRENCY: &str = "CNY";

/// A balance with its amounts also as decimal text, for people.
#[derive(Serialize)]
struct Shown {
    #[serde(flatten)]
    balance: Balance,
    available: String,
    frozen: String,
    owed: String,
    credit_limit: String,
}

fn shown(user: Uuid, balances: Vec<Balance>) -> serde_json::Value {
    let mut balances = balances;
    if balances.is_empty() {
        balances.push(Balance {
            currency: DEFAULT_CURRENCY.into(),
            available_minor: 0,
            frozen_minor: 0,
            owed_minor: 0,
            credit_limit_minor: 0,
            spendable_minor: 0,
            updated_at: None,
        });
    }
    let items: Vec<Shown> = balances
        .into_iter()
        .map(|b| {
            let c = Currency::parse(&b.currency).unwrap_or_else(|_| {
                Currency::parse(DEFAULT_CURRENCY).expect("the default currency is known")
            });
            Shown {
                available: Money::display(b.available_minor, c),
                frozen: Money::display(b.frozen_minor, c),
                owed: Money::display(b.owed_minor, c),
                credit_limit: Money::display(b.credit_limit_minor, c),
                balance: b,
            }
        })
        .collect();
    serde_json::json!({"user_id": user, "balances": items})
}

/// `GET /balance?user_id=` (`billing:read`): the caller's balances, or a
/// user's they may see, one per currency.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let user = uuid_query(call, "user_id")?.unwrap_or(caller.user_id);
    let db = db()?;
    if user != caller.user_id {
        visible_owner(&db, caller, user)?;
    }
    Ok(platform::http::json(
        200,
        &shown(user, accounts::balances(&db, user)?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditLimitInput {
    currency: String,
    credit_limit_minor: i64,
    reason: String,
}

/// `PUT /admin/credit-limits/:user_id` (`billing:adjust`): how far below
/// zero a user's available balance may go in a currency; 409 when it is
/// already lower than the new limit allows.
pub fn set_credit_limit(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: CreditLimitInput = call.body()?;
    let currency = currency(&input.currency)?;
    if !(0..=MAX_MINOR).contains(&input.credit_limit_minor) {
        return Err(Error::Invalid(format!(
            "credit_limit_minor must be from 0 to {MAX_MINOR}"
        )));
    }
    let reason = Text::parse(&input.reason, "reason", 500)?;
    let user = call.id("user_id", "user")?;
    let db = db()?;
    visible_owner(&db, caller, user)?;
    let previous = db.transaction(|tx| {
        accounts::set_credit_limit(
            tx,
            user,
            currency,
            input.credit_limit_minor,
            caller.user_id,
            reason.as_str(),
            &call.ctx.request_id,
        )?
        .ok_or_else(|| {
            Error::Conflict(
                "the available balance is already below minus that limit: recharge or lower it first"
                    .into(),
            )
        })
    })?;
    let mut body = shown(user, accounts::balances(&db, user)?);
    body["previous_credit_limit_minor"] = previous.into();
    Ok(platform::http::json(200, &body))
}

/// Seconds a balance may stay exhausted before its phones are stopped
/// (`exhaustion_grace_secs`).
fn grace_secs() -> Result<i64> {
    platform::var("exhaustion_grace_secs")?
        .parse()
        .ok()
        .filter(|s| (0..=30 * 86_400).contains(s))
        .ok_or_else(|| {
            Error::Problem(platform::Problem::internal(
                "exhaustion_grace_secs must be from 0 to 2592000",
            ))
        })
}

/// `POST /internal/balances/enforce` (scheduler): suspends every balance
/// exhausted for longer than `exhaustion_grace_secs` (at most 500 a run),
/// each with `balance.suspended` in the same transaction, which `device`
/// follows; `{suspended}`.
pub fn enforce(call: &Call) -> Result<Response> {
    let grace = grace_secs()?;
    let db = db()?;
    let n = db.transaction(|tx| {
        let due = crate::repo::metering::suspend_due(tx, grace, 500)?;
        for s in &due {
            super::effects::announce_suspension(
                tx,
                &platform::events::catalogue::BALANCE_SUSPENDED,
                s,
            )?;
        }
        Ok::<_, Error>(due.len())
    })?;
    platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    Ok(platform::http::json(
        200,
        &serde_json::json!({"suspended": n}),
    ))
}

/// `GET /internal/suspensions` (`device`): every balance ever suspended,
/// with whether it is now, by user and currency, after `after`
/// (`<user_id>:<currency>`), at most `limit` (default 500, at most 1000):
/// what `device` rebuilds its copy from.
pub fn suspensions(call: &Call) -> Result<Response> {
    let after = match call.query("after") {
        Some(a) => {
            let (u, c) = a
                .split_once(':')
                .ok_or_else(|| Error::Invalid("after must be <user_id>:<currency>".into()))?;
            let u = Uuid::parse_str(u)
                .map_err(|_| Error::Invalid("after must be <user_id>:<currency>".into()))?;
            Some((u, c.to_string()))
        }
        None => None,
    };
    let limit = platform::http::int_query(call.req, "limit", 500, 1000)?;
    let rows = crate::repo::metering::suspensions(&db()?, after, limit)?;
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|(s, active)| {
            serde_json::json!({"user_id": s.user_id, "currency": s.currency, "suspended": active,
                               "version": s.version, "exhausted_since": s.exhausted_since})
        })
        .collect();
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}
