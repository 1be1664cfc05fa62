//! Plans: public ones (no tenant) and a tenant's own.

use platform::db::{col, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Id.
    pub id: Uuid,
    /// Its tenant (null: public).
    pub tenant_id: Option<Uuid>,
    /// Short code, unique per tenant.
    pub code: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// `hourly`, `daily`, `monthly`, `yearly`.
    pub cycle: String,
    /// Price of one cycle.
    pub price_minor: i64,
    /// Currency.
    pub currency: String,
    /// What it adds to the buyer's quota limits.
    pub quota: serde_json::Value,
    /// The largest device spec it is meant for.
    pub device_limits: serde_json::Value,
    /// The phones it makes for its buyer (null: none).
    pub devices: Option<serde_json::Value>,
    /// Whether it can be bought.
    pub active: bool,
    /// Version.
    pub version: i64,
    /// Who made it.
    pub created_by: Uuid,
    /// When.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

const COLUMNS: &str =
    "id, tenant_id, code, name, description, cycle, price_minor, currency::text, \
     quota, device_limits, active, version, created_by, created_at, updated_at, devices";

fn plan(r: &[DbValue]) -> Result<Plan, DbError> {
    Ok(Plan {
        id: col(r, 0, "plans.id")?,
        tenant_id: col(r, 1, "plans.tenant_id")?,
        code: col(r, 2, "plans.code")?,
        name: col(r, 3, "plans.name")?,
        description: col(r, 4, "plans.description")?,
        cycle: col(r, 5, "plans.cycle")?,
        price_minor: col(r, 6, "plans.price_minor")?,
        currency: col(r, 7, "plans.currency")?,
        quota: col(r, 8, "plans.quota")?,
        device_limits: col(r, 9, "plans.device_limits")?,
        active: col(r, 10, "plans.active")?,
        version: col(r, 11, "plans.version")?,
        created_by: col(r, 12, "plans.created_by")?,
        created_at: timestamp(r, 13, "plans.created_at")?,
        updated_at: timestamp(r, 14, "plans.updated_at")?,
        devices: col(r, 15, "plans.devices")?,
    })
}

/// A new plan's fields.
#[derive(Debug)]
pub struct NewPlan<'a> {
    /// Tenant (None: public).
    pub tenant: Option<Uuid>,
    /// Code.
    pub code: &'a str,
    /// Name.
    pub name: &'a str,
    /// Description.
    pub description: Option<&'a str>,
    /// Cycle.
    pub cycle: &'a str,
    /// Price.
    pub price_minor: i64,
    /// Currency.
    pub currency: &'a str,
    /// Quota grant.
    pub quota: &'a serde_json::Value,
    /// Device limits.
    pub device_limits: &'a serde_json::Value,
    /// Included devices.
    pub devices: Option<&'a serde_json::Value>,
    /// Creator.
    pub created_by: Uuid,
}

/// Inserts a plan (409 on a code taken in its tenant).
pub fn insert(db: &Db, p: &NewPlan) -> Result<Plan, DbError> {
    let id = Uuid::new_v4();
    let json =
        |v: &serde_json::Value| spin_sdk::pg4::jsonb(v).map_err(|e| DbError::Other(e.to_string()));
    db.execute(
        "INSERT INTO plans (id, tenant_id, code, name, description, cycle, price_minor, currency, quota, \
           device_limits, created_by, devices) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            P::Uuid(id.to_string()),
            opt_uuid(p.tenant),
            P::Str(p.code.into()),
            P::Str(p.name.into()),
            p.description.map_or(P::DbNull, |d| P::Str(d.into())),
            P::Str(p.cycle.into()),
            P::Int64(p.price_minor),
            P::Str(p.currency.into()),
            json(p.quota)?,
            json(p.device_limits)?,
            P::Uuid(p.created_by.to_string()),
            p.devices.map(json).transpose()?.unwrap_or(P::DbNull),
        ],
    )?;
    find(db, id)?.ok_or_else(|| DbError::Other("plan vanished".into()))
}

/// A plan by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Plan>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM plans WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        plan,
    )
}

/// Changes a plan's name, description, price and whether it is active.
pub fn update(
    db: &Db,
    id: Uuid,
    name: &str,
    description: Option<&str>,
    price_minor: i64,
    active: bool,
) -> Result<(), DbError> {
    db.execute(
        "UPDATE plans SET name = $2, description = $3, price_minor = $4, active = $5, version = version + 1, \
           updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            P::Str(name.into()),
            description.map_or(P::DbNull, |d| P::Str(d.into())),
            P::Int64(price_minor),
            P::Boolean(active),
        ],
    )?;
    Ok(())
}

/// The plans the caller sees (`catalogue_scope`), filtered.
pub fn list(
    db: &Db,
    caller: &access::Caller,
    active: Option<bool>,
    cycle: Option<String>,
    page: Page,
) -> Result<(Vec<Plan>, i64), DbError> {
    let mut w = Where::new();
    super::catalogue_scope(&mut w, caller);
    if let Some(a) = active {
        w.eq("active", P::Boolean(a));
    }
    if let Some(c) = cycle {
        w.eq("cycle", P::Str(c));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM plans"),
        "plans",
        w,
        "price_minor, code, id",
        page,
        plan,
    )
}
