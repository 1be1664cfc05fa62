//! Per-minute metering of device time: what a run owes in total, and what
//! the next charge is. The total is always recomputed from the run's
//! length and its price, and the charge is the total minus what was
//! charged, so splitting a run over ticks, restarts or repeated events
//! never changes what it costs in the end.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::round_div;

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
