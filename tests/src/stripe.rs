//! A local Stripe simulator for the payment tests (no provider can be
//! reached from here): a small HTTP server taking the requests `billing`
//! sends (`POST /v1/payment_intents` with a bearer secret key and an
//! `Idempotency-Key`, `POST /v1/payment_intents/:id/cancel`, `POST
//! /v1/refunds` on an intent, never beyond what it took), and events
//! signed exactly as Stripe documents its webhooks: a `Stripe-Signature`
//! header `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with
//! the endpoint secret>`. It is written from Stripe's documentation with
//! the `hmac` crate directly, not with `billing`'s code.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The secret API key the simulator accepts.
pub const SECRET_KEY: &str = "sk_test_cloudphone_simulator";
/// The webhook endpoint's signing secret.
pub const WEBHOOK_SECRET: &str = "whsec_cloudphone_simulator";

/// A PaymentIntent the simulator made.
#[derive(Debug, Clone)]
pub struct Intent {
    /// `pi_…`.
    pub id: String,
    /// Minor units.
    pub amount: i64,
    /// Lower case, as Stripe has it.
    pub currency: String,
    /// `requires_payment_method`, `canceled`, …
    pub status: String,
    /// The `metadata[…]` sent.
    pub metadata: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    intents: Vec<Intent>,
    by_key: HashMap<String, usize>,
    /// Refunds made: (id, intent, amount).
    refunds: Vec<(String, String, i64)>,
    /// Refunds by idempotency key.
    refund_keys: HashMap<String, usize>,
    /// Every request: (method, path, idempotency key).
    requests: Vec<(String, String, Option<String>)>,
    /// While set, every request is answered 503.
    down: bool,
}

/// A running simulator.
pub struct Simulator {
    /// `http://127.0.0.1:<port>`: `stripe_api_base`.
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Simulator {
    /// Starts one on a free port (it runs until the test process ends).
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = shared.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Self { base, state }
    }

    /// The settings that point `billing` at this simulator.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SPIN_VARIABLE_STRIPE_API_BASE".into(), self.base.clone()),
            ("SPIN_VARIABLE_STRIPE_SECRET_KEY".into(), SECRET_KEY.into()),
            (
                "SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET".into(),
                WEBHOOK_SECRET.into(),
            ),
        ]
    }

    /// An intent by id.
    pub fn intent(&self, id: &str) -> Option<Intent> {
        let s = self.state.lock().expect("state");
        s.intents.iter().find(|i| i.id == id).cloned()
    }

    /// How many intents were made.
    pub fn intents(&self) -> usize {
        self.state.lock().expect("state").intents.len()
    }

    /// Requests received to `path` (exactly).
    pub fn requests_to(&self, path: &str) -> usize {
        let s = self.state.lock().expect("state");
        s.requests.iter().filter(|(_, p, _)| p == path).count()
    }

    /// What was refunded of an intent, in all.
    pub fn refunded(&self, intent: &str) -> i64 {
        let s = self.state.lock().expect("state");
        s.refunds
            .iter()
            .filter(|(_, i, _)| i == intent)
            .map(|(_, _, a)| a)
            .sum()
    }

    /// Makes an intent succeeded, as a payer's confirmation does.
    pub fn pay(&self, intent: &str) {
        let mut s = self.state.lock().expect("state");
        if let Some(i) = s.intents.iter_mut().find(|i| i.id == intent) {
            i.status = "succeeded".into();
        }
    }

    /// Makes every request fail with 503 (or work again).
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("state").down = down;
    }
}

/// An event about a PaymentIntent as Stripe sends it: `kind` is the event
/// type (`payment_intent.succeeded`, …), `created` its time.
pub fn event(id: &str, kind: &str, intent: &Intent, created: i64) -> Vec<u8> {
    let status = match kind {
        "payment_intent.succeeded" => "succeeded",
        "payment_intent.canceled" => "canceled",
        "payment_intent.processing" => "processing",
        _ => "requires_payment_method",
    };
    let mut object = json!({
        "id": intent.id, "object": "payment_intent", "amount": intent.amount,
        "amount_received": if status == "succeeded" { intent.amount } else { 0 },
        "currency": intent.currency, "status": status, "metadata": intent.metadata,
        "livemode": false,
    });
    if kind == "payment_intent.payment_failed" {
        object["last_payment_error"] =
            json!({"code": "card_declined", "message": "Your card was declined."});
    }
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": created,
        "type": kind, "livemode": false, "pending_webhooks": 1,
        "data": {"object": object},
    }))
    .expect("json")
}

/// The `Stripe-Signature` header for `body` signed at `t` with `secret`.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        match read_chunked(&mut reader) {
            Some(b) => b,
            None => return,
        }
    } else {
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        body
    };
    let (status, answer) = handle(state, &method, &path, &headers, &body);
    let text = answer.to_string();
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// A chunked request body.
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        if n == 0 {
            let mut end = String::new();
            reader.read_line(&mut end).ok()?;
            return Some(body);
        }
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..n]);
    }
}

fn handle(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> (u16, Value) {
    let mut s = state.lock().expect("state");
    let key = headers.get("idempotency-key").cloned();
    s.requests
        .push((method.to_string(), path.to_string(), key.clone()));
    if s.down {
        return (503, json!({"error": {"message": "simulated outage"}}));
    }
    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {SECRET_KEY}")) {
        return (
            401,
            json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}),
        );
    }
    let form = crate::form::parse(&String::from_utf8_lossy(body));
    match (method, path) {
        ("POST", "/v1/payment_intents") => {
            if let Some(i) = key.as_ref().and_then(|k| s.by_key.get(k)) {
                let intent = s.intents[*i].clone();
                return (200, intent_json(&intent));
            }
            let amount: i64 = form.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
            let currency = form.get("currency").cloned().unwrap_or_default();
            if amount < 1 || currency.len() != 3 {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error", "message": "amount and currency are required"}}),
                );
            }
            let metadata = form
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("metadata[")
                        .and_then(|k| k.strip_suffix(']'))
                        .map(|k| (k.to_string(), v.clone()))
                })
                .collect();
            let intent = Intent {
                id: format!("pi_sim{}", s.intents.len() + 1),
                amount,
                currency,
                status: "requires_payment_method".into(),
                metadata,
            };
            s.intents.push(intent.clone());
            if let Some(k) = key {
                let i = s.intents.len() - 1;
                s.by_key.insert(k, i);
            }
            (200, intent_json(&intent))
        }
        ("POST", p) if p.starts_with("/v1/payment_intents/") && p.ends_with("/cancel") => {
            let id = &p["/v1/payment_intents/".len()..p.len() - "/cancel".len()];
            match s.intents.iter_mut().find(|i| i.id == id) {
                Some(i) if i.status != "succeeded" => {
                    i.status = "canceled".into();
                    (200, intent_json(i))
                }
                Some(_) => (
                    400,
                    json!({"error": {"type": "invalid_request_error", "message": "a succeeded PaymentIntent cannot be canceled"}}),
                ),
                None => (404, json!({"error": {"message": "no such payment_intent"}})),
            }
        }
        ("POST", "/v1/refunds") => {
            if let Some(i) = key.as_ref().and_then(|k| s.refund_keys.get(k)) {
                let (id, intent, amount) = s.refunds[*i].clone();
                return (200, refund_json(&id, &intent, amount));
            }
            let intent_id = form.get("payment_intent").cloned().unwrap_or_default();
            let amount: i64 = form.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
            let Some(intent) = s.intents.iter().find(|i| i.id == intent_id).cloned() else {
                return (404, json!({"error": {"message": "no such payment_intent"}}));
            };
            if intent.status != "succeeded" {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error", "message": "the PaymentIntent has not succeeded"}}),
                );
            }
            let before: i64 = s
                .refunds
                .iter()
                .filter(|(_, i, _)| *i == intent_id)
                .map(|(_, _, a)| a)
                .sum();
            if amount < 1 || before + amount > intent.amount {
                return (
                    400,
                    json!({"error": {"type": "invalid_request_error",
                                     "message": format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({})", intent.amount - before)}}),
                );
            }
            let id = format!("re_sim{}", s.refunds.len() + 1);
            s.refunds.push((id.clone(), intent_id.clone(), amount));
            if let Some(k) = key {
                let i = s.refunds.len() - 1;
                s.refund_keys.insert(k, i);
            }
            (200, refund_json(&id, &intent_id, amount))
        }
        _ => (404, json!({"error": {"message": "unknown route"}})),
    }
}

fn refund_json(id: &str, intent: &str, amount: i64) -> Value {
    json!({"id": id, "object": "refund", "amount": amount, "payment_intent": intent, "status": "succeeded"})
}

fn intent_json(i: &Intent) -> Value {
    json!({"id": i.id, "object": "payment_intent", "amount": i.amount, "currency": i.currency,
           "status": i.status, "client_secret": format!("{}_secret_sim", i.id), "metadata": i.metadata})
}
