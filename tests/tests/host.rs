//! The local host against Spin's semantics, through the `probe` fixture
//! component (tests/fixtures/probe): Postgres type mapping, outbound rules,
//! route precedence and `spin-*` headers, chained requests as Spin delivers
//! them, Spin's host requirements, one Redis message at a time, and the pool
//! that does not roll back. These always run on the local host; where a
//! `spin` binary exists, `conformance.rs` runs the same probes on both.

use e2e::{Host, Options, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

fn probe_options(manifest: &str) -> Options {
    Options {
        manifest: manifest.into(),
        databases: vec!["app"],
        db_url_variables: vec![("probe_db_url", "app")],
        host: Some(Host::Local(e2e::local_host_binary())),
        ..Options::default()
    }
}

fn spawn_probe() -> TestApp {
    TestApp::spawn_with(probe_options("tests/fixtures/probe/spin.toml"))
}

#[test]
fn postgres_types_used_in_schemas_round_trip_with_spins_mapping() {
    let app = spawn_probe();
    let r = app.get("/probe/types", None);
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["uuid"], "6f1c2f43-3f5e-4c2a-9d6e-1b2c3d4e5f60");
    assert_eq!(v["jsonb"], json!({"k": [1, 2, {"x": "y"}]}));
    assert_eq!(v["numeric"], "12345.6789");
    assert_eq!(v["timestamp"], "2026-11-23T04:05:06.789");
    assert_eq!(v["text_array"], json!(["a", null, "c"]));
    assert_eq!(v["bigint"], 9_007_199_254_740_993_i64);
    assert_eq!(v["int"], 7);
    // Spin's sharp edges, reproduced so nothing works here that fails there.
    assert_eq!(v["i32_into_bigint_refused"], true);
    assert_eq!(v["text_into_uuid_refused"], true);
    assert_eq!(v["timestamptz_unreadable"], true);
    assert_eq!(v["json_is_raw_bytes"], true);
}

#[test]
fn outbound_connections_outside_allowed_outbound_hosts_are_refused() {
    let app = spawn_probe();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let cases = [
        format!("/probe/http?url=http%3A%2F%2F127.0.0.1%3A{port}%2F"),
        format!(
            "/probe/redis?url=redis%3A%2F%2F127.0.0.1%3A{}",
            app.redis_port
        ),
        "/probe/pg?url=postgres%3A%2F%2Fx%40127.0.0.1%3A5433%2Fx".to_string(),
        "/probe/http?url=http%3A%2F%2Fauth.spin.internal%2F".to_string(),
    ];
    for path in cases {
        let v: Value = app.get(&path, None).json().unwrap();
        assert_eq!(v["ok"], false, "{path}: {v}");
    }
    // The allowed database is reachable.
    let url = app
        .db_url("app")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('@', "%40")
        .replace('?', "%3F")
        .replace('=', "%3D");
    let v: Value = app
        .get(&format!("/probe/pg?url={url}"), None)
        .json()
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn routes_follow_spins_precedence_and_requests_carry_the_spin_headers() {
    let app = spawn_probe();
    let h: Value = app.get("/probe/headers/deeper?x=1", None).json().unwrap();
    assert_eq!(h["spin-matched-route"], "/probe/...");
    assert_eq!(h["spin-component-route"], "/probe");
    assert_eq!(h["spin-path-info"], "/headers/deeper");
    assert_eq!(h["spin-base-path"], "/");
    assert_eq!(
        h["spin-full-url"],
        format!("{}/probe/headers/deeper?x=1", app.base)
    );
    assert!(h["spin-client-addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let h: Value = app.get("/items/42/parts/wheel", None).json().unwrap();
    assert_eq!(h["spin-matched-route"], "/items/:id/parts/:part");
    assert_eq!(h["spin-path-match-id"], "42");
    assert_eq!(h["spin-path-match-part"], "wheel");
    let h: Value = app.get("/items/special", None).json().unwrap();
    assert_eq!(h["spin-matched-route"], "/items/special");
    assert_eq!(app.get("/nothing/here", None).status(), 404);
}

#[test]
fn a_transaction_left_open_stays_open_on_the_pooled_connection_as_in_spin() {
    let app = spawn_probe();
    assert_eq!(app.get("/probe/leave-open", None).status(), 200);
    let v: Value = app.get("/probe/in-transaction", None).json().unwrap();
    assert_eq!(
        v["in_transaction"], true,
        "the next request reuses the connection inside the open transaction"
    );
}

#[test]
fn a_chained_request_is_a_synthetic_wildcard_match_whose_path_info_is_the_whole_path() {
    let app = spawn_probe();
    let h: Value = app
        .get("/probe/chain?path=%2Fprobe%2Fheaders%2Fdeeper", None)
        .json()
        .unwrap();
    assert_eq!(h["spin-path-info"], "/probe/headers/deeper", "{h}");
    assert_eq!(h["spin-matched-route"], "/...");
    assert_eq!(h["spin-raw-component-route"], "/...");
    assert_eq!(h["spin-component-route"], "");
    assert_eq!(h["spin-client-addr"], "0.0.0.0:0");
    assert_eq!(h["spin-full-url"], "http://localhost/probe/headers/deeper");
    assert!(h.get("spin-path-match-id").is_none());
}

#[test]
fn an_app_whose_redis_component_needs_service_chaining_is_refused_with_spins_message() {
    let log = TestApp::try_spawn_with(probe_options("tests/fixtures/probe/chaining-consumer.toml"))
        .err()
        .expect("the app must not start");
    assert!(
        log.contains("This application requires the following features that are not available in this version of the 'redis' trigger: local_service_chaining"),
        "{log}"
    );
}

/// Publishes `n` messages on the probe's channel and returns the
/// (started, finished) times the handler recorded, in start order.
pub fn handle_in_order(app: &TestApp, n: usize) -> Vec<(f64, f64)> {
    for i in 0..n {
        app.publish("probe", &format!("m{i}"));
    }
    let mut db = app.db("app");
    app.eventually(Duration::from_secs(30), || {
        let done: i64 = db
            .query_one(
                "SELECT count(*) FROM probe_messages WHERE finished_at IS NOT NULL",
                &[],
            )
            .ok()?
            .get(0);
        (done == n as i64).then_some(())
    })
    .expect("every message handled");
    db.query(
        "SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8 \
         FROM probe_messages ORDER BY started_at",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn messages_of_one_subscription_are_handled_one_at_a_time() {
    let app = spawn_probe();
    let times = handle_in_order(&app, 5);
    for pair in times.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "a message started before the previous one finished: {times:?}"
        );
    }
}
