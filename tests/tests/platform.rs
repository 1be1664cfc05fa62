//! End-to-end tests of the platform: the compiled components in the local
//! host against real Postgres and Redis, each test with fresh databases.

use e2e::{error_code, Options, TestApp};
use events::catalogue::USER_CREATED;
use serde_json::{json, Value};
use std::time::Duration;

const COMPONENTS: &[&str] = &["auth", "user", "device", "app", "billing", "notification"];

#[test]
fn every_component_reports_healthy_with_its_own_database() {
    let app = TestApp::spawn();
    for c in COMPONENTS {
        let r = app.get(&format!("/api/v1/{c}/health"), None);
        assert_eq!(r.status(), 200, "{c}");
        let body: Value = r.json().unwrap();
        assert_eq!(
            body,
            json!({"status": "ok", "component": c, "database": "ok"})
        );
    }
}

#[test]
fn a_user_registers_logs_in_and_reads_their_profile_from_another_component() {
    let app = TestApp::spawn();
    let r = app.register("Ann@Example.com", "correct horse battery", "Ann");
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = app.login("ann@example.com", "correct horse battery");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();

    let r = app.get("/api/v1/user/me", Some(token));
    assert_eq!(r.status(), 200);
    let me: Value = r.json().unwrap();
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["email"], "Ann@example.com");
    assert_eq!(me["display_name"], "Ann");
    assert_eq!(me["roles"][0]["code"], "user");
    assert_eq!(me["roles"].as_array().unwrap().len(), 1);

    // The password is stored as an Argon2id hash, never in plain text.
    let hash: String = app
        .db("auth")
        .query_one("SELECT password_hash FROM credentials", &[])
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
    assert!(!hash.contains("correct horse"));
}

#[test]
fn registering_an_email_twice_is_a_conflict_and_keeps_one_account() {
    let app = TestApp::spawn();
    assert_eq!(
        app.register("bo@example.com", "correct horse battery", "Bo")
            .status(),
        201
    );
    let (status, code) =
        error_code(app.register("BO@example.com", "another password", "Bo 2")).unwrap();
    assert_eq!((status, code.as_str()), (409, "conflict"));
    let n: i64 = app.count("auth", "SELECT count(*) FROM credentials");
    assert_eq!(n, 1);
    let n: i64 = app.count("user", "SELECT count(*) FROM users");
    assert_eq!(n, 1);
}

#[test]
fn login_fails_with_the_same_401_for_a_wrong_password_and_an_unknown_email() {
    let app = TestApp::spawn();
    app.register("cy@example.com", "correct horse battery", "Cy");
    let wrong = app.login("cy@example.com", "wrong password!");
    let unknown = app.login("nobody@example.com", "wrong password!");
    let (s1, c1) = error_code(wrong).unwrap();
    let (s2, c2) = error_code(unknown).unwrap();
    assert_eq!((s1, c1.as_str()), (401, "bad_credentials"));
    assert_eq!((s2, c2), (s1, c1));
}

#[test]
fn a_missing_wrong_or_forged_token_is_refused_with_401_and_the_common_error_shape() {
    let app = TestApp::spawn();
    let (_, token) = app.signed_up_user();
    // A token signed with a key the platform does not trust.
    let mut seed = [7u8; 32];
    seed[0] = 1;
    let forger = access::TokenSigner::parse(&access::signing_key_setting("test-1", seed)).unwrap();
    let forged = forger.sign(&access::Claims {
        sub: uuid::Uuid::new_v4(),
        tid: None,
        dept: None,
        acc: access::Access::default(),
        roles: vec!["admin".into()],
        iat: 0,
        exp: i64::MAX / 2,
        iss: access::ISSUER.into(),
        jti: uuid::Uuid::new_v4(),
    });
    let mut tampered = token.clone();
    tampered.pop();
    for path in ["/api/v1/user/me", "/api/v1/notification/notifications"] {
        for bad in [
            None,
            Some("garbage"),
            Some(forged.as_str()),
            Some(tampered.as_str()),
        ] {
            let (status, code) = error_code(app.get(path, bad)).unwrap();
            assert_eq!(
                (status, code.as_str()),
                (401, "unauthenticated"),
                "{path} with {bad:?}"
            );
        }
        assert_eq!(app.get(path, Some(&token)).status(), 200, "{path}");
    }
}

#[test]
fn bad_input_gets_a_4xx_with_the_common_error_shape_and_changes_nothing() {
    let app = TestApp::spawn();
    let cases: Vec<(&str, &str, &'static str, u16)> = vec![
        (
            "/api/v1/auth/register",
            "application/json",
            "{not json",
            400,
        ),
        ("/api/v1/auth/register", "text/plain", "{}", 415),
        ("/api/v1/auth/register", "application/json", "{}", 400),
        (
            "/api/v1/auth/register",
            "application/json",
            r#"{"email":"a@b.co","password":"long enough","display_name":"A","admin":true}"#,
            400,
        ),
        (
            "/api/v1/auth/register",
            "application/json",
            r#"{"email":"not-an-email","password":"long enough","display_name":"A"}"#,
            400,
        ),
        (
            "/api/v1/auth/register",
            "application/json",
            r#"{"email":"a@b.co","password":"short","display_name":"A"}"#,
            400,
        ),
        (
            "/api/v1/auth/register",
            "application/json",
            r#"{"email":"a@b.co","password":"long enough","display_name":""}"#,
            400,
        ),
        (
            "/api/v1/auth/register",
            "application/json",
            r#"{"email":5,"password":"long enough","display_name":"A"}"#,
            400,
        ),
        ("/api/v1/auth/login", "application/json", "[]", 400),
        ("/api/v1/auth/refresh", "application/json", "{}", 400),
        ("/api/v1/auth/refresh", "application/json", "{not json", 400),
        (
            "/api/v1/auth/refresh",
            "application/json",
            r#"{"refresh_token": 7}"#,
            400,
        ),
        ("/api/v1/auth/logout", "text/plain", "{}", 415),
        ("/api/v1/auth/password", "application/json", "{}", 401),
        ("/api/v1/user/internal/users", "application/json", "{}", 401),
    ];
    for (path, ct, body, want) in cases {
        let (status, _) = error_code(app.post_raw(path, ct, body))
            .unwrap_or_else(|e| panic!("{path} {body}: {e}"));
        assert_eq!(status, want, "{path} {body}");
    }
    let long = format!(
        r#"{{"email":"a@b.co","password":"long enough","display_name":"{}"}}"#,
        "x".repeat(300_000)
    );
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/auth/register", app.base))
        .header("content-type", "application/json")
        .body(long)
        .send()
        .unwrap();
    assert_eq!(error_code(r).unwrap().0, 413);
    let (status, code) = error_code(app.get("/api/v1/auth/nope", None)).unwrap();
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code) = error_code(app.get("/api/v1/auth/login", None)).unwrap();
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let n: i64 = app.count("auth", "SELECT count(*) FROM credentials");
    assert_eq!(n, 0);
    let n: i64 = app.count("user", "SELECT count(*) FROM users");
    assert_eq!(n, 0);
}

#[test]
fn events_meant_for_people_reach_them_in_app_from_their_templates_and_the_console_reads_and_clears_them(
) {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    let (_, other) = app.signed_up_user();
    e2e::billing::wait_for_owner(&app, &user);
    let n = "/api/v1/notification/notifications";
    // A phone fails (device's event, delivered twice) and the balance runs
    // low (billing's, from two operator postings: 20.00 in, 15.00 out).
    let failed = events::Envelope::new(
        &events::catalogue::DEVICE_FAILED,
        "d-1",
        7,
        "2026-12-01T10:00:00Z",
        &json!({"id": uuid::Uuid::new_v4(), "name": "Phone <1>", "owner_id": user,
                "tenant_id": null, "status": "error", "reason": "the image cannot start"}),
    );
    app.publish_event(&failed);
    app.publish_event(&failed);
    for (key, kind, amount) in [("n-1", "recharge", 2_000), ("n-2", "charge", 1_500)] {
        let r = app.post_idempotent(
            "/api/v1/billing/admin/postings",
            &json!({"user_id": user, "kind": kind, "amount_minor": amount, "currency": "CNY",
                    "reason": "test"}),
            Some(&admin.token),
            key,
        );
        assert_eq!(r.status(), 201);
    }
    // Welcome, the failure once, two adjustments and the low balance.
    let all = app
        .eventually(Duration::from_secs(30), || {
            let items = app.notifications(&token);
            (items.len() == 5).then_some(items)
        })
        .unwrap_or_else(|_| panic!("five notices: {:?}", app.notifications(&token)));
    let find = |kind: &str| all.iter().find(|i| i["kind"] == kind).cloned().unwrap();
    let f = find("device.failed");
    assert_eq!(
        (
            f["category"].as_str(),
            f["locale"].as_str(),
            f["title"].as_str()
        ),
        (Some("device"), Some("en"), Some("Your cloud phone failed"))
    );
    let body = f["body"].as_str().unwrap();
    assert!(
        body.contains("Phone <1>") && body.contains("the image cannot start"),
        "{body}"
    );
    let low = find("balance.low");
    assert_eq!(low["category"], "billing");
    assert!(low["body"].as_str().unwrap().contains("5.00 CNY"), "{low}");

    // The console's badge, filters, marking read and deleting.
    let count = |t: &str| e2e::expect_json(app.get(&format!("{n}/unread-count"), Some(t)), 200);
    let c = count(&token);
    assert_eq!(c["unread"], 5);
    assert_eq!(
        c["by_category"],
        json!({"account": 1, "billing": 3, "device": 1})
    );
    let page = e2e::expect_json(app.get(&format!("{n}?category=billing"), Some(&token)), 200);
    assert_eq!(page["total"], 3);
    let page = e2e::expect_json(app.get(&format!("{n}?kind=balance.low"), Some(&token)), 200);
    assert_eq!(page["total"], 1);
    assert_eq!(
        app.get(&format!("{n}?category=spam"), Some(&token))
            .status(),
        400
    );
    let marked = e2e::expect_json(
        app.post(
            &format!("{n}/read-all?category=device"),
            &json!({}),
            Some(&token),
        ),
        200,
    );
    assert_eq!(marked["marked"], 1);
    assert_eq!(count(&token)["unread"], 4);
    let page = e2e::expect_json(app.get(&format!("{n}?unread=false"), Some(&token)), 200);
    assert_eq!(page["items"][0]["kind"], "device.failed");
    let id = low["id"].as_str().unwrap();
    // Nobody else reads or deletes it.
    assert_eq!(
        app.post(&format!("{n}/{id}/read"), &json!({}), Some(&other))
            .status(),
        404
    );
    assert_eq!(app.delete(&format!("{n}/{id}"), Some(&other)).status(), 404);
    assert_eq!(app.delete(&format!("{n}/{id}"), Some(&token)).status(), 204);
    assert_eq!(app.delete(&format!("{n}/{id}"), Some(&token)).status(), 404);
    assert_eq!(count(&token)["unread"], 3);
    let marked = e2e::expect_json(
        app.post(&format!("{n}/read-all"), &json!({}), Some(&token)),
        200,
    );
    assert_eq!(marked["marked"], 3);
    assert_eq!(count(&token)["unread"], 0);
    assert_eq!(count(&other)["unread"], 1);

    // The long poll: held while nothing changes, answered when a new
    // notification arrives.
    let quiet = count(&token);
    let held = e2e::expect_json(
        app.get(
            &format!(
                "{n}/unread-count?wait=1&since={}",
                quiet["token"].as_str().unwrap()
            ),
            Some(&token),
        ),
        200,
    );
    assert_eq!(held["token"], quiet["token"]);
    let since = quiet["token"].as_str().unwrap().to_string();
    let (base, t) = (app.base.clone(), token.clone());
    let poll = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .get(format!("{base}{n}/unread-count?wait=25&since={since}"))
            .bearer_auth(t)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let again = events::Envelope::new(
        &events::catalogue::DEVICE_FAILED,
        "d-1",
        8,
        "2026-12-01T11:00:00Z",
        &json!({"id": uuid::Uuid::new_v4(), "name": "Phone 2", "owner_id": user,
                "tenant_id": null, "status": "error", "reason": null}),
    );
    app.publish_event(&again);
    let woke = poll.join().unwrap();
    assert_eq!(woke["unread"], 1, "{woke}");
    assert_ne!(woke["token"], quiet["token"]);

    // In the user's language once they chose it (Chinese), with the
    // fallback from a region they did not (zh-TW) to the language.
    for (locale, title) in [
        ("zh-CN", "云手机运行故障"),
        ("zh-TW", "云手机运行故障"),
        ("fr", "Your cloud phone failed"),
    ] {
        let me = e2e::expect_json(
            app.patch("/api/v1/user/me", &json!({"locale": locale}), Some(&token)),
            200,
        );
        assert_eq!(me["locale"], locale);
        let version = me["version"].as_i64().unwrap();
        app.eventually(Duration::from_secs(30), || {
            (app.count(
                "notification",
                &format!("SELECT count(*) FROM recipients WHERE user_id = '{user}' AND version >= {version}"),
            ) == 1)
                .then_some(())
        })
        .expect("notification keeps the user's language");
        let e = events::Envelope::new(
            &events::catalogue::DEVICE_FAILED,
            format!("d-{locale}"),
            1,
            "2026-12-01T12:00:00Z",
            &json!({"id": uuid::Uuid::new_v4(), "name": locale, "owner_id": user,
                    "tenant_id": null, "status": "error", "reason": null}),
        );
        app.publish_event(&e);
        let got = app
            .eventually(Duration::from_secs(30), || {
                app.notifications(&token)
                    .into_iter()
                    .find(|n| n["kind"] == "device.failed" && n["data"]["name"] == locale)
            })
            .expect("the notice");
        assert_eq!(got["title"], title, "{got}");
    }
    let (status, _) =
        error_code(app.patch("/api/v1/user/me", &json!({"locale": "zh_CN"}), Some(&token)))
            .unwrap();
    assert_eq!(status, 400);
}

#[test]
fn a_new_user_gets_a_welcome_notification_through_the_outbox_and_the_redis_trigger() {
    let app = TestApp::spawn();
    let (_, token) = app.signed_up_user();
    let items = app
        .eventually(Duration::from_secs(15), || {
            let page: Value = app
                .get("/api/v1/notification/notifications", Some(&token))
                .json()
                .ok()?;
            (page["total"] == 1).then_some(page)
        })
        .expect("welcome notification arrives");
    assert_eq!(items["items"][0]["kind"], "user.created");
    let published: i64 = app.count(
        "user",
        "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL",
    );
    assert_eq!(published, 1);
}

#[test]
fn a_redis_message_reaches_the_redis_trigger_component_and_a_repeat_changes_nothing() {
    let app = TestApp::spawn();
    let user = uuid::Uuid::new_v4();
    let event = e2e::identity_event(&USER_CREATED, user, 1, "r@example.com");
    // Unsigned, the same event is dropped: only the app's producers publish.
    app.publish(
        "cloudphone.events.user",
        &serde_json::to_string(&event).unwrap(),
    );
    // Signed by another component's key, it is dropped too.
    let forged = events::EventSigner::from_seed("user", app.key("auth").event_signing_seed());
    app.publish(
        "cloudphone.events.user",
        &String::from_utf8(forged.sign(&event)).unwrap(),
    );
    for _ in 0..3 {
        app.publish_event(&event);
    }
    // Messages of one subscription are handled in order, one at a time: once
    // a marker published after them is applied, all of them were handled.
    let marker = e2e::identity_event(&USER_CREATED, uuid::Uuid::new_v4(), 1, "m@example.com");
    app.publish_event(&marker);
    let mut db = app.db("notification");
    app.eventually(Duration::from_secs(10), || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM processed_events WHERE event_id = $1",
                &[&marker.id],
            )
            .ok()?
            .get(0);
        (n == 1).then_some(())
    })
    .expect("the marker is applied");
    assert_eq!(
        app.count("notification", "SELECT count(*) FROM processed_events"),
        2,
        "the event once and the marker; the unsigned and forged copies were dropped"
    );
    let log = app.log_text();
    assert!(
        log.contains("event dropped: not a signed event message")
            && log.contains("event dropped: invalid signature"),
        "both drops are logged"
    );
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM notifications WHERE user_id = $1",
            &[&user],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "three deliveries, one notification");
}

#[test]
fn the_cron_trigger_runs_the_outbox_relay_that_publishes_what_a_crash_left_pending() {
    let app = TestApp::spawn();
    let user = uuid::Uuid::new_v4();
    let payload = json!({
        "id": user, "email": "p@example.com", "display_name": "Pending",
        "tenant_id": null, "status": "active", "roles": ["user"]
    });
    // An event committed but never published, as after a crash between commit and publish.
    app.db("user")
        .execute(
            "INSERT INTO outbox (id, source, event_type, schema_version, aggregate_id, aggregate_version, payload) \
             VALUES ($1, 'user', 'user.created', 1, $2, 1, $3)",
            &[&uuid::Uuid::new_v4(), &user.to_string(), &payload],
        )
        .unwrap();
    let mut user_db = app.db("user");
    app.eventually(Duration::from_secs(20), || {
        let n: i64 = user_db
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                &[],
            )
            .ok()?
            .get(0);
        (n == 0).then_some(())
    })
    .expect("the scheduler's cron job publishes the pending event");
    let mut db = app.db("notification");
    app.eventually(Duration::from_secs(10), || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM notifications WHERE user_id = $1",
                &[&user],
            )
            .ok()?
            .get(0);
        (n == 1).then_some(())
    })
    .expect("and the consumer applies it");
    app.eventually(Duration::from_secs(10), || {
        app.log_text()
            .contains(r#""job":"user.outbox.publish","level":"info","result":"{\"published\":1}""#)
            .then_some(())
    })
    .expect("the scheduler's job reports what it published");
}

#[test]
fn a_component_cannot_reach_a_database_outside_its_allowed_outbound_hosts() {
    // auth may reach postgres://127.0.0.1:5432 only; point it elsewhere.
    let app = TestApp::spawn_with(Options {
        env: vec![(
            "SPIN_VARIABLE_AUTH_DB_URL".into(),
            "postgres://x:y@127.0.0.2:5432/x?sslmode=disable".into(),
        )],
        ..Options::default()
    });
    let (status, code) = error_code(app.get("/api/v1/auth/health", None)).unwrap();
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    assert!(
        app.log_text()
            .contains("address postgres://127.0.0.2:5432 is not permitted"),
        "{}",
        app.log_text()
    );
    assert_eq!(app.get("/api/v1/user/health", None).status(), 200);
}

#[test]
fn one_components_database_role_cannot_open_another_components_database() {
    let app = TestApp::spawn();
    let auth_url = app.db_url("auth").to_string();
    let user_db = app.db_name("user");
    let auth_db = app.db_name("auth");
    let crossed = auth_url.replace(&format!("/{auth_db}?"), &format!("/{user_db}?"));
    let err = postgres::Client::connect(&crossed, postgres::NoTls)
        .err()
        .expect("must be refused");
    assert!(
        err.to_string().contains("permission denied")
            || format!("{err:?}").contains("permission denied"),
        "{err:?}"
    );
    assert!(postgres::Client::connect(&auth_url, postgres::NoTls).is_ok());
}

#[test]
fn a_database_outage_gives_503_with_the_error_shape_and_writes_nothing() {
    let app = TestApp::spawn();
    let auth_db = app.db_name("auth");
    // Take auth's database away: no new connections, existing ones killed.
    migrator::admin::psql(&format!(
        "REVOKE CONNECT ON DATABASE {auth_db} FROM {auth_db}; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{auth_db}'"
    ))
    .unwrap();
    let (status, code) = error_code(app.get("/api/v1/auth/health", None)).unwrap();
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    let (status, code) =
        error_code(app.register("dee@example.com", "correct horse battery", "Dee")).unwrap();
    assert_eq!((status, code.as_str()), (503, "unavailable"));
    // The cause goes to the log with the request id, not to the client.
    assert!(
        app.log_text().contains("database unavailable"),
        "{}",
        app.log_text()
    );
    migrator::admin::psql(&format!("GRANT CONNECT ON DATABASE {auth_db} TO {auth_db}")).unwrap();
    let n: i64 = app.count("user", "SELECT count(*) FROM users");
    assert_eq!(n, 0, "nothing was written anywhere");
    let n: i64 = app.count("auth", "SELECT count(*) FROM credentials");
    assert_eq!(n, 0);
    // And the service recovers by itself.
    assert_eq!(app.get("/api/v1/auth/health", None).status(), 200);
    assert_eq!(
        app.register("dee@example.com", "correct horse battery", "Dee")
            .status(),
        201
    );
}

#[test]
fn a_failure_inside_a_transaction_rolls_back_the_whole_change() {
    let app = TestApp::spawn();
    // Sabotage: the outbox insert of user.created will fail after the user insert.
    app.db("user")
        .batch_execute("ALTER TABLE outbox RENAME TO outbox_gone")
        .unwrap();
    let r = app.register("eve@example.com", "correct horse battery", "Eve");
    assert!(r.status().is_server_error(), "{}", r.status());
    error_code(r).unwrap();
    let mut user_db = app.db("user");
    let n: i64 = user_db
        .query_one("SELECT count(*) FROM users", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "the user insert rolled back with the failed event insert"
    );
    let n: i64 = app.count("auth", "SELECT count(*) FROM credentials");
    assert_eq!(n, 0);
    // The pooled connection is clean afterwards: the next registration works.
    user_db
        .batch_execute("ALTER TABLE outbox_gone RENAME TO outbox")
        .unwrap();
    assert_eq!(
        app.register("eve@example.com", "correct horse battery", "Eve")
            .status(),
        201
    );
}

#[test]
fn the_host_stops_gracefully_on_sigterm_and_serves_again_after_a_restart() {
    let mut app = TestApp::spawn();
    assert_eq!(app.get("/api/v1/device/health", None).status(), 200);
    let status = app.stop().expect("the app exits on SIGTERM within 15 s");
    assert!(status.success(), "graceful exit: {status}");
    app.start();
    assert_eq!(app.get("/api/v1/device/health", None).status(), 200);
}

#[test]
fn every_component_answers_503_with_the_error_shape_when_its_own_database_is_gone() {
    let app = TestApp::spawn();
    for c in COMPONENTS {
        let db = app.db_name(c);
        migrator::admin::psql(&format!(
            "REVOKE CONNECT ON DATABASE {db} FROM {db}; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        ))
        .unwrap();
        let (status, code) = error_code(app.get(&format!("/api/v1/{c}/health"), None)).unwrap();
        assert_eq!((status, code.as_str()), (503, "unavailable"), "{c}");
        let body = app
            .get(&format!("/api/v1/{c}/health"), None)
            .text()
            .unwrap();
        assert!(
            !body.contains("permission denied") && !body.contains(&db),
            "no internal error text reaches clients: {body}"
        );
        // Liveness does not depend on the database.
        assert_eq!(
            app.get(&format!("/api/v1/{c}/health/live"), None).status(),
            200,
            "{c}"
        );
        migrator::admin::psql(&format!("GRANT CONNECT ON DATABASE {db} TO {db}")).unwrap();
        assert_eq!(
            app.get(&format!("/api/v1/{c}/health"), None).status(),
            200,
            "{c} recovers"
        );
    }
}

#[test]
fn a_transaction_abandoned_with_a_lock_is_ended_by_the_database_and_the_next_request_proceeds() {
    let app = TestApp::spawn();
    let (id, token) = app.signed_up_user();
    let uid = uuid::Uuid::parse_str(&id).unwrap();
    // As a host bug or a killed instance would leave it: a connection of the
    // component's role inside a transaction that holds the user's row lock,
    // never used again.
    let mut abandoned = postgres::Client::connect(app.db_url("user"), postgres::NoTls).unwrap();
    let mut tx = abandoned.transaction().unwrap();
    tx.query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&uid])
        .unwrap();
    // The update needs that lock: it waits until the server ends the idle
    // transaction (the role's idle_in_transaction_session_timeout), then runs.
    let r = app.patch(
        "/api/v1/user/me",
        &json!({"display_name": "After"}),
        Some(&token),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let name: String = app
        .db("user")
        .query_one("SELECT display_name FROM users WHERE id = $1", &[&uid])
        .unwrap()
        .get(0);
    assert_eq!(name, "After");
    // The abandoned session was terminated by the server, not by us.
    let err = tx
        .commit()
        .expect_err("the server ended the abandoned transaction");
    assert!(
        err.to_string().contains("idle-in-transaction") || err.is_closed(),
        "{err}"
    );
}

#[test]
fn a_request_that_finds_every_connection_of_its_role_taken_waits_then_gets_503_with_retry_after_and_writes_nothing(
) {
    // Without the cron trigger: its jobs would open connections of the role
    // into the slots this test takes (CI saw them keep a slot for 10 s).
    let app = TestApp::spawn_with(e2e::Options {
        disable_triggers: vec!["cron"],
        ..e2e::Options::default()
    });
    let (id, token) = app.signed_up_user();
    let uid = uuid::Uuid::parse_str(&id).unwrap();
    // Another replica (or anything else of the role) holds every connection
    // the user component's role may open: its CONNECTION LIMIT.
    // The app's pool may hold idle connections of the role: end them first
    // (its pool notices, as after a server restart), then take every slot.
    let role = app.db_name("user");
    let mut admin = postgres::Client::connect(
        "host=127.0.0.1 user=postgres dbname=postgres",
        postgres::NoTls,
    )
    .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .unwrap();
    let limit = migrator::admin::ROLE_CONNECTION_LIMIT as usize;
    let mut held = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while held.len() < limit {
        match postgres::Client::connect(app.db_url("user"), postgres::NoTls) {
            Ok(c) => held.push(c),
            // A terminated backend may take a moment to leave its slot.
            Err(e) if std::time::Instant::now() < deadline => {
                // Its Display says only "db error"; the code says which.
                assert_eq!(
                    e.code(),
                    Some(&postgres::error::SqlState::TOO_MANY_CONNECTIONS),
                    "{e:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let t0 = std::time::Instant::now();
    let r = app.patch(
        "/api/v1/user/me",
        &json!({"display_name": "Squeezed"}),
        Some(&token),
    );
    let waited = t0.elapsed();
    assert_eq!(r.status(), 503, "{}", r.text().unwrap_or_default());
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    assert!(retry.is_some_and(|s| s > 0), "503 says when to retry");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // It waited for a slot before giving up (platform::db::BUSY_WAIT).
    assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
    let name: String = app
        .db("user")
        .query_one("SELECT display_name FROM users WHERE id = $1", &[&uid])
        .unwrap()
        .get(0);
    assert_ne!(name, "Squeezed", "nothing written");
    // Slots come back: the next request proceeds.
    drop(held);
    let r = app.patch(
        "/api/v1/user/me",
        &json!({"display_name": "Spacious"}),
        Some(&token),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}
