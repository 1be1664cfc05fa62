//! Event delivery benchmark (`cargo xtask bench`): time from the commit of a
//! change in `user` to `auth`'s database recording the applied event, over
//! 1000 `user.updated` events, for the pub/sub path (Redis trigger) and for
//! the catch-up path (Redis trigger off: the scheduler's feed pull every 5 s).
//! Both ends use the database server's clock: `outbox.created_at` and
//! `processed_events.processed_at` are both `clock_timestamp()`.

use e2e::{Options, TestApp};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const EVENTS: usize = 1000;

fn run(app: &TestApp, label: &str) {
    let (_, token) = app.signed_up_user();
    let started = std::time::Instant::now();
    for i in 0..EVENTS {
        let r = app.patch(
            "/api/v1/user/me",
            &json!({"metadata": {"i": i}}),
            Some(&token),
        );
        assert_eq!(r.status(), 200);
    }
    let writes = started.elapsed();
    let mut auth = app.db("auth");
    app.eventually(Duration::from_secs(120), || {
        let n: i64 = auth
            .query_one(
                "SELECT count(*) FROM processed_events WHERE event_type = 'user.updated'",
                &[],
            )
            .ok()?
            .get(0);
        (n as usize >= EVENTS).then_some(())
    })
    .expect("all events applied");
    let epoch = |sql: &str, client: &mut postgres::Client| -> HashMap<uuid::Uuid, f64> {
        client
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    let committed = epoch(
        "SELECT id, extract(epoch FROM created_at)::float8 FROM outbox WHERE event_type = 'user.updated'",
        &mut app.db("user"),
    );
    let applied = epoch(
        "SELECT event_id, extract(epoch FROM processed_at)::float8 FROM processed_events WHERE event_type = 'user.updated'",
        &mut auth,
    );
    let mut lat: Vec<f64> = committed
        .iter()
        .filter_map(|(id, c)| applied.get(id).map(|a| (a - c) * 1000.0))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{label:<10} events {:>5}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms   (writes took {:.1} s, {:.0}/s)",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        writes.as_secs_f64(),
        EVENTS as f64 / writes.as_secs_f64()
    );
}

fn main() {
    println!("event delivery benchmark: commit in user -> applied in auth, {EVENTS} sequential user.updated events");
    let app = TestApp::spawn();
    run(&app, "pub/sub");
    drop(app);
    let app = TestApp::spawn_with(Options {
        disable_triggers: vec!["redis"],
        ..Options::default()
    });
    run(&app, "catch-up");
}
