//! Ledger postings on the whole stack (`cargo xtask bench`), on real Spin
//! when a `spin` binary is found: 16 clients post random movements
//! (recharges, charges, holds, refunds, ...) over 6 users and 2 currencies
//! through `POST /api/v1/billing/admin/postings`, each an HTTP request with
//! an access token, an idempotency key and one balanced ledger transaction.
//! Prints postings per second and latency percentiles, for 1 and for 16
//! clients. Asserts nothing about time.

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
}
