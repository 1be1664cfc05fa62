//! The whole path of a phone, with nothing scripted: the compiled
//! components on real Spin, the real `runtime-agent` binary, real
//! containers on the real engine (Podman's Docker API), real Redis and
//! Postgres. A node is enrolled through the API, its agent comes online, a
//! user's phone is created, placed, booted with redroid's arguments and
//! reachable on its ADB port; stop, start, restart and delete act on the
//! container; agents and the app are killed mid-way and nothing is lost;
//! every device operation (shell, files, apps, ...) runs inside the phone.

use e2e::nodes::{device_of, set_quota, D};
use e2e::real_agent::{
    dense_node, dense_node_with, fake_redroid_image, small_template, RealAgent, FAKE_IMAGE_PREFIX,
};
use e2e::{error_code, expect_json, Options, Session, TestApp};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

fn app_with(env: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![(
        "SPIN_VARIABLE_DEVICE_IMAGES".to_string(),
        format!("redroid/redroid:,{FAKE_IMAGE_PREFIX}"),
    )];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    TestApp::spawn_with(Options {
        env: vars,
        ..Options::default()
    })
}

/// A node id no other test shares (containers are labelled with it on the
/// one engine all tests use).
fn node_id(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Enrols a node through the API and starts its agent with the secret the
/// app handed out; waits until the node is online.
fn enrolled_agent(app: &TestApp, admin: &Session, name: &str) -> RealAgent {
    enrolled_agent_with(app, admin, name, &[])
}

/// [`enrolled_agent`] whose agent downloads APKs from under these prefixes.
fn enrolled_agent_with(
    app: &TestApp,
    admin: &Session,
    name: &str,
    apk_url_prefixes: &[&str],
) -> RealAgent {
    let id = node_id(name);
    let node = expect_json(
        app.post(
            &format!("{D}/nodes"),
            &json!({"id": id, "zone": "sh-1", "region": "cn"}),
            admin.t(),
        ),
        201,
    );
    let secret = node["secret"].as_str().expect("the secret, once");
    let agent = RealAgent::start_with(app, &id, secret, apk_url_prefixes);
    wait_node(app, admin, &agent, "online");
    agent
}

fn wait_node(app: &TestApp, admin: &Session, agent: &RealAgent, status: &str) {
    let path = format!("{D}/nodes/{}", agent.node);
    app.eventually(Duration::from_secs(60), || {
        let n = expect_json(app.get(&path, admin.t()), 200);
        (n["status"] == status).then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "node {} never became {status}; agent log:\n{}",
            agent.node,
            agent.log()
        )
    });
}

/// Waits for an operation to finish (the API long-polls up to 20 s a call).
fn finished(app: &TestApp, token: &str, op: &Value, agents: &[&RealAgent]) -> Value {
    let id = op["id"].as_str().expect("operation id");
    for _ in 0..6 {
        let v = expect_json(
            app.get(&format!("{D}/operations/{id}?wait=20"), Some(token)),
            200,
        );
        if v["status"] != "running" {
            return v;
        }
    }
    let logs: Vec<String> = agents.iter().map(|a| a.log()).collect();
    panic!(
        "operation {id} still running after 120 s; agent logs:\n{}",
        logs.join("\n")
    );
}

fn succeeded(app: &TestApp, token: &str, op: &Value, agents: &[&RealAgent]) {
    let done = finished(app, token, op, agents);
    assert_eq!(done["status"], "succeeded", "{done}");
}

fn device(app: &TestApp, token: &str, id: &str) -> Value {
    expect_json(app.get(&format!("{D}/devices/{id}"), Some(token)), 200)
}

fn create(app: &TestApp, token: &str, name: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "spec": {"image": fake_redroid_image()}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    expect_json(app.post(&format!("{D}/devices"), &body, Some(token)), 202)
}

/// What the phone's ADB port answers (the test image serves a page there,
/// as redroid's adbd answers there).
fn adb_answer(serial: &str) -> String {
    let mut s = std::net::TcpStream::connect(serial).expect("connect to the ADB endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_users_phone_runs_on_a_real_agent_and_every_lifecycle_step_acts_on_its_container() {
    let app = app_with(&[]);
    let admin = app.platform_admin();
    let (_user, token) = app.signed_up_user();
    let agent = enrolled_agent(&app, &admin, "host");
    let node = expect_json(
        app.get(&format!("{D}/nodes/{}", agent.node), admin.t()),
        200,
    );
    assert_eq!(node["address"], "127.0.0.1", "{node}");
    assert_eq!(node["capacity"]["max_devices"], 8, "{node}");

    // Only the operator's images run: anything else is refused, and nothing is made.
    let (status, code) = error_code(app.post(
        &format!("{D}/devices"),
        &json!({"name": "x", "spec": {"image": "docker.io/library/alpine:latest"}}),
        Some(&token),
    ))
    .unwrap();
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    assert_eq!(app.count("device", "SELECT count(*) FROM devices"), 0);

    let op = create(
        &app,
        &token,
        "phone-1",
        json!({"spec": {"image": fake_redroid_image(), "display": {"width": 1080, "height": 1920, "dpi": 440, "fps": 60}}}),
    );
    let id = device_of(&op);
    succeeded(&app, &token, &op, &[&agent]);
    let d = device(&app, &token, &id);
    assert_eq!(
        (d["desired_status"].as_str(), d["observed_status"].as_str()),
        (Some("running"), Some("running")),
        "{d}"
    );
    // One container, running, booted with redroid's settings from the spec.
    let c = agent.container_of(&id).expect("the phone's container");
    assert!(c.running, "{c:?}");
    assert_eq!(agent.containers().len(), 1);
    let args = agent.exec(&c.name, &["cat", "/boot-args"]);
    for a in [
        "androidboot.redroid_width=1080",
        "androidboot.redroid_height=1920",
        "androidboot.redroid_dpi=440",
        "androidboot.redroid_fps=60",
    ] {
        assert!(
            args.contains(a),
            "{a} missing from the boot arguments: {args}"
        );
    }
    // The owner's ADB endpoint is the node's address and the port the agent
    // published, and the phone answers there.
    let serial = d["adb"]["serial"]
        .as_str()
        .expect("ADB endpoint")
        .to_string();
    assert!(serial.starts_with("127.0.0.1:"), "{serial}");
    assert!(
        adb_answer(&serial).contains("adb"),
        "the phone answers on {serial}"
    );

    // Stop: the container stops, the phone is stopped, no ADB endpoint.
    let stop = expect_json(
        app.post(&format!("{D}/devices/{id}/stop"), &json!({}), Some(&token)),
        202,
    );
    succeeded(&app, &token, &stop, &[&agent]);
    let c = agent
        .container_of(&id)
        .expect("a stopped phone keeps its container");
    assert!(!c.running, "{c:?}");
    let d = device(&app, &token, &id);
    assert_eq!(d["observed_status"], "stopped", "{d}");
    assert_eq!(d["adb"], Value::Null);

    // Start: the same container runs again, on the same endpoint.
    let start = expect_json(
        app.post(&format!("{D}/devices/{id}/start"), &json!({}), Some(&token)),
        202,
    );
    succeeded(&app, &token, &start, &[&agent]);
    assert!(agent.container_of(&id).expect("container").running);
    let d = device(&app, &token, &id);
    assert_eq!(d["observed_status"], "running", "{d}");
    assert!(adb_answer(d["adb"]["serial"].as_str().unwrap()).contains("adb"));

    // Restart: running again afterwards, with a fresh boot.
    let c = agent.container_of(&id).unwrap();
    agent.exec(&c.name, &["touch", "/tmp/before-restart"]);
    let restart = expect_json(
        app.post(
            &format!("{D}/devices/{id}/restart"),
            &json!({}),
            Some(&token),
        ),
        202,
    );
    succeeded(&app, &token, &restart, &[&agent]);
    let c = agent.container_of(&id).expect("container");
    assert!(c.running);
    assert_eq!(device(&app, &token, &id)["observed_status"], "running");

    // Delete: the container goes, the phone goes, the quota comes back.
    let del = expect_json(app.delete(&format!("{D}/devices/{id}"), Some(&token)), 202);
    succeeded(&app, &token, &del, &[&agent]);
    assert!(
        agent.container_of(&id).is_none(),
        "the container is removed"
    );
    assert_eq!(
        expect_json(app.get(&format!("{D}/devices"), Some(&token)), 200)["total"],
        0
    );
    let quota = expect_json(app.get("/api/v1/user/me/quota", Some(&token)), 200);
    assert_eq!(quota["used"]["devices"], 0, "{quota}");
}

#[test]
fn a_killed_agent_and_a_killed_app_lose_nothing() {
    let mut app = app_with(&[]);
    let admin = app.platform_admin();
    let (_user, token) = app.signed_up_user();
    let mut agent = enrolled_agent(&app, &admin, "crash");

    // The agent dies before the command reaches it: the command is lost
    // with its Redis subscription, but the desired state is not. Started
    // again, the agent pulls it and makes the phone.
    agent.kill();
    let op = create(&app, &token, "phone-a", json!({}));
    let a = device_of(&op);
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.container_of(&a).is_none());
    agent.spawn();
    succeeded(&app, &token, &op, &[&agent]);
    assert!(
        agent
            .container_of(&a)
            .expect("made after the restart")
            .running
    );

    // The app dies right after accepting a stop: the agent carries it out
    // and keeps its reports until the app is back; then the operation and
    // the phone's state are whole.
    let stop = expect_json(
        app.post(&format!("{D}/devices/{a}/stop"), &json!({}), Some(&token)),
        202,
    );
    app.kill();
    app.eventually(Duration::from_secs(30), || {
        agent.container_of(&a).filter(|c| !c.running).map(|_| ())
    })
    .expect("the agent stops the container while the app is down");
    app.start();
    succeeded(&app, &token, &stop, &[&agent]);
    assert_eq!(device(&app, &token, &a)["observed_status"], "stopped");

    // An agent killed mid-create, restarted: one container, not two.
    let op = create(&app, &token, "phone-b", json!({}));
    let b = device_of(&op);
    app.eventually(Duration::from_secs(30), || {
        agent.container_of(&b).map(|_| ())
    })
    .expect("the container is being made");
    agent.kill();
    agent.spawn();
    succeeded(&app, &token, &op, &[&agent]);
    let theirs: Vec<_> = agent
        .containers()
        .into_iter()
        .filter(|c| c.name.contains(&b))
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert!(theirs[0].running);
    let d = device(&app, &token, &b);
    assert_eq!(d["observed_status"], "running", "{d}");
    let runs = expect_json(app.get(&format!("{D}/devices/{b}/runs"), Some(&token)), 200);
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");
    // The quota counts the two phones once each, with no claim left open
    // by the crashes (the claims job settles any within a few runs).
    let quota = app
        .eventually(Duration::from_secs(30), || {
            let q = expect_json(app.get("/api/v1/user/me/quota", Some(&token)), 200);
            (q["reserved"]["devices"] == 0).then_some(q)
        })
        .expect("no quota claim left open");
    assert_eq!(quota["used"]["devices"], 2, "{quota}");
    assert_eq!(
        app.count("device", "SELECT count(*) FROM devices"),
        2,
        "two phones, not more"
    );
}

#[test]
fn two_agents_share_the_work_and_a_frozen_one_is_noticed_and_welcomed_back() {
    let app = app_with(&[("SPIN_VARIABLE_NODE_HEARTBEAT_SECS", "1")]);
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 4);
    let a = enrolled_agent(&app, &admin, "left");
    let b = enrolled_agent(&app, &admin, "right");

    // The default strategy (least loaded) puts two phones on two nodes.
    let ops: Vec<Value> = (0..2)
        .map(|i| create(&app, &token, &format!("p{i}"), json!({})))
        .collect();
    for op in &ops {
        succeeded(&app, &token, op, &[&a, &b]);
    }
    assert_eq!((a.containers().len(), b.containers().len()), (1, 1));
    let on_a = a.containers()[0].labels["io.cloudphone.device-id"].clone();
    let on_b = b.containers()[0].labels["io.cloudphone.device-id"].clone();

    // Node a freezes (a partitioned host): unreachable after three missed
    // heartbeats, its phone unknown; b's phone is untouched, and a new
    // phone goes to b.
    a.signal("STOP");
    wait_node(&app, &admin, &a, "unreachable");
    assert_eq!(device(&app, &token, &on_a)["observed_status"], "unknown");
    assert_eq!(device(&app, &token, &on_b)["observed_status"], "running");
    let op = create(&app, &token, "p2", json!({}));
    succeeded(&app, &token, &op, &[&a, &b]);
    assert_eq!(b.containers().len(), 2, "the new phone is on the live node");

    // It thaws: online again, and its phone is running as it always was.
    a.signal("CONT");
    wait_node(&app, &admin, &a, "online");
    app.eventually(Duration::from_secs(30), || {
        (device(&app, &token, &on_a)["observed_status"] == "running").then_some(())
    })
    .expect("the phone on the returning node is running again");
    assert!(a.container_of(&on_a).expect("container").running);
}

#[test]
fn a_lost_nodes_phone_comes_up_on_the_other_node_with_its_snapshots_data_and_the_old_one_does_not_keep_it(
) {
    let app = app_with(&[
        ("SPIN_VARIABLE_NODE_HEARTBEAT_SECS", "1"),
        ("SPIN_VARIABLE_FAILOVER_AFTER_SECS", "3"),
    ]);
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 4);
    let a = enrolled_agent(&app, &admin, "lost");
    // The phone goes to a: b is cordoned until it is made.
    let b = enrolled_agent(&app, &admin, "spare");
    let cordon = format!("{D}/nodes/{}/cordon", b.node);
    expect_json(app.post(&cordon, &json!({}), admin.t()), 200);
    let op = create(&app, &token, "kept", json!({"recover_policy": "snapshot"}));
    let id = device_of(&op);
    succeeded(&app, &token, &op, &[&a, &b]);
    assert!(a.container_of(&id).is_some(), "made on the first node");
    expect_json(
        app.post(
            &format!("{D}/nodes/{}/uncordon", b.node),
            &json!({}),
            admin.t(),
        ),
        200,
    );

    // A file under /data, a snapshot of the running phone (archived in the
    // control plane, as its policy asks), then a change after it.
    let dev = format!("{D}/devices/{id}");
    let file = "/data/local/tmp/state.txt";
    let push = |text: &str| {
        let v = expect_json(
            app.call_raw(
                "PUT",
                &format!("{dev}/files?path={file}&wait=20"),
                "application/octet-stream",
                text.as_bytes().to_vec(),
                admin.t(),
            ),
            200,
        );
        assert_eq!(v["status"], "succeeded", "{v}");
    };
    push("before the snapshot");
    let taken = expect_json(
        app.post(
            &format!("{dev}/snapshots"),
            &json!({"name": "kept"}),
            Some(&token),
        ),
        202,
    );
    succeeded(&app, &token, &taken["operation"], &[&a, &b]);
    let snap = taken["snapshot"]["id"].as_str().unwrap().to_string();
    let s = expect_json(app.get(&format!("{D}/snapshots/{snap}"), Some(&token)), 200);
    assert_eq!(s["status"], "ready", "{s}");
    assert!(
        s["archived_at"].is_string(),
        "the snapshot is archived: {s}"
    );
    assert!(s["archive_bytes"].as_i64().unwrap_or(0) > 0, "{s}");
    push("after the snapshot");

    // a freezes: past the failover time, the phone is made again on b from
    // the snapshot, and runs. (Node ids show to those who may read nodes:
    // the administrator.)
    let staff = admin.token.as_str();
    let lost_at = std::time::Instant::now();
    a.signal("STOP");
    app.eventually(Duration::from_secs(90), || {
        let d = device(&app, staff, &id);
        (d["node_id"] == b.node.as_str() && d["observed_status"] == "running").then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "the phone never ran on the spare node: {}\nspare agent log:\n{}",
            device(&app, staff, &id),
            b.log()
        )
    });
    let took = lost_at.elapsed();
    assert!(b.container_of(&id).expect("a container on b").running);
    let r = app.get(&format!("{dev}/files?path={file}&wait=20"), admin.t());
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().unwrap().as_ref(),
        b"before the snapshot",
        "the phone has its snapshot's data"
    );
    let recoveries = expect_json(app.get(&format!("{dev}/recoveries"), Some(&token)), 200);
    let items = recoveries["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{recoveries}");
    assert_eq!(items[0]["reason"], "node_lost", "{recoveries}");
    assert_eq!(items[0]["snapshot_id"], snap.as_str(), "{recoveries}");
    assert!(
        items[0]["lost"]
            .as_str()
            .unwrap_or_default()
            .contains(&snap),
        "the record says what was lost: {recoveries}"
    );
    eprintln!("failover: the phone ran on the spare node with its snapshot's data {took:?} after its node froze");

    // a thaws: its agent removes its copy, and b's phone runs on.
    a.signal("CONT");
    wait_node(&app, &admin, &a, "online");
    app.eventually(Duration::from_secs(30), || {
        a.container_of(&id).is_none().then_some(())
    })
    .unwrap_or_else(|_| panic!("the old node kept the phone; log:\n{}", a.log()));
    let d = device(&app, staff, &id);
    assert_eq!(
        (d["node_id"].as_str(), d["observed_status"].as_str()),
        (Some(b.node.as_str()), Some("running")),
        "{d}"
    );
    assert!(b.container_of(&id).expect("still on b").running);
}

/// Serves `body` to every request on a local port, from a thread that
/// lives as long as the test (a download source for APKs); its base URL.
fn serve_file(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.android.package-archive\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = s.write_all(&body);
        }
    });
    base
}

/// The lower-case hex sha256 of a file, by coreutils' `sha256sum` (an
/// implementation apart from the agent's).
fn sha256_of(app: &TestApp, bytes: &[u8]) -> String {
    let path = app.dir().join("digest-input");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// A local server of a test "APK" (the fake phone's `pm` reads the package
/// name `com.example.hello` from it): its base URL and the APK's sha256.
fn apk_source(app: &TestApp) -> (String, String) {
    let apk = b"not really an apk\npackage=com.example.hello\n".to_vec();
    let sha = sha256_of(app, &apk);
    (serve_file(apk), sha)
}

#[test]
fn every_device_operation_runs_inside_a_real_phone() {
    let app = app_with(&[]);
    let admin = app.platform_admin();
    let (_user, token) = app.signed_up_user();
    let (source, sha) = apk_source(&app);
    let agent = enrolled_agent_with(&app, &admin, "ops", &[&format!("{source}/apks/")]);
    let op = create(&app, &token, "phone", json!({}));
    let id = device_of(&op);
    succeeded(&app, &token, &op, &[&agent]);
    let dev = format!("{D}/devices/{id}");
    let owner = Some(token.as_str());
    let ok = |v: &Value, kind: &str| {
        assert_eq!(
            (v["kind"].as_str(), v["status"].as_str()),
            (Some(kind), Some("succeeded")),
            "{v}\nagent log:\n{}",
            agent.log()
        );
    };

    // Shell needs device:shell, which the owner (role `user`) lacks.
    let shell = format!("{dev}/shell?wait=20");
    let (status, _) = error_code(app.post(&shell, &json!({"command": "echo hi"}), owner)).unwrap();
    assert_eq!(status, 403);
    let v = expect_json(
        app.post(&shell, &json!({"command": "echo hi"}), admin.t()),
        200,
    );
    ok(&v, "shell");
    assert_eq!(v["result"]["stdout"].as_str().unwrap().trim(), "hi", "{v}");
    assert_eq!(v["result"]["exit_code"], 0);

    // Properties: what getprop prints, parsed; the boot arguments are there.
    let v = expect_json(app.get(&format!("{dev}/properties?wait=20"), owner), 200);
    ok(&v, "properties");
    let width = device(&app, &token, &id)["spec"]["display"]["width"].to_string();
    assert_eq!(
        v["result"]["properties"]["androidboot.redroid_width"].as_str(),
        Some(width.as_str()),
        "{v}"
    );
    assert_eq!(v["result"]["properties"]["sys.boot_completed"], "1");

    // Screenshot: the PNG itself.
    let r = app.get(&format!("{dev}/screenshot?wait=20"), owner);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.headers().contains_key("x-operation-id"));
    let png = r.bytes().unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{png:?}");

    // A file of the largest size a push takes (8 MiB, every byte value, a
    // space in its name) comes back the same: through Spin, the agent's
    // signed fetch of the contents, its report and the operation's result.
    // The file itself never passes through Redis nor sits in a command row:
    // the command names only its length and sha256.
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    let redis = redis::Client::open(app.redis_url()).unwrap();
    let mut sub = redis.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub
        .subscribe(agent_protocol::messages::commands_channel(
            &agent_protocol::spec::NodeId::parse(&agent.node).unwrap(),
        ))
        .unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let big_commands = "SELECT count(*) FROM node_commands WHERE length(body::text) > 100000";
    let file = format!("{dev}/files?path=/data/local/tmp/cloud%20phone/blob.bin");
    let running = expect_json(
        app.call_raw(
            "PUT",
            &format!("{file}&wait=0"),
            "application/octet-stream",
            data.clone(),
            admin.t(),
        ),
        202,
    );
    assert_eq!(
        app.count("device", big_commands),
        0,
        "no command row holds the file while the push runs"
    );
    let push_id = running["id"].as_str().unwrap().to_string();
    let published = loop {
        let msg = pubsub.get_message().expect("the push's command on Redis");
        let raw = msg.get_payload_bytes().to_vec();
        let env: Value = serde_json::from_slice(&raw).unwrap();
        if env["body"]["operation_id"] == push_id.as_str() {
            break raw;
        }
    };
    assert!(
        published.len() < 100_000,
        "the published command is {} bytes",
        published.len()
    );
    let env: Value = serde_json::from_slice(&published).unwrap();
    assert_eq!(
        (
            env["body"]["bytes"].as_u64(),
            env["body"]["sha256"].as_str()
        ),
        (
            Some(data.len() as u64),
            Some(sha256_of(&app, &data).as_str())
        ),
        "{env}"
    );
    let v = expect_json(
        app.get(&format!("{D}/operations/{push_id}?wait=20"), admin.t()),
        200,
    );
    ok(&v, "push_file");
    assert_eq!(v["result"]["bytes"], data.len(), "{v}");
    assert_eq!(app.count("device", big_commands), 0);
    assert_eq!(
        app.count("device", "SELECT count(*) FROM operation_contents"),
        0,
        "the file is deleted once the push has its answer"
    );
    assert_eq!(v["result"]["path"], "/data/local/tmp/cloud phone/blob.bin");
    let file = format!("{file}&wait=20");
    let r = app.get(&file, admin.t());
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(r.bytes().unwrap() == data, "the pulled file differs");
    // A file that is not there: a failed operation, answered with its error.
    let v = expect_json(
        app.get(&format!("{dev}/files?path=/nowhere/x&wait=20"), admin.t()),
        200,
    );
    assert_eq!(v["status"], "failed", "{v}");

    // Logcat text.
    let v = expect_json(
        app.get(&format!("{dev}/logcat?lines=50&wait=20"), owner),
        200,
    );
    ok(&v, "logcat");
    assert!(
        v["result"]["text"].as_str().unwrap().contains("boot args"),
        "{v}"
    );

    // Packages, then an APK: refused by checksum, refused by the node's
    // URL policy, installed, listed, uninstalled.
    let packages = || {
        let v = expect_json(app.get(&format!("{dev}/packages?wait=20"), owner), 200);
        ok(&v, "packages");
        v["result"]["packages"].clone()
    };
    assert_eq!(packages(), json!(["android", "com.android.settings"]));
    let apps = format!("{dev}/apps?wait=20");
    let url = format!("{source}/apks/hello.apk");
    let v = expect_json(
        app.post(&apps, &json!({"url": url, "sha256": "0".repeat(64)}), owner),
        200,
    );
    assert_eq!(
        (v["status"].as_str(), v["error_code"].as_str()),
        (Some("failed"), Some("checksum_mismatch")),
        "{v}"
    );
    let v = expect_json(
        app.post(
            &apps,
            &json!({"url": format!("{source}/elsewhere/hello.apk"), "sha256": sha}),
            owner,
        ),
        200,
    );
    assert_eq!(v["error_code"], "url_not_allowed", "{v}");
    let v = expect_json(
        app.post(&apps, &json!({"url": url, "sha256": sha}), owner),
        200,
    );
    ok(&v, "install_apk");
    assert_eq!(v["result"]["sha256"], sha.as_str());
    assert_eq!(
        packages(),
        json!(["android", "com.android.settings", "com.example.hello"])
    );
    let v = expect_json(
        app.delete(&format!("{dev}/apps/com.example.hello?wait=20"), owner),
        200,
    );
    ok(&v, "uninstall_apk");
    assert_eq!(packages(), json!(["android", "com.android.settings"]));

    // Every operation is in the device's history under its own kind.
    let ops = expect_json(
        app.get(
            &format!("{D}/operations?device_id={id}&per_page=100"),
            admin.t(),
        ),
        200,
    );
    let kinds: Vec<&str> = ops["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    for k in [
        "shell",
        "properties",
        "screenshot",
        "push_file",
        "pull_file",
        "logcat",
        "packages",
        "install_apk",
        "uninstall_apk",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    // A stopped phone takes no operations, and says why.
    let stop = expect_json(app.post(&format!("{dev}/stop"), &json!({}), owner), 202);
    succeeded(&app, &token, &stop, &[&agent]);
    let r = app.get(&format!("{dev}/logcat"), owner);
    assert_eq!(r.status(), 409);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{body}"
    );
}

/// Polls `path` until `field` has `want`.
fn wait_field(
    app: &TestApp,
    token: &str,
    path: &str,
    field: &str,
    want: &str,
    agent: &RealAgent,
) -> Value {
    app.eventually(Duration::from_secs(120), || {
        let v = expect_json(app.get(path, Some(token)), 200);
        (v[field] == want).then_some(v)
    })
    .unwrap_or_else(|_| {
        let v = expect_json(app.get(path, Some(token)), 200);
        panic!(
            "{path} never had {field} = {want}: {v}\nagent log:\n{}",
            agent.log()
        )
    })
}

#[test]
fn a_phone_from_a_template_has_its_app_and_a_snapshot_brings_its_data_back() {
    let app = app_with(&[]);
    let admin = app.platform_admin();
    let (_user, token) = app.signed_up_user();
    let (source, sha) = apk_source(&app);
    let agent = enrolled_agent_with(&app, &admin, "fleet", &[&format!("{source}/apks/")]);
    let owner = Some(token.as_str());

    // A public template: the fake phone, an app, a property, a command.
    let template = expect_json(
        app.post(
            &format!("{D}/templates"),
            &json!({
                "name": "golden", "visibility": "public", "spec": {"image": fake_redroid_image()},
                "preinstalled_apps": [{"url": format!("{source}/apks/hello.apk"), "sha256": sha}],
                "properties": {"persist.cloudphone.golden": "yes"},
                "init_commands": ["mkdir -p /data/local/tmp && echo ready > /data/local/tmp/init.txt"]
            }),
            admin.t(),
        ),
        201,
    );
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "from-golden", "template_id": template["id"]}),
            owner,
        ),
        202,
    );
    let id = device_of(&op);
    succeeded(&app, &token, &op, &[&agent]);
    let dev = format!("{D}/devices/{id}");
    wait_field(
        &app,
        &token,
        &format!("{dev}/provisioning"),
        "status",
        "done",
        &agent,
    );
    let v = expect_json(app.get(&format!("{dev}/packages?wait=20"), owner), 200);
    let packages = v["result"]["packages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(packages.contains(&json!("com.example.hello")), "{v}");
    let pull = |path: &str| -> Vec<u8> {
        let r = app.get(&format!("{dev}/files?path={path}&wait=20"), admin.t());
        assert_eq!(r.status(), 200, "pull {path}");
        r.bytes().unwrap().to_vec()
    };
    assert_eq!(pull("/data/local/tmp/init.txt"), b"ready\n");

    // A file under /data, a snapshot of the stopped phone, a change, a
    // restore: the file is as it was at the snapshot.
    let push = |text: &str| {
        let v = expect_json(
            app.call_raw(
                "PUT",
                &format!("{dev}/files?path=/data/local/tmp/state.txt&wait=20"),
                "application/octet-stream",
                text.as_bytes().to_vec(),
                admin.t(),
            ),
            200,
        );
        assert_eq!(v["status"], "succeeded", "{v}");
    };
    let act = |what: &str| {
        let op = expect_json(app.post(&format!("{dev}/{what}"), &json!({}), owner), 202);
        succeeded(&app, &token, &op, &[&agent]);
    };
    push("v1");
    act("stop");
    let taken = expect_json(
        app.post(&format!("{dev}/snapshots"), &json!({"name": "v1"}), owner),
        202,
    );
    succeeded(&app, &token, &taken["operation"], &[&agent]);
    let snap = taken["snapshot"]["id"].as_str().unwrap().to_string();
    let s = expect_json(app.get(&format!("{D}/snapshots/{snap}"), owner), 200);
    assert_eq!(s["status"], "ready", "{s}");
    act("start");
    push("v2");
    assert_eq!(pull("/data/local/tmp/state.txt"), b"v2");
    act("stop");
    let restored = expect_json(
        app.post(
            &format!("{dev}/restore"),
            &json!({"snapshot_id": snap}),
            owner,
        ),
        202,
    );
    succeeded(&app, &token, &restored["operation"], &[&agent]);
    act("start");
    assert_eq!(pull("/data/local/tmp/state.txt"), b"v1");
    assert_eq!(pull("/data/local/tmp/init.txt"), b"ready\n");

    // A clone: another phone with the snapshot's data.
    let made = expect_json(
        app.post(
            &format!("{D}/snapshots/{snap}/clone"),
            &json!({"name": "copy"}),
            owner,
        ),
        202,
    );
    succeeded(&app, &token, &made, &[&agent]);
    let copy = format!("{D}/devices/{}", device_of(&made));
    wait_field(
        &app,
        &token,
        &format!("{copy}/provisioning"),
        "status",
        "done",
        &agent,
    );
    // The restore made its container again: the phone's report that it is
    // up may come a moment after the step's result.
    wait_field(&app, &token, &copy, "observed_status", "running", &agent);
    let r = app.get(
        &format!("{copy}/files?path=/data/local/tmp/state.txt&wait=20"),
        admin.t(),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"v1");

    // The snapshot outlives the phones made from it; deleting it removes it
    // from the node.
    for d in [&dev, &copy] {
        let del = expect_json(app.delete(d, owner), 202);
        succeeded(&app, &token, &del, &[&agent]);
    }
    let gone = expect_json(app.delete(&format!("{D}/snapshots/{snap}"), owner), 202);
    succeeded(&app, &token, &gone["operation"], &[&agent]);
    let s = expect_json(app.get(&format!("{D}/snapshots/{snap}"), owner), 200);
    assert_eq!(s["status"], "deleted", "{s}");
}

#[test]
fn a_batch_of_twenty_and_a_warm_pool_run_on_a_real_agent() {
    let app = app_with(&[]);
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 30);
    // One node that takes 25 of the small test phones.
    let agent = dense_node(&app, &admin, &node_id("fleet"), 25);
    let tid = small_template(&app, &admin, "small");
    let finished = |batch: &Value| -> Value {
        let path = format!("{D}/batches/{}", batch["id"].as_str().unwrap());
        app.eventually(Duration::from_secs(180), || {
            let b = expect_json(app.get(&path, Some(&token)), 200);
            (b["status"] == "finished").then_some(b)
        })
        .unwrap_or_else(|_| panic!("batch never finished; agent log:\n{}", agent.log()))
    };

    // Twenty phones from the template, ten at a time: twenty running containers.
    let made = expect_json(
        app.post(
            &format!("{D}/batches"),
            &json!({"action": "create", "count": 20, "template_id": tid, "concurrency": 10}),
            Some(&token),
        ),
        202,
    );
    let done = finished(&made);
    assert_eq!(
        (done["succeeded"].as_i64(), done["failed"].as_i64()),
        (Some(20), Some(0)),
        "{done}"
    );
    let running = agent.containers().iter().filter(|c| c.running).count();
    assert_eq!(running, 20);
    // Stopped by a batch, with a result per phone: twenty stopped containers.
    let ids: Vec<Value> = done["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["device_id"].clone())
        .collect();
    let stop = expect_json(
        app.post(
            &format!("{D}/batches"),
            &json!({"action": "stop", "device_ids": ids}),
            Some(&token),
        ),
        202,
    );
    let done = finished(&stop);
    assert_eq!(done["succeeded"], 20, "{done}");
    assert!(done["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["status"] == "succeeded"));
    assert_eq!(agent.containers().iter().filter(|c| c.running).count(), 0);

    // A warm pool of three (filled by the scheduler's job) hands out a
    // running phone at once, and fills up again.
    let pool = format!("{D}/templates/{tid}/pool");
    expect_json(app.put(&pool, &json!({"size": 3}), admin.t()), 200);
    let ready = |n: i64| {
        app.eventually(Duration::from_secs(120), || {
            let p = expect_json(app.get(&pool, admin.t()), 200);
            (p["ready"].as_i64() == Some(n)).then_some(())
        })
        .unwrap_or_else(|_| panic!("the pool never had {n} ready; agent log:\n{}", agent.log()))
    };
    ready(3);
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "warm", "template_id": tid}),
            Some(&token),
        ),
        201,
    );
    assert_eq!(op["status"], "succeeded", "{op}");
    let phone = device_of(&op);
    assert_eq!(device(&app, &token, &phone)["observed_status"], "running");
    assert!(agent.container_of(&phone).is_some_and(|c| c.running));
    ready(3);
}

/// The device's events, oldest first (from `device`'s outbox).
fn event_types(app: &TestApp, device: &str) -> Vec<String> {
    app.db("device")
        .query(
            "SELECT event_type FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
            &[&device],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether `first` comes before `then` among the device's events.
fn in_order(app: &TestApp, device: &str, first: &str, then: &str) -> bool {
    let kinds = event_types(app, device);
    let at = |k: &str| kinds.iter().position(|t| t == k);
    matches!((at(first), at(then)), (Some(a), Some(b)) if a < b)
}

#[test]
fn an_idle_phone_is_stopped_and_an_expired_one_removed_from_a_real_agent_with_warnings_first() {
    // Idle after 10 s without a client heartbeat, warned 4 s ahead; an
    // expiring phone is warned 4 s ahead and released 15 s after expiry.
    // The grace is three of the lifecycle job's 5 s ticks: a grace shorter
    // than a tick lets a tick find both the stop and the deletion due, and
    // then deletion wins (by design, for a job days late), skipping
    // `device.expired` (a CI run under load saw that with a 4 s grace).
    let app = app_with(&[
        ("SPIN_VARIABLE_DEVICE_MIN_TIMEOUT_SECS", "1"),
        ("SPIN_VARIABLE_DEVICE_IDLE_WARNING_SECS", "4"),
        ("SPIN_VARIABLE_DEVICE_EXPIRY_WARNING_SECS", "4"),
        ("SPIN_VARIABLE_DEVICE_EXPIRY_GRACE_SECS", "15"),
    ]);
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 4);
    let agent = enrolled_agent(&app, &admin, "lifecycle");
    let idle_op = create(&app, &token, "idle", json!({"idle_timeout_secs": 10}));
    let rented_op = create(&app, &token, "rented", json!({}));
    let (idle, rented) = (device_of(&idle_op), device_of(&rented_op));
    succeeded(&app, &token, &idle_op, &[&agent]);
    succeeded(&app, &token, &rented_op, &[&agent]);
    let expires = chrono::Utc::now() + chrono::Duration::seconds(8);
    expect_json(
        app.patch(
            &format!("{D}/devices/{rented}"),
            &json!({"expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
            admin.t(),
        ),
        200,
    );

    // Nobody uses the idle phone: warned, then its container is stopped.
    app.eventually(Duration::from_secs(90), || {
        agent
            .container_of(&idle)
            .is_some_and(|c| !c.running)
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("the idle phone still runs; agent log:\n{}", agent.log()));
    assert!(
        in_order(&app, &idle, "device.idle_warning", "device.idle_stopped"),
        "{:?}",
        event_types(&app, &idle)
    );
    wait_field(
        &app,
        &token,
        &format!("{D}/devices/{idle}"),
        "observed_status",
        "stopped",
        &agent,
    );

    // The rented phone: warned, expired (stopped), then released after the
    // grace period: its container is gone and the device deleted.
    app.eventually(Duration::from_secs(90), || {
        agent.container_of(&rented).is_none().then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "the expired phone is still there; agent log:\n{}",
            agent.log()
        )
    });
    assert!(
        in_order(&app, &rented, "device.expiring", "device.expired")
            && in_order(&app, &rented, "device.expired", "device.released"),
        "{:?}",
        event_types(&app, &rented)
    );
    wait_field(
        &app,
        &token,
        &format!("{D}/devices/{rented}"),
        "observed_status",
        "deleted",
        &agent,
    );
    assert!(
        agent.container_of(&idle).is_some(),
        "the idle phone is kept, stopped"
    );
}

#[test]
fn a_phone_says_the_identity_and_uses_the_network_it_is_given_and_renewing_it_makes_a_new_phone() {
    let app = app_with(&[]);
    let admin = app.platform_admin();
    let (_user, token) = app.signed_up_user();
    let agent = enrolled_agent(&app, &admin, "persona");
    let owner = Some(token.as_str());
    let spec = json!({
        "image": fake_redroid_image(),
        "identity": {"brand": "google", "manufacturer": "Google", "model": "Pixel 8 Pro",
                     "fingerprint": "google/husky/husky:14/AP1A.240305.019/1:user/release-keys"},
        "network": {"proxy": {"type": "http", "host": "proxy.corp.example", "port": 3128,
                               "exclude": ["*.corp.example"]},
                    "dns": ["9.9.9.9", "149.112.112.112"]}
    });
    let op = create(&app, &token, "persona", json!({"spec": spec}));
    let id = device_of(&op);
    succeeded(&app, &token, &op, &[&agent]);
    let dev = format!("{D}/devices/{id}");
    // The container boots with them as redroid boot arguments, each its own
    // argument (the model keeps its spaces)...
    let boot_args = || {
        let c = agent.container_of(&id).expect("container");
        agent.exec(&c.name, &["cat", "/boot-args"])
    };
    let args = boot_args();
    for want in [
        "ro.product.model=Pixel 8 Pro",
        "ro.product.brand=google",
        "ro.build.fingerprint=google/husky/husky:14/AP1A.240305.019/1:user/release-keys",
        "androidboot.redroid_net_proxy_type=static",
        "androidboot.redroid_net_proxy_host=proxy.corp.example",
        "androidboot.redroid_net_proxy_port=3128",
        "androidboot.redroid_net_proxy_exclude_list=*.corp.example",
        "androidboot.redroid_net_ndns=2",
        "androidboot.redroid_net_dns1=9.9.9.9",
        "androidboot.redroid_net_dns2=149.112.112.112",
    ] {
        assert!(args.contains(want), "{want} missing from {args}");
    }
    // ...and the phone reports them as its properties.
    let props = expect_json(app.get(&format!("{dev}/properties?wait=20"), owner), 200);
    assert_eq!(
        props["result"]["properties"]["ro.product.brand"], "google",
        "{props}"
    );
    let d = device(&app, &token, &id);
    assert_eq!(d["spec"]["identity"]["model"], "Pixel 8 Pro", "{d}");

    // A file under /data survives a network change, which makes the
    // container again at a new generation.
    let push = |text: &str| {
        let v = expect_json(
            app.call_raw(
                "PUT",
                &format!("{dev}/files?path=/data/local/tmp/mine.txt&wait=20"),
                "application/octet-stream",
                text.as_bytes().to_vec(),
                admin.t(),
            ),
            200,
        );
        assert_eq!(v["status"], "succeeded", "{v}");
    };
    let pull = || {
        app.get(
            &format!("{dev}/files?path=/data/local/tmp/mine.txt&wait=20"),
            admin.t(),
        )
    };
    push("kept");
    let before = d["generation"].as_i64().unwrap();
    let changed = expect_json(
        app.call(
            "PUT",
            &format!("{dev}/network"),
            Some(&json!({"dns": ["1.1.1.1"]})),
            owner,
        ),
        202,
    );
    assert_eq!(changed["operation"]["kind"], "reconfigure", "{changed}");
    succeeded(&app, &token, &changed["operation"], &[&agent]);
    let args = boot_args();
    assert!(
        args.contains("androidboot.redroid_net_dns1=1.1.1.1"),
        "{args}"
    );
    assert!(
        !args.contains("redroid_net_proxy"),
        "the proxy is gone: {args}"
    );
    assert!(
        args.contains("ro.product.model=Pixel 8 Pro"),
        "the identity stays: {args}"
    );
    let r = pull();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"kept");
    assert_eq!(
        device(&app, &token, &id)["generation"].as_i64(),
        Some(before + 1)
    );

    // A SOCKS proxy is refused and changes nothing.
    let r = app.call(
        "PUT",
        &format!("{dev}/network"),
        Some(&json!({"proxy": {"type": "socks5", "host": "h", "port": 1080}})),
        owner,
    );
    let (status, code) = error_code(r).expect("the error shape");
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    assert_eq!(
        device(&app, &token, &id)["generation"].as_i64(),
        Some(before + 1)
    );

    // Renewing: a new serial number, a new model, and /data wiped.
    let renewed = expect_json(
        app.post(
            &format!("{dev}/renew"),
            &json!({"identity": {"brand": "samsung", "model": "SM-S928B"}}),
            owner,
        ),
        202,
    );
    assert_eq!(renewed["operation"]["kind"], "renew", "{renewed}");
    succeeded(&app, &token, &renewed["operation"], &[&agent]);
    let d = device(&app, &token, &id);
    let serial = d["spec"]["identity"]["serial"]
        .as_str()
        .expect("a serial")
        .to_string();
    assert_eq!(serial.len(), 16, "{d}");
    assert_eq!(d["spec"]["identity"]["model"], "SM-S928B");
    let args = boot_args();
    assert!(
        args.contains(&format!("androidboot.serialno={serial}")),
        "{args}"
    );
    assert!(args.contains("ro.product.model=SM-S928B"), "{args}");
    assert!(!args.contains("Pixel"), "{args}");
    let c = agent.container_of(&id).expect("container");
    let listing = agent.exec(&c.name, &["ls", "-R", "/data"]);
    assert!(
        !listing.contains("mine.txt"),
        "the old /data is gone: {listing}"
    );
    let r = pull();
    let failed = r.headers()["content-type"] == "application/json";
    let v: Value = r.json().expect("a failed pull answers the operation");
    assert!(
        failed && v["status"] == "failed",
        "the old /data is gone: {v}"
    );
    // Renewed again: yet another serial.
    let again = expect_json(app.post(&format!("{dev}/renew"), &json!({}), owner), 202);
    succeeded(&app, &token, &again["operation"], &[&agent]);
    let d = device(&app, &token, &id);
    assert_ne!(
        d["spec"]["identity"]["serial"].as_str(),
        Some(serial.as_str())
    );
    assert_eq!(
        d["spec"]["identity"]["model"], "SM-S928B",
        "the identity it had stays"
    );
}

/// The install records of a version in `status`.
fn installs_in(app: &TestApp, token: &str, version: &str, status: &str) -> Vec<Value> {
    let page = expect_json(
        app.get(
            &format!("/api/v1/app/installs?version_id={version}&status={status}&per_page=100"),
            Some(token),
        ),
        200,
    );
    page["items"].as_array().unwrap().clone()
}

/// What the test image's `pm` says is installed on a phone.
fn packages_on(agent: &RealAgent, device: &str) -> String {
    std::fs::read_to_string(agent.device_data(device).join("packages")).unwrap_or_default()
}

#[test]
fn an_uploaded_app_is_installed_on_three_real_phones_by_signed_link_and_a_tampered_file_is_refused()
{
    use e2e::apks::{upload, ApkTools, MANIFEST};
    let app = app_with(&[]);
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    set_quota(&app, &admin, &user, 5);
    // The agent downloads APKs only from `app`'s signed links.
    let files = format!("{}/api/v1/app/files/", app.base);
    let agent = dense_node_with(&app, &admin, &node_id("apps"), 10, &[&files]);
    let tid = small_template(&app, &admin, "small");
    let batch = expect_json(
        app.post(
            &format!("{D}/batches"),
            &json!({"action": "create", "count": 3, "template_id": tid}),
            Some(&token),
        ),
        202,
    );
    let path = format!("{D}/batches/{}", batch["id"].as_str().unwrap());
    let made = app
        .eventually(Duration::from_secs(120), || {
            let b = expect_json(app.get(&path, Some(&token)), 200);
            (b["status"] == "finished").then_some(b)
        })
        .unwrap_or_else(|_| panic!("phones never made; agent log:\n{}", agent.log()));
    assert_eq!(made["succeeded"], 3, "{made}");
    let phones: Vec<String> = made["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["device_id"].as_str().unwrap().to_string())
        .collect();

    // A real APK, uploaded by a publisher and read by the catalogue; the
    // phones' owner may install it once a reviewer approved it.
    let tools = ApkTools::new();
    let file = std::fs::read(tools.installable("hello", MANIFEST, "com.example.hello")).unwrap();
    let (_, publisher) = app.signed_up_user();
    let stored = expect_json(upload(&app, &publisher, &file, json!({})), 201);
    let version = stored["version"]["id"].as_str().unwrap().to_string();
    let sha = stored["version"]["sha256"].as_str().unwrap().to_string();
    let early = app.post(
        "/api/v1/app/installs",
        &json!({"version_id": version, "device_ids": phones}),
        Some(&token),
    );
    assert_eq!(
        early.status(),
        404,
        "not installable by others before approval"
    );
    let v = format!("/api/v1/app/versions/{version}");
    expect_json(
        app.post(&format!("{v}/submit"), &json!({}), Some(&publisher)),
        200,
    );
    let approved = expect_json(
        app.post(
            &format!("{v}/review"),
            &json!({"decision": "approve"}),
            admin.t(),
        ),
        200,
    );
    assert_eq!(approved["review_status"], "approved");

    // Installed on the three phones: one record each, followed to `installed`.
    let asked = expect_json(
        app.post(
            "/api/v1/app/installs",
            &json!({"version_id": version, "device_ids": phones, "concurrency": 2}),
            Some(&token),
        ),
        202,
    );
    assert_eq!(asked["items"].as_array().unwrap().len(), 3, "{asked}");
    assert_eq!(asked["refused"], json!([]));
    let installed = app
        .eventually(Duration::from_secs(120), || {
            let done = installs_in(&app, &token, &version, "installed");
            (done.len() == 3).then_some(done)
        })
        .unwrap_or_else(|_| panic!("not installed on all three; agent log:\n{}", agent.log()));
    for phone in &phones {
        assert!(
            packages_on(&agent, phone)
                .lines()
                .any(|p| p == "com.example.hello"),
            "{phone}: {}",
            packages_on(&agent, phone)
        );
        assert_eq!(
            std::fs::read_dir(agent.device_data(phone).join("cloudphone-apk"))
                .unwrap()
                .count(),
            0,
            "the APK is removed from the phone once installed"
        );
    }
    // The agent fetched the whole file by the signed link and checked its sha256.
    for record in &installed {
        let op = record["operation_id"].as_str().expect("its operation");
        let op = expect_json(app.get(&format!("{D}/operations/{op}"), Some(&token)), 200);
        assert_eq!(op["kind"], "install_apk");
        assert_eq!(op["result"]["sha256"], sha.as_str(), "{op}");
        assert_eq!(op["result"]["bytes"], file.len(), "{op}");
    }
    let v = expect_json(
        app.get(&format!("/api/v1/app/versions/{version}"), Some(&token)),
        200,
    );
    assert_eq!(v["install_count"], 3, "{v}");
    assert_eq!(
        app.count(
            "app",
            "SELECT count(*) FROM outbox WHERE event_type = 'app.installed'"
        ),
        3
    );
    // Another user cannot install it on these phones, nor see the records.
    let (_, stranger) = app.signed_up_user();
    let r = expect_json(
        app.post(
            "/api/v1/app/installs",
            &json!({"version_id": version, "device_ids": [phones[0]]}),
            Some(&stranger),
        ),
        202,
    );
    assert_eq!(
        (
            r["items"].as_array().unwrap().len(),
            r["refused"].as_array().unwrap().len()
        ),
        (0, 1),
        "{r}"
    );
    let theirs = expect_json(app.get("/api/v1/app/installs", Some(&stranger)), 200);
    assert_eq!(theirs["total"], 0, "{theirs}");

    // A second version whose stored file was tampered with after it was
    // read: the agent refuses what it downloaded, nothing reaches the phone.
    let v2 = std::fs::read(tools.installable(
        "hello2",
        &MANIFEST.replace("versionCode=\"42\"", "versionCode=\"43\""),
        "com.example.tampered",
    ))
    .unwrap();
    let stored = expect_json(upload(&app, &token, &v2, json!({})), 201);
    let version2 = stored["version"]["id"].as_str().unwrap().to_string();
    let changed = app
        .db("app")
        .execute(
            "UPDATE upload_chunks SET data = overlay(data PLACING '\\x00ff'::bytea FROM 40) \
             WHERE upload_id = (SELECT upload_id FROM app_versions WHERE id = $1::text::uuid) AND seq = 0",
            &[&version2],
        )
        .unwrap();
    assert_eq!(changed, 1);
    expect_json(
        app.post(
            "/api/v1/app/installs",
            &json!({"version_id": version2, "device_ids": [phones[0]]}),
            Some(&token),
        ),
        202,
    );
    let failed = app
        .eventually(Duration::from_secs(120), || {
            installs_in(&app, &token, &version2, "failed").pop()
        })
        .unwrap_or_else(|_| {
            panic!(
                "the tampered install never failed; agent log:\n{}",
                agent.log()
            )
        });
    let error = failed["error"].as_str().unwrap();
    assert!(error.starts_with("checksum_mismatch"), "{error}");
    assert!(!packages_on(&agent, &phones[0]).contains("com.example.tampered"));
    // The phones' owner is told, in-app.
    app.eventually(Duration::from_secs(30), || {
        app.notifications(&token)
            .iter()
            .any(|n| {
                n["kind"] == "app.install_failed"
                    && n["body"].as_str().unwrap().contains("checksum_mismatch")
            })
            .then_some(())
    })
    .expect("the failed install is notified");

    // Uninstalled from one phone; a deleted phone's record ends too.
    let on_first = installed
        .iter()
        .find(|r| r["device_id"] == phones[0].as_str())
        .unwrap();
    let r = expect_json(
        app.post(
            &format!(
                "/api/v1/app/installs/{}/uninstall",
                on_first["id"].as_str().unwrap()
            ),
            &json!({}),
            Some(&token),
        ),
        202,
    );
    assert_eq!(r["status"], "uninstalling", "{r}");
    app.eventually(Duration::from_secs(60), || {
        let r = expect_json(
            app.get(
                &format!("/api/v1/app/installs/{}", on_first["id"].as_str().unwrap()),
                Some(&token),
            ),
            200,
        );
        (r["status"] == "uninstalled").then_some(())
    })
    .unwrap_or_else(|_| panic!("never uninstalled; agent log:\n{}", agent.log()));
    assert!(!packages_on(&agent, &phones[0]).contains("com.example.hello"));
    assert!(packages_on(&agent, &phones[1]).contains("com.example.hello"));
    // Removed on the phone behind the platform's back: reconciling with
    // what the phone lists ends its record.
    let listed = agent.device_data(&phones[1]).join("packages");
    std::fs::write(&listed, "").unwrap();
    let after = expect_json(
        app.post(
            &format!("/api/v1/app/devices/{}/reconcile", phones[1]),
            &json!({}),
            Some(&token),
        ),
        200,
    );
    assert_eq!(
        after["packages"],
        json!(["android", "com.android.settings"]),
        "{after}"
    );
    let record = &after["items"].as_array().unwrap()[0];
    assert_eq!(record["status"], "uninstalled", "{after}");
    assert_eq!(
        record["error"],
        "not on the device when it listed its packages"
    );
    let r = app.delete(&format!("{D}/devices/{}", phones[2]), Some(&token));
    assert!(r.status().is_success(), "{}", r.status());
    app.eventually(Duration::from_secs(60), || {
        let done = installs_in(&app, &token, &version, "uninstalled");
        done.iter()
            .any(|r| r["device_id"] == phones[2].as_str() && r["error"] == "the device was deleted")
            .then_some(())
    })
    .expect("the deleted phone's record ends");
}
