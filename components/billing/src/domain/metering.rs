//! Per-minute metering of device time: what a run owes in total, and what
//! the next charge is. The total is always recomputed from the run's
//! length and its price, and the charge is the total minus what was
//! charged, so splitting a run over ticks, restarts or repeated events
//! never changes what it costs in the end. A run is charged device time
//! and, where a rule prices them, the cores, memory and GPU its spec draws
//! ([`ResourceLine`]), all in the total.

use super::money::round_div;
use super::rules::{self, Pricing};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The minutes of a run to charge: while it runs, the whole minutes
/// elapsed; once it ended, every started minute.
pub fn minutes(elapsed_secs: i64, ended: bool) -> i64 {
    let s = elapsed_secs.max(0);
    if ended {
        (s + 59) / 60
    } else {
        s / 60
    }
}

/// The next step of a run's metering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Minutes charged before.
    pub from_minute: i64,
    /// Minutes charged after.
    pub to_minute: i64,
    /// The amount to charge (negative: to give back).
    pub amount: i64,
}

/// What to charge now for a run with `total` minutes so far that cost
/// `total_price` in all, given what was charged; `None` when nothing
/// changes.
pub fn next(
    total: i64,
    total_price: i64,
    charged_minutes: i64,
    charged_minor: i64,
) -> Option<Step> {
    if total == charged_minutes {
        return None;
    }
    Some(Step {
        from_minute: charged_minutes,
        to_minute: total,
        amount: total_price - charged_minor,
    })
}

/// A resource a run is also charged for, besides device time, by the rule
/// that prices it: fixed on the run at its first charge with the units its
/// spec draws a minute (`per_minute / divisor`: cores, MiB of memory over
/// 1024, GPUs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLine {
    /// `cpu_cores`, `memory` or `gpu`.
    pub resource: String,
    /// Units a minute, times `divisor`.
    pub per_minute: i64,
    /// What `per_minute` is divided by (1024 for MiB as GiB).
    pub divisor: i64,
    /// The rule.
    pub rule_id: Uuid,
    /// Its pricing.
    pub pricing: Pricing,
}

impl ResourceLine {
    /// The quantity `minutes` of running draw (core-minutes, GiB-minutes,
    /// GPU-minutes), rounded once.
    pub fn quantity(&self, minutes: i64) -> i64 {
        let q = round_div(
            i128::from(self.per_minute) * i128::from(minutes),
            i128::from(self.divisor.max(1)),
        );
        i64::try_from(q).unwrap_or(i64::MAX)
    }

    /// What `minutes` of running from `start` cost on this line. A
    /// time-of-day rule prices each minute by its clock time, times the
    /// units drawn; any other prices the line's whole quantity (so tiers
    /// and volumes count every unit).
    pub fn price(&self, minutes: i64, start: NaiveDateTime) -> Result<i64, String> {
        let sum = |steps: Vec<rules::Step>| steps.iter().map(|s| s.amount_minor).sum::<i64>();
        if self.pricing.needs_start() {
            let by_minute = sum(rules::price(&self.pricing, minutes, Some(start))?);
            let scaled = round_div(
                i128::from(by_minute) * i128::from(self.per_minute),
                i128::from(self.divisor.max(1)),
            );
            return i64::try_from(scaled).map_err(|_| "the amount is too large".into());
        }
        Ok(sum(rules::price(
            &self.pricing,
            self.quantity(minutes),
            Some(start),
        )?))
    }
}

/// What a device of `spec` draws a minute of each resource metered
/// besides device time: `(resource, per_minute, divisor)`, only those it
/// draws (a GPU when its `gpu_mode` is `host` or `auto`).
pub fn draws(spec: &serde_json::Value) -> Vec<(&'static str, i64, i64)> {
    let int = |k: &str| spec.get(k).and_then(serde_json::Value::as_i64).unwrap_or(0);
    let gpus = i64::from(matches!(
        spec.get("gpu_mode").and_then(serde_json::Value::as_str),
        Some("host" | "auto")
    ));
    [
        ("cpu_cores", int("cpu_cores"), 1),
        ("memory", int("memory_mb"), 1024),
        ("gpu", gpus, 1),
    ]
    .into_iter()
    .filter(|(_, n, _)| *n > 0)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lines_count_the_units_a_spec_draws_and_price_them_once() {
        let spec = serde_json::json!({"cpu_cores": 2, "memory_mb": 3072, "gpu_mode": "guest"});
        assert_eq!(draws(&spec), [("cpu_cores", 2, 1), ("memory", 3072, 1024)]);
        let gpu = serde_json::json!({"cpu_cores": 1, "memory_mb": 0, "gpu_mode": "host"});
        assert_eq!(draws(&gpu), [("cpu_cores", 1, 1), ("gpu", 1, 1)]);
        let memory = ResourceLine {
            resource: "memory".into(),
            per_minute: 3072,
            divisor: 1024,
            rule_id: Uuid::nil(),
            pricing: Pricing::PerUse {
                unit_price_minor: 7,
                per: 60,
            },
        };
        let start =
            NaiveDateTime::parse_from_str("2026-12-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        // 3 GiB for 90 minutes: 270 GiB-minutes at 0.07 an hour: 31.5 → 32.
        assert_eq!(memory.quantity(90), 270);
        assert_eq!(memory.price(90, start), Ok(32));
        // Charged in two parts, the sum is the same total.
        let first = memory.price(59, start).unwrap();
        assert_eq!(first + (memory.price(90, start).unwrap() - first), 32);
    }

    /// What metering charges when no rule prices device time: `minutes`
    /// at `per_hour`, rounded once.
    fn price(minutes: i64, per_hour: i64) -> i64 {
        i64::try_from(round_div(i128::from(minutes) * i128::from(per_hour), 60)).unwrap()
    }

    #[test]
    fn a_running_device_is_charged_whole_minutes_and_an_ended_one_every_started_minute() {
        assert_eq!(minutes(59, false), 0);
        assert_eq!(minutes(60, false), 1);
        assert_eq!(minutes(5_399, false), 89);
        assert_eq!(minutes(5_400, true), 90);
        assert_eq!(minutes(5_401, true), 91);
        assert_eq!(minutes(1, true), 1);
        assert_eq!(minutes(0, true), 0);
        assert_eq!(minutes(-30, true), 0);
    }

    #[test]
    fn ninety_minutes_cost_the_same_however_the_ticks_split_them() {
        let per_hour = 125; // 1.25 an hour: 2.083... a minute
        let whole = price(90, per_hour);
        assert_eq!(whole, 188); // 187.5 rounds half away from zero
        for splits in [
            vec![90],
            vec![1, 89],
            vec![45, 45],
            vec![7; 13],
            vec![30, 30, 30],
        ] {
            let (mut minutes, mut charged) = (0, 0);
            for s in splits {
                let total = (minutes + s).min(90);
                if let Some(step) = next(total, price(total, per_hour), minutes, charged) {
                    assert_eq!(step.from_minute, minutes);
                    charged += step.amount;
                    minutes = step.to_minute;
                }
            }
            if let Some(step) = next(90, whole, minutes, charged) {
                charged += step.amount;
                minutes = step.to_minute;
            }
            assert_eq!((minutes, charged), (90, whole));
            assert_eq!(next(90, whole, minutes, charged), None);
        }
    }

    #[test]
    fn a_run_charged_past_its_end_is_given_back_the_difference() {
        // Charged 95 minutes while its end was not yet known; it ran 90.
        let step = next(90, price(90, 120), 95, price(95, 120)).unwrap();
        assert_eq!(step.amount, price(90, 120) - price(95, 120));
        assert_eq!(step.amount, -10);
    }
}
