//! Quotas end to end: atomic reservations under concurrency, idempotency,
//! commit and release, expiry of unconfirmed reservations, minutes of use
//! with the daily reset, and `quota.exceeded` reaching the user as a
//! notification.

use e2e::{error_code, expect_json, retrying, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

const Q: &str = "/api/v1/user/internal/quotas";

fn reserve(app: &TestApp, user: &str, key: &str, resources: Value) -> reqwest::blocking::Response {
    app.post_json_as(
        "device",
        &format!("{Q}/reservations"),
        &json!({"user_id": user, "idempotency_key": key, "resources": resources}),
    )
}

fn quota(app: &TestApp, token: &str) -> Value {
    expect_json(app.get("/api/v1/user/me/quota", Some(token)), 200)
}

#[test]
fn fifty_concurrent_reservations_against_a_limit_of_ten_grant_exactly_ten() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{user}"),
            &json!({"max_devices": 10, "max_cpu_cores": 1000, "max_memory_mb": 1000000, "max_storage_gb": 10000}),
            admin.t(),
        ),
        200,
    );
    let outcomes: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (app, user) = (&app, &user);
                s.spawn(move || {
                    // Clients retry an overloaded app's 502/503 with the same key.
                    let r = retrying(|| {
                        reserve(
                            app,
                            user,
                            &format!("create-{i}"),
                            json!({"devices": 1, "cpu_cores": 2}),
                        )
                    });
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let granted: Vec<&Value> = outcomes
        .iter()
        // 200: a retry answered with the reservation its lost first try made.
        .filter(|(s, _)| matches!(*s, 200 | 201))
        .map(|(_, v)| v)
        .collect();
    let refused = outcomes
        .iter()
        .filter(|(s, v)| *s == 409 && v["error"]["code"] == "quota_exceeded")
        .count();
    assert_eq!((granted.len(), refused), (10, 40), "{outcomes:?}");
    assert_eq!(
        app.count(
            "user",
            "SELECT count(*) FROM quota_reservations WHERE status = 'pending'"
        ),
        10
    );
    let q = quota(&app, &token);
    assert_eq!(
        (
            q["reserved"]["devices"].as_i64(),
            q["used"]["devices"].as_i64()
        ),
        (Some(10), Some(0))
    );

    // The same key again is the same reservation, not an 11th.
    let first = granted[0];
    let again = expect_json(
        reserve(
            &app,
            &user,
            first["idempotency_key"].as_str().unwrap(),
            json!({"devices": 1}),
        ),
        200,
    );
    assert_eq!(again["id"], first["id"]);

    // Commit six, release two pending and one committed.
    let id = |i: usize| granted[i]["id"].as_str().unwrap().to_string();
    for i in 0..6 {
        let r = expect_json(
            app.post_as("device", &format!("{Q}/reservations/{}/commit", id(i))),
            200,
        );
        assert_eq!(r["status"], "committed");
    }
    // Committing twice changes nothing.
    expect_json(
        app.post_as("device", &format!("{Q}/reservations/{}/commit", id(0))),
        200,
    );
    for i in [6, 7, 0] {
        expect_json(
            app.post_as("device", &format!("{Q}/reservations/{}/release", id(i))),
            200,
        );
    }
    // A released reservation cannot be committed.
    let (status, _) =
        error_code(app.post_as("device", &format!("{Q}/reservations/{}/commit", id(6)))).unwrap();
    assert_eq!(status, 409);
    let q = quota(&app, &token);
    assert_eq!(q["used"]["devices"], 5);
    assert_eq!(q["used"]["cpu_cores"], 10);
    assert_eq!(q["reserved"]["devices"], 2);
    // 5 held + 2 pending: three more fit, the fourth does not.
    for i in 0..3 {
        expect_json(
            reserve(&app, &user, &format!("more-{i}"), json!({"devices": 1})),
            201,
        );
    }
    let (status, code) = error_code(reserve(&app, &user, "more-3", json!({"devices": 1}))).unwrap();
    assert_eq!((status, code.as_str()), (409, "quota_exceeded"));

    // The refusals recorded quota.exceeded once (once a day), and the user
    // hears of it.
    assert_eq!(
        app.count(
            "user",
            "SELECT count(*) FROM outbox WHERE event_type = 'quota.exceeded'"
        ),
        1
    );
    app.eventually(Duration::from_secs(30), || {
        app.notifications(&token)
            .iter()
            .any(|n| n["kind"] == "quota.exceeded")
            .then_some(())
    })
    .expect("a quota notification");
}

#[test]
fn unconfirmed_reservations_expire_and_stop_counting() {
    let app = TestApp::spawn();
    let (user, token) = app.signed_up_user();
    // Default limit: 2 devices.
    let r = expect_json(
        app.post_json_as(
        "device",
            &format!("{Q}/reservations"),
            &json!({"user_id": user, "idempotency_key": "short", "resources": {"devices": 2}, "ttl_secs": 1}),
        ),
        201,
    );
    assert_eq!(
        error_code(reserve(&app, &user, "blocked", json!({"devices": 1})))
            .unwrap()
            .0,
        409
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Expired reservations stop counting at once, before the job marks them.
    expect_json(reserve(&app, &user, "now-fits", json!({"devices": 1})), 201);
    let expired = expect_json(app.post_as("scheduler", &format!("{Q}/expire")), 200);
    assert!(expired["expired"].as_i64().unwrap() <= 1);
    let status: String = app
        .db("user")
        .query_one(
            "SELECT status FROM quota_reservations WHERE id = $1::text::uuid",
            &[&r["id"].as_str().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "expired");
    // An expired reservation cannot be committed.
    let (code, _) = error_code(app.post_as(
        "device",
        &format!("{Q}/reservations/{}/commit", r["id"].as_str().unwrap()),
    ))
    .unwrap();
    assert_eq!(code, 409);
    assert_eq!(quota(&app, &token)["reserved"]["devices"], 1);
}

#[test]
fn minutes_of_use_count_once_per_report_and_reset_daily() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{user}"),
            &json!({"max_minutes_per_day": 60}),
            admin.t(),
        ),
        200,
    );
    let report = |key: &str, minutes: i32| {
        app.post_json_as(
            "device",
            &format!("{Q}/usage"),
            &json!({"user_id": user, "minutes": minutes, "idempotency_key": key}),
        )
    };
    expect_json(report("hour-1", 30), 201);
    expect_json(report("hour-1", 30), 200);
    assert_eq!(quota(&app, &token)["minutes"]["today"], 30);
    expect_json(report("hour-2", 30), 201);
    let q = quota(&app, &token);
    assert_eq!(
        (q["minutes"]["today"].as_i64(), q["exceeded"].as_bool()),
        (Some(60), Some(true))
    );
    // No minutes left today: a device cannot start.
    let (status, _) = error_code(reserve(
        &app,
        &user,
        "start",
        json!({"concurrent_devices": 1}),
    ))
    .unwrap();
    assert_eq!(status, 409);
    // Midnight passes (the stored day is yesterday); the reset job starts a
    // new day, and running it again changes nothing.
    app.db("user")
        .execute(
            "UPDATE quotas SET usage_day = usage_day - 1 WHERE user_id = $1::text::uuid",
            &[&user],
        )
        .unwrap();
    let rolled = expect_json(app.post_as("scheduler", &format!("{Q}/roll")), 200);
    assert_eq!(rolled["daily_reset"], 1);
    assert_eq!(
        expect_json(app.post_as("scheduler", &format!("{Q}/roll")), 200)["daily_reset"],
        0
    );
    let q = quota(&app, &token);
    assert_eq!(
        (
            q["minutes"]["today"].as_i64(),
            q["minutes"]["month"].as_i64()
        ),
        (Some(0), Some(60))
    );
    expect_json(
        reserve(&app, &user, "start-2", json!({"concurrent_devices": 1})),
        201,
    );
}

#[test]
fn a_user_cannot_raise_their_own_quota_and_limits_are_audited() {
    let app = TestApp::spawn();
    let platform = app.platform_admin();
    let tenant = app.create_tenant(&platform.token, "q");
    let admin = app.create_user(
        &platform.token,
        json!({"tenant_id": tenant, "role_ids": [e2e::roles::TENANT_ADMIN]}),
    );
    let member = app.create_user(&admin.token, json!({}));
    let (status, _) = error_code(app.patch(
        &format!("/api/v1/user/quotas/{}", admin.id),
        &json!({"max_devices": 99}),
        admin.t(),
    ))
    .unwrap();
    assert_eq!(status, 403);
    let q = expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{}", member.id),
            &json!({"max_devices": 7}),
            admin.t(),
        ),
        200,
    );
    assert_eq!(q["limits"]["max_devices"], 7);
    let log = expect_json(
        app.get(
            &format!(
                "/api/v1/user/audit-logs?action=quota.update&resource_id={}",
                member.id
            ),
            admin.t(),
        ),
        200,
    );
    assert_eq!(log["items"][0]["before"]["max_devices"], 2);
    assert_eq!(log["items"][0]["after"]["max_devices"], 7);
}
