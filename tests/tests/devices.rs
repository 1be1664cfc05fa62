//! The device component end to end, with scripted agents that sign exactly
//! as the runtime agent does (tests/src/agent.rs): nodes, placement,
//! lifecycle operations, quota, reports applied idempotently and in order,
//! forged messages refused, silent nodes. The real runtime agent against
//! Podman is in `agent_e2e.rs`.

use agent_protocol::messages::{DeviceStatus, RunState};
use e2e::agent::{observed, ScriptedAgent};
use e2e::nodes::{
    bring_online, concurrent_creates, device_of, enroll, listen, made_and_refused, next_command,
    redis_connection, set_quota, wait_op, D,
};
use e2e::{error_code, expect_json, Options, Session, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn a_user_gets_a_phone_once_its_node_reports_it_and_the_lifecycle_shows_in_the_api() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    let agent = enroll(&app, &admin, "node-a", json!({}));
    // Nothing is online yet: the refusal says why.
    let (status, code) = error_code(app.post(
        &format!("{D}/devices"),
        &json!({"name": "p1"}),
        Some(&token),
    ))
    .unwrap();
    assert_eq!((status, code.as_str()), (409, "no_capacity"));
    bring_online(&app, &admin, &agent);

    // The command reaches the node's channel, signed with its secret.
    let mut conn = redis_connection(&app);
    let mut pubsub = listen(&mut conn, &agent);

    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "p1", "tags": ["qa"]}),
            Some(&token),
        ),
        202,
    );
    assert_eq!(
        (op["kind"].as_str(), op["status"].as_str()),
        (Some("create"), Some("running"))
    );
    let id = device_of(&op);
    let env = next_command(&mut pubsub, &agent);
    assert_eq!(env.body["op"], "create");
    assert_eq!(env.body["operation_id"], op["id"]);
    assert_eq!(env.body["device"]["device_id"], id.as_str());

    // The desired state has it, with its generation and redroid's settings.
    let desired = agent.desired_state();
    assert_eq!(desired.devices.len(), 1);
    let dd = &desired.devices[0];
    assert_eq!(
        (dd.device_id.as_str(), dd.generation, dd.state),
        (id.as_str(), 1, RunState::Running)
    );
    assert_eq!(dd.spec.resources.cpu_millis, 2000);
    assert!(dd
        .spec
        .boot_args()
        .contains(&"androidboot.redroid_dpi=320".to_string()));

    // The agent reports it booting, then ready: the operation succeeds.
    agent.report(vec![agent.status(&id, DeviceStatus::Booting, 1)]);
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(d["observed_status"], "booting");
    agent.report(vec![
        agent.result(op["id"].as_str().unwrap(), true, json!({"status": "ready"})),
        agent.status(&id, DeviceStatus::Ready, 1),
    ]);
    let done = wait_op(&app, &token, op["id"].as_str().unwrap());
    assert_eq!(done["status"], "succeeded", "{done}");
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(
        (d["desired_status"].as_str(), d["observed_status"].as_str()),
        (Some("running"), Some("running"))
    );
    assert_eq!(
        d["adb"]["serial"], "10.0.0.17:40001",
        "the owner gets the ADB endpoint"
    );
    assert_eq!(d["node_id"], Value::Null, "users do not see nodes");
    assert_eq!(d["owner_id"], user.as_str());
    let runs = expect_json(
        app.get(&format!("{D}/devices/{id}/runs"), Some(&token)),
        200,
    );
    assert_eq!(runs["items"].as_array().unwrap().len(), 1);
    assert_eq!(runs["items"][0]["ended_at"], Value::Null);

    // Stop: generation 2; done when the agent sees it stopped.
    let stop = expect_json(
        app.post(&format!("{D}/devices/{id}/stop"), &json!({}), Some(&token)),
        202,
    );
    let desired = agent.desired_state();
    assert_eq!(
        (desired.devices[0].generation, desired.devices[0].state),
        (2, RunState::Stopped)
    );
    agent.report(vec![agent.status(&id, DeviceStatus::Stopped, 2)]);
    assert_eq!(
        wait_op(&app, &token, stop["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    let runs = expect_json(
        app.get(&format!("{D}/devices/{id}/runs"), Some(&token)),
        200,
    );
    assert!(
        runs["items"][0]["ended_at"].is_string(),
        "the run interval closed"
    );
    // A restart of a stopped device is refused; start is the move.
    assert_eq!(
        error_code(app.post(
            &format!("{D}/devices/{id}/restart"),
            &json!({}),
            Some(&token)
        ))
        .unwrap()
        .0,
        409
    );

    // Delete: gone from the desired state, quota back.
    let quota = expect_json(app.get("/api/v1/user/me/quota", Some(&token)), 200);
    assert_eq!(quota["used"]["devices"], 1, "{quota}");
    let del = expect_json(app.delete(&format!("{D}/devices/{id}"), Some(&token)), 202);
    assert!(agent.desired_state().devices.is_empty());
    agent.report(vec![agent.status(&id, DeviceStatus::Removed, 3)]);
    assert_eq!(
        wait_op(&app, &token, del["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    let quota = expect_json(app.get("/api/v1/user/me/quota", Some(&token)), 200);
    assert_eq!(quota["used"]["devices"], 0, "{quota}");
    assert_eq!(
        expect_json(app.get(&format!("{D}/devices"), Some(&token)), 200)["total"],
        0
    );
    // Its events, once each, in the outbox.
    let kinds: Vec<String> = app
        .db("device")
        .query(
            "SELECT event_type FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for k in [
        "device.created",
        "device.started",
        "device.stopped",
        "device.deleted",
    ] {
        assert_eq!(
            kinds.iter().filter(|x| *x == k).count(),
            1,
            "{k} in {kinds:?}"
        );
    }
}

#[test]
fn forged_unsigned_stale_misaddressed_and_older_agent_messages_change_nothing() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (_, token) = app.signed_up_user();
    let agent = enroll(&app, &admin, "node-b", json!({}));
    let other = enroll(&app, &admin, "node-c", json!({}));
    bring_online(&app, &admin, &agent);
    let op = expect_json(
        app.post(&format!("{D}/devices"), &json!({"name": "p"}), Some(&token)),
        202,
    );
    let id = device_of(&op);
    let path = agent_protocol::messages::desired_state_path("node-b");
    // Unsigned, wrongly signed, stale, and signed by another node: 401.
    let wrong =
        agent_protocol::messages::NodeSecret::new(b"not-the-secret-of-node-b".to_vec()).unwrap();
    let now = chrono::Utc::now();
    let stale =
        (now - chrono::Duration::seconds(900)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let fresh = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(app.get(&path, None).status(), 401);
    assert_eq!(
        agent
            .request_at("GET", &path, vec![], &fresh, &wrong)
            .status(),
        401
    );
    assert_eq!(
        agent
            .request_at("GET", &path, vec![], &stale, &agent.secret)
            .status(),
        401
    );
    assert_eq!(
        other.request("GET", &path, vec![]).status(),
        401,
        "node-c cannot read node-b's state"
    );
    // Inside a properly signed batch: a message signed with another key, one
    // of another node, and a status older than what was applied are refused
    // or ignored; the device stays as the newest report says.
    agent.report(vec![agent.status(&id, DeviceStatus::Ready, 1)]);
    let mut forged = agent.status(&id, DeviceStatus::Failed, 1);
    forged = forged.sign(&wrong);
    let misaddressed = other.status(&id, DeviceStatus::Failed, 1);
    let mut older = agent.status(&id, DeviceStatus::Stopped, 1);
    older.sent_at =
        (now - chrono::Duration::seconds(60)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let older = older.sign(&agent.secret);
    let (status, answer) = agent.report(vec![forged, misaddressed, older]);
    assert_eq!(status, 200);
    assert_eq!(answer["refused"].as_array().unwrap().len(), 2, "{answer}");
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(
        d["observed_status"], "running",
        "nothing older or forged applied"
    );
    // A node cannot report another node's device.
    other.register();
    other.report(vec![other.status(&id, DeviceStatus::Failed, 1)]);
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(d["observed_status"], "running");
    // A revoked node is shut out.
    expect_json(
        app.post(&format!("{D}/nodes/node-b/revoke"), &json!({}), admin.t()),
        200,
    );
    assert_eq!(agent.request("GET", &path, vec![]).status(), 401);
}

#[test]
fn a_silent_node_becomes_unreachable_with_its_devices_unknown_and_both_come_back() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SPIN_VARIABLE_NODE_HEARTBEAT_SECS".into(), "1".into())],
        ..Options::default()
    });
    let admin = app.platform_admin();
    let (_, token) = app.signed_up_user();
    let agent = enroll(&app, &admin, "node-d", json!({}));
    bring_online(&app, &admin, &agent);
    let op = expect_json(
        app.post(&format!("{D}/devices"), &json!({"name": "p"}), Some(&token)),
        202,
    );
    let id = device_of(&op);
    agent.report(vec![agent.status(&id, DeviceStatus::Ready, 1)]);
    // No more heartbeats: the liveness job (every 5 s) notices after 3 s.
    app.eventually(Duration::from_secs(30), || {
        let n = expect_json(app.get(&format!("{D}/nodes/node-d"), admin.t()), 200);
        (n["status"] == "unreachable").then_some(())
    })
    .expect("the node becomes unreachable");
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(d["observed_status"], "unknown");
    // Nothing new is placed there meanwhile.
    assert_eq!(
        error_code(app.post(&format!("{D}/devices"), &json!({"name": "q"}), Some(&token)))
            .unwrap()
            .1,
        "no_capacity"
    );
    // It comes back: a heartbeat with its inventory makes both whole again.
    agent.report(vec![agent.heartbeat(vec![observed(
        &id,
        DeviceStatus::Ready,
        1,
    )])]);
    let n = expect_json(app.get(&format!("{D}/nodes/node-d"), admin.t()), 200);
    assert_eq!(n["status"], "online");
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(d["observed_status"], "running");
}

#[test]
fn thirty_concurrent_creates_against_a_quota_of_five_make_exactly_five_devices() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 5);
    let agent = enroll(&app, &admin, "node-e", json!({}));
    bring_online(&app, &admin, &agent);
    let body = |i: usize| json!({"name": format!("p{i}"), "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}});
    let outcomes = concurrent_creates(&app, &token, (0..30).map(body).collect(), "create");
    let (made, refused) = made_and_refused(&outcomes, "quota_exceeded");
    assert_eq!((made, refused), (5, 25), "{outcomes:?}");
    assert_eq!(agent.desired_state().devices.len(), 5);
    assert_eq!(
        app.count(
            "device",
            "SELECT count(*) FROM devices WHERE desired_status <> 'deleted'"
        ),
        5
    );
    let quota = expect_json(app.get("/api/v1/user/me/quota", Some(&token)), 200);
    assert_eq!(quota["used"]["devices"], 5, "{quota}");
    assert_eq!(
        quota["reserved"]["devices"], 0,
        "nothing left reserved: {quota}"
    );
}

#[test]
fn concurrent_creates_never_overbook_a_node_and_the_strategies_place_as_documented() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 100);
    // Two nodes, 8 cores x4 overcommit = 32 cores each: 8 devices of 4 cores.
    let a = enroll(&app, &admin, "node-f", json!({}));
    let b = enroll(&app, &admin, "node-g", json!({}));
    bring_online(&app, &admin, &a);
    bring_online(&app, &admin, &b);
    let big = json!({"cpu_cores": 4, "memory_mb": 2048, "storage_gb": 4});
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (app, token, big) = (&app, &token, &big);
                s.spawn(move || {
                    app.post(
                        &format!("{D}/devices"),
                        &json!({"name": format!("b{i}"), "spec": big}),
                        Some(token),
                    )
                    .status()
                    .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        16,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 4);
    for n in ["node-f", "node-g"] {
        let node = expect_json(app.get(&format!("{D}/nodes/{n}"), admin.t()), 200);
        assert_eq!(node["allocated"]["cpu_millis"], 32000, "{node}");
    }
    // The error says why.
    let r = app.post(
        &format!("{D}/devices"),
        &json!({"name": "x", "spec": big}),
        Some(&token),
    );
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4000m free cpu"),
        "{body}"
    );

    // Strategies, on two fresh nodes: binpack fills one, spread alternates;
    // a cordoned node and a tainted one get nothing.
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 100);
    set_quota(&app, &admin, &admin.id, 100);
    for (id, extra) in [
        ("n1", json!({})),
        ("n2", json!({})),
        (
            "n3",
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        ),
        ("n4", json!({})),
    ] {
        bring_online(&app, &admin, &enroll(&app, &admin, id, extra));
    }
    expect_json(
        app.post(&format!("{D}/nodes/n4/cordon"), &json!({}), admin.t()),
        200,
    );
    let place = |strategy: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let op = expect_json(
                    app.post(
                        &format!("{D}/devices"),
                        &json!({"name": format!("{strategy}{i}"), "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4},
                                "placement": {"strategy": strategy}}),
                        admin.t(),
                    ),
                    202,
                );
                op["node_id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let spread = place("spread", 4);
    assert_eq!(
        spread,
        ["n1", "n2", "n1", "n2"],
        "spread alternates (ties by id)"
    );
    let binpack = place("binpack", 3);
    assert!(
        binpack.iter().all(|n| n == &binpack[0]),
        "binpack fills one node: {binpack:?}"
    );
    // Users may not choose the strategy.
    assert_eq!(
        error_code(app.post(
            &format!("{D}/devices"),
            &json!({"name": "u", "placement": {"strategy": "spread"}}),
            Some(&token)
        ))
        .unwrap()
        .0,
        403
    );
    // A toleration opens the tainted node, and the placement is explained.
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "t", "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4},
                    "placement": {"strategy": "least_loaded", "tolerations": [{"key": "dedicated"}]}}),
            admin.t(),
        ),
        202,
    );
    assert_eq!(op["node_id"], "n3");
    let why = expect_json(
        app.get(
            &format!("{D}/devices/{}/placement", device_of(&op)),
            admin.t(),
        ),
        200,
    );
    assert_eq!(why["decision"]["strategy"], "least_loaded");
    assert!(
        why["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("chose n3"),
        "{why}"
    );
    assert_eq!(
        app.count(
            "device",
            "SELECT count(*) FROM devices WHERE node_id = 'n4'"
        ),
        0,
        "the cordoned node got nothing"
    );
}

#[test]
fn a_tenants_device_limit_holds_under_concurrency() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let tenant = app.create_tenant(&admin.token, "acme");
    expect_json(
        app.patch(
            &format!("/api/v1/user/tenants/{tenant}"),
            &json!({"max_devices": 3}),
            admin.t(),
        ),
        200,
    );
    let members: Vec<Session> = (0..3)
        .map(|_| {
            app.create_user(
                &admin.token,
                json!({"tenant_id": tenant, "role_ids": [e2e::roles::USER]}),
            )
        })
        .collect();
    for m in &members {
        set_quota(&app, &admin, &m.id, 10);
    }
    let agent = enroll(&app, &admin, "node-h", json!({}));
    bring_online(&app, &admin, &agent);
    let made: usize = std::thread::scope(|s| {
        let handles: Vec<_> = members
            .iter()
            .flat_map(|m| (0..3).map(move |i| (m, i)))
            .map(|(m, i)| {
                let app = &app;
                s.spawn(move || {
                    app.post(&format!("{D}/devices"), &json!({"name": format!("t{i}"), "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}}), m.t())
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap())
            .filter(|s| *s == 202)
            .count()
    });
    assert_eq!(made, 3, "the tenant's limit is 3");
}

#[test]
fn a_device_operation_reaches_its_node_signed_and_only_that_nodes_result_finishes_it() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (_, token) = app.signed_up_user();
    let agent = enroll(&app, &admin, "node-s", json!({}));
    bring_online(&app, &admin, &agent);
    let op = expect_json(
        app.post(&format!("{D}/devices"), &json!({"name": "p"}), Some(&token)),
        202,
    );
    let id = device_of(&op);
    let shell = format!("{D}/devices/{id}/shell");
    // Not running yet: refused, with the reason, and nothing recorded.
    let (status, code) =
        error_code(app.post(&shell, &json!({"command": "echo hi"}), admin.t())).unwrap();
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert_eq!(
        app.count(
            "device",
            "SELECT count(*) FROM operations WHERE kind = 'shell'"
        ),
        0
    );
    agent.report(vec![agent.status(&id, DeviceStatus::Ready, 1)]);
    assert_eq!(
        wait_op(&app, &token, op["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    // The owner may use the phone but holds no device:shell.
    assert_eq!(
        error_code(app.post(&shell, &json!({"command": "echo hi"}), Some(&token)))
            .unwrap()
            .0,
        403
    );

    let mut conn = redis_connection(&app);
    let mut pubsub = listen(&mut conn, &agent);

    // Without a wait: 202 with the running operation; the command is on
    // the node's channel, signed with its secret.
    let running = expect_json(
        app.post(
            &format!("{shell}?wait=0"),
            &json!({"command": "echo hi", "timeout_ms": 5000}),
            admin.t(),
        ),
        202,
    );
    assert_eq!(
        (running["kind"].as_str(), running["status"].as_str()),
        (Some("shell"), Some("running"))
    );
    let op_id = running["id"].as_str().unwrap().to_string();
    let env = next_command(&mut pubsub, &agent);
    assert_eq!(
        env.body,
        json!({"operation_id": op_id, "op": "shell", "device_id": id, "command": "echo hi",
               "timeout_ms": 5000, "max_output_bytes": null})
    );

    // Another node's result for it is refused; the operation runs on.
    let other = enroll(&app, &admin, "node-t", json!({}));
    assert_eq!(other.register(), 204);
    let forged = json!({"exit_code": 0, "stdout": "forged\n", "stderr": "", "truncated": false});
    let (status, answer) = other.report(vec![other.result(&op_id, true, forged)]);
    assert_eq!(status, 200);
    assert_eq!(answer["refused"].as_array().unwrap().len(), 1, "{answer}");
    let v = expect_json(app.get(&format!("{D}/operations/{op_id}"), admin.t()), 200);
    assert_eq!(v["status"], "running", "{v}");

    // The node's own result finishes it, and the API shows the output.
    let output = json!({"exit_code": 0, "stdout": "hi\n", "stderr": "", "truncated": false});
    let (_, answer) = agent.report(vec![agent.result(&op_id, true, output.clone())]);
    assert_eq!(answer["applied"], 1, "{answer}");
    let done = wait_op(&app, &admin.token, &op_id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], output);

    // A request that waits gets the finished operation as soon as the
    // result arrives: `packages` is a fixed shell command the control plane
    // parses, recorded under its own kind and open to the owner.
    let answered = std::thread::scope(|s| {
        let waiting =
            s.spawn(|| app.get(&format!("{D}/devices/{id}/packages?wait=20"), Some(&token)));
        let env = next_command(&mut pubsub, &agent);
        assert_eq!(
            (env.body["op"].as_str(), env.body["command"].as_str()),
            (Some("shell"), Some("pm list packages"))
        );
        let listed = json!({"exit_code": 0, "stdout": "package:com.b\npackage:com.a\n", "stderr": "", "truncated": false});
        agent.report(vec![agent.result(
            env.body["operation_id"].as_str().unwrap(),
            true,
            listed,
        )]);
        waiting.join().unwrap()
    });
    let v = expect_json(answered, 200);
    assert_eq!(
        (v["kind"].as_str(), v["status"].as_str()),
        (Some("packages"), Some("succeeded")),
        "{v}"
    );
    assert_eq!(
        v["result"],
        json!({"packages": ["com.a", "com.b"], "truncated": false})
    );

    // The agent's failure fails the operation with its code and message.
    let running = expect_json(
        app.get(
            &format!("{D}/devices/{id}/logcat?lines=5&wait=0"),
            Some(&token),
        ),
        202,
    );
    let env = next_command(&mut pubsub, &agent);
    assert_eq!(
        (env.body["op"].as_str(), env.body["lines"].as_u64()),
        (Some("logcat"), Some(5))
    );
    agent.report(vec![agent.result(
        running["id"].as_str().unwrap(),
        false,
        Value::Null,
    )]);
    let failed = wait_op(&app, &token, running["id"].as_str().unwrap());
    assert_eq!(
        (
            failed["status"].as_str(),
            failed["error_code"].as_str(),
            failed["error"].as_str()
        ),
        (
            Some("failed"),
            Some("device_command_failed"),
            Some("it failed")
        )
    );
}

#[test]
fn a_pushed_file_stays_off_redis_and_only_its_node_fetches_it_while_the_push_runs() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (_, token) = app.signed_up_user();
    let agent = enroll(&app, &admin, "node-p", json!({}));
    let other = enroll(&app, &admin, "node-q", json!({}));
    bring_online(&app, &admin, &agent);
    assert_eq!(other.register(), 204);
    let op = expect_json(
        app.post(&format!("{D}/devices"), &json!({"name": "p"}), Some(&token)),
        202,
    );
    let id = device_of(&op);
    agent.report(vec![agent.status(&id, DeviceStatus::Ready, 1)]);
    assert_eq!(
        wait_op(&app, &token, op["id"].as_str().unwrap())["status"],
        "succeeded"
    );

    let mut conn = redis_connection(&app);
    let mut pubsub = listen(&mut conn, &agent);

    // The command names the file by length and digest; the file is not in it.
    let running = expect_json(
        app.call_raw(
            "PUT",
            &format!("{D}/devices/{id}/files?path=/data/local/tmp/a.txt&wait=0"),
            "application/octet-stream",
            b"hello".to_vec(),
            admin.t(),
        ),
        202,
    );
    let op_id = running["id"].as_str().unwrap().to_string();
    let env = next_command(&mut pubsub, &agent);
    // The digest was computed with coreutils' sha256sum.
    assert_eq!(
        env.body,
        json!({"operation_id": op_id, "op": "push_file", "device_id": id, "path": "/data/local/tmp/a.txt",
               "bytes": 5, "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"})
    );
    assert_eq!(
        app.count(
            "device",
            "SELECT count(*) FROM node_commands WHERE position('aGVsbG8' in body::text) > 0"
        ),
        0,
        "no command row holds the file"
    );

    // Its node fetches the bytes with a signed request.
    let path = agent_protocol::messages::operation_content_path(agent.node.as_str(), &op_id);
    let r = agent.request("GET", &path, vec![]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().unwrap().as_ref(), b"hello");

    // Unsigned, wrongly signed, and signed by another node for this path: 401.
    assert_eq!(error_code(app.get(&path, None)).unwrap().0, 401);
    let wrong =
        agent_protocol::messages::NodeSecret::new(b"not-the-secret-of-node-p".to_vec()).unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, code) = error_code(agent.request_at("GET", &path, vec![], &now, &wrong)).unwrap();
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert_eq!(
        error_code(other.request("GET", &path, vec![])).unwrap().0,
        401
    );
    // Another node, signing for itself, does not get this node's file: 404.
    let elsewhere = agent_protocol::messages::operation_content_path(other.node.as_str(), &op_id);
    let (status, code) = error_code(other.request("GET", &elsewhere, vec![])).unwrap();
    assert_eq!((status, code.as_str()), (404, "not_found"));
    // Unknown and malformed operation ids: 404.
    for unknown in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_string()] {
        let p = agent_protocol::messages::operation_content_path(agent.node.as_str(), &unknown);
        let (status, code) = error_code(agent.request("GET", &p, vec![])).unwrap();
        assert_eq!((status, code.as_str()), (404, "not_found"), "{unknown}");
    }
    // An operation of this node that has no contents (a shell): 404 as well.
    let shell = expect_json(
        app.post(
            &format!("{D}/devices/{id}/shell?wait=0"),
            &json!({"command": "echo hi"}),
            admin.t(),
        ),
        202,
    );
    let p = agent_protocol::messages::operation_content_path(
        agent.node.as_str(),
        shell["id"].as_str().unwrap(),
    );
    assert_eq!(error_code(agent.request("GET", &p, vec![])).unwrap().0, 404);

    // Once the push has its answer, the file is gone: 404, no row left.
    let (_, answer) = agent.report(vec![agent.result(
        &op_id,
        true,
        json!({"path": "/data/local/tmp/a.txt", "bytes": 5}),
    )]);
    assert_eq!(answer["applied"], 1, "{answer}");
    assert_eq!(wait_op(&app, &admin.token, &op_id)["status"], "succeeded");
    let (status, code) = error_code(agent.request("GET", &path, vec![])).unwrap();
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert_eq!(
        app.count("device", "SELECT count(*) FROM operation_contents"),
        0
    );
}

// Lifecycle: expiry, idle timeout, session length, forced release
// (components/device/src/domain/lifecycle.rs, handlers/policy.rs).

/// The app with lifecycle settings shortened for a test; the scripted
/// agents beat once, so nodes are given an hour before they count as silent
/// (a silent node's devices are `unknown`, which stops the idle clocks).
fn lifecycle_app(settings: &[(&str, &str)], cron: bool) -> TestApp {
    let mut env = vec![(
        "SPIN_VARIABLE_NODE_HEARTBEAT_SECS".to_string(),
        "3600".to_string(),
    )];
    for (k, v) in settings {
        env.push((format!("SPIN_VARIABLE_{}", k.to_uppercase()), v.to_string()));
    }
    TestApp::spawn_with(Options {
        env,
        disable_triggers: if cron { vec![] } else { vec!["cron"] },
        ..Options::default()
    })
}

/// A device of `token`'s user, created with `extra` fields and reported
/// running by its node; its id.
fn running_device(
    app: &TestApp,
    token: &str,
    agent: &ScriptedAgent,
    name: &str,
    extra: Value,
) -> String {
    let mut body =
        json!({"name": name, "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let op = expect_json(app.post(&format!("{D}/devices"), &body, Some(token)), 202);
    let id = device_of(&op);
    agent.report(vec![agent.status(&id, DeviceStatus::Ready, 1)]);
    assert_eq!(
        wait_op(app, token, op["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    id
}

/// A device's events in the outbox, in order: (type, payload).
fn events_of(app: &TestApp, device: &str) -> Vec<(String, Value)> {
    app.db("device")
        .query(
            "SELECT event_type, payload FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
            &[&device],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn has_event(app: &TestApp, device: &str, kind: &str) -> bool {
    events_of(app, device).iter().any(|(t, _)| t == kind)
}

/// The positions of a device's events of these types, each exactly once.
fn once_each(app: &TestApp, device: &str, kinds: &[&str]) -> Vec<usize> {
    let events = events_of(app, device);
    kinds
        .iter()
        .map(|k| {
            let at: Vec<usize> = (0..events.len()).filter(|i| events[*i].0 == *k).collect();
            assert_eq!(
                at.len(),
                1,
                "{k} once in {:?}",
                events.iter().map(|e| &e.0).collect::<Vec<_>>()
            );
            at[0]
        })
        .collect()
}

/// The device's operations of a kind, as its owner sees them.
fn operations_of(app: &TestApp, token: &str, device: &str, kind: &str) -> Vec<Value> {
    let page = expect_json(
        app.get(
            &format!("{D}/operations?device_id={device}&kind={kind}"),
            Some(token),
        ),
        200,
    );
    page["items"].as_array().unwrap().clone()
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

/// Reads the node's channel until a command of each `(op, device)` has
/// come (other commands are skipped); the operation ids, in `wanted`'s order.
fn commands_for(
    pubsub: &mut redis::PubSub,
    agent: &ScriptedAgent,
    wanted: &[(&str, &str)],
) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; wanted.len()];
    while found.iter().any(Option::is_none) {
        let env = next_command(pubsub, agent);
        let about = env.body["device_id"]
            .as_str()
            .or(env.body["device"]["device_id"].as_str());
        for (i, (op, device)) in wanted.iter().enumerate() {
            if env.body["op"] == *op && about == Some(*device) {
                found[i] = env.body["operation_id"].as_str().map(str::to_string);
            }
        }
    }
    found.into_iter().map(Option::unwrap).collect()
}

#[test]
fn an_idle_device_is_warned_then_stopped_while_one_in_use_runs_on_and_a_long_session_ends() {
    // Idle after 20 s without a heartbeat, warned 8 s ahead; the third
    // device's sessions last 10 s at most.
    const IDLE: i64 = 20;
    const LEAD: i64 = 8;
    let app = lifecycle_app(
        &[
            ("device_min_timeout_secs", "1"),
            ("device_idle_warning_secs", "8"),
        ],
        true,
    );
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 5);
    let agent = enroll(&app, &admin, "node-life", json!({}));
    bring_online(&app, &admin, &agent);
    let mut conn = redis::Client::open(app.redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pubsub = listen(&mut conn, &agent);
    let secs = chrono::Duration::seconds;

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (idle, used, long, started, used_deadline) = std::thread::scope(|s| {
        let (app, token, stop): (&TestApp, &str, _) = (&app, &token, &stop);
        let used = running_device(
            app,
            token,
            &agent,
            "used",
            json!({"idle_timeout_secs": IDLE}),
        );
        // Its client heartbeats every second from now on, as a console does.
        let heartbeat = format!("{D}/devices/{used}/heartbeat");
        s.spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = expect_json(app.post(&heartbeat, &json!({}), Some(token)), 200);
                assert_eq!(r["idle_timeout_secs"], IDLE, "{r}");
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let idle = running_device(
            app,
            token,
            &agent,
            "idle",
            json!({"idle_timeout_secs": IDLE}),
        );
        let long = running_device(app, token, &agent, "long", json!({"max_session_secs": 10}));
        let d = expect_json(app.get(&format!("{D}/devices/{idle}"), Some(token)), 200);
        assert_eq!(d["idle_timeout_secs"], IDLE);
        let started = time(&d["session_started_at"]);
        assert_eq!(time(&d["idle_deadline"]), started + secs(IDLE), "{d}");
        assert_eq!(d["next_lifecycle_check"], Value::Null, "staff only: {d}");
        // What the job looks at first is the warning (heartbeats leave it:
        // they only ever move the deadline later).
        let v = expect_json(app.get(&format!("{D}/devices/{used}"), admin.t()), 200);
        let used_deadline = time(&v["session_started_at"]) + secs(IDLE);
        assert_eq!(
            time(&v["next_lifecycle_check"]),
            used_deadline - secs(LEAD),
            "{v}"
        );

        app.eventually(Duration::from_secs(60), || {
            has_event(app, &idle, "device.idle_stopped").then_some(())
        })
        .expect("the idle device is stopped");
        app.eventually(Duration::from_secs(60), || {
            has_event(app, &long, "device.session_ended").then_some(())
        })
        .expect("the long session ends");
        // Proof that the job looked at `used` after its first idle deadline
        // and found it in use: a look plans the next check from the last
        // heartbeat (heartbeat + timeout - lead), so a next check beyond
        // this bound comes from a heartbeat later than that deadline.
        app.eventually(Duration::from_secs(90), || {
            let v = expect_json(app.get(&format!("{D}/devices/{used}"), admin.t()), 200);
            (time(&v["next_lifecycle_check"]) > used_deadline + secs(IDLE - LEAD)).then_some(())
        })
        .expect("the job looks at the device in use again");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (idle, used, long, started, used_deadline)
    });

    // Idle: warned first, then stopped by the control plane as a user's
    // stop is: an operation without requester, the command on the node's channel.
    let order = once_each(&app, &idle, &["device.idle_warning", "device.idle_stopped"]);
    assert!(order[0] < order[1], "warned before stopped");
    let warning = events_of(&app, &idle)[order[0]].1.clone();
    assert_eq!(warning["lifecycle"]["idle_timeout_secs"], IDLE, "{warning}");
    assert_eq!(
        time(&warning["lifecycle"]["idle_deadline"]),
        started + secs(IDLE)
    );
    let d = expect_json(app.get(&format!("{D}/devices/{idle}"), Some(&token)), 200);
    assert_eq!(d["desired_status"], "stopped");
    let stops = operations_of(&app, &token, &idle, "stop");
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_eq!(stops[0]["requested_by"], Value::Null);
    // The long session: ended without a warning, also by a stop.
    once_each(&app, &long, &["device.session_ended"]);
    assert!(!has_event(&app, &long, "device.idle_warning"));
    let long_stops = operations_of(&app, &token, &long, "stop");
    assert_eq!(long_stops.len(), 1, "{long_stops:?}");
    let sent = commands_for(&mut pubsub, &agent, &[("stop", &idle), ("stop", &long)]);
    assert_eq!(
        (json!(sent[0]), json!(sent[1])),
        (stops[0]["id"].clone(), long_stops[0]["id"].clone())
    );
    agent.report(vec![agent.status(&idle, DeviceStatus::Stopped, 2)]);
    assert_eq!(
        wait_op(&app, &token, stops[0]["id"].as_str().unwrap())["status"],
        "succeeded"
    );

    // The device in use runs on, never warned.
    let v = expect_json(app.get(&format!("{D}/devices/{used}"), Some(&token)), 200);
    assert_eq!(v["desired_status"], "running");
    assert!(time(&v["last_client_heartbeat_at"]) > used_deadline);
    let kinds: Vec<String> = events_of(&app, &used).into_iter().map(|e| e.0).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("device.idle") || k == "device.session_ended"),
        "{kinds:?}"
    );
    assert!(operations_of(&app, &token, &used, "stop").is_empty());
    // A stopped device takes no heartbeat.
    let (status, code) = error_code(app.post(
        &format!("{D}/devices/{idle}/heartbeat"),
        &json!({}),
        Some(&token),
    ))
    .unwrap();
    assert_eq!((status, code.as_str()), (409, "conflict"));
}

#[test]
fn an_expired_device_is_warned_then_stopped_then_deleted_after_its_grace_period() {
    let app = lifecycle_app(
        &[
            ("device_expiry_warning_secs", "5"),
            ("device_expiry_grace_secs", "8"),
        ],
        true,
    );
    let admin = app.platform_admin();
    let (_, token) = app.signed_up_user();
    let agent = enroll(&app, &admin, "node-exp", json!({}));
    bring_online(&app, &admin, &agent);
    let id = running_device(&app, &token, &agent, "rented", json!({}));
    let expires = chrono::Utc::now() + chrono::Duration::seconds(12);
    let expires_text = expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let d = expect_json(
        app.patch(
            &format!("{D}/devices/{id}"),
            &json!({"expires_at": expires_text}),
            admin.t(),
        ),
        200,
    );
    assert_eq!(time(&d["expires_at"]), time(&json!(expires_text)));

    app.eventually(Duration::from_secs(60), || {
        has_event(&app, &id, "device.expiring").then_some(())
    })
    .expect("the owner is warned");
    app.eventually(Duration::from_secs(60), || {
        has_event(&app, &id, "device.expired").then_some(())
    })
    .expect("the device expires");
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(d["desired_status"], "stopped");
    let stops = operations_of(&app, &token, &id, "stop");
    assert_eq!((stops.len(), &stops[0]["requested_by"]), (1, &Value::Null));
    assert_eq!(
        agent.desired_state().devices[0].state,
        RunState::Stopped,
        "its node is told to stop it"
    );
    // Expired: its owner cannot start it again.
    let (status, code) =
        error_code(app.post(&format!("{D}/devices/{id}/start"), &json!({}), Some(&token))).unwrap();
    assert_eq!((status, code.as_str()), (409, "conflict"));
    agent.report(vec![agent.status(&id, DeviceStatus::Stopped, 2)]);

    // After the grace period it is released: deleted as a user's delete is.
    app.eventually(Duration::from_secs(60), || {
        has_event(&app, &id, "device.released").then_some(())
    })
    .expect("the device is released after its grace period");
    let deletes = operations_of(&app, &token, &id, "delete");
    assert_eq!(
        (deletes.len(), &deletes[0]["requested_by"]),
        (1, &Value::Null)
    );
    assert!(agent.desired_state().devices.is_empty());
    agent.report(vec![agent.status(&id, DeviceStatus::Removed, 3)]);
    assert_eq!(
        wait_op(&app, &token, deletes[0]["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    let order = once_each(
        &app,
        &id,
        &[
            "device.expiring",
            "device.expired",
            "device.released",
            "device.deleted",
        ],
    );
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
    let events = events_of(&app, &id);
    let expiring = &events[order[0]].1;
    assert_eq!(
        time(&expiring["lifecycle"]["expires_at"]),
        time(&json!(expires_text))
    );
    assert_eq!(
        time(&expiring["lifecycle"]["delete_at"]),
        time(&json!(expires_text)) + chrono::Duration::seconds(8)
    );
    assert_eq!(events[order[2]].1["lifecycle"]["released_by"], Value::Null);
    let quota = expect_json(app.get("/api/v1/user/me/quota", Some(&token)), 200);
    assert_eq!(quota["used"]["devices"], 0, "{quota}");
}

#[test]
fn bad_lifecycle_input_is_refused_and_changes_nothing() {
    // No cron: nothing but the requests below may change anything.
    let app = lifecycle_app(&[], false);
    let admin = app.platform_admin();
    let (_, token) = app.signed_up_user();
    let agent = enroll(&app, &admin, "node-bad", json!({}));
    bring_online(&app, &admin, &agent);
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "p", "start": false}),
            Some(&token),
        ),
        202,
    );
    let id = device_of(&op);
    let path = format!("{D}/devices/{id}");
    let fingerprint = || {
        (
            expect_json(app.get(&path, admin.t()), 200),
            app.count("device", "SELECT count(*) FROM operations"),
            app.count("device", "SELECT count(*) FROM outbox"),
            app.count("device", "SELECT count(*) FROM devices"),
        )
    };
    let before = fingerprint();
    let future = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let past = (chrono::Utc::now() - chrono::Duration::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let attempts: Vec<(&str, String, Value, Option<&str>, u16)> = vec![
        (
            "PATCH",
            path.clone(),
            json!({"idle_timeout_secs": -60}),
            Some(&token),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"idle_timeout_secs": 0}),
            Some(&token),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"idle_timeout_secs": 59}),
            Some(&token),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"idle_timeout_secs": 2_592_001}),
            Some(&token),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"idle_timeout_secs": "600"}),
            Some(&token),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"idle_timeout_secs": 1.5}),
            Some(&token),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"max_session_secs": -1}),
            Some(&token),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"max_session_secs": 1e12}),
            Some(&token),
            400,
        ),
        // A valid name with a bad timeout changes neither.
        (
            "PATCH",
            path.clone(),
            json!({"name": "renamed", "max_session_secs": 0}),
            Some(&token),
            400,
        ),
        // Users do not set their expiry, not even a valid one.
        (
            "PATCH",
            path.clone(),
            json!({"expires_at": future}),
            Some(&token),
            403,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"expires_at": null}),
            Some(&token),
            403,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"expires_at": past}),
            admin.t(),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"expires_at": "next tuesday"}),
            admin.t(),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"expires_at": "2030-01-01"}),
            admin.t(),
            400,
        ),
        (
            "PATCH",
            path.clone(),
            json!({"expires_at": 1_900_000_000}),
            admin.t(),
            400,
        ),
        (
            "POST",
            format!("{D}/devices"),
            json!({"name": "q", "idle_timeout_secs": -1}),
            Some(&token),
            400,
        ),
        (
            "POST",
            format!("{D}/devices"),
            json!({"name": "q", "expires_at": future}),
            Some(&token),
            403,
        ),
        (
            "POST",
            format!("{D}/devices"),
            json!({"name": "q", "expires_at": past}),
            admin.t(),
            400,
        ),
        // Not running: no heartbeat. Not an administrator: no release.
        (
            "POST",
            format!("{path}/heartbeat"),
            json!({}),
            Some(&token),
            409,
        ),
        (
            "POST",
            format!("{path}/release"),
            json!({}),
            Some(&token),
            403,
        ),
    ];
    for (method, p, body, who, want) in &attempts {
        let (status, _) = error_code(app.call(method, p, Some(body), *who)).unwrap();
        assert_eq!(status, *want, "{method} {p} {body}");
    }
    assert_eq!(fingerprint(), before, "bad input changed something");

    // Good input: set, shown, cleared; staff see the next check.
    let d = expect_json(
        app.patch(
            &path,
            &json!({"idle_timeout_secs": 600, "max_session_secs": 3600}),
            Some(&token),
        ),
        200,
    );
    assert_eq!(
        (
            d["idle_timeout_secs"].as_i64(),
            d["max_session_secs"].as_i64()
        ),
        (Some(600), Some(3600))
    );
    let d = expect_json(
        app.patch(&path, &json!({"idle_timeout_secs": null}), Some(&token)),
        200,
    );
    assert_eq!(
        (
            d["idle_timeout_secs"].as_i64(),
            d["max_session_secs"].as_i64()
        ),
        (None, Some(3600))
    );
    let d = expect_json(
        app.patch(&path, &json!({"expires_at": future}), admin.t()),
        200,
    );
    assert_eq!(time(&d["expires_at"]), time(&json!(future)));
    assert_eq!(
        time(&d["next_lifecycle_check"]),
        time(&json!(future)) - chrono::Duration::hours(24),
        "warned a day ahead: {d}"
    );
}

#[test]
fn only_an_administrator_of_the_devices_tenant_may_release_it_and_nobody_outside_sees_it() {
    let app = lifecycle_app(&[], true);
    let platform = app.platform_admin();
    let (ta, tb) = (
        app.create_tenant(&platform.token, "life-a"),
        app.create_tenant(&platform.token, "life-b"),
    );
    let admin_of = |tenant: &str| {
        app.create_user(
            &platform.token,
            json!({"tenant_id": tenant, "role_ids": [e2e::roles::TENANT_ADMIN]}),
        )
    };
    let (a_admin, b_admin) = (admin_of(&ta), admin_of(&tb));
    let owner = app.create_user(&b_admin.token, json!({"role_ids": [e2e::roles::USER]}));
    let neighbour = app.create_user(&b_admin.token, json!({"role_ids": [e2e::roles::USER]}));
    let agent = enroll(&app, &platform, "node-rel", json!({}));
    bring_online(&app, &platform, &agent);
    let id = running_device(&app, &owner.token, &agent, "b-phone", json!({}));
    let heartbeat = format!("{D}/devices/{id}/heartbeat");
    let release = format!("{D}/devices/{id}/release");

    let operations = app.count("device", "SELECT count(*) FROM operations");
    for (who, path, want) in [
        (&a_admin, &heartbeat, (404, "not_found")),
        (&a_admin, &release, (404, "not_found")),
        (&neighbour, &heartbeat, (404, "not_found")),
        (&neighbour, &release, (403, "forbidden")),
        (&owner, &release, (403, "forbidden")),
    ] {
        let (status, code) = error_code(app.post(path, &json!({}), who.t())).unwrap();
        assert_eq!((status, code.as_str()), want, "{} {path}", who.email);
    }
    let (status, _) = error_code(app.patch(
        &format!("{D}/devices/{id}"),
        &json!({"expires_at": "2031-01-01T00:00:00Z"}),
        a_admin.t(),
    ))
    .unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        app.count("device", "SELECT count(*) FROM operations"),
        operations
    );
    assert!(!has_event(&app, &id, "device.released"));

    // The owner heartbeats; B's administrator releases it.
    let r = expect_json(app.post(&heartbeat, &json!({}), owner.t()), 200);
    assert_eq!(r["device_id"], id.as_str());
    let op = expect_json(app.post(&release, &json!({}), b_admin.t()), 202);
    assert_eq!(
        (op["kind"].as_str(), op["requested_by"].as_str()),
        (Some("delete"), Some(b_admin.id.as_str()))
    );
    let released = once_each(&app, &id, &["device.released"])[0];
    assert_eq!(
        events_of(&app, &id)[released].1["lifecycle"]["released_by"],
        b_admin.id.as_str()
    );
    assert!(agent.desired_state().devices.is_empty());
    agent.report(vec![agent.status(&id, DeviceStatus::Removed, 2)]);
    assert_eq!(
        wait_op(&app, &owner.token, op["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    let quota = expect_json(app.get("/api/v1/user/me/quota", owner.t()), 200);
    assert_eq!(quota["used"]["devices"], 0, "{quota}");
    // Released twice: the device is gone.
    let (status, _) = error_code(app.post(&release, &json!({}), b_admin.t())).unwrap();
    assert_eq!(status, 409);
}

#[test]
fn overlapping_lifecycle_job_runs_stop_each_due_device_exactly_once() {
    // No cron: the test runs the job itself, six times at once.
    let app = lifecycle_app(
        &[
            ("device_min_timeout_secs", "1"),
            ("device_idle_warning_secs", "0"),
        ],
        false,
    );
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 5);
    let agent = enroll(&app, &admin, "node-ovl", json!({}));
    bring_online(&app, &admin, &agent);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            running_device(
                &app,
                &token,
                &agent,
                &format!("o{i}"),
                json!({"idle_timeout_secs": 1}),
            )
        })
        .collect();
    app.eventually(Duration::from_secs(30), || {
        (app.count(
            "device",
            "SELECT count(*) FROM devices WHERE lifecycle_due_at <= now() AT TIME ZONE 'UTC'",
        ) == 3)
            .then_some(())
    })
    .expect("all three come due");
    let answers: Vec<Value> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    expect_json(
                        app.post_as("scheduler", &format!("{D}/internal/devices/lifecycle")),
                        200,
                    )
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stopped: i64 = answers.iter().map(|a| a["stopped"].as_i64().unwrap()).sum();
    let claimed: i64 = answers.iter().map(|a| a["claimed"].as_i64().unwrap()).sum();
    assert_eq!((stopped, claimed), (3, 3), "{answers:?}");
    for id in &ids {
        let order = once_each(&app, id, &["device.idle_warning", "device.idle_stopped"]);
        assert!(order[0] < order[1]);
        assert_eq!(operations_of(&app, &token, id, "stop").len(), 1, "{id}");
    }
    // Nothing more is due, so a further run does nothing.
    let again = expect_json(
        app.post_as("scheduler", &format!("{D}/internal/devices/lifecycle")),
        200,
    );
    assert_eq!(again["claimed"], 0, "{again}");
}
