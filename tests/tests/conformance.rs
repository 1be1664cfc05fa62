//! The local host against real Spin: the same requests to the same app on
//! both hosts, comparing status, the headers that matter and bodies. Runs
//! where a `spin` binary exists (CI puts one on `PATH`); elsewhere there is
//! nothing to compare against and the tests say so.

use e2e::{Host, Options, TestApp};
use serde_json::Value;

/// Both hosts, or `None` (printed) without a `spin` binary.
fn hosts() -> Option<(Host, Host)> {
    match e2e::spin_binary() {
        Some(spin) => Some((Host::Spin(spin), Host::Local(e2e::local_host_binary()))),
        None => {
            eprintln!("conformance: no spin binary (SPIN_BIN or PATH): nothing to compare against");
            None
        }
    }
}

fn probe(host: Host, manifest: &str) -> Result<TestApp, String> {
    TestApp::try_spawn_with(Options {
        manifest: manifest.into(),
        databases: vec!["app"],
        db_url_variables: vec![("probe_db_url", "app")],
        host: Some(host),
        ..Options::default()
    })
}

/// What a response says, with the parts that differ by run (ports, request
/// ids, the test's own address) replaced by placeholders.
fn observed(app: &TestApp, method: &str, path: &str) -> (u16, Option<String>, Value) {
    let r = app.call(method, path, None, None);
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().unwrap_or_default();
    let text = text.replace(&app.base, "http://APP");
    let mut body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if let Some(addr) = body.get_mut("spin-client-addr") {
        // The peer port differs; the address does not.
        if let Some(a) = addr.as_str().and_then(|a| a.rsplit_once(':')) {
            *addr = Value::String(if a.0 == "0.0.0.0" {
                format!("{}:{}", a.0, a.1)
            } else {
                format!("{}:PORT", a.0)
            });
        }
    }
    if let Some(e) = body.get_mut("error").and_then(|e| e.as_object_mut()) {
        e.remove("request_id");
    }
    (status, content_type, body)
}

#[test]
fn the_probe_answers_the_same_on_spin_and_on_the_local_host() {
    let Some((spin, local)) = hosts() else { return };
    let spin = probe(spin, "tests/fixtures/probe/spin.toml").expect("probe on spin");
    let local = probe(local, "tests/fixtures/probe/spin.toml").expect("probe on the local host");
    let requests = [
        ("GET", "/probe/headers/deeper?x=1"),
        ("GET", "/probe/headers"),
        ("GET", "/items/42/parts/wheel"),
        ("GET", "/items/special"),
        ("GET", "/probe/chain?path=%2Fprobe%2Fheaders%2Fdeeper"),
        ("GET", "/probe/chain?path=%2Fitems%2F42%2Fparts%2Fwheel"),
        ("GET", "/probe/types"),
        (
            "GET",
            "/probe/pg?url=postgres%3A%2F%2Fx%40127.0.0.1%3A5433%2Fx",
        ),
        ("GET", "/probe/http?url=http%3A%2F%2Fauth.spin.internal%2F"),
        ("GET", "/probe/nope"),
        ("POST", "/probe/headers"),
    ];
    for (method, path) in requests {
        let (s, l) = (
            observed(&spin, method, path),
            observed(&local, method, path),
        );
        // Error texts of refused connections are the hosts' own words; the
        // outcome must agree.
        let strip = |mut v: (u16, Option<String>, Value)| {
            if let Some(o) = v.2.as_object_mut() {
                o.remove("error");
            }
            v
        };
        assert_eq!(strip(s), strip(l), "{method} {path}");
    }
    // Unmatched paths are the host's 404, on both.
    assert_eq!(
        spin.get("/nothing/here", None).status(),
        local.get("/nothing/here", None).status()
    );
}

#[test]
fn both_hosts_handle_one_message_of_a_subscription_at_a_time() {
    let Some((spin, local)) = hosts() else { return };
    for host in [spin, local] {
        let app = probe(host.clone(), "tests/fixtures/probe/spin.toml").expect("probe");
        let n = 4;
        for i in 0..n {
            app.publish("probe", &format!("m{i}"));
        }
        let mut db = app.db("app");
        app.eventually(std::time::Duration::from_secs(30), || {
            let done: i64 = db
                .query_one(
                    "SELECT count(*) FROM probe_messages WHERE finished_at IS NOT NULL",
                    &[],
                )
                .ok()?
                .get(0);
            (done == n).then_some(())
        })
        .expect("every message handled");
        let overlaps: i64 = db
            .query_one(
                "SELECT count(*) FROM probe_messages a JOIN probe_messages b ON a.payload < b.payload \
                 AND a.started_at < b.finished_at AND b.started_at < a.finished_at",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(overlaps, 0, "{host:?} ran two messages at once");
    }
}

#[test]
fn both_hosts_refuse_a_redis_component_that_needs_service_chaining_with_the_same_message() {
    let Some((spin, local)) = hosts() else { return };
    let message = "This application requires the following features that are not available in this version of the 'redis' trigger: local_service_chaining";
    for host in [spin, local] {
        let log = probe(host.clone(), "tests/fixtures/probe/chaining-consumer.toml")
            .err()
            .unwrap_or_else(|| panic!("{host:?} started an app Spin refuses"));
        assert!(log.contains(message), "{host:?}: {log}");
    }
}

#[test]
fn the_app_answers_the_same_on_both_hosts() {
    let Some((spin, local)) = hosts() else { return };
    let run = |host: Host| {
        let app = TestApp::spawn_with(Options {
            host: Some(host),
            ..Options::default()
        });
        let mut seen = Vec::new();
        let (_, token) = app.signed_up_user();
        for (method, path) in [
            ("GET", "/api/v1/auth/health"),
            ("GET", "/api/v1/user/me"),
            ("GET", "/api/v1/notification/notifications"),
            ("GET", "/api/v1/device/health/live"),
            ("GET", "/api/v1/user/nope"),
            ("DELETE", "/api/v1/user/me"),
            ("GET", "/api/v1/user/internal/events"),
        ] {
            let r = app.call(method, path, None, Some(&token));
            let status = r.status().as_u16();
            let body: Value = r.json().unwrap_or(Value::Null);
            // Shapes, not values: the keys of the body (ids and times differ).
            let keys: Vec<String> = match &body {
                Value::Object(o) => o.keys().cloned().collect(),
                _ => Vec::new(),
            };
            let code = body["error"]["code"].clone();
            seen.push((method, path, status, keys, code));
        }
        seen
    };
    assert_eq!(run(spin), run(local));
}
