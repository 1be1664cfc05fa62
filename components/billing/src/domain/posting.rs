//! What each kind of money movement does to which accounts: one fixed,
//! balanced template per kind, so no caller can name accounts or make a
//! transaction that does not sum to zero.
//!
//! Signs: an entry's amount is added to its account's balance. A user's
//! `available` and `frozen` balances are what the platform owes them;
//! `provider_clearing` goes negative as money comes in from payment
//! providers, `revenue` grows as it is earned, `promotions` and
//! `adjustments` go negative by what the platform gave away or corrected
//! in a user's favour. The sum over every account is always zero.

use super::money::Money;

/// An account a template names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// The user's spendable balance.
    Available,
    /// The user's balance held for something pending (an order, a charge).
    Frozen,
    /// What the user owes for usage their balance did not cover (never
    /// positive).
    Owed,
    /// The platform's earned revenue.
    Revenue,
    /// Money received from (or owed to) payment providers.
    ProviderClearing,
    /// What the platform gave away (rewards).
    Promotions,
    /// Corrections by operators.
    Adjustments,
}

impl Account {
    /// The `accounts.kind` value.
    pub fn kind(self) -> &'static str {
        match self {
            Account::Available => "available",
            Account::Frozen => "frozen",
            Account::Owed => "owed",
            Account::Revenue => "revenue",
            Account::ProviderClearing => "provider_clearing",
            Account::Promotions => "promotions",
            Account::Adjustments => "adjustments",
        }
    }

    /// Whether the account belongs to a user (else to the platform).
    pub fn is_users(self) -> bool {
        matches!(self, Account::Available | Account::Frozen | Account::Owed)
    }
}

/// A kind of movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Money paid in (by a provider, or offline and recorded by an operator).
    Recharge,
    /// A charge taken from the available balance.
    Charge,
    /// Part of the available balance held.
    Freeze,
    /// A hold released back to the available balance.
    Unfreeze,
    /// A hold taken as revenue.
    Settle,
    /// Revenue given back to the available balance.
    Refund,
    /// A gift to the available balance.
    Reward,
    /// An operator's correction, either way (the only signed kind).
    Adjustment,
    /// Metered usage: from the available balance as far as it (and its
    /// credit limit) goes, the rest owed.
    Usage,
    /// What is owed, taken from the available balance once it has money.
    Collect,
    /// Money paid back out of the available balance through the provider
    /// it came from (a refund to the card follows its `refund`).
    Payout,
}

/// Every kind, with its name.
pub const KINDS: &[(Kind, &str)] = &[
    (Kind::Recharge, "recharge"),
    (Kind::Charge, "charge"),
    (Kind::Freeze, "freeze"),
    (Kind::Unfreeze, "unfreeze"),
    (Kind::Settle, "settle"),
    (Kind::Refund, "refund"),
    (Kind::Reward, "reward"),
    (Kind::Adjustment, "adjustment"),
    (Kind::Usage, "usage"),
    (Kind::Collect, "collect"),
    (Kind::Payout, "payout"),
];

impl Kind {
    /// Parses a kind's name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        KINDS
            .iter()
            .find(|(_, n)| *n == raw)
            .map(|(k, _)| *k)
            .ok_or_else(|| {
                let names: Vec<&str> = KINDS.iter().map(|(_, n)| *n).collect();
                format!("kind must be one of {}", names.join(", "))
            })
    }

    /// The name.
    pub fn name(self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("adjustment", |(_, n)| n)
    }

    /// Whether the amount may be negative.
    pub fn signed(self) -> bool {
        self == Kind::Adjustment
    }

    /// Whether an operator may post it by hand (`usage`, `collect` and
    /// `payout` are billing's own).
    pub fn by_operator(self) -> bool {
        !matches!(self, Kind::Usage | Kind::Collect | Kind::Payout)
    }
}

/// One leg of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    /// Which account.
    pub account: Account,
    /// Added to its balance, in minor units.
    pub amount: i64,
}

/// A balanced movement of `amount` of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// What it is.
    pub kind: Kind,
    /// Its legs, summing to zero.
    pub legs: Vec<Leg>,
    /// The amount and currency.
    pub amount: Money,
}

impl Posting {
    /// The legs of `kind` moving `amount` (positive, except for an
    /// adjustment, which takes a sign and may not be zero).
    pub fn new(kind: Kind, amount: Money) -> Result<Self, String> {
        let x = amount.minor();
        if x == 0 || (x < 0 && !kind.signed()) {
            return Err(if kind.signed() {
                "amount_minor must not be zero".into()
            } else {
                "amount_minor must be a positive whole number of minor units".into()
            });
        }
        let (from, to) = match kind {
            Kind::Recharge => (Account::ProviderClearing, Account::Available),
            Kind::Charge => (Account::Available, Account::Revenue),
            Kind::Freeze => (Account::Available, Account::Frozen),
            Kind::Unfreeze => (Account::Frozen, Account::Available),
            Kind::Settle => (Account::Frozen, Account::Revenue),
            Kind::Refund => (Account::Revenue, Account::Available),
            Kind::Reward => (Account::Promotions, Account::Available),
            Kind::Adjustment => (Account::Adjustments, Account::Available),
            Kind::Usage => return Ok(Self::usage(amount, x)),
            Kind::Collect => (Account::Available, Account::Owed),
            Kind::Payout => (Account::Available, Account::ProviderClearing),
        };
        Ok(Posting {
            kind,
            legs: vec![
                Leg {
                    account: from,
                    amount: -x,
                },
                Leg {
                    account: to,
                    amount: x,
                },
            ],
            amount,
        })
    }

    /// Metered usage of `amount` (positive) when `spendable` (available
    /// plus credit limit) may be spent: as much as that covers from the
    /// available balance, the rest owed; all of it is revenue.
    pub fn usage(amount: Money, spendable: i64) -> Self {
        let x = amount.minor();
        let covered = x.min(spendable.max(0));
        let mut legs = Vec::with_capacity(3);
        if covered > 0 {
            legs.push(Leg {
                account: Account::Available,
                amount: -covered,
            });
        }
        if x > covered {
            legs.push(Leg {
                account: Account::Owed,
                amount: -(x - covered),
            });
        }
        legs.push(Leg {
            account: Account::Revenue,
            amount: x,
        });
        Posting {
            kind: Kind::Usage,
            legs,
            amount,
        }
    }

    /// What the user's balances (available, frozen and owed together) gained.
    pub fn users_side(&self) -> i64 {
        self.legs
            .iter()
            .filter(|l| l.account.is_users())
            .map(|l| l.amount)
            .sum()
    }
}

/// Where a balance stands: `exhausted` when usage is owed, `low` when
/// what may be spent is below the threshold, `ok` otherwise.
pub fn standing(available: i64, credit_limit: i64, owed: i64, threshold: i64) -> &'static str {
    if owed < 0 {
        "exhausted"
    } else if available + credit_limit < threshold {
        "low"
    } else {
        "ok"
    }
}

/// Whether going from standing `old` to `new` is a fall worth telling.
pub fn fell(old: &str, new: &str) -> bool {
    let rank = |s: &str| match s {
        "exhausted" => 2,
        "low" => 1,
        _ => 0,
    };
    rank(new) > rank(old)
}

/// What of an owed amount the available balance pays now: its positive
/// part, up to what is owed (credit is not used to pay debts).
pub fn collectable(available: i64, owed: i64) -> i64 {
    available.max(0).min(-owed.min(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    fn cny(x: i64) -> Money {
        Money::new(x, Currency::parse("CNY").unwrap()).unwrap()
    }

    #[test]
    fn usage_takes_what_the_balance_covers_and_owes_the_rest() {
        let split = |x, spendable| {
            Posting::usage(cny(x), spendable)
                .legs
                .iter()
                .map(|l| (l.account, l.amount))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            split(150, 1000),
            [(Account::Available, -150), (Account::Revenue, 150)]
        );
        assert_eq!(
            split(150, 100),
            [
                (Account::Available, -100),
                (Account::Owed, -50),
                (Account::Revenue, 150)
            ]
        );
        assert_eq!(
            split(150, -20),
            [(Account::Owed, -150), (Account::Revenue, 150)]
        );
        assert_eq!(Posting::usage(cny(150), 100).users_side(), -150);
        assert!(!Kind::Usage.by_operator() && !Kind::Collect.by_operator());
        assert!(!Kind::Payout.by_operator());
        assert!(Kind::Charge.by_operator());
    }

    #[test]
    fn every_kind_is_balanced_and_touches_the_user() {
        for (kind, name) in KINDS {
            assert_eq!(Kind::parse(name), Ok(*kind));
            assert_eq!(kind.name(), *name);
            let p = Posting::new(*kind, cny(1234)).unwrap();
            assert_eq!(p.legs.iter().map(|l| l.amount).sum::<i64>(), 0, "{name}");
            assert!(p.legs.iter().any(|l| l.account.is_users()), "{name}");
        }
        assert!(Kind::parse("steal").is_err());
    }

    #[test]
    fn the_users_side_says_what_they_gained() {
        let side = |k| Posting::new(k, cny(100)).unwrap().users_side();
        assert_eq!(side(Kind::Recharge), 100);
        assert_eq!(side(Kind::Charge), -100);
        assert_eq!(side(Kind::Freeze), 0);
        assert_eq!(side(Kind::Unfreeze), 0);
        assert_eq!(side(Kind::Settle), -100);
        assert_eq!(side(Kind::Refund), 100);
        assert_eq!(side(Kind::Reward), 100);
        assert_eq!(side(Kind::Collect), 0);
        assert_eq!(side(Kind::Payout), -100);
        assert_eq!(
            Posting::new(Kind::Adjustment, cny(-7))
                .unwrap()
                .users_side(),
            -7
        );
    }

    #[test]
    fn standing_falls_to_low_then_exhausted_and_debts_are_paid_from_real_money() {
        assert_eq!(standing(5_000, 0, 0, 1_000), "ok");
        assert_eq!(standing(500, 0, 0, 1_000), "low");
        assert_eq!(standing(500, 600, 0, 1_000), "ok");
        assert_eq!(standing(0, 0, -1, 1_000), "exhausted");
        assert!(fell("ok", "low") && fell("low", "exhausted") && fell("ok", "exhausted"));
        assert!(!fell("low", "low") && !fell("exhausted", "ok") && !fell("low", "ok"));
        assert_eq!(collectable(1_000, -300), 300);
        assert_eq!(collectable(200, -300), 200);
        assert_eq!(collectable(-50, -300), 0);
        assert_eq!(collectable(1_000, 0), 0);
    }

    #[test]
    fn only_adjustments_take_a_sign_and_nothing_moves_zero() {
        assert!(Posting::new(Kind::Charge, cny(-1)).is_err());
        assert!(Posting::new(Kind::Charge, cny(0)).is_err());
        assert!(Posting::new(Kind::Adjustment, cny(0)).is_err());
        let a = Posting::new(Kind::Adjustment, cny(-50)).unwrap();
        assert_eq!(a.legs[1].account, Account::Available);
        assert_eq!(a.legs[1].amount, -50);
    }
}
