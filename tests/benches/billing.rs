//! Ledger postings on the whole stack (`cargo xtask bench`), on real Spin
//! when a `spin` binary is found: 16 clients post random movements
//! (recharges, charges, holds, refunds, ...) over 6 users and 2 currencies
//! through `POST /api/v1/billing/admin/postings`, each an HTTP request with
//! an access token, an idempotency key and one balanced ledger transaction.
//! Prints postings per second and latency percentiles, for 1 and for 16
//! clients. Then the monthly invoice run over 100,000 usage records
//! (written straight into the database: 10,000 runs of 1,000 users, ten
//! charges each, in the month before this one) through `POST
//! /api/v1/billing/internal/invoices/run`: the time to issue every invoice.
//! Then payments by providers on an app with Stripe (the local simulator)
//! and Alipay (keys made with openssl) enabled: top-ups asked of each
//! provider (a PaymentIntent over HTTP; an RSA2-signed page-pay request
//! made in the component), and their signed webhooks delivered by 16
//! clients (HMAC and RSA2 verification, the recharge and its events):
//! requests per second and latency percentiles. Asserts nothing about time.

use e2e::billing::{storm, wait_for_owner};
use e2e::TestApp;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let ops: usize = std::env::var("BILLING_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let users: Vec<String> = (0..6).map(|_| app.signed_up_user().0).collect();
    for u in &users {
        wait_for_owner(&app, u);
    }
    println!(
        "billing: ledger postings through the API ({:?})",
        e2e::host()
    );
    for clients in [1, 16] {
        let n = if clients == 1 { ops / 10 } else { ops };
        let mut out = storm(
            &app,
            &admin.token,
            &users,
            &["CNY", "USD"],
            n,
            clients,
            clients as u64 * 7919,
        );
        out.latencies_us.sort_unstable();
        let secs = out.elapsed.as_secs_f64();
        println!(
            "  {clients:>2} clients: {} requests in {secs:.2} s = {:.0} requests/s; {} postings recorded ({:.0}/s), {} refused by a floor, {} repeats; posting latency p50 {:.1} ms, p99 {:.1} ms",
            out.requests,
            out.requests as f64 / secs,
            out.posted,
            out.posted as f64 / secs,
            out.refused,
            out.repeats,
            percentile(&out.latencies_us, 0.5),
            percentile(&out.latencies_us, 0.99),
        );
    }
    invoice_run(&app);
    drop(app);
    payments();
}

/// `n` requests made by `make(i)` sent from `clients` threads: (seconds,
/// sorted latencies in µs, statuses not 2xx).
fn hammer(
    n: usize,
    clients: usize,
    send: impl Fn(&reqwest::blocking::Client, usize) -> u16 + Sync,
) -> (f64, Vec<u64>, usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let results: Vec<(Vec<u64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let client = reqwest::blocking::Client::new();
                    let (mut lat, mut bad) = (Vec::new(), 0);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let t = std::time::Instant::now();
                        if !(200..300).contains(&send(&client, i)) {
                            bad += 1;
                        }
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    (lat, bad)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let mut all: Vec<u64> = results.iter().flat_map(|(l, _)| l.clone()).collect();
    all.sort_unstable();
    (secs, all, results.iter().map(|(_, b)| b).sum())
}

fn report(what: &str, n: usize, (secs, lat, bad): (f64, Vec<u64>, usize)) {
    println!(
        "  {what}: {n} in {secs:.2} s = {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {bad} not 2xx",
        n as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
}

/// Top-ups and their webhooks, Stripe and Alipay.
fn payments() {
    use e2e::{alipay, stripe};
    let n: usize = std::env::var("BILLING_BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let sim = stripe::Simulator::start();
    let keys = alipay::Keys::generate();
    let mut env = sim.env();
    env.extend(keys.env());
    let app = TestApp::spawn_with(e2e::Options {
        env,
        ..e2e::Options::default()
    });
    let (user, token) = app.signed_up_user();
    wait_for_owner(&app, &user);
    println!(
        "billing: payments by providers, 16 clients ({:?})",
        e2e::host()
    );
    let url = format!("{}/api/v1/billing", app.base);
    for provider in ["stripe", "alipay"] {
        let made = std::sync::Mutex::new(vec![serde_json::Value::Null; n]);
        let out = hammer(n, 16, |c, i| {
            let r = c
                .post(format!("{url}/recharges"))
                .bearer_auth(&token)
                .header("idempotency-key", format!("{provider}-{i}"))
                .json(&serde_json::json!({"amount_minor": 100 + i, "currency": "CNY", "provider": provider}))
                .send()
                .unwrap();
            let status = r.status().as_u16();
            made.lock().unwrap()[i] = r.json().unwrap_or_default();
            status
        });
        report(&format!("{provider} top-ups asked"), n, out);
        let made = made.into_inner().unwrap();
        // Signed before the clock starts: the provider's cost, not ours.
        let now = stripe::now();
        let bodies: Vec<(Vec<u8>, Option<String>)> = made
            .iter()
            .enumerate()
            .map(|(i, p)| match provider {
                "stripe" => {
                    let intent = sim.intent(p["provider_ref"].as_str().unwrap()).unwrap();
                    let body = stripe::event(
                        &format!("evt_bench_{i}"),
                        "payment_intent.succeeded",
                        &intent,
                        now,
                    );
                    let sig = stripe::signature_header(stripe::WEBHOOK_SECRET, now, &body);
                    (body, Some(sig))
                }
                _ => {
                    let amount = format!("{}.{:02}", (100 + i) / 100, (100 + i) % 100);
                    let params = alipay::notify(
                        &format!("n-bench-{i}"),
                        p["id"].as_str().unwrap(),
                        "TRADE_SUCCESS",
                        &amount,
                        now,
                    );
                    (keys.notification(&params, false), None)
                }
            })
            .collect();
        let out = hammer(n, 16, |c, i| {
            let (body, sig) = &bodies[i];
            let mut r = c
                .post(format!("{url}/webhooks/{provider}"))
                .body(body.clone());
            r = match sig {
                Some(s) => r
                    .header("stripe-signature", s)
                    .header("content-type", "application/json"),
                None => r.header("content-type", "application/x-www-form-urlencoded"),
            };
            r.send().unwrap().status().as_u16()
        });
        report(&format!("{provider} webhooks verified and applied"), n, out);
    }
    let b: serde_json::Value = app
        .get("/api/v1/billing/balance", Some(&token))
        .json()
        .unwrap_or_default();
    println!(
        "  balance after both: {} (expected {})",
        b["balances"][0]["available_minor"],
        2 * (0..n).map(|i| 100 + i as i64).sum::<i64>()
    );
}

/// The monthly invoice run over 100,000 usage records.
fn invoice_run(app: &TestApp) {
    let records: i64 = std::env::var("BILLING_BENCH_USAGE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let today = chrono::Utc::now().date_naive();
    let first = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today),
        1,
    )
    .unwrap();
    let month_start = (first - chrono::Duration::days(1))
        .format("%Y-%m-01")
        .to_string();
    let month = &month_start[..7];
    let seeding = std::time::Instant::now();
    let mut db = app.db("billing");
    db.batch_execute(&format!(
        "CREATE TEMP TABLE bench_users AS SELECT n, gen_random_uuid() AS id FROM generate_series(0, 999) n; \
         INSERT INTO metered_runs (run_id, device_id, user_id, spec, started_at, ended_at, currency, \
           charged_minutes, charged_minor, settled) \
         SELECT 50000000 + g, gen_random_uuid(), u.id, '{{}}', '{month_start}'::timestamp, \
                '{month_start}'::timestamp + interval '100 minutes', 'CNY', 100, 200, true \
           FROM generate_series(0, {runs} - 1) g JOIN bench_users u ON u.n = g % 1000; \
         INSERT INTO usage_records (id, run_id, user_id, device_id, resource, from_minute, to_minute, \
           period_start, period_end, minutes, amount_minor, currency, created_at) \
         SELECT gen_random_uuid(), r.run_id, r.user_id, r.device_id, 'device_time', k * 10, k * 10 + 10, \
                r.started_at + make_interval(mins => k * 10), r.started_at + make_interval(mins => k * 10 + 10), \
                10, 20, 'CNY', r.started_at + make_interval(days => (r.run_id % 27)::int, mins => k * 10) \
           FROM metered_runs r CROSS JOIN generate_series(0, 9) k WHERE r.run_id >= 50000000;",
        runs = records / 10,
    ))
    .expect("seed usage records");
    let seeded = seeding.elapsed();
    let started = std::time::Instant::now();
    let resp = app.post_as(
        "scheduler",
        &format!("/api/v1/billing/internal/invoices/run?month={month}"),
    );
    let took = started.elapsed();
    let status = resp.status();
    let body: serde_json::Value = resp.json().unwrap_or_default();
    assert_eq!(status, 200, "{body}");
    let lines: i64 = db
        .query_one("SELECT count(*) FROM invoice_lines", &[])
        .map(|r| r.get(0))
        .unwrap_or(-1);
    println!(
        "billing: monthly invoice run over {records} usage records ({} users; seeded in {:.1} s): {} invoices with {lines} lines issued in {:.2} s",
        1000,
        seeded.as_secs_f64(),
        body["issued"],
        took.as_secs_f64()
    );
}
