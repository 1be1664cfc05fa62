//! Notification benchmark (`cargo xtask bench`): how soon an open console
//! hears of a new notification (an event published → its long poll of the
//! unread count answers), and how many events meant for people the
//! consumer turns into notifications per second (rendered from their
//! templates and written, one transaction each).

use e2e::TestApp;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const POLLS: usize = 50;
const EVENTS: usize = 2000;

fn failed(owner: &str, n: usize) -> events::Envelope {
    events::Envelope::new(
        &events::catalogue::DEVICE_FAILED,
        format!("bench-{n}"),
        1,
        "2026-12-01T10:00:00Z",
        &json!({"id": uuid::Uuid::new_v4(), "name": format!("Phone {n}"), "owner_id": owner,
                "tenant_id": null, "status": "error", "reason": "benchmark"}),
    )
}

fn main() {
    let app = TestApp::spawn();
    let (user, token) = app.signed_up_user();
    let url = format!(
        "{}/api/v1/notification/notifications/unread-count",
        app.base
    );
    let client = reqwest::blocking::Client::new();
    let standing = |extra: &str| -> Value {
        client
            .get(format!("{url}{extra}"))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // Wait for the welcome notice, so every poll below waits for one event.
    app.eventually(Duration::from_secs(30), || {
        (standing("")["unread"] == 1).then_some(())
    })
    .expect("welcome");

    let mut lat = Vec::with_capacity(POLLS);
    for i in 0..POLLS {
        let since = standing("")["token"].as_str().unwrap().to_string();
        let (u, t, b) = (url.clone(), token.clone(), since.clone());
        let poll = std::thread::spawn(move || {
            let r: Value = reqwest::blocking::Client::new()
                .get(format!("{u}?wait=30&since={b}"))
                .bearer_auth(t)
                .send()
                .unwrap()
                .json()
                .unwrap();
            (r, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        app.publish_event(&failed(&user, i));
        let (r, answered) = poll.join().unwrap();
        assert_ne!(
            r["token"].as_str(),
            Some(since.as_str()),
            "the poll timed out"
        );
        lat.push(answered.duration_since(sent).as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "in-app long poll: event published -> console answered, {POLLS} events: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );

    // Throughput of the consumer: many events for many users at once.
    let users: Vec<String> = (0..20).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let before: i64 = app.count("notification", "SELECT count(*) FROM notifications");
    let started = Instant::now();
    for i in 0..EVENTS {
        app.publish_event(&failed(&users[i % users.len()], POLLS + i));
    }
    let want = before + EVENTS as i64;
    app.eventually(Duration::from_secs(600), || {
        (app.count("notification", "SELECT count(*) FROM notifications") >= want).then_some(())
    })
    .expect("every event notified");
    let took = started.elapsed().as_secs_f64();
    println!(
        "consumer: {EVENTS} device.failed events published -> notifications written in {took:.1} s ({:.0}/s)",
        EVENTS as f64 / took
    );
}
