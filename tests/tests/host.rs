//! The local host against Spin's semantics, through the `probe` fixture
//! component (tests/fixtures/probe): Postgres type mapping, outbound rules,
//! route precedence and `spin-*` headers, and the pool that does not roll back.

use e2e::{Options, TestApp};
use serde_json::{json, Value};

fn spawn_probe() -> TestApp {
    TestApp::spawn_with(Options {
        manifest: "tests/fixtures/probe/spin.toml".into(),
        databases: vec!["app"],
        db_url_variables: vec![("probe_db_url", "app")],
        ..Options::default()
    })
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
