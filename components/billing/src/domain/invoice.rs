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

/// What a tenant's statement sums: its members' invoices of one month and
/// currency (void ones listed, not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatementTotals {
    /// Invoices counted (not void).
    pub invoices: usize,
    /// Net of tax.
    pub subtotal_minor: i64,
    /// Tax.
    pub tax_minor: i64,
    /// Total, tax included.
    pub total_minor: i64,
    /// Still to pay: what unpaid (issued, overdue) invoices are due.
    pub amount_due_minor: i64,
    /// `empty` (nothing counted), `overdue` (any), `issued` (any still
    /// open), else `paid`.
    pub status: &'static str,
}

/// One member invoice as a statement counts it.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    /// Its status.
    pub status: &'a str,
    /// Net.
    pub subtotal_minor: i64,
    /// Tax.
    pub tax_minor: i64,
    /// Total.
    pub total_minor: i64,
    /// Due at issue.
    pub amount_due_minor: i64,
}

/// Sums members' invoices into a statement.
pub fn statement(members: &[Counted]) -> StatementTotals {
    let mut t = StatementTotals::default();
    let (mut overdue, mut open) = (false, false);
    for m in members.iter().filter(|m| m.status != "void") {
        t.invoices += 1;
        t.subtotal_minor += m.subtotal_minor;
        t.tax_minor += m.tax_minor;
        t.total_minor += m.total_minor;
        if matches!(m.status, "issued" | "overdue") {
            t.amount_due_minor += m.amount_due_minor;
        }
        overdue |= m.status == "overdue";
        open |= m.status == "issued";
    }
    t.status = match (t.invoices, overdue, open) {
        (0, _, _) => "empty",
        (_, true, _) => "overdue",
        (_, _, true) => "issued",
        _ => "paid",
    };
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_counts_what_is_not_void_and_is_as_late_as_its_latest_member() {
        let m = |status, total, due| Counted {
            status,
            subtotal_minor: total - total / 10,
            tax_minor: total / 10,
            total_minor: total,
            amount_due_minor: due,
        };
        let t = statement(&[
            m("paid", 1000, 0),
            m("overdue", 500, 300),
            m("void", 9999, 9999),
        ]);
        assert_eq!(
            (
                t.invoices,
                t.total_minor,
                t.tax_minor,
                t.amount_due_minor,
                t.status
            ),
            (2, 1500, 150, 300, "overdue")
        );
        assert_eq!(
            statement(&[m("paid", 1, 0), m("issued", 2, 2)]).status,
            "issued"
        );
        assert_eq!(statement(&[m("paid", 1, 0)]).status, "paid");
        assert_eq!(statement(&[m("void", 1, 1)]).status, "empty");
        assert_eq!(statement(&[]).status, "empty");
    }

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
