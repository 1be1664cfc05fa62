//! Refunds of fulfilled orders to the buyer's balance, full or partial, by
//! operators (`billing:manage`). One above `refund_approval_minor` waits
//! for a second operator's approval. A full refund also takes back what
//! the order granted (the phones it made are deleted in `device` and its
//! quota grant in `user` is revoked first).

use super::{db, Call};
use crate::domain::money::{Currency, Money};
use crate::domain::posting::{Kind, Posting};
use crate::error::{Error, Result};
use crate::repo::refunds::{self, Refund};
use crate::repo::{ledger, orders};
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
}

/// `POST /orders/:id/refunds` (`billing:manage`): `{amount_minor?
/// (default: all not yet refunded), reason}` with an `Idempotency-Key`
/// (required): `201` with the completed refund, `202` when it waits for
/// approval (over `refund_approval_minor`), `200` for a repeated key;
/// `409` unless the order is fulfilled and the amount within what is left.
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

/// Carries out an approved refund: for a full refund the phones the order
/// made deleted and its quota grant revoked (before any money moves), then the money back to the balance,
/// the order's refunded amount and `order.refunded`, in one transaction.
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
