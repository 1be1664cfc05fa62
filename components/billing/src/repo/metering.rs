//! Metering's SQL: the run intervals `device` announced, their charges
//! (usage records), and where each user's balance stands for alerts.

use chrono::NaiveDateTime;
use platform::db::{col, datetime_param, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A run interval as `device` announced it.
#[derive(Debug, Clone)]
pub struct Announced {
    /// Its id in `device`.
    pub run_id: i64,
    /// The device.
    pub device_id: Uuid,
    /// Its owner, who pays.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// The spec it ran with.
    pub spec: serde_json::Value,
    /// Start.
    pub started_at: NaiveDateTime,
    /// End, once known.
    pub ended_at: Option<NaiveDateTime>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

/// Records a run or its end: the first end seen stays (a repeated or late
/// event changes nothing); an end that arrives before its start makes the
/// row whole at once.
pub fn record(db: &Db, r: &Announced) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO metered_runs (run_id, device_id, user_id, tenant_id, spec, started_at, ended_at, end_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (run_id) DO UPDATE SET ended_at = EXCLUDED.ended_at, end_reason = EXCLUDED.end_reason, \
           updated_at = now() AT TIME ZONE 'UTC' \
         WHERE metered_runs.ended_at IS NULL AND EXCLUDED.ended_at IS NOT NULL",
        &[
            P::Int64(r.run_id),
            P::Uuid(r.device_id.to_string()),
            P::Uuid(r.user_id.to_string()),
            opt_uuid(r.tenant_id),
            spin_sdk::pg4::jsonb(&r.spec).map_err(|e| DbError::Other(e.to_string()))?,
            datetime_param(r.started_at),
            r.ended_at.map_or(P::DbNull, datetime_param),
            r.end_reason.clone().map_or(P::DbNull, P::Str),
        ],
    )?;
    Ok(())
}

/// Runs not yet charged in full, oldest first.
pub fn unsettled(db: &Db, limit: i64) -> Result<Vec<i64>, DbError> {
    db.all(
        "SELECT run_id FROM metered_runs WHERE NOT settled ORDER BY run_id LIMIT $1",
        &[P::Int64(limit)],
        |r| col(r, 0, "metered_runs.run_id"),
    )
}

/// A run locked for charging, with its length so far.
#[derive(Debug, Clone)]
pub struct Locked {
    /// Id.
    pub run_id: i64,
    /// Device.
    pub device_id: Uuid,
    /// Who pays.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Start.
    pub started_at: NaiveDateTime,
    /// Whether it ended.
    pub ended: bool,
    /// Seconds from its start to its end, or to now.
    pub elapsed_secs: i64,
    /// Currency, once fixed.
    pub currency: Option<String>,
    /// Price an hour, once fixed (runs charged without a rule).
    pub price_per_hour: Option<i64>,
    /// The rule's pricing, once fixed.
    pub pricing: Option<serde_json::Value>,
    /// The rule it came from.
    pub rule_id: Option<Uuid>,
    /// Its resource lines, once fixed (`domain::metering::ResourceLine`).
    pub resource_lines: Option<serde_json::Value>,
    /// The spec it runs with.
    pub spec: serde_json::Value,
    /// Minutes charged.
    pub charged_minutes: i64,
    /// Amount charged.
    pub charged_minor: i64,
}

/// Locks an unsettled run (skipping one another tick holds).
pub fn lock(tx: &Db, run: i64) -> Result<Option<Locked>, DbError> {
    tx.one(
        "SELECT run_id, device_id, user_id, tenant_id, started_at, ended_at IS NOT NULL, \
                floor(extract(epoch FROM coalesce(ended_at, now() AT TIME ZONE 'UTC') - started_at))::bigint, \
                currency::text, price_per_hour, charged_minutes, charged_minor, pricing, rule_id, \
                resource_lines, spec \
           FROM metered_runs WHERE run_id = $1 AND NOT settled FOR UPDATE SKIP LOCKED",
        &[P::Int64(run)],
        |r| {
            Ok(Locked {
                run_id: col(r, 0, "run_id")?,
                device_id: col(r, 1, "device_id")?,
                user_id: col(r, 2, "user_id")?,
                tenant_id: col(r, 3, "tenant_id")?,
                started_at: col(r, 4, "started_at")?,
                ended: col(r, 5, "ended")?,
                elapsed_secs: col(r, 6, "elapsed")?,
                currency: col(r, 7, "currency")?,
                price_per_hour: col(r, 8, "price_per_hour")?,
                charged_minutes: col(r, 9, "charged_minutes")?,
                charged_minor: col(r, 10, "charged_minor")?,
                pricing: col(r, 11, "pricing")?,
                rule_id: col(r, 12, "rule_id")?,
                resource_lines: col(r, 13, "resource_lines")?,
                spec: col(r, 14, "spec")?,
            })
        },
    )
}

/// The price fixed on a run at its first charge.
#[derive(Debug)]
pub struct Fixed<'a> {
    /// Currency.
    pub currency: &'a str,
    /// The pricing (a rule's, or the default per hour).
    pub pricing: &'a serde_json::Value,
    /// The rule it came from (none: the default price).
    pub rule: Option<Uuid>,
    /// The default price an hour, when no rule applied.
    pub per_hour: Option<i64>,
    /// Its resource lines.
    pub lines: &'a serde_json::Value,
}

/// Records a charge of a run and moves its totals on.
#[allow(clippy::too_many_arguments)]
pub fn charged(
    tx: &Db,
    run: &Locked,
    price: &Fixed,
    from_minute: i64,
    to_minute: i64,
    amount: i64,
    transaction: Option<Uuid>,
    settled: bool,
) -> Result<(), DbError> {
    if from_minute != to_minute {
        tx.execute(
            "INSERT INTO usage_records (id, run_id, user_id, tenant_id, device_id, resource, from_minute, to_minute, \
               period_start, period_end, minutes, amount_minor, currency, transaction_id) \
             VALUES ($1, $2, $3, $4, $5, 'device_time', $6, $7, \
               $8::timestamp + make_interval(mins => ($6::bigint)::int), $8::timestamp + make_interval(mins => ($7::bigint)::int), \
               $7::bigint - $6::bigint, $9, $10, $11)",
            &[
                P::Uuid(Uuid::new_v4().to_string()),
                P::Int64(run.run_id),
                P::Uuid(run.user_id.to_string()),
                opt_uuid(run.tenant_id),
                P::Uuid(run.device_id.to_string()),
                P::Int64(from_minute),
                P::Int64(to_minute),
                datetime_param(run.started_at),
                P::Int64(amount),
                P::Str(price.currency.into()),
                opt_uuid(transaction),
            ],
        )?;
    }
    tx.execute(
        "UPDATE metered_runs SET currency = $2, price_per_hour = $3, charged_minutes = $4, \
           charged_minor = charged_minor + $5, settled = $6, pricing = $7, rule_id = $8, \
           resource_lines = $9, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE run_id = $1",
        &[
            P::Int64(run.run_id),
            P::Str(price.currency.into()),
            price.per_hour.map_or(P::DbNull, P::Int64),
            P::Int64(to_minute),
            P::Int64(amount),
            P::Boolean(settled),
            spin_sdk::pg4::jsonb(price.pricing).map_err(|e| DbError::Other(e.to_string()))?,
            opt_uuid(price.rule),
            spin_sdk::pg4::jsonb(price.lines).map_err(|e| DbError::Other(e.to_string()))?,
        ],
    )?;
    Ok(())
}

/// One usage record, as users see it.
#[derive(Debug, Serialize)]
pub struct Usage {
    /// Id.
    pub id: Uuid,
    /// The run interval.
    pub run_id: i64,
    /// Device.
    pub device_id: Uuid,
    /// Who pays.
    pub user_id: Uuid,
    /// `device_time`.
    pub resource: String,
    /// Start of the minutes charged.
    pub period_start: String,
    /// End of the minutes charged.
    pub period_end: String,
    /// Minutes (negative: given back).
    pub minutes: i64,
    /// Amount (negative: given back).
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// The ledger transaction.
    pub transaction_id: Option<Uuid>,
    /// When.
    pub created_at: String,
}

fn usage(r: &[DbValue]) -> Result<Usage, DbError> {
    Ok(Usage {
        id: col(r, 0, "usage_records.id")?,
        run_id: col(r, 1, "usage_records.run_id")?,
        device_id: col(r, 2, "usage_records.device_id")?,
        user_id: col(r, 3, "usage_records.user_id")?,
        resource: col(r, 4, "usage_records.resource")?,
        period_start: timestamp(r, 5, "usage_records.period_start")?,
        period_end: timestamp(r, 6, "usage_records.period_end")?,
        minutes: col(r, 7, "usage_records.minutes")?,
        amount_minor: col(r, 8, "usage_records.amount_minor")?,
        currency: col(r, 9, "usage_records.currency")?,
        transaction_id: col(r, 10, "usage_records.transaction_id")?,
        created_at: timestamp(r, 11, "usage_records.created_at")?,
    })
}

/// A page of usage records in the caller's scope, newest first.
pub fn list(
    db: &Db,
    scope: &access::RowFilter,
    user: Option<Uuid>,
    device: Option<Uuid>,
    from: Option<NaiveDateTime>,
    to: Option<NaiveDateTime>,
    page: Page,
) -> Result<(Vec<Usage>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, super::accounts::OWNER_SCOPE);
    if let Some(u) = user {
        w.eq("u.user_id", P::Uuid(u.to_string()));
    }
    if let Some(d) = device {
        w.eq("u.device_id", P::Uuid(d.to_string()));
    }
    if let Some(f) = from {
        let p = w.bind(datetime_param(f));
        w.and(format!("u.period_end > {p}"));
    }
    if let Some(t) = to {
        let p = w.bind(datetime_param(t));
        w.and(format!("u.period_start < {p}"));
    }
    const FROM: &str = "usage_records u JOIN owners o ON o.user_id = u.user_id";
    paged(
        db,
        &format!(
            "SELECT u.id, u.run_id, u.device_id, u.user_id, u.resource, u.period_start, u.period_end, \
                    u.minutes, u.amount_minor, u.currency::text, u.transaction_id, u.created_at FROM {FROM}"
        ),
        FROM,
        w,
        "u.period_start DESC, u.id",
        page,
        usage,
    )
}

/// Where a user's balance stood, and now stands; returns the old state.
pub fn alert_state(tx: &Db, user: Uuid, currency: &str, state: &str) -> Result<String, DbError> {
    let old: Option<String> = tx.one(
        "SELECT state FROM balance_alerts WHERE user_id = $1 AND currency = $2 FOR UPDATE",
        &[P::Uuid(user.to_string()), P::Str(currency.into())],
        |r| col(r, 0, "balance_alerts.state"),
    )?;
    if old.as_deref() != Some(state) {
        tx.execute(
            "INSERT INTO balance_alerts (user_id, currency, state) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, currency) DO UPDATE SET state = EXCLUDED.state, changed_at = now() AT TIME ZONE 'UTC'",
            &[P::Uuid(user.to_string()), P::Str(currency.into()), P::Str(state.into())],
        )?;
    }
    Ok(old.unwrap_or_else(|| "ok".into()))
}

/// A suspension of a balance's phones, or its lifting.
#[derive(Debug)]
pub struct Suspension {
    /// Whose.
    pub user_id: Uuid,
    /// ISO 4217.
    pub currency: String,
    /// Its counter after the change (the event's version).
    pub version: i64,
    /// Since when the balance was exhausted.
    pub exhausted_since: String,
}

fn suspension(r: &[DbValue]) -> Result<Suspension, DbError> {
    Ok(Suspension {
        user_id: col(r, 0, "balance_alerts.user_id")?,
        currency: col(r, 1, "balance_alerts.currency")?,
        version: col(r, 2, "balance_alerts.suspension_version")?,
        exhausted_since: timestamp(r, 3, "balance_alerts.changed_at")?,
    })
}

/// Suspends up to `limit` balances exhausted for longer than `grace_secs`
/// and not yet suspended.
pub fn suspend_due(tx: &Db, grace_secs: i64, limit: i64) -> Result<Vec<Suspension>, DbError> {
    tx.all(
        "UPDATE balance_alerts SET suspended_at = now() AT TIME ZONE 'UTC', \
           suspension_version = suspension_version + 1 \
         WHERE (user_id, currency) IN ( \
           SELECT user_id, currency FROM balance_alerts \
            WHERE state = 'exhausted' AND suspended_at IS NULL \
              AND changed_at < now() AT TIME ZONE 'UTC' - make_interval(secs => $1::bigint) \
            ORDER BY changed_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING user_id, currency::text, suspension_version, changed_at",
        &[P::Int64(grace_secs), P::Int64(limit)],
        suspension,
    )
}

/// Lifts the suspension of a balance no longer exhausted (after a
/// movement, in its transaction), if it had one.
pub fn restore(tx: &Db, user: Uuid, currency: &str) -> Result<Option<Suspension>, DbError> {
    tx.one(
        "UPDATE balance_alerts SET suspended_at = NULL, suspension_version = suspension_version + 1 \
         WHERE user_id = $1 AND currency = $2 AND suspended_at IS NOT NULL AND state <> 'exhausted' \
         RETURNING user_id, currency::text, suspension_version, changed_at",
        &[P::Uuid(user.to_string()), P::Str(currency.into())],
        suspension,
    )
}

/// Every balance's suspension state after a position (for `device`'s
/// resync): `(user, currency, suspended, version)`, by user.
pub fn suspensions(
    db: &Db,
    after: Option<(Uuid, String)>,
    limit: i64,
) -> Result<Vec<(Suspension, bool)>, DbError> {
    let (u, c) = after.unwrap_or((Uuid::nil(), String::new()));
    db.all(
        "SELECT user_id, currency::text, suspension_version, changed_at, suspended_at IS NOT NULL \
           FROM balance_alerts WHERE suspension_version > 0 AND (user_id, currency::text) > ($1, $2) \
          ORDER BY user_id, currency LIMIT $3",
        &[P::Uuid(u.to_string()), P::Str(c), P::Int64(limit)],
        |r| Ok((suspension(r)?, col(r, 4, "suspended")?)),
    )
}
