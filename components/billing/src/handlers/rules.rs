//! Billing rules (`docs/billing.md`, "Rules"): made by platform staff
//! (public) or a tenant's managers (their tenant's), seen like plans, and
//! `calculate`, which prices usage lines and explains each step.

use super::{currency, db, Call};
use crate::domain::money::Money;
use crate::domain::rules::{self, Candidate, Pricing};
use crate::error::{Error, Result};
use crate::repo::rules::{self as repo, Change, NewRule, Rule};
use access::Caller;
use platform::db::Db;
use platform::input::{Code, Name};
use serde::Deserialize;
use spin_sdk::http::Response;
use std::collections::BTreeMap;
use uuid::Uuid;

fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<Rule> {
    let r = repo::find(db, id)?.ok_or(Error::NotFound("rule"))?;
    if super::sees_catalogue(caller, r.tenant_id) {
        Ok(r)
    } else {
        Err(Error::NotFound("rule"))
    }
}

fn priority(p: i32) -> Result<i32> {
    if (-1000..=1000).contains(&p) {
        Ok(p)
    } else {
        Err(Error::Invalid("priority must be from -1000 to 1000".into()))
    }
}

fn window(from: chrono::NaiveDateTime, until: Option<chrono::NaiveDateTime>) -> Result<()> {
    if until.is_some_and(|u| u <= from) {
        return Err(Error::Invalid(
            "valid_until must be after valid_from".into(),
        ));
    }
    Ok(())
}

fn time(raw: Option<&str>, field: &str) -> Result<Option<chrono::NaiveDateTime>> {
    Ok(raw
        .map(|t| platform::input::rfc3339(t, field))
        .transpose()?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleInput {
    code: String,
    name: String,
    resource: String,
    #[serde(deserialize_with = "platform::input::object")]
    pricing: serde_json::Value,
    currency: String,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default)]
    valid_until: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

/// `POST /rules` (`billing:manage`): `{code, name, resource, pricing: {kind,
/// ...}, currency, priority? (0), valid_from? (now), valid_until?,
/// tenant_id?}`; `201`; `409` for a code taken in its tenant.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: RuleInput = call.body()?;
    let code = Code::parse(&input.code, "code")?;
    let name = Name::parse(&input.name, "name", 100)?;
    rules::unit_of(&input.resource).map_err(Error::Invalid)?;
    let pricing: Pricing = serde_json::from_value(input.pricing)
        .map_err(|e| Error::Invalid(format!("pricing: {e}")))?;
    pricing
        .check()
        .map_err(|e| Error::Invalid(format!("pricing: {e}")))?;
    let currency = currency(&input.currency)?;
    let valid_from = time(input.valid_from.as_deref(), "valid_from")?
        .unwrap_or_else(|| chrono::Utc::now().naive_utc());
    let valid_until = time(input.valid_until.as_deref(), "valid_until")?;
    window(valid_from, valid_until)?;
    let tenant = super::catalogue_tenant(caller, input.tenant_id)?;
    if !super::manages_catalogue(caller, tenant) {
        return Err(Error::Forbidden(
            "public rules are made by platform staff; a tenant's by its managers",
        ));
    }
    let stored =
        serde_json::to_value(&pricing).map_err(|e| platform::Problem::internal(e.to_string()))?;
    let r = repo::insert(
        &db()?,
        &NewRule {
            tenant,
            code: code.as_str(),
            name: name.as_str(),
            resource: &input.resource,
            pricing: &stored,
            kind: pricing.kind(),
            currency: currency.code(),
            priority: priority(input.priority.unwrap_or(0))?,
            valid_from,
            valid_until,
            created_by: caller.user_id,
        },
    )?;
    Ok(platform::http::json(201, &r))
}

/// `GET /rules` (`billing:read`): the rules the caller sees; `resource`,
/// `active`, paging.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let resource = call
        .query("resource")
        .map(|r| rules::unit_of(&r).map(|_| r).map_err(Error::Invalid))
        .transpose()?;
    let active = platform::input::bool_param(call.query("active"), "active")?;
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        repo::list(&db()?, caller, resource, active, page)?,
    ))
}

/// `GET /rules/:id` (`billing:read`).
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let r = visible(&db()?, caller, call.id("id", "rule")?)?;
    Ok(platform::http::json(200, &r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulePatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default, deserialize_with = "platform::input::nullable")]
    valid_until: Option<Option<String>>,
    #[serde(default)]
    active: Option<bool>,
}

/// `PATCH /rules/:id` (`billing:manage`): `name`, `priority`, `valid_from`,
/// `valid_until` (`null`: open), `active`; the pricing never changes (a new
/// rule replaces it); `200`.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: RulePatch = call.body()?;
    let name = input
        .name
        .as_deref()
        .map(|n| Name::parse(n, "name", 100))
        .transpose()?;
    let new_priority = input.priority.map(priority).transpose()?;
    let new_from = time(input.valid_from.as_deref(), "valid_from")?;
    let new_until = match &input.valid_until {
        Some(Some(u)) => Some(Some(platform::input::rfc3339(u, "valid_until")?)),
        Some(None) => Some(None),
        None => None,
    };
    let db = db()?;
    let r = visible(&db, caller, call.id("id", "rule")?)?;
    if !super::manages_catalogue(caller, r.tenant_id) {
        return Err(Error::Forbidden(
            "public rules are changed by platform staff; a tenant's by its managers",
        ));
    }
    let valid_from = match new_from {
        Some(f) => f,
        None => platform::input::rfc3339(&r.valid_from, "valid_from")?,
    };
    let valid_until = match new_until {
        Some(u) => u,
        None => time(r.valid_until.as_deref(), "valid_until")?,
    };
    window(valid_from, valid_until)?;
    repo::update(
        &db,
        r.id,
        &Change {
            name: name.as_ref().map_or(r.name.as_str(), Name::as_str),
            priority: new_priority.unwrap_or(r.priority),
            valid_from,
            valid_until,
            active: input.active.unwrap_or(r.active),
        },
    )?;
    let r = repo::find(&db, r.id)?.ok_or(Error::NotFound("rule"))?;
    Ok(platform::http::json(200, &r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    resource: String,
    quantity: i64,
    #[serde(default)]
    start: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalculateInput {
    lines: Vec<Line>,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

/// `POST /rules/calculate` (`billing:read`): prices usage lines by the
/// rules that apply to the caller's tenant (platform staff may name one) at
/// `at` (default now): `{lines: [{resource, quantity, start?}], at?,
/// tenant_id?}` → each line with the rule chosen, the rules it outranked,
/// its steps and amount, and totals per currency; `422 no_rule` names a
/// line no rule prices.
pub fn calculate(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: CalculateInput = call.body()?;
    if input.lines.is_empty() || input.lines.len() > 100 {
        return Err(Error::Invalid("lines must hold 1 to 100 lines".into()));
    }
    let at = time(input.at.as_deref(), "at")?.unwrap_or_else(|| chrono::Utc::now().naive_utc());
    let tenant = match platform::input::uuid_param(input.tenant_id, "tenant_id")? {
        Some(t) if super::sees_catalogue(caller, Some(t)) => Some(t),
        Some(_) => return Err(Error::Forbidden("prices of another tenant are its own")),
        None => caller.tenant_id,
    };
    let mut parsed = Vec::with_capacity(input.lines.len());
    for (i, l) in input.lines.iter().enumerate() {
        let unit =
            rules::unit_of(&l.resource).map_err(|e| Error::Invalid(format!("lines[{i}]: {e}")))?;
        rules::quantity_ok(l.quantity).map_err(|e| Error::Invalid(format!("lines[{i}]: {e}")))?;
        let start = time(l.start.as_deref(), &format!("lines[{i}].start"))?;
        parsed.push((l, unit, start));
    }
    let db = db()?;
    let mut out = Vec::with_capacity(parsed.len());
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for (i, (l, unit, start)) in parsed.into_iter().enumerate() {
        let applying = repo::applying(&db, &l.resource, start.unwrap_or(at), tenant)?;
        let candidates: Vec<Candidate> = applying
            .iter()
            .map(|r| {
                Ok(Candidate {
                    priority: r.priority,
                    tenant_own: r.tenant_id.is_some(),
                    created_at: platform::input::rfc3339(&r.created_at, "created_at")?,
                })
            })
            .collect::<Result<_>>()?;
        let chosen = rules::choose(&candidates).ok_or_else(|| {
            Error::Problem(platform::Problem::new(
                422,
                "no_rule",
                format!("lines[{i}]: no rule prices {} at that time", l.resource),
            ))
        })?;
        let rule = &applying[chosen];
        let pricing: Pricing = serde_json::from_value(rule.pricing.clone())
            .map_err(|e| platform::Problem::internal(format!("rule {}: {e}", rule.id)))?;
        let steps = rules::price(
            &pricing,
            l.quantity,
            start.or(pricing.needs_start().then_some(at)),
        )
        .map_err(|e| Error::Invalid(format!("lines[{i}]: {e}")))?;
        let amount: i64 = steps.iter().map(|s| s.amount_minor).sum();
        let c = currency(&rule.currency)?;
        *totals.entry(rule.currency.clone()).or_default() += amount;
        out.push(serde_json::json!({
            "resource": l.resource,
            "quantity": l.quantity,
            "unit": unit,
            "rule": {"id": rule.id, "code": rule.code, "name": rule.name, "kind": rule.kind,
                     "priority": rule.priority, "tenant_id": rule.tenant_id},
            "outranked": applying.iter().enumerate().filter(|(j, _)| *j != chosen)
                .map(|(_, r)| serde_json::json!({"id": r.id, "code": r.code, "priority": r.priority}))
                .collect::<Vec<_>>(),
            "steps": steps,
            "amount_minor": amount,
            "amount": Money::display(amount, c),
            "currency": rule.currency,
        }));
    }
    let totals: Vec<_> = totals
        .into_iter()
        .map(|(cur, minor)| {
            let c = currency(&cur)?;
            Ok(serde_json::json!({"currency": cur, "amount_minor": minor, "amount": Money::display(minor, c)}))
        })
        .collect::<Result<_>>()?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"at": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "tenant_id": tenant, "lines": out, "totals": totals}),
    ))
}
