//! Invoices: the month one covers, its number, and the tax in a price that
//! includes it.

use super::money::round_div;
use chrono::{Datelike, NaiveDate};

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month(NaiveDate);

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || "month must be YYYY-MM".to_string();
        let (y, m) = raw.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        NaiveDate::from_ymd_opt(y, m, 1)
            .filter(|_| (2000..=9999).contains(&y))
            .map(Month)
            .ok_or_else(bad)
    }

    /// The month a day is in.
    pub fn of(day: NaiveDate) -> Self {
        Month(day.with_day(1).unwrap_or(day))
    }

    /// The month before.
    pub fn previous(self) -> Self {
        Month::of(self.0 - chrono::Duration::days(1))
    }

    /// Its first day.
    pub fn first_day(self) -> NaiveDate {
        self.0
    }

    /// `YYYY-MM`.
    pub fn label(self) -> String {
        self.0.format("%Y-%m").to_string()
    }

    /// The `n`th invoice number of the month: `INV-YYYYMM-NNNNNN`.
    pub fn number(self, n: i64) -> String {
        format!("INV-{}-{n:06}", self.0.format("%Y%m"))
    }
}

/// The tax in a tax-inclusive `total` at `rate_bp` basis points (600 is
/// 6%): total × rate / (10000 + rate), rounded once, half away from zero;
/// `(subtotal, tax)`, which add up to the total.
pub fn split_tax(total: i64, rate_bp: i32) -> (i64, i64) {
    let rate = i128::from(rate_bp);
    let tax = round_div(i128::from(total) * rate, 10_000 + rate);
    let tax = i64::try_from(tax).unwrap_or(0);
    (total - tax, tax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_step_back_over_years_and_number_invoices() {
        let m = Month::parse("2026-01").unwrap();
        assert_eq!(m.previous().label(), "2025-12");
        assert_eq!(m.number(42), "INV-202601-000042");
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "1999-12"] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
        let day = NaiveDate::from_ymd_opt(2026, 3, 31).unwrap();
        assert_eq!(Month::of(day).label(), "2026-03");
        assert_eq!(Month::of(day).previous().label(), "2026-02");
    }

    #[test]
    fn tax_is_taken_out_of_an_inclusive_total_with_one_rounding() {
        assert_eq!(split_tax(10_600, 600), (10_000, 600));
        assert_eq!(split_tax(100, 600), (94, 6)); // 5.66 -> 6
        assert_eq!(split_tax(0, 600), (0, 0));
        assert_eq!(split_tax(-10_600, 600), (-10_000, -600));
        assert_eq!(split_tax(12_345, 0), (12_345, 0));
        let (net, tax) = split_tax(999_999, 1_300);
        assert_eq!(net + tax, 999_999);
    }
}
