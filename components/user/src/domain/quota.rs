//! Quotas: per-user limits, usage, and the reservation rules that keep
//! concurrent device creations within them.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Amounts of the resources a reservation holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amounts {
    /// Devices.
    #[serde(default)]
    pub devices: i32,
    /// Devices running at once.
    #[serde(default)]
    pub concurrent_devices: i32,
    /// CPU cores.
    #[serde(default)]
    pub cpu_cores: i32,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mb: i32,
    /// Storage in GiB.
    #[serde(default)]
    pub storage_gb: i32,
}

impl Amounts {
    fn fields(&self) -> [(&'static str, i32); 5] {
        [
            ("devices", self.devices),
            ("concurrent_devices", self.concurrent_devices),
            ("cpu_cores", self.cpu_cores),
            ("memory_mb", self.memory_mb),
            ("storage_gb", self.storage_gb),
        ]
    }

    /// Sum, saturating.
    pub fn plus(&self, o: &Amounts) -> Amounts {
        Amounts {
            devices: self.devices.saturating_add(o.devices),
            concurrent_devices: self.concurrent_devices.saturating_add(o.concurrent_devices),
            cpu_cores: self.cpu_cores.saturating_add(o.cpu_cores),
            memory_mb: self.memory_mb.saturating_add(o.memory_mb),
            storage_gb: self.storage_gb.saturating_add(o.storage_gb),
        }
    }

    /// Checks a requested amount: nothing negative, something asked, sane sizes.
    pub fn check_request(&self) -> Result<(), Error> {
        if self
            .fields()
            .iter()
            .any(|(_, v)| !(0..=1_000_000).contains(v))
        {
            return Err(Error::Invalid(
                "resources must be from 0 to 1000000 each".into(),
            ));
        }
        if self.fields().iter().all(|(_, v)| *v == 0) {
            return Err(Error::Invalid("resources must ask for something".into()));
        }
        Ok(())
    }
}

/// A quota's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Devices.
    pub max_devices: i32,
    /// Devices running at once.
    pub max_concurrent_devices: i32,
    /// CPU cores over all devices.
    pub max_cpu_cores: i32,
    /// Memory in MiB over all devices.
    pub max_memory_mb: i32,
    /// Storage in GiB over all devices.
    pub max_storage_gb: i32,
    /// Minutes of use per day.
    pub max_minutes_per_day: i32,
    /// Minutes of use per month.
    pub max_minutes_per_month: i32,
}

impl Limits {
    fn caps(&self) -> Amounts {
        Amounts {
            devices: self.max_devices,
            concurrent_devices: self.max_concurrent_devices,
            cpu_cores: self.max_cpu_cores,
            memory_mb: self.max_memory_mb,
            storage_gb: self.max_storage_gb,
        }
    }
}

/// Usage of minutes in the current day and month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Minutes {
    /// Minutes used today (UTC).
    pub today: i32,
    /// Minutes used this month (UTC).
    pub month: i32,
}

/// Whether a reservation of `want` fits: `used` (committed) plus `pending`
/// plus `want` must stay within every limit, and starting a device needs
/// minutes left today and this month. Errs with the first limit it breaks.
pub fn fits(
    limits: &Limits,
    used: &Amounts,
    pending: &Amounts,
    minutes: &Minutes,
    want: &Amounts,
) -> Result<(), String> {
    let total = used.plus(pending).plus(want);
    for ((name, have), (_, cap)) in total.fields().iter().zip(limits.caps().fields()) {
        let asked = want
            .fields()
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v);
        if asked > 0 && *have > cap {
            return Err(format!("{name} limit {cap} would be exceeded"));
        }
    }
    if want.concurrent_devices > 0 {
        if minutes.today >= limits.max_minutes_per_day {
            return Err("daily usage limit reached".into());
        }
        if minutes.month >= limits.max_minutes_per_month {
            return Err("monthly usage limit reached".into());
        }
    }
    Ok(())
}

/// A quota as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Quota {
    /// The user.
    pub user_id: Uuid,
    /// The user's tenant.
    pub tenant_id: Option<Uuid>,
    /// Limits.
    pub limits: Limits,
    /// Resources held (committed reservations).
    pub used: Amounts,
    /// Resources reserved and not yet committed.
    pub reserved: Amounts,
    /// Minutes used.
    pub minutes: Minutes,
    /// Whether a limit was hit since the last reset.
    pub exceeded: bool,
    /// Version.
    pub version: i64,
    /// Last change.
    pub updated_at: String,
}

/// `PATCH /quotas/:user_id`: new limits; absent ones stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    /// Devices.
    pub max_devices: Option<i32>,
    /// Devices running at once.
    pub max_concurrent_devices: Option<i32>,
    /// CPU cores.
    pub max_cpu_cores: Option<i32>,
    /// Memory in MiB.
    pub max_memory_mb: Option<i32>,
    /// Storage in GiB.
    pub max_storage_gb: Option<i32>,
    /// Minutes per day.
    pub max_minutes_per_day: Option<i32>,
    /// Minutes per month.
    pub max_minutes_per_month: Option<i32>,
}

impl LimitsPatch {
    /// Validates; limits are 0..=1000000 and something must change.
    pub fn check(&self) -> Result<(), Error> {
        let all = [
            self.max_devices,
            self.max_concurrent_devices,
            self.max_cpu_cores,
            self.max_memory_mb,
            self.max_storage_gb,
            self.max_minutes_per_day,
            self.max_minutes_per_month,
        ];
        if all.iter().all(Option::is_none) {
            return Err(Error::Invalid("nothing to update".into()));
        }
        if all.iter().flatten().any(|v| !(0..=1_000_000).contains(v)) {
            return Err(Error::Invalid("limits must be from 0 to 1000000".into()));
        }
        Ok(())
    }
}

/// Longest a reservation may stay unconfirmed.
pub const MAX_TTL_SECS: i64 = 3600;
/// Default time to confirm a reservation.
pub const DEFAULT_TTL_SECS: i64 = 300;

/// `POST /internal/quotas/reservations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// Whose quota.
    pub user_id: Uuid,
    /// The caller's key for this reservation: a retry with the same key gets
    /// the same reservation.
    pub idempotency_key: String,
    /// What to hold.
    #[serde(deserialize_with = "platform::input::object")]
    pub resources: Amounts,
    /// Seconds until an unconfirmed reservation expires (default 300, at most 3600).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// A grant of higher limits (what a user bought).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Whose limits.
    pub user_id: Uuid,
    /// The granting component's key: a retry gets the same grant.
    pub idempotency_key: String,
    /// What to add to the limits.
    #[serde(deserialize_with = "platform::input::object")]
    pub resources: Amounts,
}

impl GrantRequest {
    /// Validates.
    pub fn check(&self) -> Result<(), Error> {
        check_key(&self.idempotency_key)?;
        self.resources.check_request()
    }
}

/// Checks an idempotency key: 1 to 128 printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 128 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::Invalid(
            "idempotency_key must be 1 to 128 printable ascii characters".into(),
        ));
    }
    Ok(())
}

impl ReserveRequest {
    /// Validates; returns the time to live.
    pub fn check(&self) -> Result<i64, Error> {
        check_key(&self.idempotency_key)?;
        self.resources.check_request()?;
        match self.ttl_secs.unwrap_or(DEFAULT_TTL_SECS) {
            t if (1..=MAX_TTL_SECS).contains(&t) => Ok(t),
            _ => Err(Error::Invalid(format!(
                "ttl_secs must be from 1 to {MAX_TTL_SECS}"
            ))),
        }
    }
}

/// A reservation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Reservation {
    /// Id.
    pub id: Uuid,
    /// Whose quota.
    pub user_id: Uuid,
    /// The caller's key.
    pub idempotency_key: String,
    /// What it holds.
    pub resources: Amounts,
    /// `pending`, `committed`, `released` or `expired`.
    pub status: String,
    /// When a pending reservation expires.
    pub expires_at: String,
}

/// `POST /internal/quotas/usage`: minutes of use to count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Whose quota.
    pub user_id: Uuid,
    /// Minutes used since the last report.
    pub minutes: i32,
    /// A repeated report with the same key counts once.
    pub idempotency_key: String,
}

impl UsageReport {
    /// Validates.
    pub fn check(&self) -> Result<(), Error> {
        check_key(&self.idempotency_key)?;
        if !(1..=44_640).contains(&self.minutes) {
            return Err(Error::Invalid("minutes must be from 1 to 44640".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_devices: 2,
        max_concurrent_devices: 1,
        max_cpu_cores: 8,
        max_memory_mb: 8192,
        max_storage_gb: 64,
        max_minutes_per_day: 60,
        max_minutes_per_month: 600,
    };

    fn dev(n: i32) -> Amounts {
        Amounts {
            devices: n,
            cpu_cores: 2 * n,
            ..Amounts::default()
        }
    }

    #[test]
    fn pending_and_used_count_against_limits() {
        let m = Minutes { today: 0, month: 0 };
        assert!(fits(&LIMITS, &dev(1), &Amounts::default(), &m, &dev(1)).is_ok());
        assert!(fits(&LIMITS, &dev(1), &dev(1), &m, &dev(1)).is_err());
        let err = fits(
            &LIMITS,
            &Amounts::default(),
            &Amounts::default(),
            &m,
            &dev(3),
        )
        .unwrap_err();
        assert!(err.starts_with("devices"), "{err}");
    }

    #[test]
    fn a_limit_already_over_does_not_block_other_resources() {
        // Limits lowered below what is held: asking for storage still works.
        let used = dev(5);
        let want = Amounts {
            storage_gb: 1,
            ..Amounts::default()
        };
        assert!(fits(
            &LIMITS,
            &used,
            &Amounts::default(),
            &Minutes { today: 0, month: 0 },
            &want
        )
        .is_ok());
    }

    #[test]
    fn starting_needs_minutes_left() {
        let run = Amounts {
            concurrent_devices: 1,
            ..Amounts::default()
        };
        let none = Amounts::default();
        assert!(fits(
            &LIMITS,
            &none,
            &none,
            &Minutes {
                today: 60,
                month: 60
            },
            &run
        )
        .is_err());
        assert!(fits(
            &LIMITS,
            &none,
            &none,
            &Minutes {
                today: 0,
                month: 600
            },
            &run
        )
        .is_err());
        assert!(fits(
            &LIMITS,
            &none,
            &none,
            &Minutes {
                today: 59,
                month: 59
            },
            &run
        )
        .is_ok());
    }

    #[test]
    fn requests_are_checked() {
        assert!(Amounts::default().check_request().is_err());
        assert!(Amounts {
            devices: -1,
            ..dev(1)
        }
        .check_request()
        .is_err());
        let r = ReserveRequest {
            user_id: Uuid::nil(),
            idempotency_key: "k".into(),
            resources: dev(1),
            ttl_secs: Some(0),
        };
        assert!(r.check().is_err());
        assert!(check_key("has space").is_err());
        assert!(LimitsPatch::default().check().is_err());
    }
}
