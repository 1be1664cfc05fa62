//! Operators' postings: a recorded offline recharge, a reward, a
//! correction, a manual charge, hold, release or refund, each one balanced
//! ledger transaction with who made it and why (`billing:adjust`). An
//! `Idempotency-Key` is required: money is never moved twice by a retry.

use super::{currency, db, visible_owner, Call};
use crate::domain::money::Money;
use crate::domain::posting::{Kind, Posting};
use crate::error::{Error, Result};
use crate::repo::ledger::{self, NewTransaction, Posted, Transaction};
use platform::events::catalogue::BALANCE_ADJUSTED;
use platform::events::payload::LedgerPosting;
use platform::input::Text;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spin_sdk::http::Response;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostingInput {
    user_id: String,
    kind: String,
    amount_minor: i64,
    currency: String,
    reason: String,
    #[serde(default)]
    reference: Option<String>,
}

/// The longest reference.
const MAX_REFERENCE: usize = 200;

/// `POST /admin/postings` (`billing:adjust`): `{user_id, kind,
/// amount_minor, currency, reason, reference?}` with an `Idempotency-Key`;
/// `201` with the transaction and its entries, `200` with the same for a
/// repeated key, `409 insufficient_balance` when a balance would go below
/// its floor (nothing recorded), `409 idempotency_key_reused` for a key
/// used for another request.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: PostingInput = call.body()?;
    let user = Uuid::parse_str(&input.user_id)
        .map_err(|_| Error::Invalid("user_id must be a user's UUID".into()))?;
    let kind = Kind::parse(&input.kind)
        .ok()
        .filter(|k| k.by_operator())
        .ok_or_else(|| {
            Error::Invalid(
                "kind must be one of recharge, charge, freeze, unfreeze, settle, refund, reward, adjustment"
                    .into(),
            )
        })?;
    let amount =
        Money::new(input.amount_minor, currency(&input.currency)?).map_err(Error::Invalid)?;
    let posting = Posting::new(kind, amount).map_err(Error::Invalid)?;
    let reason = Text::parse(&input.reason, "reason", 500)?;
    let reference = match input.reference {
        None => None,
        Some(r) => Some(Text::parse(&r, "reference", MAX_REFERENCE)?),
    };
    let key = platform::http::idempotency_key(call.req)?.ok_or_else(|| {
        Error::Invalid("an Idempotency-Key header is required to move money".into())
    })?;
    let fingerprint = hex::encode(Sha256::digest(
        serde_json::json!([
            user,
            kind.name(),
            amount.minor(),
            amount.currency().code(),
            reason.as_str(),
            reference.as_ref().map(Text::as_str)
        ])
        .to_string(),
    ));
    let db = db()?;
    let owner = visible_owner(&db, caller, user)?;
    if owner.status == "deleted" {
        return Err(Error::Conflict("the user is deleted".into()));
    }
    let scoped_key = format!("posting:{}:{key}", caller.user_id);
    let new = NewTransaction {
        posting: &posting,
        user,
        tenant: owner.tenant_id,
        actor: Some(caller.user_id),
        reason: reason.as_str(),
        reference: reference.as_ref().map(Text::as_str),
        key: &scoped_key,
        fingerprint: &fingerprint,
        request_id: &call.ctx.request_id,
    };
    let (status, t) = db.transaction(|tx| match ledger::post(tx, &new)? {
        Posted::New(t) => {
            announce(tx, &t)?;
            super::effects::after_movement(
                tx,
                user,
                owner.tenant_id,
                amount.currency(),
                t.id,
                &call.ctx.request_id,
            )?;
            Ok((201, t))
        }
        Posted::Repeat(t) => Ok((200, t)),
        Posted::KeyReused => Err(Error::KeyReused),
        Posted::Insufficient => Err(Error::Insufficient),
    })?;
    if status == 201 {
        platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    }
    Ok(platform::http::json(status, &t))
}

/// `balance.adjusted` for a transaction, in `tx`.
fn announce(tx: &platform::db::Db, t: &Transaction) -> Result<()> {
    let balances = crate::repo::accounts::balances(tx, t.user_id)?;
    let now = balances.iter().find(|b| b.currency == t.currency);
    let payload = LedgerPosting {
        transaction_id: t.id,
        user_id: t.user_id,
        tenant_id: t.tenant_id,
        kind: t.kind.clone(),
        currency: t.currency.clone(),
        amount_minor: t.amount_minor,
        available_minor: now.map_or(0, |b| b.available_minor),
        frozen_minor: now.map_or(0, |b| b.frozen_minor),
        actor_id: t.actor_id,
        reason: t.reason.clone(),
        reference: t.reference.clone(),
    };
    platform::outbox::enqueue(tx, &BALANCE_ADJUSTED, &t.id.to_string(), 1, &payload)?;
    Ok(())
}
