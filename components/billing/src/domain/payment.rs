//! Payments by external providers, free of I/O: which providers there are,
//! what a provider's webhook says once its signature is verified, and the
//! verification itself, exactly as each provider documents it.
//!
//! Stripe signs a webhook with a `Stripe-Signature` header
//! `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, where each `v1` is
//! HMAC-SHA256, keyed with the endpoint's secret (`whsec_…`, the whole
//! string), of `"<t>.<raw body>"`. A webhook is accepted when one `v1`
//! matches (compared in constant time) and `t` is within the tolerance of
//! now (either way), so a captured delivery cannot be replayed later.
//!
//! Alipay signs with RSA2: SHA256withRSA (PKCS#1 v1.5) over the
//! parameters' "signing content": every parameter but `sign` (and, in its
//! notifications, `sign_type`) with a non-empty value, sorted by name,
//! joined as `name=value` with `&`, values not URL-encoded. The merchant
//! signs its requests with its private key; Alipay signs its asynchronous
//! notifications with its own, which the merchant verifies with Alipay's
//! public key. A notification is idempotent by its `notify_id`, and stale
//! when its `notify_time` (Beijing time) is outside the tolerance.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A provider payments can be taken with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Stripe (PaymentIntents; webhooks signed with a timestamped HMAC).
    Stripe,
    /// Alipay (page pay; requests and notifications signed with RSA2).
    Alipay,
}

impl Provider {
    /// Parses a provider's name (`pay_with`, webhook paths).
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "stripe" => Ok(Self::Stripe),
            "alipay" => Ok(Self::Alipay),
            other => Err(format!(
                "unknown payment provider {other:?}: balance, stripe or alipay"
            )),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Alipay => "alipay",
        }
    }
}

/// Why a webhook was refused (answered 400 and recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No signature matches: not from the provider, or altered.
    Forged(String),
    /// Signed, but outside the tolerance window: a replay or a clock far off.
    Stale(String),
    /// Signed, but not an event this adapter can read.
    Malformed(String),
}

impl Refusal {
    /// The error code answered.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forged(_) => "webhook_forged",
            Self::Stale(_) => "webhook_stale",
            Self::Malformed(_) => "webhook_malformed",
        }
    }

    /// The verdict recorded.
    pub fn verdict(&self) -> &'static str {
        match self {
            Self::Forged(_) => "forged",
            Self::Stale(_) => "stale",
            Self::Malformed(_) => "malformed",
        }
    }

    /// Why.
    pub fn detail(&self) -> &str {
        match self {
            Self::Forged(d) | Self::Stale(d) | Self::Malformed(d) => d,
        }
    }
}

/// What a verified webhook says happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The money was received.
    Succeeded {
        /// Received, in minor units.
        amount_minor: i64,
        /// ISO 4217, upper case.
        currency: String,
    },
    /// An attempt failed; the buyer may try again until the payment is
    /// given up.
    Failed {
        /// The provider's reason.
        reason: String,
    },
    /// The provider cancelled the payment: it can no longer succeed.
    Cancelled,
    /// Anything else (processing, requires action, …): recorded, changes
    /// nothing.
    Other,
}

/// A verified webhook's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The provider's event id (the idempotency key of the delivery).
    pub event_id: String,
    /// The provider's event type.
    pub event_type: String,
    /// When the provider created the event (unix seconds): events about a
    /// payment apply in this order, whatever order they arrive in.
    pub created: i64,
    /// The provider's id of the payment (a PaymentIntent's `pi_…`).
    pub payment_ref: String,
    /// What it means.
    pub outcome: Outcome,
}

/// Stripe's signature scheme and event format.
pub mod stripe {
    use super::*;

    /// Stripe's default tolerance, in seconds.
    pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

    /// The `v1` signature of `body` signed at `t` with `secret`, as hex.
    #[cfg(test)]
    pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
        hex::encode(signed(secret, t, body).finalize().into_bytes())
    }

    /// The MAC over `"<t>.<body>"`.
    fn signed(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Verifies a `Stripe-Signature` header over the raw `body` at `now`
    /// (unix seconds).
    pub fn verify(
        header: Option<&str>,
        body: &[u8],
        secret: &str,
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), Refusal> {
        let header = header.ok_or_else(|| Refusal::Forged("no Stripe-Signature header".into()))?;
        let mut t = None;
        let mut candidates = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<i64>().ok(),
                Some(("v1", v)) => candidates.push(v.to_string()),
                _ => {}
            }
        }
        let t = t.ok_or_else(|| Refusal::Forged("the signature has no timestamp".into()))?;
        if candidates.is_empty() {
            return Err(Refusal::Forged("the signature has no v1 scheme".into()));
        }
        let mac = signed(secret, t, body);
        // `verify_slice` compares in constant time.
        let matches = candidates
            .iter()
            .any(|c| hex::decode(c).is_ok_and(|given| mac.clone().verify_slice(&given).is_ok()));
        if !matches {
            return Err(Refusal::Forged(
                "no v1 signature matches the body and the endpoint's secret".into(),
            ));
        }
        if (now - t).abs() > tolerance_secs {
            return Err(Refusal::Stale(format!(
                "signed at {t}, {} s from now: outside the {tolerance_secs} s tolerance",
                now - t
            )));
        }
        Ok(())
    }

    /// Reads a verified event: `payment_intent.succeeded`,
    /// `payment_intent.payment_failed`, `payment_intent.canceled` carry an
    /// outcome; other `payment_intent.*` events are `Other`; events about
    /// other objects are malformed for this endpoint.
    pub fn notice(body: &[u8]) -> Result<Notice, Refusal> {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Refusal::Malformed(format!("not JSON: {e}")))?;
        let text = |value: &serde_json::Value, what: &str| {
            value
                .as_str()
                .filter(|s| !s.is_empty() && s.len() <= 255)
                .map(str::to_string)
                .ok_or_else(|| Refusal::Malformed(format!("no {what}")))
        };
        let event_id = text(&v["id"], "event id")?;
        let event_type = text(&v["type"], "event type")?;
        let created = v["created"]
            .as_i64()
            .ok_or_else(|| Refusal::Malformed("no created time".into()))?;
        let object = &v["data"]["object"];
        if object["object"] != "payment_intent" {
            return Err(Refusal::Malformed(format!(
                "{event_type} is not about a payment intent"
            )));
        }
        let payment_ref = text(&object["id"], "payment intent id")?;
        let outcome = match event_type.as_str() {
            "payment_intent.succeeded" => Outcome::Succeeded {
                amount_minor: object["amount_received"]
                    .as_i64()
                    .filter(|a| *a > 0)
                    .ok_or_else(|| Refusal::Malformed("no amount_received".into()))?,
                currency: text(&object["currency"], "currency")?.to_ascii_uppercase(),
            },
            "payment_intent.payment_failed" => Outcome::Failed {
                reason: object["last_payment_error"]["message"]
                    .as_str()
                    .unwrap_or("the payment failed")
                    .chars()
                    .take(300)
                    .collect(),
            },
            "payment_intent.canceled" => Outcome::Cancelled,
            _ => Outcome::Other,
        };
        Ok(Notice {
            event_id,
            event_type,
            created,
            payment_ref,
            outcome,
        })
    }
}

/// Alipay's RSA2 scheme and notification format.
pub mod alipay {
    use super::*;
    use crate::domain::money::{Currency, Money};
    use base64::Engine as _;
    use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
    use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
    use std::collections::BTreeMap;

    /// Beijing time, in which Alipay writes its times.
    const BEIJING_SECS: i64 = 8 * 3600;

    /// The signing content of `params`: non-empty values but `sign` (and
    /// `sign_type` for a notification), sorted by name, `k=v` joined by `&`.
    pub fn content(params: &BTreeMap<String, String>, notification: bool) -> String {
        params
            .iter()
            .filter(|(k, v)| {
                !v.is_empty()
                    && k.as_str() != "sign"
                    && !(notification && k.as_str() == "sign_type")
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A key's DER from base64 (as Alipay's console gives it) or PEM.
    fn der(raw: &str) -> Result<Vec<u8>, String> {
        let b64: String = raw
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the key is not base64: {e}"))
    }

    /// Signs `params` (a request) with the merchant's PKCS#8 private key,
    /// blinded with `rng`: the `sign` value, base64.
    pub fn sign(
        params: &BTreeMap<String, String>,
        private_key: &str,
        rng: &mut impl rsa::rand_core::CryptoRngCore,
    ) -> Result<String, String> {
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&der(private_key)?)
            .map_err(|e| format!("the merchant's private key: {e}"))?;
        let signer = SigningKey::<Sha256>::new(key);
        let signature = signer.sign_with_rng(rng, content(params, false).as_bytes());
        Ok(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
    }

    /// Verifies a notification's `sign` with Alipay's public key (SPKI).
    pub fn verify(params: &BTreeMap<String, String>, public_key: &str) -> Result<(), Refusal> {
        let key =
            rsa::RsaPublicKey::from_public_key_der(&der(public_key).map_err(Refusal::Forged)?)
                .map_err(|e| Refusal::Forged(format!("alipay's public key: {e}")))?;
        let given = params
            .get("sign")
            .ok_or_else(|| Refusal::Forged("no sign".into()))?;
        if params.get("sign_type").map(String::as_str) != Some("RSA2") {
            return Err(Refusal::Forged("sign_type is not RSA2".into()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(given)
            .map_err(|_| Refusal::Forged("sign is not base64".into()))?;
        let signature = Signature::try_from(bytes.as_slice())
            .map_err(|_| Refusal::Forged("sign is not a signature".into()))?;
        VerifyingKey::<Sha256>::new(key)
            .verify(content(params, true).as_bytes(), &signature)
            .map_err(|_| {
                Refusal::Forged("sign does not match the notification and alipay's key".into())
            })
    }

    /// A time as Alipay writes it (`yyyy-MM-dd HH:mm:ss`, Beijing time).
    pub fn time(unix: i64) -> String {
        chrono::DateTime::from_timestamp(unix + BEIJING_SECS, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    }

    fn unix(raw: &str) -> Option<i64> {
        chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|t| t.and_utc().timestamp() - BEIJING_SECS)
    }

    /// Reads a verified notification for `app_id` at `now`: `TRADE_SUCCESS`
    /// and `TRADE_FINISHED` succeeded (`total_amount` in yuan), `TRADE_CLOSED`
    /// cancelled, anything else changes nothing.
    pub fn notice(
        params: &BTreeMap<String, String>,
        app_id: &str,
        now: i64,
        tolerance_secs: i64,
    ) -> Result<Notice, Refusal> {
        let get = |k: &str| {
            params
                .get(k)
                .filter(|v| !v.is_empty() && v.len() <= 255)
                .cloned()
                .ok_or_else(|| Refusal::Malformed(format!("no {k}")))
        };
        if get("app_id")? != app_id {
            return Err(Refusal::Forged(
                "the notification is for another app".into(),
            ));
        }
        let sent = unix(&get("notify_time")?)
            .ok_or_else(|| Refusal::Malformed("notify_time is not yyyy-MM-dd HH:mm:ss".into()))?;
        if (now - sent).abs() > tolerance_secs {
            return Err(Refusal::Stale(format!(
                "sent at {sent}, {} s from now: outside the {tolerance_secs} s tolerance",
                now - sent
            )));
        }
        let status = get("trade_status")?;
        let outcome = match status.as_str() {
            "TRADE_SUCCESS" | "TRADE_FINISHED" => Outcome::Succeeded {
                amount_minor: Money::parse_decimal(
                    &get("total_amount")?,
                    Currency::parse("CNY").map_err(Refusal::Malformed)?,
                )
                .map_err(Refusal::Malformed)?,
                currency: "CNY".into(),
            },
            "TRADE_CLOSED" => Outcome::Cancelled,
            _ => Outcome::Other,
        };
        // A trade's notifications apply in the order its state moved: the
        // payment (or the close) time, else the notification's.
        let created = params
            .get("gmt_close")
            .or_else(|| params.get("gmt_payment"))
            .and_then(|t| unix(t))
            .unwrap_or(sent);
        Ok(Notice {
            event_id: get("notify_id")?,
            event_type: format!("trade_status.{status}"),
            created,
            payment_ref: get("out_trade_no")?,
            outcome,
        })
    }
}

/// `application/x-www-form-urlencoded` of `pairs` (Stripe's request body).
pub fn form(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Reads an `application/x-www-form-urlencoded` body (Alipay's
/// notifications): `+` is a space, `%XX` a byte; a repeated name keeps its
/// last value.
pub fn parse_form(body: &[u8]) -> std::collections::BTreeMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-encodes a form value or query parameter.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::stripe::*;
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    fn event(kind: &str, extra: serde_json::Value) -> Vec<u8> {
        let mut object =
            serde_json::json!({"id": "pi_1", "object": "payment_intent", "currency": "cny"});
        for (k, v) in extra.as_object().unwrap() {
            object[k] = v.clone();
        }
        serde_json::to_vec(&serde_json::json!({"id": "evt_1", "type": kind, "created": 100, "data": {"object": object}}))
            .unwrap()
    }

    #[test]
    fn a_signature_stripe_documents_is_accepted_within_the_tolerance() {
        let body = event(
            "payment_intent.succeeded",
            serde_json::json!({"amount_received": 990}),
        );
        let header = format!("t=1000,v1={}", signature(SECRET, 1000, &body));
        assert_eq!(verify(Some(&header), &body, SECRET, 1000, 300), Ok(()));
        assert_eq!(verify(Some(&header), &body, SECRET, 1300, 300), Ok(()));
        // A rotated secret: any v1 may match.
        let both = format!(
            "t=1000,v1={},v1={}",
            "00".repeat(32),
            signature(SECRET, 1000, &body)
        );
        assert_eq!(verify(Some(&both), &body, SECRET, 1000, 300), Ok(()));
    }

    #[test]
    fn a_known_vector_matches_an_independent_hmac() {
        // HMAC-SHA256(key "whsec_test_secret", "1000.{}") computed with
        // Python's hmac/hashlib.
        assert_eq!(
            signature(SECRET, 1000, b"{}"),
            "230ea6be829c59eb46e9b0c8955ab2b69ed6607e288ee283a8a1471fd5f3ad53"
        );
    }

    #[test]
    fn forged_altered_and_stale_webhooks_are_refused() {
        let body = event(
            "payment_intent.succeeded",
            serde_json::json!({"amount_received": 990}),
        );
        let good = format!("t=1000,v1={}", signature(SECRET, 1000, &body));
        let other = format!("t=1000,v1={}", signature("whsec_other", 1000, &body));
        assert_eq!(
            verify(Some(&other), &body, SECRET, 1000, 300)
                .unwrap_err()
                .verdict(),
            "forged"
        );
        let mut altered = body.clone();
        altered[10] ^= 1;
        assert_eq!(
            verify(Some(&good), &altered, SECRET, 1000, 300)
                .unwrap_err()
                .verdict(),
            "forged"
        );
        assert_eq!(
            verify(None, &body, SECRET, 1000, 300)
                .unwrap_err()
                .verdict(),
            "forged"
        );
        assert_eq!(
            verify(Some("v1=abc"), &body, SECRET, 1000, 300)
                .unwrap_err()
                .verdict(),
            "forged"
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = good.replace("t=1000", "t=2000");
        assert_eq!(
            verify(Some(&moved), &body, SECRET, 2000, 300)
                .unwrap_err()
                .verdict(),
            "forged"
        );
        assert_eq!(
            verify(Some(&good), &body, SECRET, 1301, 300)
                .unwrap_err()
                .verdict(),
            "stale"
        );
        assert_eq!(
            verify(Some(&good), &body, SECRET, 699, 300)
                .unwrap_err()
                .verdict(),
            "stale"
        );
    }

    #[test]
    fn events_read_into_outcomes() {
        let n = notice(&event(
            "payment_intent.succeeded",
            serde_json::json!({"amount_received": 990}),
        ))
        .unwrap();
        assert_eq!(
            (n.event_id.as_str(), n.payment_ref.as_str(), n.created),
            ("evt_1", "pi_1", 100)
        );
        assert_eq!(
            n.outcome,
            Outcome::Succeeded {
                amount_minor: 990,
                currency: "CNY".into()
            }
        );
        let n = notice(&event(
            "payment_intent.payment_failed",
            serde_json::json!({"last_payment_error": {"message": "Your card was declined."}}),
        ))
        .unwrap();
        assert_eq!(
            n.outcome,
            Outcome::Failed {
                reason: "Your card was declined.".into()
            }
        );
        assert_eq!(
            notice(&event("payment_intent.canceled", serde_json::json!({})))
                .unwrap()
                .outcome,
            Outcome::Cancelled
        );
        assert_eq!(
            notice(&event("payment_intent.processing", serde_json::json!({})))
                .unwrap()
                .outcome,
            Outcome::Other
        );
        assert_eq!(notice(b"nope").unwrap_err().verdict(), "malformed");
        let charge = br#"{"id":"evt_2","type":"charge.succeeded","created":1,"data":{"object":{"id":"ch_1","object":"charge"}}}"#;
        assert_eq!(notice(charge).unwrap_err().verdict(), "malformed");
        assert_eq!(
            notice(&event("payment_intent.succeeded", serde_json::json!({})))
                .unwrap_err()
                .verdict(),
            "malformed"
        );
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            form(&[
                ("amount", "990".into()),
                ("metadata[order_id]", "a b&c".into())
            ]),
            "amount=990&metadata%5Border_id%5D=a%20b%26c"
        );
        assert_eq!(Provider::parse("stripe"), Ok(Provider::Stripe));
        assert!(Provider::parse("paypal").is_err());
    }

    /// A deterministic generator for the tests' keys (not for production).
    struct TestRng(u64);

    impl rsa::rand_core::RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.next_u64() as u8;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rsa::rand_core::CryptoRng for TestRng {}

    fn keys() -> (rsa::RsaPrivateKey, String, String) {
        use base64::Engine as _;
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let key = rsa::RsaPrivateKey::new(&mut TestRng(0x5eed), 1024).unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let private = b64(key.to_pkcs8_der().unwrap().as_bytes());
        let public = b64(key.to_public_key().to_public_key_der().unwrap().as_bytes());
        (key, private, public)
    }

    fn notification(now: i64) -> std::collections::BTreeMap<String, String> {
        [
            ("app_id", "2021000000000001"),
            ("notify_id", "n1"),
            ("notify_type", "trade_status_sync"),
            ("out_trade_no", "p1"),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_amount", "99.50"),
            ("subject", "order 1 (Basic)"),
            ("buyer_logon_id", ""),
            ("sign_type", "RSA2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("notify_time".to_string(), alipay::time(now))])
        .collect()
    }

    /// Signs a notification as Alipay does: everything but sign and sign_type.
    fn signed_by_alipay(
        key: &rsa::RsaPrivateKey,
        mut params: std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        use base64::Engine as _;
        use rsa::signature::{SignatureEncoding, Signer};
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
        let sig = signer.sign(alipay::content(&params, true).as_bytes());
        params.insert(
            "sign".into(),
            base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        );
        params
    }

    #[test]
    fn alipay_signing_content_is_sorted_non_empty_and_unencoded() {
        let p = notification(0);
        let c = alipay::content(&p, true);
        assert!(
            c.starts_with("app_id=2021000000000001&notify_id=n1&notify_time=1970-01-01 08:00:00&"),
            "{c}"
        );
        assert!(
            !c.contains("sign_type") && !c.contains("buyer_logon_id"),
            "{c}"
        );
        assert!(alipay::content(&p, false).contains("sign_type=RSA2"));
        assert!(c.contains("subject=order 1 (Basic)"));
    }

    #[test]
    fn alipay_rsa2_notifications_verify_and_forgeries_do_not() {
        let (key, private, public) = keys();
        let now = 1_800_000_000;
        let params = signed_by_alipay(&key, notification(now));
        assert_eq!(alipay::verify(&params, &public), Ok(()));
        let n = alipay::notice(&params, "2021000000000001", now + 60, 900).unwrap();
        assert_eq!((n.event_id.as_str(), n.payment_ref.as_str()), ("n1", "p1"));
        assert_eq!(
            n.outcome,
            Outcome::Succeeded {
                amount_minor: 9_950,
                currency: "CNY".into()
            }
        );
        // Altered, another key, no sign, another app, too old.
        let mut altered = params.clone();
        altered.insert("total_amount".into(), "0.01".into());
        assert_eq!(
            alipay::verify(&altered, &public).unwrap_err().verdict(),
            "forged"
        );
        let (other, _, _) = {
            let k = rsa::RsaPrivateKey::new(&mut TestRng(0xbad), 1024).unwrap();
            (k, (), ())
        };
        let by_other = signed_by_alipay(&other, notification(now));
        assert_eq!(
            alipay::verify(&by_other, &public).unwrap_err().verdict(),
            "forged"
        );
        let mut unsigned = params.clone();
        unsigned.remove("sign");
        assert_eq!(
            alipay::verify(&unsigned, &public).unwrap_err().verdict(),
            "forged"
        );
        assert_eq!(
            alipay::notice(&params, "2021999", now, 900)
                .unwrap_err()
                .verdict(),
            "forged"
        );
        assert_eq!(
            alipay::notice(&params, "2021000000000001", now + 901, 900)
                .unwrap_err()
                .verdict(),
            "stale"
        );
        // The merchant's own requests: signed over everything but sign.
        let mut request = notification(now);
        request.remove("notify_id");
        let sign = alipay::sign(&request, &private, &mut TestRng(3)).unwrap();
        use base64::Engine as _;
        use rsa::signature::Verifier;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sign)
            .unwrap();
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.to_public_key())
            .verify(
                alipay::content(&request, false).as_bytes(),
                &rsa::pkcs1v15::Signature::try_from(bytes.as_slice()).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn alipay_closed_trades_cancel_and_amounts_are_exact() {
        let now = 1_800_000_000;
        let mut p = notification(now);
        p.insert("trade_status".into(), "TRADE_CLOSED".into());
        assert_eq!(
            alipay::notice(&p, "2021000000000001", now, 900)
                .unwrap()
                .outcome,
            Outcome::Cancelled
        );
        p.insert("trade_status".into(), "TRADE_SUCCESS".into());
        p.insert("total_amount".into(), "9.999".into());
        assert_eq!(
            alipay::notice(&p, "2021000000000001", now, 900)
                .unwrap_err()
                .verdict(),
            "malformed"
        );
        use crate::domain::money::{Currency, Money};
        let cny = Currency::parse("CNY").unwrap();
        for (raw, want) in [
            ("99.00", 9_900),
            ("99.5", 9_950),
            ("99", 9_900),
            ("0.01", 1),
        ] {
            assert_eq!(Money::parse_decimal(raw, cny), Ok(want), "{raw}");
        }
        for raw in ["", "-1", "1e3", "1.", ".5", "1.234", " 1", "１"] {
            assert!(Money::parse_decimal(raw, cny).is_err(), "{raw}");
        }
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::parse_decimal("1200", jpy), Ok(1_200));
        assert!(Money::parse_decimal("12.0", jpy).is_err());
    }

    #[test]
    fn forms_are_read_as_browsers_and_alipay_write_them() {
        let f = parse_form(b"a=1+2&b=%E6%94%AF%E4%BB%98&c=&d=%zz&a=3");
        assert_eq!(f["a"], "3");
        assert_eq!(f["b"], "支付");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "%zz");
    }
}
