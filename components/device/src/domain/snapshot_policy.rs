//! A device's snapshot policy: automatic backups at a fixed interval, and
//! retention by count and by age, over the automatic snapshots only or over
//! every snapshot of the device; and what a snapshot costs the owner's
//! storage quota.

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// The longest backup interval and retention age: a year.
pub const MAX_SECS: i64 = 366 * 24 * 3600;
/// Most snapshots one device keeps (delete one to take another).
pub const MAX_PER_DEVICE: i64 = 20;

/// Which snapshots retention removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AppliesTo {
    /// Only those the policy took (a user's own are kept until deleted).
    #[default]
    Scheduled,
    /// Every snapshot of the device.
    All,
}

impl AppliesTo {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AppliesTo::Scheduled => "scheduled",
            AppliesTo::All => "all",
        }
    }

    /// From storage.
    pub fn from_db(s: &str) -> Self {
        if s == "all" {
            AppliesTo::All
        } else {
            AppliesTo::Scheduled
        }
    }
}

/// `PUT /devices/:id/snapshot-policy`: the whole policy (absent or null:
/// off).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Seconds between automatic snapshots.
    #[serde(default)]
    pub every_secs: Option<i64>,
    /// How many of the newest snapshots retention keeps.
    #[serde(default)]
    pub keep_last: Option<i64>,
    /// The oldest a snapshot may get, in seconds after it was ready.
    #[serde(default)]
    pub max_age_secs: Option<i64>,
    /// `scheduled` (default) or `all`.
    #[serde(default)]
    pub applies_to: Option<AppliesTo>,
}

/// A checked policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Seconds between automatic snapshots.
    pub every_secs: Option<i32>,
    /// Newest snapshots kept.
    pub keep_last: Option<i32>,
    /// Oldest kept, in seconds.
    pub max_age_secs: Option<i32>,
    /// Which snapshots retention removes.
    pub applies_to: AppliesTo,
}

impl Policy {
    /// As a template stores it (and `PolicyInput` reads it back).
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "every_secs": self.every_secs, "keep_last": self.keep_last,
            "max_age_secs": self.max_age_secs, "applies_to": self.applies_to.as_str(),
        })
    }

    /// The shortest interval or age it sets, if any.
    pub fn shortest_secs(self) -> Option<i64> {
        [self.every_secs, self.max_age_secs]
            .into_iter()
            .flatten()
            .map(i64::from)
            .min()
    }
}

impl PolicyInput {
    /// Checks the input: intervals and ages between `min_secs` (the
    /// deployment's `device_min_backup_secs`) and a year, `keep_last`
    /// between 1 and the most snapshots a device keeps.
    pub fn parse(self, min_secs: i64, max_per_device: i64) -> Result<Policy, Error> {
        let secs = |name: &str, v: Option<i64>| -> Result<Option<i32>, Error> {
            match v {
                None => Ok(None),
                Some(n) if (min_secs..=MAX_SECS).contains(&n) => Ok(Some(n as i32)),
                Some(_) => Err(Error::Invalid(format!(
                    "{name} must be between {min_secs} and {MAX_SECS} seconds"
                ))),
            }
        };
        let keep_last = match self.keep_last {
            None => None,
            Some(n) if (1..=max_per_device).contains(&n) => Some(n as i32),
            Some(_) => {
                return Err(Error::Invalid(format!(
                    "keep_last must be between 1 and {max_per_device}"
                )))
            }
        };
        Ok(Policy {
            every_secs: secs("every_secs", self.every_secs)?,
            keep_last,
            max_age_secs: secs("max_age_secs", self.max_age_secs)?,
            applies_to: self.applies_to.unwrap_or_default(),
        })
    }
}

const GIB: i64 = 1 << 30;

/// Whole GiB of storage quota a snapshot of `data_bytes` is charged: its
/// size rounded up, and at least 1 (the committed image layer is not
/// measured, so nothing is free).
pub fn storage_gb(data_bytes: i64) -> i32 {
    let gb = ((data_bytes.max(0) as u64).div_ceil(GIB as u64)).max(1);
    i32::try_from(gb).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: serde_json::Value) -> Result<Policy, String> {
        serde_json::from_value::<PolicyInput>(v)
            .map_err(|e| e.to_string())?
            .parse(3600, 20)
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn a_policy_is_checked_whole_and_absent_fields_are_off() {
        assert_eq!(input(serde_json::json!({})).unwrap(), Policy::default());
        let p =
            input(serde_json::json!({"every_secs": 86400, "keep_last": 7, "applies_to": "all"}))
                .unwrap();
        assert_eq!(
            (p.every_secs, p.keep_last, p.max_age_secs, p.applies_to),
            (Some(86400), Some(7), None, AppliesTo::All)
        );
        for bad in [
            serde_json::json!({"every_secs": 60}),
            serde_json::json!({"every_secs": MAX_SECS + 1}),
            serde_json::json!({"max_age_secs": 0}),
            serde_json::json!({"keep_last": 0}),
            serde_json::json!({"keep_last": 21}),
            serde_json::json!({"applies_to": "some"}),
            serde_json::json!({"every": 3600}),
            serde_json::json!({"every_secs": "3600"}),
        ] {
            assert!(input(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_snapshot_costs_its_size_in_whole_gib_and_never_nothing() {
        assert_eq!(storage_gb(0), 1);
        assert_eq!(storage_gb(15), 1);
        assert_eq!(storage_gb(GIB), 1);
        assert_eq!(storage_gb(GIB + 1), 2);
        assert_eq!(storage_gb(10 * GIB), 10);
        assert_eq!(storage_gb(-5), 1);
    }
}
