//! The holes a security review found, each closed and kept closed:
//! reset tokens readable through the API, one internal token that opened
//! everything, an event feed whose cursor could pass a late commit, and the
//! secrets each component holds.

use e2e::{expect_json, Session, TestApp, PASSWORD};
use serde_json::{json, Value};
use std::time::Duration;

/// Every documented `GET` route without path parameters, called as `who`;
/// returns each response body.
fn every_plain_get(app: &TestApp, token: &str) -> Vec<(String, String)> {
    e2e::documented_routes()
        .into_iter()
        .filter(|(m, p, _)| m == "GET" && !p.contains("/:"))
        .map(|(_, p, _)| {
            let body = app.get(&p, Some(token)).text().unwrap_or_default();
            (p, body)
        })
        .collect()
}

#[test]
fn no_route_feed_or_redis_message_ever_shows_a_password_reset_token() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let email = "victim@example.com";
    assert_eq!(app.register(email, PASSWORD, "Victim").status(), 201);
    let victim = app.token(email, PASSWORD);
    // The attacker of the review: someone holding the victim's API key.
    let key = expect_json(
        app.post(
            "/api/v1/auth/api-keys",
            &json!({"name": "stolen", "scopes": ["notification:read", "ticket:read"]}),
            Some(&victim),
        ),
        201,
    )["key"]
        .as_str()
        .unwrap()
        .to_string();
    // Listen to everything published while the reset is requested.
    let redis = redis::Client::open(app.redis_url()).unwrap();
    let mut sub = redis.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("*").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    expect_json(
        app.post(
            "/api/v1/auth/password-reset/request",
            &json!({"email": email}),
            None,
        ),
        202,
    );
    let token = app
        .reset_token_from_mail(email)
        .expect("the token goes out by email");
    assert!(token.len() >= 32);
    let mut seen = Vec::new();
    while let Ok(msg) = pubsub.get_message() {
        seen.push(String::from_utf8_lossy(msg.get_payload_bytes()).to_string());
    }
    assert!(!seen.is_empty(), "the reset's event was published");
    for m in &seen {
        assert!(
            !m.contains(&token),
            "a Redis message carries the token: {m}"
        );
    }
    // Every plain GET route, as the victim, with the stolen key, and as staff.
    let mut bodies = every_plain_get(&app, &victim);
    bodies.extend(every_plain_get(&app, &key));
    bodies.extend(every_plain_get(&app, &admin.token));
    // The feeds, as their consumers read them.
    for (source, consumer) in [("user", "auth"), ("auth", "user"), ("auth", "notification")] {
        let r = app.get_as(
            consumer,
            &format!("/api/v1/{source}/internal/events?after=0"),
        );
        assert_eq!(r.status(), 200);
        bodies.push((format!("{source} feed"), r.text().unwrap()));
    }
    let notices = bodies
        .iter()
        .find(|(p, _)| p == "/api/v1/notification/notifications")
        .expect("the notification list was read");
    assert!(
        notices.1.contains("password_reset_requested"),
        "the in-app notice exists: {}",
        notices.1
    );
    for (path, body) in &bodies {
        assert!(!body.contains(&token), "{path} shows the reset token");
    }
    // Stored only as a hash (auth) or sealed (the mail spool): no table of
    // any database holds it in the clear.
    for (component, _) in &app.db_urls {
        let mut db = app.db(component);
        let tables: Vec<String> = db
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in tables {
            let n: i64 = db
                .query_one(
                    &format!("SELECT count(*) FROM \"{t}\" x WHERE x::text LIKE '%' || $1 || '%'"),
                    &[&token],
                )
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{component}.{t} holds the token in the clear");
        }
    }
    // And the token still works, once, for its owner.
    assert_eq!(
        app.post(
            "/api/v1/auth/password-reset/confirm",
            &json!({"token": token, "new_password": "a whole new password"}),
            None,
        )
        .status(),
        204
    );
}

/// Every internal route with its callers, from docs/api.md.
fn service_routes() -> Vec<(String, String, Vec<String>)> {
    e2e::documented_routes()
        .into_iter()
        .filter_map(|(m, p, access)| {
            let callers = access.strip_prefix("service: ")?;
            Some((m, p, callers.split(", ").map(str::to_string).collect()))
        })
        .collect()
}

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with(':') {
                "00000000-0000-0000-0000-000000000000"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn internal_routes_open_only_to_the_service_tokens_of_the_components_they_name() {
    let app = TestApp::spawn();
    let routes = service_routes();
    assert!(routes.len() >= 20, "{routes:?}");
    let client = reqwest::blocking::Client::new();
    let send = |method: &str, path: &str, token: Option<String>| {
        let mut r = client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{}", app.base, concrete(path)),
        );
        if let Some(t) = token {
            r = r.header("x-service-token", t);
        }
        if method != "GET" {
            r = r.json(&json!({}));
        }
        let resp = r.send().unwrap();
        e2e::error_code(resp).map(|(s, _)| s).unwrap_or(0)
    };
    for (method, path, callers) in &routes {
        assert_eq!(
            send(method, path, None),
            401,
            "{method} {path} without a token"
        );
        // Every keyed component that the route does not name is refused.
        for other in e2e::KEYED
            .iter()
            .filter(|c| !callers.iter().any(|x| x == *c))
        {
            assert_eq!(
                send(method, path, Some(app.service_token(other))),
                403,
                "{method} {path} as {other}"
            );
        }
        // A caller's name with a made-up secret is refused too.
        let forged = format!("{}.{}", callers[0], "A".repeat(43));
        assert_eq!(
            send(method, path, Some(forged)),
            403,
            "{method} {path} forged"
        );
        // The old shared header opens nothing.
        let old = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{}", app.base, concrete(path)),
            )
            .header("x-internal-token", "anything")
            .send()
            .unwrap();
        assert_eq!(old.status(), 401, "{method} {path} with x-internal-token");
        // A named caller gets past the guard (whatever the body then says).
        let status = send(method, path, Some(app.service_token(&callers[0])));
        assert!(
            status != 401 && status != 403,
            "{method} {path} as {}: {status}",
            callers[0]
        );
    }
}

#[test]
fn no_request_can_make_a_platform_administrator() {
    let app = TestApp::spawn();
    let (id, _) = app.signed_up_user();
    let email: String = app
        .db("user")
        .query_one(
            "SELECT email FROM users WHERE id = $1",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .unwrap()
        .get(0);
    // The old network bootstrap is gone, whatever credential is presented.
    for service in e2e::KEYED {
        let r = app.post_json_as(
            service,
            "/api/v1/user/internal/bootstrap-admin",
            &json!({"email": email}),
        );
        assert_eq!(r.status(), 404, "bootstrap as {service}");
    }
    // The scheduler's job applies only grants written into the database.
    expect_json(
        app.post_as("scheduler", "/api/v1/user/internal/admin-grants/apply"),
        200,
    );
    let token = app.token(&email, PASSWORD);
    assert_eq!(
        app.get("/api/v1/user/users", Some(&token)).status(),
        403,
        "still a plain user"
    );
    app.grant_admin(&email);
    app.wait_for_identity(&id, |roles, _| roles.iter().any(|r| r == "super_admin"));
    let token = app.token(&email, PASSWORD);
    assert_eq!(app.get("/api/v1/user/users", Some(&token)).status(), 200);
    let session = Session { id, email, token };
    let audit = expect_json(
        app.get(
            "/api/v1/user/audit-logs?action=user.bootstrap_admin",
            session.t(),
        ),
        200,
    );
    assert_eq!(audit["total"], 1, "{audit}");
}

#[test]
fn each_component_holds_only_its_own_secrets() {
    let manifest: toml::Table = std::fs::read_to_string(e2e::root().join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let components = manifest["component"].as_table().unwrap();
    for (id, c) in components {
        let vars: Vec<(String, String)> = c
            .get("variables")
            .and_then(|v| v.as_table())
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let base = id.trim_end_matches("-events");
        for (name, value) in &vars {
            // A key variable is only ever the component's own.
            for other in e2e::KEYED {
                if value.contains(&format!("{{{{ {other}_key }}}}")) {
                    assert_eq!(*other, base, "{id}.{name} holds {other}'s key");
                    assert!(
                        !id.ends_with("-events"),
                        "consumer {id} holds a key it never uses"
                    );
                }
                if value.contains(&format!("{{{{ {other}_db_url }}}}")) {
                    assert_eq!(*other, base, "{id}.{name} holds {other}'s database");
                }
            }
            assert!(
                !value.contains("internal_token"),
                "{id} still uses the shared token"
            );
        }
        let holds_signing_key = vars.iter().any(|(_, v)| v.contains("jwt_signing_key"));
        assert_eq!(holds_signing_key, id == "auth", "{id} and jwt_signing_key");
        // Redis- and cron-triggered components never chain (Spin refuses them).
        let hosts: Vec<&str> = c["allowed_outbound_hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h.as_str())
            .collect();
        if id.ends_with("-events") || id == "scheduler" {
            assert!(
                hosts.iter().all(|h| !h.contains(".spin.internal")),
                "{id} lists a service-chaining host"
            );
        }
    }
    assert!(
        !manifest["variables"]
            .as_table()
            .unwrap()
            .contains_key("internal_token"),
        "the shared internal token is gone"
    );
}

/// One outbox row as a producer writes it.
fn insert_event(db: &mut postgres::Transaction, n: i64) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    let user = uuid::Uuid::new_v4();
    db.execute(
        "INSERT INTO outbox (id, source, event_type, schema_version, aggregate_id, aggregate_version, payload) \
         VALUES ($1, 'user', 'user.updated', 2, $2, $3, '{}'::jsonb)",
        &[&id, &user.to_string(), &n],
    )
    .unwrap();
    id
}

fn feed_ids(app: &TestApp, after: i64) -> (Vec<uuid::Uuid>, i64) {
    let page: Value = expect_json(
        app.get_as(
            "auth",
            &format!("/api/v1/user/internal/events?after={after}"),
        ),
        200,
    );
    let ids = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| uuid::Uuid::parse_str(e["id"].as_str().unwrap()).unwrap())
        .collect();
    (ids, page["next_after"].as_i64().unwrap())
}

#[test]
fn a_feed_cursor_never_passes_an_event_that_commits_later() {
    let app = TestApp::spawn();
    // Nothing else writes to user's outbox in this test.
    let mut c1 = app.db("user");
    let mut c2 = app.db("user");
    // T1 takes its transaction id first; T2 inserts first (lower seq); T1
    // inserts (higher seq) and commits while T2 is still open.
    let mut t1 = c1.transaction().unwrap();
    t1.execute("SELECT pg_current_xact_id()", &[]).unwrap();
    let mut t2 = c2.transaction().unwrap();
    let late = insert_event(&mut t2, 1);
    let early = insert_event(&mut t1, 1);
    t1.commit().unwrap();
    // The relay runs (as it does every 5 s), then a consumer reads the feed.
    expect_json(
        app.post_as("scheduler", "/api/v1/user/internal/outbox/publish"),
        200,
    );
    let (first, cursor) = feed_ids(&app, 0);
    assert_eq!(first, vec![early], "the committed event is served");
    // T2 commits after the cursor moved past T1's event.
    t2.commit().unwrap();
    expect_json(
        app.post_as("scheduler", "/api/v1/user/internal/outbox/publish"),
        200,
    );
    let (second, _) = feed_ids(&app, cursor);
    assert_eq!(
        second,
        vec![late],
        "the event committed later is after the cursor, not skipped"
    );
}
