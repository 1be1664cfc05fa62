//! Plans: public ones made by platform staff, and a tenant's own made by
//! its administrators (`billing:manage` within their tenant). Buyers see
//! the public plans and their tenant's.

use super::{currency, db, Call};
use crate::domain::money::MAX_MINOR;
use crate::domain::order::{Cycle, DeviceLimits, Grant, IncludedDevices};
use crate::error::{Error, Result};
use crate::repo::plans::{self, NewPlan, Plan};
use access::Caller;
use platform::db::Db;
use platform::input::{Code, Name, Text};
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

/// A plan the caller sees (404 otherwise).
pub fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<Plan> {
    let p = plans::find(db, id)?.ok_or(Error::NotFound("plan"))?;
    if super::sees_catalogue(caller, p.tenant_id) {
        Ok(p)
    } else {
        Err(Error::NotFound("plan"))
    }
}

fn price(p: i64) -> Result<i64> {
    if (0..=MAX_MINOR).contains(&p) {
        Ok(p)
    } else {
        Err(Error::Invalid(format!(
            "price_minor must be from 0 to {MAX_MINOR}"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanInput {
    code: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    cycle: String,
    price_minor: i64,
    currency: String,
    #[serde(deserialize_with = "platform::input::object")]
    quota: Grant,
    #[serde(default, deserialize_with = "platform::input::optional_object")]
    device_limits: Option<DeviceLimits>,
    #[serde(default, deserialize_with = "platform::input::optional_object")]
    devices: Option<IncludedDevices>,
    #[serde(default)]
    tenant_id: Option<String>,
}

/// `POST /plans` (`billing:manage`): `{code, name, description?, cycle,
/// price_minor, currency, quota, device_limits?, devices?, tenant_id?}`;
/// platform staff make public plans (no `tenant_id`) or any tenant's, a
/// tenant's administrators their own tenant's; `201`; `409` for a code
/// taken.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: PlanInput = call.body()?;
    let code = Code::parse(&input.code, "code")?;
    let name = Name::parse(&input.name, "name", 100)?;
    let description = input
        .description
        .as_deref()
        .map(|d| Text::parse(d, "description", 2000))
        .transpose()?;
    Cycle::parse(&input.cycle).map_err(Error::Invalid)?;
    let currency = currency(&input.currency)?;
    input.quota.check().map_err(Error::Invalid)?;
    let limits = input.device_limits.unwrap_or_default();
    limits.check().map_err(Error::Invalid)?;
    if let Some(d) = &input.devices {
        d.check(&limits, &input.quota).map_err(Error::Invalid)?;
    }
    let tenant = super::catalogue_tenant(caller, input.tenant_id)?;
    if !super::manages_catalogue(caller, tenant) {
        return Err(Error::Forbidden(
            "public plans are made by platform staff; a tenant's by its administrators",
        ));
    }
    let quota = serde_json::to_value(input.quota)
        .map_err(|e| platform::Problem::internal(e.to_string()))?;
    let device_limits =
        serde_json::to_value(limits).map_err(|e| platform::Problem::internal(e.to_string()))?;
    let devices = input
        .devices
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| platform::Problem::internal(e.to_string()))?;
    let p = plans::insert(
        &db()?,
        &NewPlan {
            tenant,
            code: code.as_str(),
            name: name.as_str(),
            description: description.as_ref().map(Text::as_str),
            cycle: &input.cycle,
            price_minor: price(input.price_minor)?,
            currency: currency.code(),
            quota: &quota,
            device_limits: &device_limits,
            devices: devices.as_ref(),
            created_by: caller.user_id,
        },
    )?;
    Ok(platform::http::json(201, &p))
}

/// `GET /plans` (`billing:read`): the plans the caller sees (public and
/// their tenant's; platform staff all), cheapest first; `active`, `cycle`,
/// paging.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let active = platform::input::bool_param(call.query("active"), "active")?;
    let cycle = call
        .query("cycle")
        .map(|c| Cycle::parse(&c).map(|_| c).map_err(Error::Invalid))
        .transpose()?;
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        plans::list(&db()?, caller, active, cycle, page)?,
    ))
}

/// `GET /plans/:id` (`billing:read`).
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let p = visible(&db()?, caller, call.id("id", "plan")?)?;
    Ok(platform::http::json(200, &p))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "platform::input::nullable")]
    description: Option<Option<String>>,
    #[serde(default)]
    price_minor: Option<i64>,
    #[serde(default)]
    active: Option<bool>,
}

/// `PATCH /plans/:id` (`billing:manage`): `name`, `description`,
/// `price_minor`, `active` (a plan is retired, never deleted: orders
/// keep it as bought); `200` with the plan.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: PlanPatch = call.body()?;
    let name = input
        .name
        .as_deref()
        .map(|n| Name::parse(n, "name", 100))
        .transpose()?;
    let description = match &input.description {
        Some(Some(d)) => Some(Some(Text::parse(d, "description", 2000)?)),
        Some(None) => Some(None),
        None => None,
    };
    let new_price = input.price_minor.map(price).transpose()?;
    let db = db()?;
    let p = visible(&db, caller, call.id("id", "plan")?)?;
    if !super::manages_catalogue(caller, p.tenant_id) {
        return Err(Error::Forbidden(
            "public plans are changed by platform staff; a tenant's by its administrators",
        ));
    }
    plans::update(
        &db,
        p.id,
        name.as_ref().map_or(p.name.as_str(), Name::as_str),
        match &description {
            Some(d) => d.as_ref().map(Text::as_str),
            None => p.description.as_deref(),
        },
        new_price.unwrap_or(p.price_minor),
        input.active.unwrap_or(p.active),
    )?;
    let p = plans::find(&db, p.id)?.ok_or(Error::NotFound("plan"))?;
    Ok(platform::http::json(200, &p))
}
