//! Billing helpers: waiting for `billing` to know a user, and the posting
//! storm that the ledger's property test and its benchmark share: many
//! clients posting random movements at once, with an independent model of
//! what each accepted posting must have done to the balances.

use crate::TestApp;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The billing API's prefix.
pub const B: &str = "/api/v1/billing";

/// Waits until `billing`'s copy of a user exists (from `user`'s events).
pub fn wait_for_owner(app: &TestApp, user: &str) {
    let sql = format!("SELECT count(*) FROM owners WHERE user_id = '{user}'");
    app.eventually(Duration::from_secs(30), || {
        (app.count("billing", &sql) == 1).then_some(())
    })
    .unwrap_or_else(|_| panic!("billing never learnt of user {user}"));
}

/// A small deterministic generator (xorshift64*), so a failing storm can be
/// replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From a seed (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `lo..=hi`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
}

/// The model's own statement of each kind's legs (docs/billing.md), kept
/// apart from the component's: (available, frozen, platform account) deltas
/// for an amount `x`.
pub fn legs(kind: &str, x: i64) -> (i64, i64, (&'static str, i64)) {
    match kind {
        "recharge" => (x, 0, ("provider_clearing", -x)),
        "charge" => (-x, 0, ("revenue", x)),
        "freeze" => (-x, x, ("", 0)),
        "unfreeze" => (x, -x, ("", 0)),
        "settle" => (0, -x, ("revenue", x)),
        "refund" => (x, 0, ("revenue", -x)),
        "reward" => (x, 0, ("promotions", -x)),
        "adjustment" => (x, 0, ("adjustments", -x)),
        other => panic!("no such kind {other}"),
    }
}

/// What a storm did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Postings recorded (201).
    pub posted: usize,
    /// Postings refused for a balance's floor (409 `insufficient_balance`).
    pub refused: usize,
    /// Repeated keys answered with the first transaction (200).
    pub repeats: usize,
    /// Credit-limit changes made (200) or refused (409).
    pub credit_changes: usize,
    /// Requests in all.
    pub requests: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Expected (available, frozen) per (user, currency).
    pub balances: BTreeMap<(String, String), (i64, i64)>,
    /// Expected sum per (platform account kind, currency).
    pub platform: BTreeMap<(String, String), i64>,
    /// Latencies of postings, in microseconds.
    pub latencies_us: Vec<u64>,
}

/// `ops` random postings (and a few credit-limit changes and repeated
/// keys) over `users` and `currencies`, from `clients` clients at once.
/// Every answer must be one the API documents for it; anything else panics.
pub fn storm(
    app: &TestApp,
    admin_token: &str,
    users: &[String],
    currencies: &[&str],
    ops: usize,
    clients: usize,
    seed: u64,
) -> Outcome {
    const KINDS: &[(&str, u64)] = &[
        ("recharge", 22),
        ("charge", 20),
        ("freeze", 14),
        ("unfreeze", 10),
        ("settle", 8),
        ("refund", 6),
        ("reward", 10),
        ("adjustment", 10),
    ];
    let total_weight: u64 = KINDS.iter().map(|(_, w)| w).sum();
    let started = Instant::now();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let base = app.base.clone();
                let token = admin_token.to_string();
                s.spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .build()
                        .expect("client");
                    let mut rng = Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let mut out = Outcome::default();
                    let mut done: Vec<(String, Value, String)> = Vec::new();
                    let share = ops / clients + usize::from(c < ops % clients);
                    for i in 0..share {
                        let user = &users[rng.next_u64() as usize % users.len()];
                        let currency = currencies[rng.next_u64() as usize % currencies.len()];
                        let roll = rng.next_u64() % 100;
                        out.requests += 1;
                        if roll < 3 {
                            let limit = rng.between(0, 20_000);
                            let r = client
                                .put(format!("{base}{B}/admin/credit-limits/{user}"))
                                .bearer_auth(&token)
                                .json(&json!({"currency": currency, "credit_limit_minor": limit, "reason": "storm"}))
                                .send()
                                .expect("request");
                            let status = r.status().as_u16();
                            assert!(status == 200 || status == 409, "credit limit: {status} {}", r.text().unwrap_or_default());
                            out.credit_changes += 1;
                            continue;
                        }
                        if roll < 8 && !done.is_empty() {
                            let (key, body, id) = done[rng.next_u64() as usize % done.len()].clone();
                            let r = client
                                .post(format!("{base}{B}/admin/postings"))
                                .bearer_auth(&token)
                                .header("idempotency-key", &key)
                                .json(&body)
                                .send()
                                .expect("request");
                            let status = r.status().as_u16();
                            let v: Value = r.json().expect("json");
                            assert_eq!(status, 200, "a repeated key: {v}");
                            assert_eq!(v["id"].as_str(), Some(id.as_str()), "a repeated key answers the first transaction");
                            out.repeats += 1;
                            continue;
                        }
                        let mut pick = rng.next_u64() % total_weight;
                        let kind = KINDS
                            .iter()
                            .find(|(_, w)| {
                                if pick < *w {
                                    true
                                } else {
                                    pick -= w;
                                    false
                                }
                            })
                            .map(|(k, _)| *k)
                            .expect("a kind");
                        let mut amount = rng.between(1, if kind == "recharge" { 100_000 } else { 40_000 });
                        if kind == "adjustment" && rng.next_u64() % 2 == 0 {
                            amount = -amount;
                        }
                        let key = format!("storm-{seed}-{c}-{i}");
                        let body = json!({"user_id": user, "kind": kind, "amount_minor": amount,
                                          "currency": currency, "reason": format!("storm {kind}")});
                        let sent = Instant::now();
                        let r = client
                            .post(format!("{base}{B}/admin/postings"))
                            .bearer_auth(&token)
                            .header("idempotency-key", &key)
                            .json(&body)
                            .send()
                            .expect("request");
                        out.latencies_us.push(sent.elapsed().as_micros() as u64);
                        let status = r.status().as_u16();
                        let v: Value = r.json().expect("json");
                        match status {
                            201 => {
                                out.posted += 1;
                                let (a, f, (platform, p)) = legs(kind, amount);
                                assert_eq!(v["amount_minor"].as_i64(), Some(a + f), "{v}");
                                let e = out.balances.entry((user.clone(), currency.to_string())).or_default();
                                e.0 += a;
                                e.1 += f;
                                if !platform.is_empty() {
                                    *out.platform.entry((platform.to_string(), currency.to_string())).or_default() += p;
                                }
                                done.push((key, body, v["id"].as_str().expect("id").to_string()));
                            }
                            409 if v["error"]["code"] == "insufficient_balance" => out.refused += 1,
                            _ => panic!("posting {body}: {status} {v}"),
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let mut all = Outcome {
        elapsed: started.elapsed(),
        ..Outcome::default()
    };
    for o in outcomes {
        all.posted += o.posted;
        all.refused += o.refused;
        all.repeats += o.repeats;
        all.credit_changes += o.credit_changes;
        all.requests += o.requests;
        all.latencies_us.extend(o.latencies_us);
        for (k, (a, f)) in o.balances {
            let e = all.balances.entry(k).or_default();
            e.0 += a;
            e.1 += f;
        }
        for (k, v) in o.platform {
            *all.platform.entry(k).or_default() += v;
        }
    }
    all
}

/// A `device.run_started` / `device.run_ended` event as `device` sends it,
/// for `owner` (of `tenant`): what billing meters from.
pub fn run_event(
    kind: &events::EventType,
    run: i64,
    device: uuid::Uuid,
    owner: &str,
    tenant: Option<&str>,
    started: chrono::DateTime<chrono::Utc>,
    ended: Option<chrono::DateTime<chrono::Utc>>,
) -> events::Envelope {
    let t = |d: chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let payload = events::payload::DeviceRun {
        run_id: run,
        device_id: device,
        owner_id: owner.parse().unwrap(),
        tenant_id: tenant.map(|t| t.parse().unwrap()),
        node_id: Some("node-m".into()),
        spec: serde_json::json!({"cpu_cores": 2, "memory_mb": 4096}),
        started_at: t(started),
        ended_at: ended.map(t),
        end_reason: ended.map(|_| "stopped".into()),
    };
    let version = if ended.is_some() { 2 } else { 1 };
    events::Envelope::new(
        kind,
        run.to_string(),
        version,
        t(chrono::Utc::now()),
        &payload,
    )
}
