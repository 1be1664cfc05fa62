//! Billing rules: stored, listed, and those that apply to a resource at a
//! moment for a tenant.

use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// Id.
    pub id: Uuid,
    /// Tenant (None: the platform's).
    pub tenant_id: Option<Uuid>,
    /// Code, unique in its tenant.
    pub code: String,
    /// Name.
    pub name: String,
    /// What it prices.
    pub resource: String,
    /// `fixed`, `per_use`, `tiered`, `volume`, `time_of_day`.
    pub kind: String,
    /// Its parameters (with `kind`).
    pub pricing: serde_json::Value,
    /// Currency.
    pub currency: String,
    /// Higher wins.
    pub priority: i32,
    /// From when it applies.
    pub valid_from: String,
    /// Until when (exclusive; none: open).
    pub valid_until: Option<String>,
    /// Whether it applies at all.
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
    "id, tenant_id, code, name, resource, kind, pricing, currency::text, priority, \
     valid_from, valid_until, active, version, created_by, created_at, updated_at";

fn rule(r: &[DbValue]) -> Result<Rule, DbError> {
    Ok(Rule {
        id: col(r, 0, "billing_rules.id")?,
        tenant_id: col(r, 1, "billing_rules.tenant_id")?,
        code: col(r, 2, "billing_rules.code")?,
        name: col(r, 3, "billing_rules.name")?,
        resource: col(r, 4, "billing_rules.resource")?,
        kind: col(r, 5, "billing_rules.kind")?,
        pricing: col(r, 6, "billing_rules.pricing")?,
        currency: col(r, 7, "billing_rules.currency")?,
        priority: col(r, 8, "billing_rules.priority")?,
        valid_from: timestamp(r, 9, "billing_rules.valid_from")?,
        valid_until: opt_timestamp(r, 10, "billing_rules.valid_until")?,
        active: col(r, 11, "billing_rules.active")?,
        version: col(r, 12, "billing_rules.version")?,
        created_by: col(r, 13, "billing_rules.created_by")?,
        created_at: timestamp(r, 14, "billing_rules.created_at")?,
        updated_at: timestamp(r, 15, "billing_rules.updated_at")?,
    })
}

/// A new rule's fields.
#[derive(Debug)]
pub struct NewRule<'a> {
    /// Tenant (None: the platform's).
    pub tenant: Option<Uuid>,
    /// Code.
    pub code: &'a str,
    /// Name.
    pub name: &'a str,
    /// Resource.
    pub resource: &'a str,
    /// Pricing (with its `kind`).
    pub pricing: &'a serde_json::Value,
    /// Kind.
    pub kind: &'a str,
    /// Currency.
    pub currency: &'a str,
    /// Priority.
    pub priority: i32,
    /// Validity.
    pub valid_from: chrono::NaiveDateTime,
    /// Validity end.
    pub valid_until: Option<chrono::NaiveDateTime>,
    /// Creator.
    pub created_by: Uuid,
}

/// Inserts a rule (409 on a code taken in its tenant).
pub fn insert(db: &Db, n: &NewRule) -> Result<Rule, DbError> {
    let id = Uuid::new_v4();
    db.execute(
        "INSERT INTO billing_rules (id, tenant_id, code, name, resource, kind, pricing, currency, priority, \
           valid_from, valid_until, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            P::Uuid(id.to_string()),
            opt_uuid(n.tenant),
            P::Str(n.code.into()),
            P::Str(n.name.into()),
            P::Str(n.resource.into()),
            P::Str(n.kind.into()),
            spin_sdk::pg4::jsonb(n.pricing).map_err(|e| DbError::Other(e.to_string()))?,
            P::Str(n.currency.into()),
            P::Int32(n.priority),
            platform::db::datetime_param(n.valid_from),
            n.valid_until.map_or(P::DbNull, platform::db::datetime_param),
            P::Uuid(n.created_by.to_string()),
        ],
    )?;
    find(db, id)?.ok_or_else(|| DbError::Other("rule vanished".into()))
}

/// A rule by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Rule>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM billing_rules WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        rule,
    )
}

/// What a change sets.
#[derive(Debug)]
pub struct Change<'a> {
    /// Name.
    pub name: &'a str,
    /// Priority.
    pub priority: i32,
    /// Validity.
    pub valid_from: chrono::NaiveDateTime,
    /// Validity end.
    pub valid_until: Option<chrono::NaiveDateTime>,
    /// Active.
    pub active: bool,
}

/// Changes a rule's name, priority, validity and whether it is active.
pub fn update(db: &Db, id: Uuid, c: &Change) -> Result<(), DbError> {
    db.execute(
        "UPDATE billing_rules SET name = $2, priority = $3, valid_from = $4, valid_until = $5, active = $6, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[
            P::Uuid(id.to_string()),
            P::Str(c.name.into()),
            P::Int32(c.priority),
            platform::db::datetime_param(c.valid_from),
            c.valid_until.map_or(P::DbNull, platform::db::datetime_param),
            P::Boolean(c.active),
        ],
    )?;
    Ok(())
}

/// The rules the caller sees, filtered, highest priority first.
pub fn list(
    db: &Db,
    caller: &access::Caller,
    resource: Option<String>,
    active: Option<bool>,
    page: Page,
) -> Result<(Vec<Rule>, i64), DbError> {
    let mut w = Where::new();
    super::catalogue_scope(&mut w, caller);
    if let Some(r) = resource {
        w.eq("resource", P::Str(r));
    }
    if let Some(a) = active {
        w.eq("active", P::Boolean(a));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM billing_rules"),
        "billing_rules",
        w,
        "resource, priority DESC, created_at DESC, id",
        page,
        rule,
    )
}

/// The active rules for `resource` valid at `at` that apply to users of
/// `tenant` (the platform's and the tenant's own).
pub fn applying(
    db: &Db,
    resource: &str,
    at: chrono::NaiveDateTime,
    tenant: Option<Uuid>,
) -> Result<Vec<Rule>, DbError> {
    db.all(
        &format!(
            "SELECT {COLUMNS} FROM billing_rules WHERE active AND resource = $1 AND valid_from <= $2 \
               AND (valid_until IS NULL OR valid_until > $2) AND (tenant_id IS NULL OR tenant_id = $3)"
        ),
        &[
            P::Str(resource.into()),
            platform::db::datetime_param(at),
            opt_uuid(tenant),
        ],
        rule,
    )
}
