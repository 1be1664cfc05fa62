//! Payments by external providers (Stripe, Alipay), behind one adapter: a
//! payment is asked of the provider (Stripe: a PaymentIntent, made once
//! per payment by its idempotency key; Alipay: a page-pay request signed
//! with the merchant's RSA2 key), the payer pays it in their client with
//! what the provider returned (`client_secret`, `checkout_url`), and the
//! provider's signed webhook says how it went. What a provider confirms is recharged to the payer's
//! balance once (provider clearing → available); an order it pays then
//! carries on as one paid from the balance (`orders`). Webhooks apply once
//! per provider event id, older events than the last one applied change
//! nothing, and forged, stale or unreadable ones are refused with 400 and
//! recorded.

use super::{db, scope, uuid_query, visible_owner, Call};
use crate::domain::money::{Currency, Money};
use crate::domain::payment::{alipay, stripe, Notice, Outcome, Provider, Refusal};
use crate::domain::posting::{Kind, Posting};
use crate::error::{Error, Result};
use crate::repo::ledger;
use crate::repo::orders::{self as order_rows, Move};
use crate::repo::payments::{self, NewPayment, Payment, Received};
use platform::db::Db;
use platform::events::catalogue::{EventType, PAYMENT_FAILED, PAYMENT_RECEIVED};
use platform::events::payload::PaymentChange;
use platform::Problem;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spin_sdk::http::{Method, Request, Response};
use uuid::Uuid;

/// Largest webhook body read (Stripe's events are a few KiB).
const MAX_WEBHOOK: usize = 256 * 1024;

/// Stripe's settings: `stripe_api_base` (also in `allowed_outbound_hosts`),
/// `stripe_secret_key` and `stripe_webhook_secret` (both empty: Stripe is
/// not offered), `stripe_webhook_tolerance_secs`.
struct Stripe {
    api: String,
    key: String,
    webhook_secret: String,
    tolerance: i64,
}

/// A webhook tolerance setting (1 s to a day), else `default`.
fn tolerance(var: &str, default: i64) -> Result<i64> {
    Ok(platform::var(var)?
        .parse()
        .ok()
        .filter(|t| (1..=86_400).contains(t))
        .unwrap_or(default))
}

fn stripe_settings() -> Result<Stripe> {
    let s = Stripe {
        api: platform::var("stripe_api_base")?
            .trim_end_matches('/')
            .to_string(),
        key: platform::var("stripe_secret_key")?,
        webhook_secret: platform::var("stripe_webhook_secret")?,
        tolerance: tolerance(
            "stripe_webhook_tolerance_secs",
            stripe::DEFAULT_TOLERANCE_SECS,
        )?,
    };
    if s.key.is_empty() || s.webhook_secret.is_empty() {
        return Err(Error::Problem(Problem::new(
            400,
            "provider_unavailable",
            "payments by stripe are not enabled here (no stripe_secret_key / stripe_webhook_secret)",
        )));
    }
    Ok(s)
}

/// Alipay's settings: `alipay_gateway`, `alipay_app_id`,
/// `alipay_private_key` (the merchant's, PKCS#8, base64 or PEM),
/// `alipay_public_key` (Alipay's, SPKI) (any of the three empty: Alipay is
/// not offered), `alipay_notify_url` (where Alipay sends notifications),
/// `alipay_notify_tolerance_secs`.
struct Alipay {
    gateway: String,
    app_id: String,
    private_key: String,
    public_key: String,
    notify_url: String,
    tolerance: i64,
}

fn alipay_settings() -> Result<Alipay> {
    let a = Alipay {
        gateway: platform::var("alipay_gateway")?,
        app_id: platform::var("alipay_app_id")?,
        private_key: platform::var("alipay_private_key")?,
        public_key: platform::var("alipay_public_key")?,
        notify_url: platform::var("alipay_notify_url")?,
        tolerance: tolerance("alipay_notify_tolerance_secs", 900)?,
    };
    if a.app_id.is_empty() || a.private_key.is_empty() || a.public_key.is_empty() {
        return Err(Error::Problem(Problem::new(
            400,
            "provider_unavailable",
            "payments by alipay are not enabled here (no alipay_app_id / alipay_private_key / alipay_public_key)",
        )));
    }
    Ok(a)
}

/// A provider named in input, enabled here.
pub fn provider(raw: &str) -> Result<Provider> {
    let p = Provider::parse(raw).map_err(Error::Invalid)?;
    match p {
        Provider::Stripe => stripe_settings().map(|_| p),
        Provider::Alipay => alipay_settings().map(|_| p),
    }
}

/// The system's randomness for RSA blinding.
struct SystemRng;

impl rsa::rand_core::RngCore for SystemRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        getrandom::fill(dest).expect("the system has randomness");
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for SystemRng {}

/// What asking a provider for a payment came to.
pub enum Started {
    /// The provider made it (or had made it): the payer can pay.
    Ready(Box<Payment>),
    /// The provider refused it (4xx): it will not be made.
    Refused(String),
    /// The provider could not be reached or failed (5xx): try again.
    Unreachable,
}

/// Sends a request to a provider's API, form-encoded, to completion; never
/// while a database connection is held.
fn send_to_provider(
    url: &str,
    key: &str,
    idempotency_key: Option<&str>,
    form: &str,
) -> Option<Response> {
    if platform::db::open_connections() > 0 {
        return None;
    }
    let mut b = Request::builder();
    b.method(Method::Post)
        .uri(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", form.len().to_string());
    if let Some(k) = idempotency_key {
        b.header("idempotency-key", k);
    }
    let req = b.body(form.as_bytes().to_vec()).build();
    spin_sdk::http::run(spin_sdk::http::send(req))
        .map_err(|e: spin_sdk::http::SendError| {
            eprintln!(
                "{}",
                serde_json::json!({"level": "warn", "msg": "a payment provider could not be reached", "url": url, "cause": e.to_string()})
            );
        })
        .ok()
}

/// Asks the provider for `p` (once) and records what it made.
pub fn start(p: &Payment, description: &str) -> Result<Started> {
    if p.provider_ref.is_some() {
        return Ok(Started::Ready(Box::new(p.clone())));
    }
    match Provider::parse(&p.provider).map_err(Error::Invalid)? {
        Provider::Stripe => start_stripe(p, description),
        Provider::Alipay => start_alipay(p, description),
    }
}

/// Made, as `find` reads it back.
fn ready(id: Uuid) -> Result<Started> {
    Ok(Started::Ready(Box::new(
        payments::find(&db()?, id)?.ok_or(Error::NotFound("payment"))?,
    )))
}

/// Alipay's page pay: the signed request the payer's browser is sent to
/// (`checkout_url`); nothing is sent from here. The trade is the payment
/// (`out_trade_no` is its id).
fn start_alipay(p: &Payment, description: &str) -> Result<Started> {
    let a = alipay_settings()?;
    if p.currency != "CNY" {
        return Ok(Started::Refused("alipay takes CNY only".into()));
    }
    let cny = Currency::parse("CNY").map_err(Error::Invalid)?;
    let biz = serde_json::json!({
        "out_trade_no": p.id.to_string(),
        "total_amount": Money::display(p.amount_minor, cny),
        "subject": description.chars().take(128).collect::<String>(),
        "product_code": "FAST_INSTANT_TRADE_PAY",
    });
    let mut params: std::collections::BTreeMap<String, String> = [
        ("app_id", a.app_id.clone()),
        ("method", "alipay.trade.page.pay".into()),
        ("format", "JSON".into()),
        ("charset", "utf-8".into()),
        ("sign_type", "RSA2".into()),
        ("timestamp", alipay::time(chrono::Utc::now().timestamp())),
        ("version", "1.0".into()),
        ("notify_url", a.notify_url.clone()),
        ("biz_content", biz.to_string()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sign = alipay::sign(&params, &a.private_key, &mut SystemRng)
        .map_err(|e| Error::Problem(Problem::internal(e)))?;
    params.insert("sign".into(), sign);
    let query: Vec<(&str, String)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let url = format!("{}?{}", a.gateway, crate::domain::payment::form(&query));
    payments::started(&db()?, p.id, &p.id.to_string(), None, Some(&url))?;
    ready(p.id)
}

/// Stripe: a PaymentIntent, made once (Stripe's idempotency key is the
/// payment's id); the payer's client confirms it with its client secret.
fn start_stripe(p: &Payment, description: &str) -> Result<Started> {
    let s = stripe_settings()?;
    let mut form = vec![
        ("amount", p.amount_minor.to_string()),
        ("currency", p.currency.to_ascii_lowercase()),
        ("description", description.to_string()),
        ("automatic_payment_methods[enabled]", "true".to_string()),
        ("metadata[payment_id]", p.id.to_string()),
        ("metadata[user_id]", p.user_id.to_string()),
    ];
    if let Some(o) = p.order_id {
        form.push(("metadata[order_id]", o.to_string()));
    }
    let Some(r) = send_to_provider(
        &format!("{}/v1/payment_intents", s.api),
        &s.key,
        Some(&format!("payment:{}", p.id)),
        &crate::domain::payment::form(&form),
    ) else {
        return Ok(Started::Unreachable);
    };
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap_or_default();
    match *r.status() {
        200..=299 => {
            let (Some(id), Some(secret)) = (body["id"].as_str(), body["client_secret"].as_str())
            else {
                return Ok(Started::Refused(
                    "stripe answered without an id and a client secret".into(),
                ));
            };
            payments::started(&db()?, p.id, id, Some(secret), None)?;
            ready(p.id)
        }
        400..=499 => Ok(Started::Refused(format!(
            "stripe answered {}: {}",
            r.status(),
            body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
        ))),
        _ => Ok(Started::Unreachable),
    }
}

/// What asking a provider to refund came to.
pub enum Refunded {
    /// Accepted: the provider's id of the refund.
    Accepted(String),
    /// Refused (4xx), with why: nothing moves.
    Refused(String),
    /// Not reached, or failed (5xx): ask again (the same key).
    Unreachable,
}

/// Asks the provider that took `p` to give `amount` of it back to the
/// payer (Stripe: `POST /v1/refunds` on the PaymentIntent, keyed by the
/// refund's id, so asking again never refunds twice). Only Stripe's
/// refunds are built: `supports_refunds` says which.
pub fn refund(p: &Payment, refund_id: Uuid, amount: i64) -> Result<Refunded> {
    let s = stripe_settings()?;
    let Some(reference) = p.provider_ref.as_deref() else {
        return Ok(Refunded::Refused(
            "the payment was never made at stripe".into(),
        ));
    };
    let form = [
        ("payment_intent", reference.to_string()),
        ("amount", amount.to_string()),
        ("metadata[refund_id]", refund_id.to_string()),
        ("metadata[payment_id]", p.id.to_string()),
    ];
    let Some(r) = send_to_provider(
        &format!("{}/v1/refunds", s.api),
        &s.key,
        Some(&format!("refund:{refund_id}")),
        &crate::domain::payment::form(&form),
    ) else {
        return Ok(Refunded::Unreachable);
    };
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap_or_default();
    Ok(match *r.status() {
        200..=299 => match (body["id"].as_str(), body["status"].as_str()) {
            (Some(id), Some("succeeded" | "pending")) => Refunded::Accepted(id.to_string()),
            (_, status) => Refunded::Refused(format!(
                "stripe did not take the refund (status {})",
                status.unwrap_or("missing")
            )),
        },
        400..=499 => Refunded::Refused(format!(
            "stripe answered {}: {}",
            r.status(),
            body["error"]["message"]
                .as_str()
                .unwrap_or("no reason given")
        )),
        _ => Refunded::Unreachable,
    })
}

/// Whether refunds back through `provider` are built (Stripe's; Alipay's
/// refunds go to the balance).
pub fn supports_refunds(provider: &str) -> bool {
    provider == "stripe"
}

/// Cancels a payment the provider still waits for (an order given up), so
/// it can no longer be paid; best effort: money that arrives anyway is
/// recharged to the payer's balance.
pub fn cancel(p: &Payment) {
    if p.provider != "stripe" {
        // An Alipay trade never paid simply lapses (Alipay closes it).
        return;
    }
    let (Ok(s), Some(reference)) = (stripe_settings(), p.provider_ref.as_deref()) else {
        return;
    };
    if p.status == "pending" || p.status == "failed" {
        send_to_provider(
            &format!("{}/v1/payment_intents/{reference}/cancel", s.api),
            &s.key,
            None,
            "",
        );
    }
}

/// `payment.*` for a payment, in `tx`.
fn announce(tx: &Db, event: &EventType, p: &Payment) -> Result<()> {
    let payload = PaymentChange {
        payment_id: p.id,
        user_id: p.user_id,
        tenant_id: p.tenant_id,
        order_id: p.order_id,
        provider: p.provider.clone(),
        status: p.status.clone(),
        amount_minor: p.amount_minor,
        received_minor: p.received_minor,
        currency: p.currency.clone(),
        error: p.last_error.clone(),
    };
    platform::outbox::enqueue(tx, event, &p.id.to_string(), p.version, &payload)?;
    Ok(())
}

/// What applying a webhook came to.
struct Applied {
    verdict: &'static str,
    detail: Option<String>,
    /// An order the payment made ready to carry on (or to undo).
    order: Option<Uuid>,
}

impl Applied {
    fn ignored(why: &str) -> Self {
        Self {
            verdict: "ignored",
            detail: Some(why.into()),
            order: None,
        }
    }
}

/// Applies a verified event to the payment it is about, in `tx`.
fn apply(tx: &Db, provider: &str, n: &Notice, request_id: &str) -> Result<Applied> {
    let Some(p) = payments::by_ref_for_update(tx, provider, &n.payment_ref)? else {
        return Ok(Applied::ignored("no payment here has this id"));
    };
    match &n.outcome {
        Outcome::Succeeded {
            amount_minor,
            currency,
        } => {
            if p.status == "succeeded" {
                return Ok(Applied::ignored("the payment was received already"));
            }
            let cur = Currency::parse(currency).map_err(Error::Invalid)?;
            let posting = Posting::new(
                Kind::Recharge,
                Money::positive(*amount_minor, cur).map_err(Error::Invalid)?,
            )
            .map_err(Error::Invalid)?;
            let key = format!("payment:{}", p.id);
            let t = super::recorded(ledger::post(
                tx,
                &ledger::NewTransaction {
                    posting: &posting,
                    user: p.user_id,
                    tenant: p.tenant_id,
                    actor: None,
                    reason: &format!("payment {} by {provider}", n.payment_ref),
                    reference: Some(&key),
                    key: &key,
                    fingerprint: &key,
                    request_id,
                },
            )?)?;
            payments::succeeded(tx, p.id, *amount_minor, n.created, t.id)?;
            super::effects::after_movement(tx, p.user_id, p.tenant_id, cur, t.id, request_id)?;
            let after = payments::find(tx, p.id)?.ok_or(Error::NotFound("payment"))?;
            announce(tx, &PAYMENT_RECEIVED, &after)?;
            let mut applied = Applied {
                verdict: "applied",
                detail: None,
                order: None,
            };
            if let Some(order) = p.order_id {
                let covers = *amount_minor >= p.amount_minor && cur.code() == p.currency;
                if covers
                    && order_rows::advance(
                        tx,
                        order,
                        "awaiting_payment",
                        "funded",
                        &Move::default(),
                    )?
                {
                    applied.order = Some(order);
                } else {
                    applied.detail = Some(
                        "recharged to the balance; the order was no longer waiting for it".into(),
                    );
                }
            }
            Ok(applied)
        }
        Outcome::Failed { reason } => {
            if !payments::not_paid(tx, p.id, "failed", Some(reason), n.created)? {
                return Ok(Applied::ignored("a later event was applied already"));
            }
            let after = payments::find(tx, p.id)?.ok_or(Error::NotFound("payment"))?;
            announce(tx, &PAYMENT_FAILED, &after)?;
            Ok(Applied {
                verdict: "applied",
                detail: None,
                order: None,
            })
        }
        Outcome::Cancelled => {
            if !payments::not_paid(tx, p.id, "cancelled", None, n.created)? {
                return Ok(Applied::ignored("a later event was applied already"));
            }
            let mut applied = Applied {
                verdict: "applied",
                detail: None,
                order: None,
            };
            if let Some(order) = p.order_id {
                let undo = Move {
                    failure: Some("the payment was cancelled at the provider"),
                    ..Move::default()
                };
                if order_rows::advance(tx, order, "awaiting_payment", "compensating", &undo)? {
                    applied.order = Some(order);
                }
            }
            Ok(applied)
        }
        Outcome::Other => Ok(Applied::ignored("this event changes nothing here")),
    }
}

/// `POST /webhooks/stripe` (public; Stripe's signature is the
/// authentication): `200 {received, verdict}` once applied, ignored, or a
/// duplicate of an event applied before; `400 webhook_forged`,
/// `webhook_stale` or `webhook_malformed` (recorded) otherwise.
pub fn stripe_webhook(call: &Call) -> Result<Response> {
    let body = webhook_body(call)?;
    let s = stripe_settings().map_err(|_| Error::NotFound("webhook endpoint"))?;
    let signature = call.req.header("stripe-signature").and_then(|v| v.as_str());
    let now = chrono::Utc::now().timestamp();
    let verified = stripe::verify(signature, body, &s.webhook_secret, now, s.tolerance)
        .and_then(|()| stripe::notice(body));
    let (verdict, detail) = accept(call, "stripe", body, verified)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"received": true, "verdict": verdict, "detail": detail}),
    ))
}

/// `POST /webhooks/alipay` (public; Alipay's RSA2 signature is the
/// authentication): Alipay's asynchronous notification, a form; `200`
/// with the text `success` Alipay expects once applied, ignored, or a
/// duplicate; `400 webhook_*` (recorded) otherwise, which Alipay retries.
pub fn alipay_webhook(call: &Call) -> Result<Response> {
    let body = webhook_body(call)?;
    let a = alipay_settings().map_err(|_| Error::NotFound("webhook endpoint"))?;
    let params = crate::domain::payment::parse_form(body);
    let now = chrono::Utc::now().timestamp();
    let verified = alipay::verify(&params, &a.public_key)
        .and_then(|()| alipay::notice(&params, &a.app_id, now, a.tolerance));
    accept(call, "alipay", body, verified)?;
    Ok(platform::http::bytes(
        200,
        "text/plain",
        b"success".to_vec(),
    ))
}

/// A webhook's raw body, within the size read.
fn webhook_body<'a>(call: &'a Call) -> Result<&'a [u8]> {
    let body = call.req.body();
    if body.len() > MAX_WEBHOOK {
        return Err(Error::Problem(Problem::new(
            413,
            "payload_too_large",
            format!("body larger than {MAX_WEBHOOK} bytes"),
        )));
    }
    Ok(body)
}

/// Records and applies a webhook a provider's adapter verified (or
/// refused: recorded, then 400): its verdict (`applied`, `ignored`,
/// `duplicate`) and why. An order the payment made ready carries on.
fn accept(
    call: &Call,
    provider: &str,
    body: &[u8],
    verified: std::result::Result<Notice, Refusal>,
) -> Result<(&'static str, Option<String>)> {
    let sha = hex::encode(Sha256::digest(body));
    let notice = match verified {
        Ok(n) => n,
        Err(refusal) => return Err(refuse(provider, &sha, &refusal)),
    };
    let rid = call.ctx.request_id.clone();
    let db = db()?;
    // The row of the event is written first: a second delivery of it waits
    // for the first one's transaction, then finds it and changes nothing.
    let applied = db.transaction(|tx| {
        let Some(id) = payments::record(tx, &received(provider, &notice, &sha, "applied", None))?
        else {
            return Ok(None);
        };
        let a = apply(tx, provider, &notice, &rid)?;
        if a.verdict != "applied" || a.detail.is_some() {
            payments::set_verdict(tx, id, a.verdict, a.detail.as_deref())?;
        }
        Ok::<_, Error>(Some(a))
    })?;
    let Some(applied) = applied else {
        payments::record(
            &db,
            &received(
                provider,
                &notice,
                &sha,
                "duplicate",
                Some("this event was received before"),
            ),
        )?;
        return Ok(("duplicate", None));
    };
    platform::outbox::publish_after_commit(&db, &rid);
    drop(db);
    if let Some(order) = applied.order {
        // The order's saga carries on now; if it cannot, the scheduler's job does.
        if let Err(e) = super::orders::run(call.ctx, order) {
            let p: Problem = e.into();
            eprintln!(
                "{}",
                serde_json::json!({"level": "warn", "request_id": rid, "msg": "an order paid by a provider could not carry on yet", "provider": provider, "order_id": order, "cause": p.internal.unwrap_or(p.message)})
            );
        }
    }
    Ok((applied.verdict, applied.detail))
}

/// The record of a verified webhook.
fn received<'a>(
    provider: &'a str,
    n: &'a Notice,
    sha: &'a str,
    verdict: &'a str,
    detail: Option<&'a str>,
) -> Received<'a> {
    Received {
        provider,
        event_id: Some(&n.event_id),
        event_type: Some(&n.event_type),
        payment_ref: Some(&n.payment_ref),
        verdict,
        detail,
        body_sha256: sha,
    }
}

/// Records a refused webhook: the 400 to answer.
fn refuse(provider: &str, sha: &str, r: &Refusal) -> Error {
    let record = || -> Result<()> {
        payments::record(
            &db()?,
            &Received {
                provider,
                event_id: None,
                event_type: None,
                payment_ref: None,
                verdict: r.verdict(),
                detail: Some(r.detail()),
                body_sha256: sha,
            },
        )?;
        Ok(())
    };
    if let Err(e) = record() {
        return e;
    }
    Error::Problem(Problem::new(
        400,
        r.code(),
        format!("webhook refused: {}", r.detail()),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpInput {
    amount_minor: i64,
    currency: String,
    provider: String,
}

/// `POST /recharges` (`billing:purchase`): the caller tops up their own
/// balance with a provider: `{amount_minor (1 to 10^9), currency,
/// provider}` with an `Idempotency-Key` (required): `201` with the payment
/// and what their client needs to pay it (`client_secret`), `200` with the
/// payment a repeated key made, `502 provider_failed` when the provider
/// refused it, `503` when it could not be reached (try again with the same
/// key).
pub fn top_up(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: TopUpInput = call.body()?;
    let provider = provider(&input.provider)?;
    let currency = super::currency(&input.currency)?;
    if !(1..=1_000_000_000).contains(&input.amount_minor) {
        return Err(Error::Invalid(
            "amount_minor must be from 1 to 1000000000".into(),
        ));
    }
    let key = platform::http::idempotency_key(call.req)?
        .ok_or_else(|| Error::Invalid("an Idempotency-Key header is required to top up".into()))?;
    let (p, made) = {
        let db = db()?;
        let owner = visible_owner(&db, caller, caller.user_id).map_err(|_| {
            Error::Conflict("billing does not know your account yet: try again in a moment".into())
        })?;
        payments::create(
            &db,
            &NewPayment {
                provider: provider.name(),
                order: None,
                user: caller.user_id,
                tenant: owner.tenant_id,
                amount_minor: input.amount_minor,
                currency: currency.code(),
                key: &format!("top-up:{key}"),
            },
        )?
    };
    if p.order_id.is_some() || p.amount_minor != input.amount_minor || p.currency != currency.code()
    {
        return Err(Error::KeyReused);
    }
    match start(&p, "balance top-up")? {
        Started::Ready(p) => Ok(platform::http::json(if made { 201 } else { 200 }, &*p)),
        Started::Refused(why) => Err(Error::Problem(Problem::new(502, "provider_failed", why))),
        Started::Unreachable => Err(Error::Problem(Problem::unavailable(
            "the payment provider could not be reached: try again with the same Idempotency-Key",
        ))),
    }
}

/// A payment the caller may see (its payer in their data scope); the
/// client secret only to the payer.
fn visible(db: &Db, ctx_caller: &access::Caller, id: Uuid) -> Result<Payment> {
    let mut p = payments::find(db, id)?.ok_or(Error::NotFound("payment"))?;
    if p.user_id != ctx_caller.user_id {
        visible_owner(db, ctx_caller, p.user_id).map_err(|_| Error::NotFound("payment"))?;
        p.hide_checkout();
    }
    Ok(p)
}

/// `GET /payments` (`billing:read`): payments in the caller's data scope,
/// newest first; `user_id`, `status`, paging. Client secrets are not
/// listed.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let status = call.query("status");
    if let Some(s) = &status {
        if !["pending", "succeeded", "failed", "cancelled"].contains(&s.as_str()) {
            return Err(Error::Invalid(
                "status must be pending, succeeded, failed or cancelled".into(),
            ));
        }
    }
    let user = uuid_query(call, "user_id")?;
    let page = call.page()?;
    let db = db()?;
    let (mut items, total) = payments::list(&db, &scope(caller), user, status, page)?;
    for p in &mut items {
        p.hide_checkout();
    }
    Ok(platform::http::page_of(page, (items, total)))
}

/// `GET /payments/:id` (`billing:read`).
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = db()?;
    let p = visible(&db, caller, call.id("id", "payment")?)?;
    Ok(platform::http::json(200, &p))
}

/// `GET /admin/webhooks` (`billing:manage`): every webhook received,
/// newest first; `verdict` (`applied`, `ignored`, `duplicate`, `forged`,
/// `stale`, `malformed`), paging.
pub fn webhooks(call: &Call) -> Result<Response> {
    let verdict = call.query("verdict");
    if let Some(v) = &verdict {
        if ![
            "applied",
            "ignored",
            "duplicate",
            "forged",
            "stale",
            "malformed",
        ]
        .contains(&v.as_str())
        {
            return Err(Error::Invalid(
                "verdict must be applied, ignored, duplicate, forged, stale or malformed".into(),
            ));
        }
    }
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        payments::webhooks(&db()?, verdict, page)?,
    ))
}

/// The payment of an order paid with a provider, made if need be.
pub fn for_order(o: &order_rows::Order) -> Result<Payment> {
    let db = db()?;
    let (p, _) = payments::create(
        &db,
        &NewPayment {
            provider: &o.pay_with,
            order: Some(o.id),
            user: o.user_id,
            tenant: o.tenant_id,
            amount_minor: o.amount_minor,
            currency: &o.currency,
            key: &format!("order:{}", o.id),
        },
    )?;
    Ok(p)
}

/// `POST /internal/webhooks/prune` (scheduler, hourly): the webhook log
/// keeps refused deliveries and repeats 30 days (whoever floods the public
/// endpoint fills it no further than that), accepted ones 90 days (the
/// providers retry for days, not months); `{deleted}`.
pub fn prune(_call: &Call) -> Result<Response> {
    let deleted = payments::prune_webhooks(&db()?, 30, 90)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"deleted": deleted}),
    ))
}
