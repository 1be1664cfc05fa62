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
//! Asserts nothing about time.

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
