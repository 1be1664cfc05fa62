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

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A provider payments can be taken with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Stripe (PaymentIntents; webhooks signed with a timestamped HMAC).
    Stripe,
}

impl Provider {
    /// Parses a provider's name (`pay_with`, webhook paths).
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "stripe" => Ok(Self::Stripe),
            other => Err(format!(
                "unknown payment provider {other:?}: balance or stripe"
            )),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
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

/// `application/x-www-form-urlencoded` of `pairs` (Stripe's request body).
pub fn form(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
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
}
