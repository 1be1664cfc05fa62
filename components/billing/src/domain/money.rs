//! Money: an amount in integer minor units (cents, fen) and its ISO 4217
//! currency, never a float. Amounts travel as `amount_minor` integers with a
//! `currency` beside them; a decimal text (`"12.34"`) is only ever shown.
//!
//! **Rounding, stated once:** a price that is not a whole number of minor
//! units (a rate times a quantity) is rounded once, at the end of the line
//! it prices, half away from zero ([`round_div`]); sums of lines add the
//! rounded lines.

use serde::Serialize;
use std::fmt;

/// The currencies billing takes, with their minor-unit exponent (ISO 4217).
const CURRENCIES: &[(&str, u32)] = &[
    ("CNY", 2),
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("SGD", 2),
    ("JPY", 0),
    ("KRW", 0),
];

/// The largest amount of one posting or limit: 10^15 minor units (ten
/// trillion yuan), far inside `i64`, so sums of many never overflow.
pub const MAX_MINOR: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency billing takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Currency(&'static str);

impl Currency {
    /// Parses a code (`CNY`); anything not in the list is refused.
    pub fn parse(raw: &str) -> Result<Self, String> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == raw)
            .map(|(c, _)| Currency(c))
            .ok_or_else(|| {
                let known: Vec<&str> = CURRENCIES.iter().map(|(c, _)| *c).collect();
                format!("currency must be one of {}", known.join(", "))
            })
    }

    /// The code.
    pub fn code(self) -> &'static str {
        self.0
    }

    /// Digits after the decimal point.
    pub fn exponent(self) -> u32 {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map_or(2, |(_, e)| *e)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An amount of money: minor units and currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// An amount within ±[`MAX_MINOR`].
    pub fn new(minor: i64, currency: Currency) -> Result<Self, String> {
        if minor.checked_abs().is_none_or(|a| a > MAX_MINOR) {
            return Err(format!(
                "amount_minor must be within ±{MAX_MINOR} minor units"
            ));
        }
        Ok(Money { minor, currency })
    }

    /// A positive amount (what most postings move).
    pub fn positive(minor: i64, currency: Currency) -> Result<Self, String> {
        if minor <= 0 {
            return Err("amount_minor must be a positive whole number of minor units".into());
        }
        Self::new(minor, currency)
    }

    /// Minor units.
    pub fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The decimal text of an amount: `-12.34` for -1234 fen, `1200` yen.
    pub fn display(minor: i64, currency: Currency) -> String {
        let e = currency.exponent();
        if e == 0 {
            return minor.to_string();
        }
        let unit = 10_i128.pow(e);
        let m = i128::from(minor);
        let sign = if m < 0 { "-" } else { "" };
        let (whole, frac) = (m.abs() / unit, m.abs() % unit);
        format!("{sign}{whole}.{frac:0width$}", width = e as usize)
    }

    /// The minor units of a non-negative decimal text in `currency` (the
    /// inverse of [`Money::display`]: `12.34`, `12.3` or `12` for 1234 fen
    /// … 1200); more decimals than the currency has are refused, never
    /// rounded.
    pub fn parse_decimal(raw: &str, currency: Currency) -> Result<i64, String> {
        let bad = || format!("{raw:?} is not an amount of {currency}");
        let e = currency.exponent() as usize;
        let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (raw.contains('.') && !digits(frac)) || frac.len() > e {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let frac: i64 = format!("{frac:0<e$}").parse().unwrap_or(0);
        whole
            .checked_mul(10_i64.pow(e as u32))
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            Money::display(self.minor, self.currency),
            self.currency
        )
    }
}

/// `num / den` rounded half away from zero: the one rounding rule of
/// billing. `den` must be positive.
pub fn round_div(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0);
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny() -> Currency {
        Currency::parse("CNY").unwrap()
    }

    #[test]
    fn currencies_are_iso_codes_from_the_list_only() {
        assert_eq!(cny().code(), "CNY");
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        for bad in ["cny", "XXX", "", "CNYY", "¥"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_are_bounded_and_postings_positive() {
        assert!(Money::new(MAX_MINOR, cny()).is_ok());
        assert!(Money::new(-MAX_MINOR, cny()).is_ok());
        assert!(Money::new(MAX_MINOR + 1, cny()).is_err());
        assert!(Money::new(i64::MIN, cny()).is_err());
        assert!(Money::positive(0, cny()).is_err());
        assert!(Money::positive(-1, cny()).is_err());
        assert_eq!(Money::positive(1, cny()).unwrap().minor(), 1);
    }

    #[test]
    fn amounts_show_with_their_currency_exponent() {
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::display(1234, cny()), "12.34");
        assert_eq!(Money::display(-1234, cny()), "-12.34");
        assert_eq!(Money::display(5, cny()), "0.05");
        assert_eq!(Money::display(-5, cny()), "-0.05");
        assert_eq!(Money::display(0, cny()), "0.00");
        assert_eq!(Money::display(1200, jpy), "1200");
        assert_eq!(Money::new(-1, cny()).unwrap().to_string(), "-0.01 CNY");
    }

    #[test]
    fn rounding_is_half_away_from_zero_once() {
        assert_eq!(round_div(5, 2), 3);
        assert_eq!(round_div(-5, 2), -3);
        assert_eq!(round_div(4, 3), 1);
        assert_eq!(round_div(-4, 3), -1);
        assert_eq!(round_div(149, 100), 1);
        assert_eq!(round_div(150, 100), 2);
        assert_eq!(round_div(0, 7), 0);
        // 90 minutes at 1.00 CNY an hour is 150 fen exactly.
        assert_eq!(round_div(90 * 100, 60), 150);
        // 1 minute at 1.00 an hour is 1.666... fen: 2.
        assert_eq!(round_div(100, 60), 2);
    }
}
