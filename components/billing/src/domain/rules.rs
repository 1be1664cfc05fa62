//! Billing rules: how a usage line of a resource is priced. A rule is one
//! of five kinds (fixed, per use, tiered, volume, time of day); among the
//! rules that apply to a resource at a moment, the one of highest priority
//! prices it (a tenant's own before the platform's at equal priority, then
//! the newest). Pricing explains itself: a line is the sum of its steps,
//! and each step is rounded once, half away from zero (`money::round_div`).

use super::money::{round_div, MAX_MINOR};
use chrono::{Duration, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};

/// What is metered, and the unit a quantity of it counts.
pub const RESOURCES: &[(&str, &str)] = &[
    ("device_time", "device-minutes"),
    ("cpu_cores", "core-minutes"),
    ("memory", "GiB-minutes"),
    ("storage", "GiB-days"),
    ("gpu", "GPU-minutes"),
];

/// The unit of a resource's quantities, or an error naming the resources.
pub fn unit_of(resource: &str) -> Result<&'static str, String> {
    RESOURCES
        .iter()
        .find(|(r, _)| *r == resource)
        .map(|(_, u)| *u)
        .ok_or_else(|| {
            format!(
                "resource must be one of {}",
                RESOURCES
                    .iter()
                    .map(|(r, _)| *r)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A tier: the quantity up to which (inclusive; none: without end) its
/// price applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Upper bound of the tier (none: the last tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<i64>,
    /// Minor units per `per` units.
    pub unit_price_minor: i64,
}

/// A window of the day (minutes since local midnight, `from` inclusive,
/// `to` exclusive; `from > to` wraps past midnight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, `HH:MM`.
    pub from: String,
    /// End, `HH:MM` (`24:00` for midnight).
    pub to: String,
    /// Minor units per `per` units in the window.
    pub unit_price_minor: i64,
}

/// How a rule prices a quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pricing {
    /// The same amount for any line with a quantity.
    Fixed {
        /// The amount.
        amount_minor: i64,
    },
    /// `unit_price_minor` for every `per` units.
    PerUse {
        /// Price of `per` units.
        unit_price_minor: i64,
        /// Units the price is for (e.g. 60 minutes: a price per hour).
        per: i64,
    },
    /// Graduated: each tier's part of the quantity at its own price.
    Tiered {
        /// Units the prices are for.
        per: i64,
        /// Ascending tiers, the last without `up_to`.
        tiers: Vec<Tier>,
    },
    /// The whole quantity at the price of the tier it reaches.
    Volume {
        /// Units the prices are for.
        per: i64,
        /// Ascending tiers, the last without `up_to`.
        tiers: Vec<Tier>,
    },
    /// By the local time of day each minute falls in (quantities of a
    /// time-based line: consecutive minutes from its `start`).
    TimeOfDay {
        /// Units the prices are for.
        per: i64,
        /// Local time is UTC plus this (e.g. 480 for UTC+8).
        utc_offset_minutes: i32,
        /// The windows; minutes outside all of them cost `default_unit_price_minor`.
        windows: Vec<Window>,
        /// Price outside the windows.
        default_unit_price_minor: i64,
    },
}

const MAX_QUANTITY: i64 = 1_000_000_000;

fn hhmm(raw: &str, field: &str) -> Result<u32, String> {
    let bad = || format!("{field} must be a time HH:MM (00:00 to 24:00)");
    let (h, m) = raw.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn price_ok(p: i64, field: &str) -> Result<(), String> {
    if (0..=MAX_MINOR).contains(&p) {
        Ok(())
    } else {
        Err(format!("{field} must be from 0 to {MAX_MINOR}"))
    }
}

fn per_ok(per: i64) -> Result<(), String> {
    if (1..=1_000_000).contains(&per) {
        Ok(())
    } else {
        Err("per must be from 1 to 1000000".into())
    }
}

fn tiers_ok(tiers: &[Tier]) -> Result<(), String> {
    if tiers.is_empty() || tiers.len() > 20 {
        return Err("tiers must hold 1 to 20 tiers".into());
    }
    let mut last = 0;
    for (i, t) in tiers.iter().enumerate() {
        price_ok(t.unit_price_minor, "unit_price_minor")?;
        match t.up_to {
            Some(u) if i + 1 < tiers.len() && u > last && u <= MAX_QUANTITY => last = u,
            None if i + 1 == tiers.len() => {}
            _ => return Err(
                "tiers must rise (each up_to above the one before) and only the last has no up_to"
                    .into(),
            ),
        }
    }
    Ok(())
}

impl Pricing {
    /// Checks the parameters.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Pricing::Fixed { amount_minor } => price_ok(*amount_minor, "amount_minor"),
            Pricing::PerUse {
                unit_price_minor,
                per,
            } => {
                price_ok(*unit_price_minor, "unit_price_minor")?;
                per_ok(*per)
            }
            Pricing::Tiered { per, tiers } | Pricing::Volume { per, tiers } => {
                per_ok(*per)?;
                tiers_ok(tiers)
            }
            Pricing::TimeOfDay {
                per,
                utc_offset_minutes,
                windows,
                default_unit_price_minor,
            } => {
                per_ok(*per)?;
                price_ok(*default_unit_price_minor, "default_unit_price_minor")?;
                if !(-720..=840).contains(utc_offset_minutes) {
                    return Err("utc_offset_minutes must be from -720 to 840".into());
                }
                if windows.is_empty() || windows.len() > 24 {
                    return Err("windows must hold 1 to 24 windows".into());
                }
                let mut covered = [false; 1440];
                for w in windows {
                    price_ok(w.unit_price_minor, "unit_price_minor")?;
                    let (from, to) = (hhmm(&w.from, "from")?, hhmm(&w.to, "to")?);
                    if from == to || from == 1440 {
                        return Err("a window must not be empty (from differs from to)".into());
                    }
                    for m in window_minutes(from, to) {
                        if covered[m as usize] {
                            return Err("windows must not overlap".into());
                        }
                        covered[m as usize] = true;
                    }
                }
                Ok(())
            }
        }
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Pricing::Fixed { .. } => "fixed",
            Pricing::PerUse { .. } => "per_use",
            Pricing::Tiered { .. } => "tiered",
            Pricing::Volume { .. } => "volume",
            Pricing::TimeOfDay { .. } => "time_of_day",
        }
    }

    /// Whether lines need a `start`.
    pub fn needs_start(&self) -> bool {
        matches!(self, Pricing::TimeOfDay { .. })
    }
}

fn window_minutes(from: u32, to: u32) -> impl Iterator<Item = u32> {
    let to = if to == 0 { 1440 } else { to };
    let wraps = from > to;
    (0..1440).filter(move |m| {
        if wraps {
            *m >= from || *m < to
        } else {
            *m >= from && *m < to
        }
    })
}

/// One step of a line's price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What this part is.
    pub description: String,
    /// Units it prices.
    pub quantity: i64,
    /// Minor units per `per` units (none for a fixed amount).
    pub unit_price_minor: Option<i64>,
    /// Units the price is for.
    pub per: i64,
    /// Its amount, rounded once.
    pub amount_minor: i64,
}

fn step(description: String, quantity: i64, price: i64, per: i64) -> Step {
    let amount = round_div(i128::from(quantity) * i128::from(price), i128::from(per));
    Step {
        description,
        quantity,
        unit_price_minor: Some(price),
        per,
        amount_minor: i64::try_from(amount).unwrap_or(i64::MAX),
    }
}

/// Checks a line's quantity.
pub fn quantity_ok(q: i64) -> Result<(), String> {
    if (0..=MAX_QUANTITY).contains(&q) {
        Ok(())
    } else {
        Err(format!("quantity must be from 0 to {MAX_QUANTITY}"))
    }
}

/// Prices `quantity` units (starting at `start`, UTC, for a time-of-day
/// rule): the steps, whose amounts add up to the line's.
pub fn price(
    p: &Pricing,
    quantity: i64,
    start: Option<NaiveDateTime>,
) -> Result<Vec<Step>, String> {
    quantity_ok(quantity)?;
    Ok(match p {
        Pricing::Fixed { amount_minor } => vec![Step {
            description: "fixed amount".into(),
            quantity,
            unit_price_minor: None,
            per: 1,
            amount_minor: if quantity > 0 { *amount_minor } else { 0 },
        }],
        Pricing::PerUse {
            unit_price_minor,
            per,
        } => vec![step(
            format!("{quantity} at {unit_price_minor} per {per}"),
            quantity,
            *unit_price_minor,
            *per,
        )],
        Pricing::Tiered { per, tiers } => {
            let mut steps = Vec::new();
            let mut below = 0;
            for t in tiers {
                if below >= quantity {
                    break;
                }
                let top = t.up_to.map_or(quantity, |u| u.min(quantity));
                let part = top - below;
                let range = match t.up_to {
                    Some(u) => format!("units {} to {u}", below + 1),
                    None => format!("units above {below}"),
                };
                steps.push(step(
                    format!("{range}: {part} at {} per {per}", t.unit_price_minor),
                    part,
                    t.unit_price_minor,
                    *per,
                ));
                below = top;
            }
            steps
        }
        Pricing::Volume { per, tiers } => {
            let t = tiers
                .iter()
                .find(|t| t.up_to.is_none_or(|u| quantity <= u))
                .or(tiers.last())
                .ok_or("a volume rule without tiers")?;
            let reach = match t.up_to {
                Some(u) => format!("up to {u}"),
                None => "the top tier".into(),
            };
            vec![step(
                format!(
                    "all {quantity} at the price of {reach}: {} per {per}",
                    t.unit_price_minor
                ),
                quantity,
                t.unit_price_minor,
                *per,
            )]
        }
        Pricing::TimeOfDay {
            per,
            utc_offset_minutes,
            windows,
            default_unit_price_minor,
        } => {
            let start = start.ok_or("a time-of-day rule prices lines with a start")?;
            if quantity > 366 * 1440 {
                return Err("a time-of-day line covers at most 366 days of minutes".into());
            }
            // The window of each minute of the day (`windows.len()`: none).
            let mut window_of = [windows.len(); 1440];
            for (i, w) in windows.iter().enumerate() {
                let (from, to) = (hhmm(&w.from, "from")?, hhmm(&w.to, "to")?);
                for m in window_minutes(from, to) {
                    window_of[m as usize] = i;
                }
            }
            let mut by_window = vec![0_i64; windows.len() + 1];
            let local = start + Duration::minutes(i64::from(*utc_offset_minutes));
            let mut minute = (local.hour() * 60 + local.minute()) as usize;
            for _ in 0..quantity {
                by_window[window_of[minute]] += 1;
                minute = (minute + 1) % 1440;
            }
            let mut steps = Vec::new();
            for (i, n) in by_window.into_iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let (what, price) = match windows.get(i) {
                    Some(w) => (format!("{}-{}", w.from, w.to), w.unit_price_minor),
                    None => ("outside the windows".to_string(), *default_unit_price_minor),
                };
                steps.push(step(
                    format!("{n} minutes {what} at {price} per {per}"),
                    n,
                    price,
                    *per,
                ));
            }
            steps
        }
    })
}

/// A rule as selection sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Priority (higher wins).
    pub priority: i32,
    /// Whether it is a tenant's own.
    pub tenant_own: bool,
    /// When it was made (later wins a tie).
    pub created_at: NaiveDateTime,
}

/// The index of the rule that prices a line among those that apply.
pub fn choose(rules: &[Candidate]) -> Option<usize> {
    (0..rules.len()).max_by(|a, b| {
        let (x, y) = (&rules[*a], &rules[*b]);
        (x.priority, x.tenant_own, x.created_at).cmp(&(y.priority, y.tenant_own, y.created_at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn total(steps: &[Step]) -> i64 {
        steps.iter().map(|s| s.amount_minor).sum()
    }

    fn tiers(spec: &[(Option<i64>, i64)]) -> Vec<Tier> {
        spec.iter()
            .map(|(u, p)| Tier {
                up_to: *u,
                unit_price_minor: *p,
            })
            .collect()
    }

    #[test]
    fn per_use_and_fixed_price_a_line_with_one_rounding() {
        let hourly = Pricing::PerUse {
            unit_price_minor: 120,
            per: 60,
        };
        assert_eq!(total(&price(&hourly, 90, None).unwrap()), 180);
        // 1 minute at 1.20 an hour is 2 fen exactly; 1.25 an hour rounds.
        assert_eq!(total(&price(&hourly, 1, None).unwrap()), 2);
        let odd = Pricing::PerUse {
            unit_price_minor: 125,
            per: 60,
        };
        assert_eq!(total(&price(&odd, 6, None).unwrap()), 13); // 12.5 -> 13
        let fixed = Pricing::Fixed { amount_minor: 500 };
        assert_eq!(total(&price(&fixed, 7, None).unwrap()), 500);
        assert_eq!(total(&price(&fixed, 0, None).unwrap()), 0);
        assert!(price(&hourly, -1, None).is_err());
    }

    #[test]
    fn tiered_prices_each_part_and_volume_the_whole_at_the_tier_reached() {
        let t = tiers(&[(Some(100), 10), (Some(1_000), 8), (None, 5)]);
        let graduated = Pricing::Tiered {
            per: 1,
            tiers: t.clone(),
        };
        let steps = price(&graduated, 1_500, None).unwrap();
        assert_eq!(
            steps.iter().map(|s| s.quantity).collect::<Vec<_>>(),
            [100, 900, 500]
        );
        assert_eq!(total(&steps), 1_000 + 7_200 + 2_500);
        assert_eq!(total(&price(&graduated, 100, None).unwrap()), 1_000);
        assert_eq!(price(&graduated, 100, None).unwrap().len(), 1);
        let volume = Pricing::Volume { per: 1, tiers: t };
        assert_eq!(total(&price(&volume, 1_500, None).unwrap()), 7_500);
        assert_eq!(total(&price(&volume, 1_000, None).unwrap()), 8_000);
        assert_eq!(total(&price(&volume, 100, None).unwrap()), 1_000);
        assert!(Pricing::Tiered {
            per: 1,
            tiers: tiers(&[(Some(10), 1), (Some(5), 1), (None, 1)])
        }
        .check()
        .is_err());
        assert!(Pricing::Volume {
            per: 1,
            tiers: tiers(&[(None, 1), (Some(5), 1)])
        }
        .check()
        .is_err());
    }

    #[test]
    fn time_of_day_splits_minutes_by_local_window_across_midnight() {
        // Peak 08:00-20:00 at 3.00/h, night 23:00-06:00 at 0.60/h, else 1.20/h; UTC+8.
        let p = Pricing::TimeOfDay {
            per: 60,
            utc_offset_minutes: 480,
            windows: vec![
                Window {
                    from: "08:00".into(),
                    to: "20:00".into(),
                    unit_price_minor: 300,
                },
                Window {
                    from: "23:00".into(),
                    to: "06:00".into(),
                    unit_price_minor: 60,
                },
            ],
            default_unit_price_minor: 120,
        };
        p.check().unwrap();
        // 11:00 UTC is 19:00 local: 60 peak, 180 default (20-23), 120 night.
        let steps = price(&p, 360, Some(at("2026-12-01 11:00"))).unwrap();
        let q: Vec<i64> = steps.iter().map(|s| s.quantity).collect();
        assert_eq!(q, [60, 120, 180]);
        assert_eq!(total(&steps), 300 + 120 + 360);
        assert!(price(&p, 10, None).is_err());
        let overlapping = Pricing::TimeOfDay {
            per: 60,
            utc_offset_minutes: 0,
            windows: vec![
                Window {
                    from: "08:00".into(),
                    to: "12:00".into(),
                    unit_price_minor: 1,
                },
                Window {
                    from: "11:00".into(),
                    to: "13:00".into(),
                    unit_price_minor: 1,
                },
            ],
            default_unit_price_minor: 1,
        };
        assert!(overlapping.check().is_err());
        assert!(hhmm("24:01", "to").is_err() && hhmm("7:00", "from").is_err());
    }

    #[test]
    fn the_highest_priority_wins_then_the_tenants_own_then_the_newest() {
        let c = |priority, tenant_own, created: &str| Candidate {
            priority,
            tenant_own,
            created_at: at(created),
        };
        assert_eq!(choose(&[]), None);
        let rules = [
            c(10, false, "2026-01-01 00:00"),
            c(20, false, "2026-01-01 00:00"),
            c(20, true, "2025-01-01 00:00"),
            c(5, true, "2027-01-01 00:00"),
        ];
        assert_eq!(choose(&rules), Some(2));
        let tie = [
            c(1, false, "2026-01-01 00:00"),
            c(1, false, "2026-02-01 00:00"),
        ];
        assert_eq!(choose(&tie), Some(1));
    }

    #[test]
    fn parameters_are_checked() {
        assert!(Pricing::PerUse {
            unit_price_minor: 1,
            per: 0
        }
        .check()
        .is_err());
        assert!(Pricing::Fixed { amount_minor: -1 }.check().is_err());
        assert!(unit_of("bandwidth").is_err());
        assert_eq!(unit_of("gpu"), Ok("GPU-minutes"));
        let parsed: Pricing = serde_json::from_value(
            serde_json::json!({"kind": "per_use", "unit_price_minor": 120, "per": 60}),
        )
        .unwrap();
        assert_eq!(parsed.kind(), "per_use");
        assert!(serde_json::from_value::<Pricing>(serde_json::json!({"kind": "free"})).is_err());
    }
}
