//! Quotas and reservations. Every reservation locks the user's quota row
//! (`SELECT ... FOR UPDATE`), so concurrent reservations for one user are
//! serialized and can never together exceed a limit.

use crate::domain::quota::{fits, Amounts, Limits, LimitsPatch, Minutes, Quota, Reservation};
use access::RowFilter;
use platform::db::{col, timestamp, Db, DbError};
use platform::events::catalogue::QUOTA_EXCEEDED;
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to quotas: a user owns their quota.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "q.tenant_id",
    department: Some("q.department_id"),
    owner: Some("q.user_id"),
};

/// Creates the user's quota with the default limits if it has none.
pub fn ensure(db: &Db, user: Uuid) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO quotas (user_id, tenant_id, department_id) \
         SELECT id, tenant_id, department_id FROM users WHERE id = $1 ON CONFLICT DO NOTHING",
        &[P::Uuid(user.to_string())],
    )?;
    Ok(())
}

// Minutes of a day or month that has passed count as zero until the reset
// job writes it: reading never waits for the job.
const COLUMNS: &str = "q.user_id, q.tenant_id, q.max_devices, q.max_concurrent_devices, q.max_cpu_cores, \
     q.max_memory_mb, q.max_storage_gb, q.max_minutes_per_day, q.max_minutes_per_month, \
     q.used_devices, q.used_concurrent_devices, q.used_cpu_cores, q.used_memory_mb, q.used_storage_gb, \
     CASE WHEN q.usage_day < (now() AT TIME ZONE 'UTC')::date THEN 0 ELSE q.minutes_today END, \
     CASE WHEN q.usage_month < date_trunc('month', now() AT TIME ZONE 'UTC')::date THEN 0 ELSE q.minutes_month END, \
     q.exceeded_at IS NOT NULL, q.version, q.updated_at, \
     coalesce(p.devices, 0)::integer, coalesce(p.concurrent_devices, 0)::integer, coalesce(p.cpu_cores, 0)::integer, \
     coalesce(p.memory_mb, 0)::integer, coalesce(p.storage_gb, 0)::integer";

const FROM: &str = "quotas q LEFT JOIN LATERAL (SELECT sum(devices) devices, sum(concurrent_devices) concurrent_devices, \
       sum(cpu_cores) cpu_cores, sum(memory_mb) memory_mb, sum(storage_gb) storage_gb FROM quota_reservations r \
       WHERE r.user_id = q.user_id AND r.status = 'pending' AND r.expires_at > (now() AT TIME ZONE 'UTC')) p ON true";

fn quota(r: &[DbValue]) -> Result<Quota, DbError> {
    let c = |i: usize| col::<i32>(r, i, "quotas");
    Ok(Quota {
        user_id: col(r, 0, "quotas.user_id")?,
        tenant_id: col(r, 1, "quotas.tenant_id")?,
        limits: Limits {
            max_devices: c(2)?,
            max_concurrent_devices: c(3)?,
            max_cpu_cores: c(4)?,
            max_memory_mb: c(5)?,
            max_storage_gb: c(6)?,
            max_minutes_per_day: c(7)?,
            max_minutes_per_month: c(8)?,
        },
        used: Amounts {
            devices: c(9)?,
            concurrent_devices: c(10)?,
            cpu_cores: c(11)?,
            memory_mb: c(12)?,
            storage_gb: c(13)?,
        },
        minutes: Minutes {
            today: c(14)?,
            month: c(15)?,
        },
        exceeded: col(r, 16, "quotas.exceeded_at")?,
        version: col(r, 17, "quotas.version")?,
        updated_at: timestamp(r, 18, "quotas.updated_at")?,
        reserved: Amounts {
            devices: c(19)?,
            concurrent_devices: c(20)?,
            cpu_cores: c(21)?,
            memory_mb: c(22)?,
            storage_gb: c(23)?,
        },
    })
}

/// A user's quota (created with defaults on first read).
pub fn get(db: &Db, user: Uuid) -> Result<Option<Quota>, DbError> {
    ensure(db, user)?;
    find(db, user)
}

/// A user's quota as it is stored.
fn find(db: &Db, user: Uuid) -> Result<Option<Quota>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM {FROM} WHERE q.user_id = $1"),
        &[P::Uuid(user.to_string())],
        quota,
    )
}

/// Quotas in the caller's scope, paged.
pub fn list(
    db: &Db,
    scope: &RowFilter,
    user: Option<Uuid>,
    page: Page,
) -> Result<(Vec<Quota>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    if let Some(u) = user {
        w.eq("q.user_id", P::Uuid(u.to_string()));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM {FROM}"),
        "quotas q",
        w,
        "q.user_id",
        page,
        quota,
    )
}

/// Changes limits.
pub fn set_limits(db: &Db, user: Uuid, l: &LimitsPatch) -> Result<(), DbError> {
    let v = |x: Option<i32>| x.map_or(P::DbNull, P::Int32);
    db.execute(
        "UPDATE quotas SET max_devices = coalesce($2, max_devices), \
           max_concurrent_devices = coalesce($3, max_concurrent_devices), max_cpu_cores = coalesce($4, max_cpu_cores), \
           max_memory_mb = coalesce($5, max_memory_mb), max_storage_gb = coalesce($6, max_storage_gb), \
           max_minutes_per_day = coalesce($7, max_minutes_per_day), \
           max_minutes_per_month = coalesce($8, max_minutes_per_month), \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE user_id = $1",
        &[
            P::Uuid(user.to_string()),
            v(l.max_devices),
            v(l.max_concurrent_devices),
            v(l.max_cpu_cores),
            v(l.max_memory_mb),
            v(l.max_storage_gb),
            v(l.max_minutes_per_day),
            v(l.max_minutes_per_month),
        ],
    )?;
    Ok(())
}

const RES_COLUMNS: &str =
    "id, user_id, idempotency_key, devices, concurrent_devices, cpu_cores, memory_mb, \
     storage_gb, status, expires_at";

fn reservation(r: &[DbValue]) -> Result<Reservation, DbError> {
    let c = |i: usize| col::<i32>(r, i, "quota_reservations");
    Ok(Reservation {
        id: col(r, 0, "quota_reservations.id")?,
        user_id: col(r, 1, "quota_reservations.user_id")?,
        idempotency_key: col(r, 2, "quota_reservations.idempotency_key")?,
        resources: Amounts {
            devices: c(3)?,
            concurrent_devices: c(4)?,
            cpu_cores: c(5)?,
            memory_mb: c(6)?,
            storage_gb: c(7)?,
        },
        status: col(r, 8, "quota_reservations.status")?,
        expires_at: timestamp(r, 9, "quota_reservations.expires_at")?,
    })
}

/// The outcome of a reservation request.
pub enum Reserved {
    /// Granted now.
    Granted(Reservation),
    /// Granted before with the same idempotency key.
    Existing(Reservation),
    /// Refused: which limit.
    Refused(String),
    /// The user is locked, deleted or in a suspended tenant.
    Inactive,
}

/// Reserves resources against a user's quota, atomically: the quota row is
/// locked, expired reservations stop counting, and the request is granted
/// only if held + pending + requested stays within every limit. A refusal
/// records `quota.exceeded` once per day. `Ok(None)`: no such user.
pub fn reserve(
    db: &Db,
    user: Uuid,
    key: &str,
    want: &Amounts,
    ttl_secs: i64,
) -> Result<Option<Reserved>, DbError> {
    ensure(db, user)?;
    let locked = db.query(
        "SELECT 1 FROM quotas WHERE user_id = $1 FOR UPDATE",
        &[P::Uuid(user.to_string())],
    )?;
    if locked.rows.is_empty() {
        return Ok(None);
    }
    let state = db.query(
        "SELECT status = 'active' AND tenant_active FROM users WHERE id = $1",
        &[P::Uuid(user.to_string())],
    )?;
    if !state
        .rows
        .first()
        .map(|r| col::<bool>(r, 0, "active"))
        .transpose()?
        .unwrap_or(false)
    {
        return Ok(Some(Reserved::Inactive));
    }
    let existing = db.query(
        &format!("SELECT {RES_COLUMNS} FROM quota_reservations WHERE user_id = $1 AND idempotency_key = $2"),
        &[P::Uuid(user.to_string()), P::Str(key.into())],
    )?;
    if let Some(r) = existing.rows.first() {
        return Ok(Some(Reserved::Existing(reservation(r)?)));
    }
    expire_for(db, user)?;
    let q =
        find(db, user)?.ok_or_else(|| DbError::Other("quota vanished under its lock".into()))?;
    if let Err(why) = fits(&q.limits, &q.used, &q.reserved, &q.minutes, want) {
        mark_exceeded(db, &q, &why)?;
        return Ok(Some(Reserved::Refused(why)));
    }
    let rows = db.query(
        &format!(
            "INSERT INTO quota_reservations (id, user_id, idempotency_key, devices, concurrent_devices, cpu_cores, \
               memory_mb, storage_gb, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (now() AT TIME ZONE 'UTC') + make_interval(secs => $9)) \
             RETURNING {RES_COLUMNS}"
        ),
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(user.to_string()),
            P::Str(key.into()),
            P::Int32(want.devices),
            P::Int32(want.concurrent_devices),
            P::Int32(want.cpu_cores),
            P::Int32(want.memory_mb),
            P::Int32(want.storage_gb),
            P::Floating64(ttl_secs as f64),
        ],
    )?;
    Ok(Some(Reserved::Granted(reservation(&rows.rows[0])?)))
}

fn mark_exceeded(db: &Db, q: &Quota, why: &str) -> Result<(), DbError> {
    let rows = db.query(
        "UPDATE quotas SET exceeded_at = now() AT TIME ZONE 'UTC', version = version + 1 \
         WHERE user_id = $1 AND (exceeded_at IS NULL OR exceeded_at < date_trunc('day', now() AT TIME ZONE 'UTC')) \
         RETURNING version",
        &[P::Uuid(q.user_id.to_string())],
    )?;
    if let Some(r) = rows.rows.first() {
        let version: i64 = col(r, 0, "quotas.version")?;
        platform::outbox::enqueue(
            db,
            &QUOTA_EXCEEDED,
            &q.user_id.to_string(),
            version,
            &serde_json::json!({
                "user_id": q.user_id, "tenant_id": q.tenant_id, "reason": why,
                "limits": q.limits, "used": q.used, "reserved": q.reserved, "minutes": q.minutes,
            }),
        )?;
    }
    Ok(())
}

fn expire_for(db: &Db, user: Uuid) -> Result<u64, DbError> {
    db.execute(
        "UPDATE quota_reservations SET status = 'expired' \
         WHERE user_id = $1 AND status = 'pending' AND expires_at <= (now() AT TIME ZONE 'UTC')",
        &[P::Uuid(user.to_string())],
    )
}

/// A reservation, locked with its quota.
pub fn lock_reservation(db: &Db, id: Uuid) -> Result<Option<Reservation>, DbError> {
    let rows = db.query(
        &format!("SELECT {RES_COLUMNS} FROM quota_reservations WHERE id = $1"),
        &[P::Uuid(id.to_string())],
    )?;
    let Some(r) = rows.rows.first() else {
        return Ok(None);
    };
    let user: Uuid = col(r, 1, "quota_reservations.user_id")?;
    // Lock order: quota, then reservation (as in `reserve`).
    db.execute(
        "SELECT 1 FROM quotas WHERE user_id = $1 FOR UPDATE",
        &[P::Uuid(user.to_string())],
    )?;
    expire_for(db, user)?;
    db.one(
        &format!("SELECT {RES_COLUMNS} FROM quota_reservations WHERE id = $1 FOR UPDATE"),
        &[P::Uuid(id.to_string())],
        reservation,
    )
}

/// Moves a reservation to `status` and adjusts the held amounts by `sign`
/// (+1 on commit, -1 when a committed reservation is released).
pub fn settle(db: &Db, r: &Reservation, status: &str, sign: i32) -> Result<(), DbError> {
    db.execute(
        "UPDATE quota_reservations SET status = $2, \
           committed_at = CASE WHEN $2 = 'committed' THEN now() AT TIME ZONE 'UTC' ELSE committed_at END, \
           released_at = CASE WHEN $2 = 'released' THEN now() AT TIME ZONE 'UTC' ELSE released_at END \
         WHERE id = $1",
        &[P::Uuid(r.id.to_string()), P::Str(status.into())],
    )?;
    shift(db, r.user_id, Side::Used, sign, &r.resources)
}

/// Which amounts of a quota [`shift`] moves.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    /// The limits (`max_*`): grants.
    Max,
    /// What is held (`used_*`): reservations.
    Used,
}

/// Adds `sign` times `a` to a user's limits or held amounts (never below
/// zero); nothing when `sign` is 0.
pub fn shift(db: &Db, user: Uuid, side: Side, sign: i32, a: &Amounts) -> Result<(), DbError> {
    if sign == 0 {
        return Ok(());
    }
    let p = match side {
        Side::Max => "max",
        Side::Used => "used",
    };
    db.execute(
        &format!(
            "UPDATE quotas SET {p}_devices = greatest(0, {p}_devices + $2), \
               {p}_concurrent_devices = greatest(0, {p}_concurrent_devices + $3), \
               {p}_cpu_cores = greatest(0, {p}_cpu_cores + $4), {p}_memory_mb = greatest(0, {p}_memory_mb + $5), \
               {p}_storage_gb = greatest(0, {p}_storage_gb + $6), version = version + 1, \
               updated_at = now() AT TIME ZONE 'UTC' WHERE user_id = $1"
        ),
        &[
            P::Uuid(user.to_string()),
            P::Int32(sign * a.devices),
            P::Int32(sign * a.concurrent_devices),
            P::Int32(sign * a.cpu_cores),
            P::Int32(sign * a.memory_mb),
            P::Int32(sign * a.storage_gb),
        ],
    )?;
    Ok(())
}

/// Expires every pending reservation past its time (scheduler job).
pub fn expire_due(db: &Db) -> Result<u64, DbError> {
    db.execute(
        "UPDATE quota_reservations SET status = 'expired' \
         WHERE status = 'pending' AND expires_at <= (now() AT TIME ZONE 'UTC')",
        &[],
    )
}

/// Counts reported minutes once per idempotency key. Returns false for a
/// repeated report; records `quota.exceeded` when a minute limit is crossed.
pub fn add_minutes(db: &Db, user: Uuid, minutes: i32, key: &str) -> Result<Option<bool>, DbError> {
    ensure(db, user)?;
    let locked = db.query(
        "SELECT 1 FROM quotas WHERE user_id = $1 FOR UPDATE",
        &[P::Uuid(user.to_string())],
    )?;
    if locked.rows.is_empty() {
        return Ok(None);
    }
    let fresh = db.execute(
        "INSERT INTO quota_usage_reports (idempotency_key, user_id, minutes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[P::Str(key.into()), P::Uuid(user.to_string()), P::Int32(minutes)],
    )?;
    if fresh == 0 {
        return Ok(Some(false));
    }
    roll_periods(db, Some(user))?;
    db.execute(
        "UPDATE quotas SET minutes_today = minutes_today + $2, minutes_month = minutes_month + $2, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' WHERE user_id = $1",
        &[P::Uuid(user.to_string()), P::Int32(minutes)],
    )?;
    let q =
        find(db, user)?.ok_or_else(|| DbError::Other("quota vanished under its lock".into()))?;
    if q.minutes.today >= q.limits.max_minutes_per_day {
        mark_exceeded(db, &q, "daily usage limit reached")?;
    } else if q.minutes.month >= q.limits.max_minutes_per_month {
        mark_exceeded(db, &q, "monthly usage limit reached")?;
    }
    Ok(Some(true))
}

/// Starts a new day and a new month where they have begun (the daily and
/// monthly reset jobs; also applied lazily before counting minutes). Returns
/// (quotas whose day was reset, quotas whose month was reset).
pub fn roll_periods(db: &Db, user: Option<Uuid>) -> Result<(u64, u64), DbError> {
    let p = [user.map_or(P::DbNull, |u| P::Uuid(u.to_string()))];
    let days = db.execute(
        "UPDATE quotas SET minutes_today = 0, usage_day = (now() AT TIME ZONE 'UTC')::date, exceeded_at = NULL, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE usage_day < (now() AT TIME ZONE 'UTC')::date AND ($1::uuid IS NULL OR user_id = $1)",
        &p,
    )?;
    let months = db.execute(
        "UPDATE quotas SET minutes_month = 0, usage_month = date_trunc('month', now() AT TIME ZONE 'UTC')::date, \
           version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE usage_month < date_trunc('month', now() AT TIME ZONE 'UTC')::date AND ($1::uuid IS NULL OR user_id = $1)",
        &p,
    )?;
    Ok((days, months))
}
