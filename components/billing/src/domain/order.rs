//! Plans and orders: what a plan grants, what an order costs, and the
//! order's state machine (`pending` → `paid` → `fulfilled`, or
//! `cancelled`, `expired`, `failed`; `fulfilled` → `refunded`).

use super::money::MAX_MINOR;
use chrono::{Duration, Months, NaiveDateTime};
use serde::{Deserialize, Serialize};

/// How long one cycle of a plan lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cycle {
    /// An hour.
    Hourly,
    /// A day.
    Daily,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

impl Cycle {
    /// Parses `hourly`, `daily`, `monthly` or `yearly`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "hourly" => Ok(Cycle::Hourly),
            "daily" => Ok(Cycle::Daily),
            "monthly" => Ok(Cycle::Monthly),
            "yearly" => Ok(Cycle::Yearly),
            _ => Err("cycle must be one of hourly, daily, monthly, yearly".into()),
        }
    }

    /// The end of `cycles` cycles from `start` (calendar months and years:
    /// 31 January plus a month is the end of February).
    pub fn end(self, start: NaiveDateTime, cycles: u32) -> NaiveDateTime {
        match self {
            Cycle::Hourly => start + Duration::hours(i64::from(cycles)),
            Cycle::Daily => start + Duration::days(i64::from(cycles)),
            Cycle::Monthly => start
                .checked_add_months(Months::new(cycles))
                .unwrap_or(start),
            Cycle::Yearly => start
                .checked_add_months(Months::new(cycles.saturating_mul(12)))
                .unwrap_or(start),
        }
    }
}

/// What a plan adds to its buyer's quota limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
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

impl Grant {
    /// Each amount from 0 to 100,000, and something granted.
    pub fn check(&self) -> Result<(), String> {
        let all = [
            self.devices,
            self.concurrent_devices,
            self.cpu_cores,
            self.memory_mb,
            self.storage_gb,
        ];
        if all.iter().any(|v| !(0..=100_000).contains(v)) {
            return Err("quota amounts must be from 0 to 100000".into());
        }
        if all.iter().all(|v| *v == 0) {
            return Err("quota must grant something".into());
        }
        Ok(())
    }
}

/// The largest spec a plan's devices may have (informative for `device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLimits {
    /// Cores per device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_cores: Option<i32>,
    /// Memory per device, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<i32>,
    /// Storage per device, GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_storage_gb: Option<i32>,
}

impl DeviceLimits {
    /// Each limit from 1 to 1,000,000 when set.
    pub fn check(&self) -> Result<(), String> {
        let all = [self.max_cpu_cores, self.max_memory_mb, self.max_storage_gb];
        if all.iter().flatten().any(|v| !(1..=1_000_000).contains(v)) {
            return Err("device limits must be from 1 to 1000000".into());
        }
        Ok(())
    }
}

/// Phones a plan makes for its buyer when an order of it is fulfilled
/// (through `device`, placed like any device, expiring with the order's
/// period). The plan's quota must cover them, so that buying it never
/// fails on the buyer's own limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludedDevices {
    /// How many (1-20).
    pub count: i32,
    /// Cores each.
    pub cpu_cores: i32,
    /// Memory each, MiB.
    pub memory_mb: i32,
    /// Storage each, GiB.
    pub storage_gb: i32,
    /// The Android image (`device`'s default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl IncludedDevices {
    /// Counts and sizes in range, within the plan's device limits, and
    /// covered by its quota grant.
    pub fn check(&self, limits: &DeviceLimits, grant: &Grant) -> Result<(), String> {
        if !(1..=20).contains(&self.count) {
            return Err("devices.count must be from 1 to 20".into());
        }
        for (name, v, max, limit) in [
            ("cpu_cores", self.cpu_cores, 64, limits.max_cpu_cores),
            ("memory_mb", self.memory_mb, 262_144, limits.max_memory_mb),
            ("storage_gb", self.storage_gb, 4096, limits.max_storage_gb),
        ] {
            if !(1..=max).contains(&v) {
                return Err(format!("devices.{name} must be from 1 to {max}"));
            }
            if limit.is_some_and(|l| v > l) {
                return Err(format!("devices.{name} is above the plan's device limit"));
            }
        }
        if self
            .image
            .as_deref()
            .is_some_and(|i| !platform::input::image_reference(i))
        {
            return Err("devices.image must be a container image reference".into());
        }
        let need = |each: i32| each.saturating_mul(self.count);
        for (name, granted, needed) in [
            ("devices", grant.devices, self.count),
            ("concurrent_devices", grant.concurrent_devices, self.count),
            ("cpu_cores", grant.cpu_cores, need(self.cpu_cores)),
            ("memory_mb", grant.memory_mb, need(self.memory_mb)),
            ("storage_gb", grant.storage_gb, need(self.storage_gb)),
        ] {
            if granted < needed {
                return Err(format!(
                    "the plan's quota must cover the devices it includes: quota.{name} is {granted}, they need {needed}"
                ));
            }
        }
        Ok(())
    }
}

/// The price of `cycles` cycles at `price` each, within [`MAX_MINOR`].
pub fn total(price: i64, cycles: i32) -> Result<i64, String> {
    price
        .checked_mul(i64::from(cycles))
        .filter(|t| *t <= MAX_MINOR)
        .ok_or_else(|| "the order's total is too large".into())
}

/// An order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Being paid.
    Pending,
    /// Paid, being fulfilled.
    Paid,
    /// Paid and granted.
    Fulfilled,
    /// Cancelled by its buyer before payment.
    Cancelled,
    /// Not paid in time.
    Expired,
    /// Refunded in full.
    Refunded,
    /// A step failed; everything it held was given back.
    Failed,
}

impl Status {
    /// Parses a stored status.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Ok(match raw {
            "pending" => Status::Pending,
            "paid" => Status::Paid,
            "fulfilled" => Status::Fulfilled,
            "cancelled" => Status::Cancelled,
            "expired" => Status::Expired,
            "refunded" => Status::Refunded,
            "failed" => Status::Failed,
            _ => {
                return Err(
                    "status must be one of pending, paid, fulfilled, cancelled, expired, refunded, failed"
                        .into(),
                )
            }
        })
    }

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Paid => "paid",
            Status::Fulfilled => "fulfilled",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
            Status::Refunded => "refunded",
            Status::Failed => "failed",
        }
    }

    /// Whether the order can move `to`.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, Paid | Cancelled | Expired | Failed)
                | (Paid, Fulfilled | Failed)
                | (Fulfilled, Refunded)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn included_devices_must_fit_the_limits_and_the_grant() {
        let d = IncludedDevices {
            count: 2,
            cpu_cores: 2,
            memory_mb: 2048,
            storage_gb: 8,
            image: None,
        };
        let grant = Grant {
            devices: 2,
            concurrent_devices: 2,
            cpu_cores: 4,
            memory_mb: 4096,
            storage_gb: 16,
        };
        assert_eq!(d.check(&DeviceLimits::default(), &grant), Ok(()));
        let small = Grant {
            memory_mb: 4095,
            ..grant
        };
        assert!(d
            .check(&DeviceLimits::default(), &small)
            .unwrap_err()
            .contains("quota.memory_mb is 4095, they need 4096"));
        let limits = DeviceLimits {
            max_cpu_cores: Some(1),
            ..DeviceLimits::default()
        };
        assert!(d
            .check(&limits, &grant)
            .unwrap_err()
            .contains("device limit"));
        let none = IncludedDevices { count: 0, ..d };
        assert!(none.check(&DeviceLimits::default(), &grant).is_err());
    }

    #[test]
    fn orders_move_only_along_the_state_machine() {
        use Status::*;
        assert!(Pending.can_become(Paid) && Paid.can_become(Fulfilled));
        assert!(Fulfilled.can_become(Refunded));
        for terminal in [Cancelled, Expired, Refunded, Failed] {
            for to in [
                Pending, Paid, Fulfilled, Cancelled, Expired, Refunded, Failed,
            ] {
                assert!(!terminal.can_become(to), "{terminal:?} -> {to:?}");
            }
        }
        assert!(!Pending.can_become(Fulfilled));
        assert!(!Fulfilled.can_become(Cancelled));
        assert!(!Paid.can_become(Cancelled));
        for s in [
            "pending",
            "paid",
            "fulfilled",
            "cancelled",
            "expired",
            "refunded",
            "failed",
        ] {
            assert_eq!(Status::parse(s).unwrap().name(), s);
        }
    }

    #[test]
    fn cycles_end_on_calendar_boundaries() {
        let jan31 = t("2026-01-31 10:00:00");
        assert_eq!(Cycle::Monthly.end(jan31, 1), t("2026-02-28 10:00:00"));
        assert_eq!(Cycle::Monthly.end(jan31, 12), t("2027-01-31 10:00:00"));
        assert_eq!(
            Cycle::Yearly.end(t("2028-02-29 00:00:00"), 1),
            t("2029-02-28 00:00:00")
        );
        assert_eq!(Cycle::Hourly.end(jan31, 25), t("2026-02-01 11:00:00"));
        assert_eq!(Cycle::Daily.end(jan31, 1), t("2026-02-01 10:00:00"));
        assert!(Cycle::parse("weekly").is_err());
    }

    #[test]
    fn a_grant_grants_something_within_bounds_and_totals_do_not_overflow() {
        assert!(Grant::default().check().is_err());
        assert!(Grant {
            devices: 2,
            ..Grant::default()
        }
        .check()
        .is_ok());
        assert!(Grant {
            devices: -1,
            cpu_cores: 2,
            ..Grant::default()
        }
        .check()
        .is_err());
        assert_eq!(total(9_900, 3), Ok(29_700));
        assert!(total(MAX_MINOR, 2).is_err());
        assert!(DeviceLimits {
            max_cpu_cores: Some(0),
            ..DeviceLimits::default()
        }
        .check()
        .is_err());
    }
}
