//! Refunds of fulfilled orders, full or partial, by operators
//! (`billing:manage`): to the buyer's balance, or back through the
//! provider that took the payment (Stripe: to the card). One above
//! `refund_approval_minor` waits for a second operator's approval. A full
//! refund also takes back what the order granted (the phones it made are
//! deleted in `device` and its quota grant in `user` is revoked first).

use super::{db, Call};
use crate::domain::money::{Currency, Money};
use crate::domain::posting::{Kind, Posting};
use crate::error::{Error, Result};
use crate::repo::refunds::{self, Refund};
use crate::repo::{ledger, orders, payments};
use platform::events::catalogue::ORDER_REFUNDED;
use platform::input::Text;
use serde::Deserialize;
use spin_sdk::http::{Method, Response};
use uuid::Uuid;

/// Refunds above this (minor units) need a second operator
/// (`refund_approval_minor`).
fn threshold() -> Result<i64> {
    platform::var("refund_approval_minor")?
        .parse()
        .map_err(|_| {
            Error::Problem(platform::Problem::internal(
                "refund_approval_minor is not an integer",
            ))
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundInput {
    #[serde(default)]
    amount_minor: Option<i64>,
    reason: String,
    #[serde(default)]
    to: Option<String>,
}

/// `POST /orders/:id/refunds` (`billing:manage`): `{amount_minor?
/// (default: all not yet refunded), reason, to? (balance, provider)}` with
/// an `Idempotency-Key` (required): `201` with the completed refund, `202`
/// when it waits for approval (over `refund_approval_minor`), `200` for a
/// repeated key (which also carries out one a provider could not be
/// reached for); `409` unless the order is fulfilled and the amount within
/// what is left; `409 refund_refused` when the provider refused it.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: RefundInput = call.body()?;
    let reason = Text::parse(&input.reason, "reason", 500)?;
    if input.amount_minor.is_some_and(|a| a <= 0) {
        return Err(Error::Invalid("amount_minor must be positive".into()));
    }
    let key = platform::http::idempotency_key(call.req)?
        .ok_or_else(|| Error::Invalid("an Idempotency-Key header is required to refund".into()))?;
    let threshold = threshold()?;
    let id = call.id("id", "order")?;
    let db = db()?;
    let o = orders::find(&db, id)?.ok_or(Error::NotFound("order"))?;
    super::visible_owner(&db, caller, o.user_id).map_err(|_| Error::NotFound("order"))?;
    if o.status != "fulfilled" {
        return Err(Error::Conflict(format!(
            "the order is {}: only a fulfilled order is refunded",
            o.status
        )));
    }
    let left = o.amount_minor - o.refunded_minor;
    let amount = input.amount_minor.unwrap_or(left);
    if amount <= 0 || amount > left {
        return Err(Error::Conflict(format!(
            "{amount} is more than the {left} left to refund on the order"
        )));
    }
    let destination = destination(&db, &o, input.to.as_deref())?;
    let status = if amount > threshold {
        "pending_approval"
    } else {
        "approved"
    };
    let (r, made) = db.transaction(|tx| {
        Ok::<_, Error>(refunds::request(
            tx,
            &refunds::Request {
                order: o.id,
                amount,
                currency: &o.currency,
                reason: reason.as_str(),
                by: caller.user_id,
                key: &key,
                status,
                destination,
            },
        )?)
    })?;
    drop(db);
    match r.status.as_str() {
        "pending_approval" => Ok(platform::http::json(if made { 202 } else { 200 }, &r)),
        "approved" => {
            let done = carry_out(call, r.id, None)?;
            Ok(platform::http::json(if made { 201 } else { 200 }, &done))
        }
        _ => Ok(platform::http::json(200, &r)),
    }
}

/// `POST /refunds/:id/approve` (`billing:manage`): a second operator (not
/// the one who asked) approves a refund waiting for it, which is then
/// carried out; `200` with it; `409` unless it waits for approval.
pub fn approve(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "refund")?;
    let db = db()?;
    let r = db.transaction(|tx| {
        let r = refunds::lock(tx, id)?.ok_or(Error::NotFound("refund"))?;
        let o = orders::find(tx, r.order_id)?.ok_or(Error::NotFound("refund"))?;
        super::visible_owner(tx, caller, o.user_id).map_err(|_| Error::NotFound("refund"))?;
        if r.status != "pending_approval" {
            return Err(Error::Conflict(format!("the refund is {}", r.status)));
        }
        if r.requested_by == caller.user_id {
            return Err(Error::Forbidden(
                "a refund is approved by another operator than the one who asked",
            ));
        }
        Ok(r)
    })?;
    drop(db);
    let done = carry_out(call, r.id, Some(caller.user_id))?;
    Ok(platform::http::json(200, &done))
}

/// Where a refund of `o` goes: `to` when given and possible; by default
/// back through the provider that took the payment when its refunds are
/// built, else to the balance.
fn destination(db: &platform::db::Db, o: &orders::Order, to: Option<&str>) -> Result<&'static str> {
    let paid = payments::of_order(db, o.id)?.filter(|p| p.status == "succeeded");
    let back = paid
        .as_ref()
        .is_some_and(|p| super::payments::supports_refunds(&p.provider));
    match to {
        None if back => Ok("provider"),
        None | Some("balance") => Ok("balance"),
        Some("provider") if back => Ok("provider"),
        Some("provider") => Err(Error::Conflict(match paid {
            None => "the order was paid from the balance: refund it to the balance".into(),
            Some(p) => format!(
                "refunds back through {} are not built: refund it to the balance",
                p.provider
            ),
        })),
        Some(_) => Err(Error::Invalid("to must be balance or provider".into())),
    }
}

/// For a refund back through the provider: asks it (once; the refund's id
/// is its idempotency key) and records its id, or fails the refund when it
/// refuses.
fn through_provider(r: &Refund, o: &orders::Order) -> Result<()> {
    if r.destination != "provider" || r.provider_ref.is_some() {
        return Ok(());
    }
    let p = payments::of_order(&db()?, o.id)?
        .filter(|p| p.status == "succeeded")
        .ok_or_else(|| Error::Conflict("the order's payment was not received".into()))?;
    match super::payments::refund(&p, r.id, r.amount_minor)? {
        super::payments::Refunded::Accepted(reference) => {
            refunds::accepted(&db()?, r.id, &reference)?;
            Ok(())
        }
        super::payments::Refunded::Refused(why) => {
            refunds::failed(&db()?, r.id, &why)?;
            Err(Error::Problem(platform::Problem::new(
                409,
                "refund_refused",
                format!("refund {}: {why}", r.id),
            )))
        }
        super::payments::Refunded::Unreachable => Err(Error::Problem(
            platform::Problem::unavailable(format!(
                "{} could not be reached: repeat the request (the same Idempotency-Key) to carry refund {} out",
                p.provider, r.id
            )),
        )),
    }
}

/// Carries out an approved refund: one back through the provider asked of
/// it first; for a full refund the phones the order made deleted and its
/// quota grant revoked (before any money moves); then the money back to
/// the balance (and on to the provider: `payout`), the order's refunded
/// amount and `order.refunded`, in one transaction.
fn carry_out(call: &Call, id: Uuid, approver: Option<Uuid>) -> Result<Refund> {
    let (r, o) = {
        let db = db()?;
        let r = refunds::lock(&db, id)?.ok_or(Error::NotFound("refund"))?;
        let o = orders::find(&db, r.order_id)?.ok_or(Error::NotFound("order"))?;
        (r, o)
    };
    if !matches!(r.status.as_str(), "approved" | "pending_approval") {
        return Ok(r);
    }
    through_provider(&r, &o)?;
    let full = o.refunded_minor + r.amount_minor == o.amount_minor;
    if full {
        if !super::orders::release_devices(call.ctx, &o) {
            return Err(Error::Problem(platform::Problem::unavailable(
                "device did not answer deleting the order's phones",
            )));
        }
        if let Some(grant) = o.grant_id {
            let url = format!(
                "http://user.spin.internal/api/v1/user/internal/quotas/grants/{grant}/revoke"
            );
            let resp = platform::http::chain(call.ctx, Method::Post, &url, None)?;
            if !(200..300).contains(resp.status()) {
                return Err(Error::Problem(platform::Problem::unavailable(format!(
                    "user answered {} revoking the order's quota grant",
                    resp.status()
                ))));
            }
        }
    }
    let db = db()?;
    let done = db.transaction(|tx| {
        let r = refunds::lock(tx, id)?.ok_or(Error::NotFound("refund"))?;
        if !matches!(r.status.as_str(), "approved" | "pending_approval") {
            return Ok(r);
        }
        let currency = Currency::parse(&r.currency).map_err(Error::Invalid)?;
        let posting = Posting::new(
            Kind::Refund,
            Money::positive(r.amount_minor, currency).map_err(Error::Invalid)?,
        )
        .map_err(Error::Invalid)?;
        let key = format!("refund:{}", r.id);
        let reason = format!("refund of order {}: {}", o.id, r.reason);
        let posted = ledger::post(
            tx,
            &ledger::NewTransaction {
                posting: &posting,
                user: o.user_id,
                tenant: o.tenant_id,
                actor: Some(approver.unwrap_or(r.requested_by)),
                reason: &reason,
                reference: Some(&format!("order:{}", o.id)),
                key: &key,
                fingerprint: &key,
                request_id: &call.ctx.request_id,
            },
        )?;
        let t = super::recorded(posted)?;
        if r.destination == "provider" {
            // Straight on to the provider: the balance only passes it.
            let payout = Posting::new(
                Kind::Payout,
                Money::positive(r.amount_minor, currency).map_err(Error::Invalid)?,
            )
            .map_err(Error::Invalid)?;
            let key = format!("refund:{}:payout", r.id);
            let posted = ledger::post(
                tx,
                &ledger::NewTransaction {
                    posting: &payout,
                    user: o.user_id,
                    tenant: o.tenant_id,
                    actor: Some(approver.unwrap_or(r.requested_by)),
                    reason: &format!(
                        "paid back to the payer by the provider (refund {})",
                        r.provider_ref.as_deref().unwrap_or_default()
                    ),
                    reference: Some(&format!("order:{}", o.id)),
                    key: &key,
                    fingerprint: &key,
                    request_id: &call.ctx.request_id,
                },
            )?;
            super::recorded(posted)?;
        }
        if !orders::refunded(tx, o.id, r.amount_minor, full)? {
            return Err(Error::Conflict(
                "the order was refunded meanwhile: this refund no longer fits".into(),
            ));
        }
        orders::history(
            tx,
            o.id,
            if full { "refunded" } else { "fulfilled" },
            "done",
            Some(&reason),
        )?;
        refunds::decide(tx, r.id, "completed", approver, Some(t.id))?;
        super::effects::after_movement(
            tx,
            o.user_id,
            o.tenant_id,
            currency,
            t.id,
            &call.ctx.request_id,
        )?;
        let after = orders::find(tx, o.id)?.ok_or(Error::NotFound("order"))?;
        super::orders::announce(tx, &ORDER_REFUNDED, &after)?;
        refunds::lock(tx, id)?.ok_or(Error::NotFound("refund"))
    })?;
    platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    Ok(done)
}
