//! Orders and the purchase saga. Buying a plan paid from the balance runs
//! these steps, each idempotent and recorded in `orders.step` before the
//! next begins, so any process resumes a saga a crash interrupted:
//!
//! 1. `created` → `funds_held`: the amount is frozen on the buyer's balance
//!    (refused whole when it does not cover it: `payment_declined`);
//! 2. `funds_held` → `quota_reserved`: a pending quota grant in `user`;
//! 3. `quota_reserved` → `paid`: the frozen amount is settled as revenue;
//! 4. `paid` → `done` (`fulfilled`): the grant is activated: the buyer's
//!    limits are raised; for a plan that includes phones, `paid` →
//!    `granted` first, then
//! 5. `granted` → `done` (`fulfilled`): `device` places and makes them
//!    (keys `order <id> device <n>`, which no client's `Idempotency-Key`
//!    can spell), expiring with the order's period.
//!
//! A step `user` or `device` refuses (no node with room for the phones:
//! `409 no_capacity`), or one that cannot reach them before the order's
//! deadline, is compensated (`compensating` → `done`, `failed`): the phones
//! made deleted, the grant revoked, the frozen amount released or the
//! payment refunded. Nothing is left held. No database connection is held
//! across a call to another component.

use super::{db, scope, uuid_query, visible_owner, Call};
use crate::domain::money::{Currency, Money};
use crate::domain::order::{total, Cycle, Grant, Status};
use crate::domain::posting::{Kind, Posting};
use crate::error::{Error, Result};
use crate::repo::ledger;
use crate::repo::orders::{self, Move, NewOrder, Order};
use crate::repo::payments;
use platform::db::Db;
use platform::events::catalogue::{
    EventType, ORDER_FAILED, ORDER_FULFILLED, ORDER_PAID, PAYMENT_SUCCEEDED,
};
use platform::events::payload::OrderChange;
use platform::http::Ctx;
use serde::Deserialize;
use spin_sdk::http::{Method, Response};
use uuid::Uuid;

const GRANTS: &str = "http://user.spin.internal/api/v1/user/internal/quotas/grants";
const DEVICES: &str = "http://device.spin.internal/api/v1/device/internal/orders/devices";

/// Seconds a saga may wait for `user` before it is compensated
/// (`order_deadline_secs`).
fn deadline_secs() -> Result<i64> {
    platform::var("order_deadline_secs")?
        .parse()
        .ok()
        .filter(|s| (1..=86_400).contains(s))
        .ok_or_else(|| {
            Error::Problem(platform::Problem::internal(
                "order_deadline_secs must be from 1 to 86400",
            ))
        })
}

/// `order.*` / `payment.succeeded` for an order, in `tx`.
pub fn announce(tx: &Db, event: &EventType, o: &Order) -> Result<()> {
    let payload = OrderChange {
        order_id: o.id,
        user_id: o.user_id,
        tenant_id: o.tenant_id,
        plan_id: o.plan_id,
        plan_name: o.plan["name"].as_str().unwrap_or_default().to_string(),
        status: o.status.clone(),
        amount_minor: o.amount_minor,
        refunded_minor: o.refunded_minor,
        currency: o.currency.clone(),
        pay_with: o.pay_with.clone(),
        failure: o.failure.clone(),
        period_end: o.period_end.clone(),
    };
    platform::outbox::enqueue(tx, event, &o.id.to_string(), o.version, &payload)?;
    Ok(())
}

/// Posts a movement of an order's amount on its buyer's balance, in `tx`,
/// with what follows it; `false` when the balance does not cover it.
fn post(tx: &Db, o: &Order, kind: Kind, step: &str, request_id: &str) -> Result<bool> {
    if o.amount_minor == 0 {
        return Ok(true);
    }
    let currency = Currency::parse(&o.currency).map_err(Error::Invalid)?;
    let posting = Posting::new(
        kind,
        Money::positive(o.amount_minor, currency).map_err(Error::Invalid)?,
    )
    .map_err(Error::Invalid)?;
    let key = format!("order:{}:{step}", o.id);
    let reason = format!(
        "order {} ({}): {step}",
        o.id,
        o.plan["name"].as_str().unwrap_or("plan")
    );
    let posted = ledger::post(
        tx,
        &ledger::NewTransaction {
            posting: &posting,
            user: o.user_id,
            tenant: o.tenant_id,
            actor: None,
            reason: &reason,
            reference: Some(&format!("order:{}", o.id)),
            key: &key,
            fingerprint: &key,
            request_id,
        },
    )?;
    if matches!(posted, ledger::Posted::Insufficient) {
        return Ok(false);
    }
    let t = super::recorded(posted)?;
    super::effects::after_movement(tx, o.user_id, o.tenant_id, currency, t.id, request_id)?;
    Ok(true)
}

/// Moves an order on and announces what the move means, in one
/// transaction; whether it was still at `from`.
fn moved(o: &Order, from: &str, to: &str, m: &Move, events: &[&EventType]) -> Result<bool> {
    if let Some(next) = m.status {
        let (now, next) = (
            Status::parse(&o.status).map_err(Error::Invalid)?,
            Status::parse(next).map_err(Error::Invalid)?,
        );
        if now != next && !now.can_become(next) {
            return Err(Error::Conflict(format!(
                "the order is {} and cannot become {}",
                now.name(),
                next.name()
            )));
        }
    }
    let db = db()?;
    db.transaction(|tx| {
        if !orders::advance(tx, o.id, from, to, m)? {
            return Ok(false);
        }
        let after = orders::find(tx, o.id)?.ok_or(Error::NotFound("order"))?;
        for e in events {
            announce(tx, e, &after)?;
        }
        Ok(true)
    })
}

/// What a call to another component answered: done, refused (4xx), or
/// unreachable.
enum Answer {
    Done(serde_json::Value),
    Refused(String),
    Unreachable,
}

fn call_user(ctx: &Ctx, url: &str, body: Option<&serde_json::Value>) -> Answer {
    call_peer(ctx, "user", url, body)
}

fn call_peer(ctx: &Ctx, who: &str, url: &str, body: Option<&serde_json::Value>) -> Answer {
    match platform::http::chain(ctx, Method::Post, url, body) {
        Ok(r) if (200..300).contains(r.status()) => {
            Answer::Done(serde_json::from_slice(r.body()).unwrap_or_default())
        }
        Ok(r) if (400..500).contains(r.status()) => Answer::Refused(format!(
            "{who} answered {}: {}",
            r.status(),
            String::from_utf8_lossy(r.body())
                .chars()
                .take(300)
                .collect::<String>()
        )),
        _ => Answer::Unreachable,
    }
}

/// Runs one step of an order's saga; whether it moved (false: waiting for
/// another component, or finished).
fn step(ctx: &Ctx, o: &Order) -> Result<bool> {
    let rid = &ctx.request_id;
    match o.step.as_str() {
        "created" if o.pay_with == "balance" => hold(ctx, o),
        "created" => start_payment(o),
        "awaiting_payment" => {
            if !orders::past_deadline(&db()?, o.id)? {
                return Ok(false);
            }
            begin_compensation(o, &format!("{TIMED_OUT} waiting for the payment"))
        }
        "funded" => hold(ctx, o),
        "funds_held" => {
            if orders::past_deadline(&db()?, o.id)? {
                return begin_compensation(o, &format!("{TIMED_OUT} reserving quota in user"));
            }
            let grant: Grant = serde_json::from_value(o.plan["quota"].clone())
                .map_err(|e| Error::Invalid(format!("the plan's quota: {e}")))?;
            let body = serde_json::json!({
                "user_id": o.user_id, "idempotency_key": format!("order:{}", o.id), "resources": grant,
            });
            match call_user(ctx, GRANTS, Some(&body)) {
                Answer::Done(g) => {
                    let id = g["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
                    moved(
                        o,
                        "funds_held",
                        "quota_reserved",
                        &Move {
                            grant: id,
                            ..Move::default()
                        },
                        &[],
                    )
                }
                Answer::Refused(why) => begin_compensation(o, &format!("quota refused: {why}")),
                Answer::Unreachable => {
                    orders::attempted(&db()?, o.id)?;
                    Ok(false)
                }
            }
        }
        "quota_reserved" => {
            let db = db()?;
            db.transaction(|tx| {
                if !post(tx, o, Kind::Settle, "settle", rid)? {
                    return Err(Error::Insufficient);
                }
                if orders::advance(
                    tx,
                    o.id,
                    "quota_reserved",
                    "paid",
                    &Move {
                        status: Some("paid"),
                        ..Move::default()
                    },
                )? {
                    let after = orders::find(tx, o.id)?.ok_or(Error::NotFound("order"))?;
                    announce(tx, &ORDER_PAID, &after)?;
                    announce(tx, &PAYMENT_SUCCEEDED, &after)?;
                }
                Ok(true)
            })
        }
        "paid" => {
            if orders::past_deadline(&db()?, o.id)? {
                return begin_compensation(o, &format!("{TIMED_OUT} granting quota in user"));
            }
            let Some(grant) = o.grant_id else {
                return begin_compensation(o, "no quota grant recorded");
            };
            match call_user(ctx, &format!("{GRANTS}/{grant}/activate"), None) {
                Answer::Done(_) => {
                    let cycle = Cycle::parse(o.plan["cycle"].as_str().unwrap_or("monthly"))
                        .map_err(Error::Invalid)?;
                    let now = chrono::Utc::now().naive_utc();
                    let end = cycle.end(now, u32::try_from(o.cycles).unwrap_or(1));
                    if includes_devices(o) {
                        return moved(
                            o,
                            "paid",
                            "granted",
                            &Move {
                                period_end: Some(end),
                                ..Move::default()
                            },
                            &[],
                        );
                    }
                    moved(
                        o,
                        "paid",
                        "done",
                        &Move {
                            status: Some("fulfilled"),
                            period_end: Some(end),
                            ..Move::default()
                        },
                        &[&ORDER_FULFILLED],
                    )
                }
                Answer::Refused(why) => {
                    begin_compensation(o, &format!("quota grant refused: {why}"))
                }
                Answer::Unreachable => {
                    orders::attempted(&db()?, o.id)?;
                    Ok(false)
                }
            }
        }
        "granted" => {
            if orders::past_deadline(&db()?, o.id)? {
                return begin_compensation(o, &format!("{TIMED_OUT} placing the plan's devices"));
            }
            let body = serde_json::json!({
                "order_id": o.id, "user_id": o.user_id, "tenant_id": o.tenant_id,
                "name": o.plan["name"], "devices": o.plan["devices"], "expires_at": o.period_end,
            });
            match call_peer(ctx, "device", DEVICES, Some(&body)) {
                Answer::Done(made) => moved(
                    o,
                    "granted",
                    "done",
                    &Move {
                        status: Some("fulfilled"),
                        devices: Some(&made["devices"]),
                        ..Move::default()
                    },
                    &[&ORDER_FULFILLED],
                ),
                Answer::Refused(why) => begin_compensation(o, &format!("devices refused: {why}")),
                Answer::Unreachable => {
                    orders::attempted(&db()?, o.id)?;
                    Ok(false)
                }
            }
        }
        "compensating" => compensate(ctx, o),
        _ => Ok(false),
    }
}

/// Whether the order's plan (as bought) includes phones.
fn includes_devices(o: &Order) -> bool {
    o.plan.get("devices").is_some_and(|d| !d.is_null())
}

/// Deletes the phones an order made (none made: nothing to do); whether
/// `device` answered.
pub fn release_devices(ctx: &Ctx, o: &Order) -> bool {
    if !includes_devices(o) {
        return true;
    }
    let body = serde_json::json!({"order_id": o.id, "user_id": o.user_id});
    !matches!(
        call_peer(ctx, "device", &format!("{DEVICES}/release"), Some(&body)),
        Answer::Unreachable
    )
}

/// Holds the order's amount on the buyer's balance (a balance order's
/// first step; a provider's order's once its payment was recharged), or
/// fails it, nothing held, when the balance does not cover it.
fn hold(ctx: &Ctx, o: &Order) -> Result<bool> {
    let rid = &ctx.request_id;
    let db = db()?;
    let held = match db.transaction(|tx| {
        if !post(tx, o, Kind::Freeze, "hold", rid)? {
            return Err(Error::Insufficient);
        }
        orders::advance(tx, o.id, &o.step, "funds_held", &Move::default())?;
        Ok(())
    }) {
        Ok(()) => true,
        Err(Error::Insufficient) => false,
        Err(e) => return Err(e),
    };
    if !held {
        let failure = format!(
            "payment declined: the balance does not cover {} {}",
            Money::display(
                o.amount_minor,
                Currency::parse(&o.currency).map_err(Error::Invalid)?
            ),
            o.currency
        );
        moved(
            o,
            &o.step,
            "done",
            &Move {
                status: Some("failed"),
                failure: Some(&failure),
                ..Move::default()
            },
            &[&ORDER_FAILED],
        )?;
    }
    Ok(true)
}

/// Asks the provider for the order's payment; the buyer pays it with what
/// the order shows (`payment.client_secret`) and the provider's webhook
/// carries the saga on (`payments`).
fn start_payment(o: &Order) -> Result<bool> {
    if orders::past_deadline(&db()?, o.id)? {
        return begin_compensation(o, &format!("{TIMED_OUT} asking for the payment"));
    }
    let p = super::payments::for_order(o)?;
    let name = o.plan["name"].as_str().unwrap_or("plan");
    match super::payments::start(&p, &format!("order {} ({name})", o.id))? {
        super::payments::Started::Ready(_) => {
            moved(o, "created", "awaiting_payment", &Move::default(), &[])
        }
        super::payments::Started::Refused(why) => {
            begin_compensation(o, &format!("payment refused: {why}"))
        }
        super::payments::Started::Unreachable => {
            orders::attempted(&db()?, o.id)?;
            Ok(false)
        }
    }
}

/// Records why the saga is being undone; the next step undoes it.
fn begin_compensation(o: &Order, why: &str) -> Result<bool> {
    moved(
        o,
        &o.step,
        "compensating",
        &Move {
            failure: Some(why),
            ..Move::default()
        },
        &[],
    )
}

/// Undoes what the saga holds: the phones made, the grant, then the money
/// (the hold released before payment, the payment refunded after).
fn compensate(ctx: &Ctx, o: &Order) -> Result<bool> {
    if o.pay_with != "balance" && o.status == "pending" {
        let payment = payments::of_order(&db()?, o.id)?;
        if let Some(p) = payment {
            super::payments::cancel(&p);
        }
    }
    if !release_devices(ctx, o) {
        orders::attempted(&db()?, o.id)?;
        return Ok(false);
    }
    if let Some(grant) = o.grant_id {
        match call_user(ctx, &format!("{GRANTS}/{grant}/revoke"), None) {
            Answer::Done(_) | Answer::Refused(_) => {}
            Answer::Unreachable => {
                orders::attempted(&db()?, o.id)?;
                return Ok(false);
            }
        }
    }
    let status = match o.failure.as_deref() {
        Some(CANCELLED) => "cancelled",
        Some(f) if o.status == "pending" && f.starts_with(TIMED_OUT) => "expired",
        _ => "failed",
    };
    let db = db()?;
    db.transaction(|tx| {
        match Status::parse(&o.status).map_err(Error::Invalid)? {
            // Only what was held is released (nothing is, before the hold
            // step ran, or for a provider's order never paid).
            Status::Pending if ledger::by_key(tx, &format!("order:{}:hold", o.id))?.is_some() => {
                post(tx, o, Kind::Unfreeze, "release", &ctx.request_id)?;
            }
            Status::Paid => {
                post(tx, o, Kind::Refund, "refund", &ctx.request_id)?;
            }
            _ => {}
        }
        if orders::advance(
            tx,
            o.id,
            "compensating",
            "done",
            &Move {
                status: Some(status),
                ..Move::default()
            },
        )? {
            let after = orders::find(tx, o.id)?.ok_or(Error::NotFound("order"))?;
            announce(tx, &ORDER_FAILED, &after)?;
        }
        Ok(true)
    })
}

/// What a cancelled order's compensation records as its reason.
const CANCELLED: &str = "cancelled by the buyer";

/// How the reason of an order given up at its deadline begins: one not yet
/// paid then `expired`.
const TIMED_OUT: &str = "timed out";

/// Runs an order's saga as far as it goes now (other components
/// answering), then lets go of it.
pub fn run(ctx: &Ctx, id: Uuid) -> Result<Order> {
    for _ in 0..8 {
        let o = orders::find(&db()?, id)?.ok_or(Error::NotFound("order"))?;
        if o.step == "done" || !step(ctx, &o)? {
            break;
        }
    }
    let db = db()?;
    orders::release(&db, id)?;
    platform::outbox::publish_after_commit(&db, &ctx.request_id);
    orders::find(&db, id)?.ok_or(Error::NotFound("order"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderInput {
    plan_id: String,
    #[serde(default)]
    cycles: Option<i32>,
    #[serde(default)]
    pay_with: Option<String>,
}

/// `POST /orders` (`billing:purchase`): buys a plan the caller sees:
/// `{plan_id, cycles? (1-120, default 1), pay_with? (balance)}` with an
/// `Idempotency-Key` (required): `201` with the fulfilled order, `202`
/// while a step waits for another component (the scheduler carries it on),
/// `200` with the order a repeated key made; `402 payment_declined` when
/// the balance does not cover it and `409 order_failed` when a step was
/// refused (both recorded, nothing held).
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: OrderInput = call.body()?;
    let plan_id = Uuid::parse_str(&input.plan_id)
        .map_err(|_| Error::Invalid("plan_id must be a plan's UUID".into()))?;
    let cycles = input.cycles.unwrap_or(1);
    if !(1..=120).contains(&cycles) {
        return Err(Error::Invalid("cycles must be from 1 to 120".into()));
    }
    let pay_with = match input.pay_with.as_deref() {
        None | Some("balance") => "balance",
        Some(p) => super::payments::provider(p)?.name(),
    };
    let key = platform::http::idempotency_key(call.req)?.ok_or_else(|| {
        Error::Invalid("an Idempotency-Key header is required to place an order".into())
    })?;
    let deadline = deadline_secs()?;
    let (order, made) = {
        let db = db()?;
        let plan = super::plans::visible(&db, caller, plan_id)?;
        if !plan.active {
            return Err(Error::Conflict("the plan is not for sale".into()));
        }
        let amount = total(plan.price_minor, cycles).map_err(Error::Invalid)?;
        if plan.devices.is_some() {
            // `device` takes expiries at most ten years ahead.
            let now = chrono::Utc::now().naive_utc();
            let cycle = Cycle::parse(&plan.cycle).map_err(Error::Invalid)?;
            if cycle.end(now, u32::try_from(cycles).unwrap_or(1))
                > now + chrono::Duration::days(3650)
            {
                return Err(Error::Invalid(
                    "a plan that includes devices is bought for at most ten years".into(),
                ));
            }
        }
        let owner = visible_owner(&db, caller, caller.user_id).map_err(|_| {
            Error::Conflict("billing does not know your account yet: try again in a moment".into())
        })?;
        db.transaction(|tx| {
            Ok::<_, Error>(orders::create(
                tx,
                &NewOrder {
                    user: caller.user_id,
                    tenant: owner.tenant_id,
                    plan: &plan,
                    cycles,
                    amount_minor: amount,
                    // Nothing to ask a provider for a free plan.
                    pay_with: if amount == 0 { "balance" } else { pay_with },
                    key: &key,
                    deadline_secs: deadline,
                },
            )?)
        })?
    };
    if !made {
        return Ok(platform::http::json(200, &shown(&db()?, &order, caller)?));
    }
    let o = run(call.ctx, order.id)?;
    match o.status.as_str() {
        "fulfilled" => Ok(platform::http::json(201, &shown(&db()?, &o, caller)?)),
        "failed"
            if o.failure
                .as_deref()
                .is_some_and(|f| f.starts_with("payment declined")) =>
        {
            Err(Error::Problem(platform::Problem::new(
                402,
                "payment_declined",
                format!("order {}: {}", o.id, o.failure.unwrap_or_default()),
            )))
        }
        "failed" => Err(Error::Problem(platform::Problem::new(
            409,
            "order_failed",
            format!("order {}: {}", o.id, o.failure.unwrap_or_default()),
        ))),
        _ => Ok(platform::http::json(202, &shown(&db()?, &o, caller)?)),
    }
}

/// An order as shown, with its provider's `payment` (none for a balance
/// order); what the buyer's client needs to pay it only to the buyer.
fn shown(db: &Db, o: &Order, caller: &access::Caller) -> Result<serde_json::Value> {
    let mut body =
        serde_json::to_value(o).map_err(|e| platform::Problem::internal(e.to_string()))?;
    let mut payment = payments::of_order(db, o.id)?;
    if let Some(p) = payment.as_mut().filter(|_| o.user_id != caller.user_id) {
        p.hide_checkout();
    }
    body["payment"] = serde_json::json!(payment);
    Ok(body)
}

/// An order the caller may see (its buyer in their data scope).
fn visible(db: &Db, call: &Call, id: Uuid) -> Result<Order> {
    let caller = call.caller()?;
    let o = orders::find(db, id)?.ok_or(Error::NotFound("order"))?;
    if o.user_id != caller.user_id {
        visible_owner(db, caller, o.user_id).map_err(|_| Error::NotFound("order"))?;
    }
    Ok(o)
}

/// `GET /orders` (`billing:read`): orders in the caller's data scope,
/// newest first; `user_id`, `status`, paging.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let status = match call.query("status") {
        Some(s) => Some(
            Status::parse(&s)
                .map_err(Error::Invalid)?
                .name()
                .to_string(),
        ),
        None => None,
    };
    let user = uuid_query(call, "user_id")?;
    let page = call.page()?;
    let db = db()?;
    Ok(platform::http::page_of(
        page,
        orders::list(&db, &scope(caller), user, status, page)?,
    ))
}

/// `GET /orders/:id` (`billing:read`): an order with its `history` and
/// `refunds`.
pub fn get(call: &Call) -> Result<Response> {
    let db = db()?;
    let o = visible(&db, call, call.id("id", "order")?)?;
    let mut body = shown(&db, &o, call.caller()?)?;
    body["history"] = serde_json::json!(orders::history_of(&db, o.id)?);
    body["refunds"] = serde_json::json!(crate::repo::refunds::of_order(&db, o.id)?);
    Ok(platform::http::json(200, &body))
}

/// `POST /orders/:id/cancel` (`billing:purchase`): the buyer cancels an
/// order still being paid; what it held is given back; `409` otherwise.
pub fn cancel(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "order")?;
    let o = visible(&db()?, call, id)?;
    if o.user_id != caller.user_id {
        return Err(Error::Forbidden("only the buyer cancels an order"));
    }
    let from = o.step.as_str();
    if o.status != "pending"
        || !["created", "awaiting_payment", "funded", "funds_held"].contains(&from)
    {
        return Err(Error::Conflict(format!(
            "the order is {} and cannot be cancelled",
            o.status
        )));
    }
    if !begin_compensation(&o, CANCELLED)? {
        return Err(Error::Conflict("the order moved on meanwhile".into()));
    }
    let o = run(call.ctx, id)?;
    Ok(platform::http::json(200, &o))
}

/// `POST /internal/orders/advance` (scheduler): carries on every saga no
/// one holds (at most 20 a run): interrupted by a crash, or waiting for a
/// component; `{advanced, done}`.
pub fn advance_job(call: &Call) -> Result<Response> {
    let ids = orders::claim_running(&db()?, 20)?;
    let mut done = 0;
    for id in &ids {
        match run(call.ctx, *id) {
            Ok(o) if o.step == "done" => done += 1,
            Ok(_) => {}
            Err(e) => {
                let p: platform::Problem = e.into();
                eprintln!(
                    "{}",
                    serde_json::json!({"level": "warn", "request_id": call.ctx.request_id, "msg": "an order's saga failed a step", "order_id": id, "cause": p.internal.unwrap_or(p.message)})
                );
            }
        }
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"advanced": ids.len(), "done": done}),
    ))
}
