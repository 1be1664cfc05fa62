//! What follows any movement of a user's balance, in its transaction:
//! money that arrived pays what they owe for usage first (a `collect`),
//! and a fall of their balance to low or exhausted is announced once
//! (`balance.low`, `balance.exhausted`); money that ends an exhaustion
//! lifts its suspension (`balance.restored`).

use crate::domain::money::{Currency, Money};
use crate::domain::posting::{collectable, fell, standing, Kind, Posting};
use crate::error::{Error, Result};
use crate::repo::{accounts, ledger, metering};
use platform::db::Db;
use platform::events::catalogue::{EventType, BALANCE_EXHAUSTED, BALANCE_LOW, BALANCE_RESTORED};
use platform::events::payload::{BalanceAlert, BalanceSuspension};
use uuid::Uuid;

/// The low-balance threshold in minor units (`low_balance_minor`, of
/// what may be spent: available plus credit limit).
pub fn threshold() -> Result<i64> {
    platform::var("low_balance_minor")?.parse().map_err(|_| {
        Error::Problem(platform::Problem::internal(
            "low_balance_minor is not an integer",
        ))
    })
}

/// Collects what is owed and announces a fall, after transaction `trigger`
/// moved `user`'s balance in `currency`.
pub fn after_movement(
    tx: &Db,
    user: Uuid,
    tenant: Option<Uuid>,
    currency: Currency,
    trigger: Uuid,
    request_id: &str,
) -> Result<()> {
    let now = |tx: &Db| -> Result<accounts::Balance> {
        accounts::balances(tx, user)?
            .into_iter()
            .find(|b| b.currency == currency.code())
            .ok_or(Error::NotFound("balance"))
    };
    let mut b = now(tx)?;
    let c = collectable(b.available_minor, b.owed_minor);
    if c > 0 {
        let posting = Posting::new(
            Kind::Collect,
            Money::positive(c, currency).map_err(Error::Invalid)?,
        )
        .map_err(Error::Invalid)?;
        let key = format!("collect:{trigger}");
        let posted = ledger::post(
            tx,
            &ledger::NewTransaction {
                posting: &posting,
                user,
                tenant,
                actor: None,
                reason: "owed usage paid from the balance",
                reference: Some(&trigger.to_string()),
                key: &key,
                fingerprint: &key,
                request_id,
            },
        )?;
        if matches!(posted, ledger::Posted::Insufficient) {
            return Err(Error::Insufficient);
        }
        b = now(tx)?;
    }
    let threshold = threshold()?;
    let state = standing(
        b.available_minor,
        b.credit_limit_minor,
        b.owed_minor,
        threshold,
    );
    let old = metering::alert_state(tx, user, currency.code(), state)?;
    if old == "exhausted" && state != "exhausted" {
        if let Some(lifted) = metering::restore(tx, user, currency.code())? {
            announce_suspension(tx, &BALANCE_RESTORED, &lifted)?;
        }
    }
    if fell(&old, state) {
        let event = if state == "exhausted" {
            &BALANCE_EXHAUSTED
        } else {
            &BALANCE_LOW
        };
        let payload = BalanceAlert {
            user_id: user,
            tenant_id: tenant,
            currency: currency.code().into(),
            state: state.into(),
            available_minor: b.available_minor,
            credit_limit_minor: b.credit_limit_minor,
            owed_minor: b.owed_minor,
            threshold_minor: threshold,
        };
        platform::outbox::enqueue(
            tx,
            event,
            &format!("{user}:{}", currency.code()),
            1,
            &payload,
        )?;
    }
    Ok(())
}

/// `balance.suspended` / `balance.restored` for a balance, in `tx`.
pub fn announce_suspension(tx: &Db, event: &EventType, s: &metering::Suspension) -> Result<()> {
    let payload = BalanceSuspension {
        user_id: s.user_id,
        currency: s.currency.clone(),
        suspended: event == &platform::events::catalogue::BALANCE_SUSPENDED,
        exhausted_since: Some(s.exhausted_since.clone()),
    };
    platform::outbox::enqueue(
        tx,
        event,
        &format!("{}:{}", s.user_id, s.currency),
        s.version,
        &payload,
    )?;
    Ok(())
}
