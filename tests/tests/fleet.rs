//! Templates, first-boot provisioning and snapshots end to end, with
//! scripted agents that sign exactly as the runtime agent does: who sees
//! and changes which templates, a device made from a template runs its
//! apps, properties and commands one at a time in order (and a failed step
//! skips the rest), snapshots are taken, restored and deleted through
//! their node, and outlive their device; a snapshot policy takes them on
//! time, keeps the newest and charges their storage. The real agent
//! against Podman is in `agent_e2e.rs`.

use agent_protocol::messages::DeviceStatus;
use e2e::agent::ScriptedAgent;
use e2e::nodes::{
    bring_online, concurrent_creates, device_of, enroll, listen, made_and_refused, next_command,
    redis_connection, set_quota, wait_op, D,
};
use e2e::{error_code, expect_json, roles, Session, TestApp};
use serde_json::{json, Value};

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The status and code of an error answer.
fn refused(resp: reqwest::blocking::Response) -> (u16, String) {
    error_code(resp).expect("the common error body")
}

/// The event types recorded for an aggregate, in order.
fn events_of(app: &TestApp, aggregate: &str) -> Vec<String> {
    app.db("device")
        .query(
            "SELECT event_type FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
            &[&aggregate],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A tenant with its administrator and a plain member.
struct Tenant {
    admin: Session,
    member: Session,
}

fn tenant(app: &TestApp, platform: &Session, code: &str) -> Tenant {
    let t = app.create_tenant(&platform.token, code);
    let admin = app.create_user(
        &platform.token,
        json!({"tenant_id": t, "role_ids": [roles::TENANT_ADMIN]}),
    );
    let member = app.create_user(
        &platform.token,
        json!({"tenant_id": t, "role_ids": [roles::USER]}),
    );
    set_quota(app, platform, &member.id, 10);
    Tenant { admin, member }
}

/// Reports the device running and returns the next command the node gets.
fn comes_up(
    agent: &ScriptedAgent,
    pubsub: &mut redis::PubSub,
    device: &str,
) -> agent_protocol::messages::Envelope {
    let (_, answer) = agent.report(vec![agent.status(device, DeviceStatus::Ready, 1)]);
    assert_eq!(answer["applied"], 1, "{answer}");
    next_command(pubsub, agent)
}

/// Reports a command's result, which the control plane must apply.
fn answer(agent: &ScriptedAgent, op: &str, ok: bool, output: Value) {
    let (_, a) = agent.report(vec![agent.result(op, ok, output)]);
    assert_eq!(a["applied"], 1, "{a}");
}

#[test]
fn a_template_makes_devices_that_run_its_first_boot_steps_in_order_and_only_its_tenant_sees_it() {
    let app = TestApp::spawn();
    let platform = app.platform_admin();
    let agent = enroll(&app, &platform, "node-f", json!({}));
    bring_online(&app, &platform, &agent);
    let (a, b) = (
        tenant(&app, &platform, "acme"),
        tenant(&app, &platform, "bravo"),
    );
    let (_, outsider) = app.signed_up_user();
    let templates = format!("{D}/templates");
    let body = json!({
        "name": "QA base", "category": "testing", "spec": {"cpu_cores": 1, "memory_mb": 2048},
        "tags": ["qa"],
        "preinstalled_apps": [{"url": "https://cp.example/apks/hello.apk", "sha256": SHA}],
        "properties": {"persist.sys.timezone": "UTC"},
        "init_commands": ["touch /data/local/tmp/ready"],
        "default_idle_timeout_secs": 600
    });

    // Bad input is refused with the reason, and nothing is stored.
    for (bad, code) in [
        (json!({"category": "x"}), 400),
        (
            json!({"name": "t", "properties": {"ro.product.model": "x"}}),
            400,
        ),
        (json!({"name": "t", "init_commands": [""]}), 400),
        (json!({"name": "t", "spec": {"image": "evil/miner:1"}}), 400),
        (
            json!({"name": "t", "preinstalled_apps": [{"url": "file:///etc/passwd", "sha256": SHA}]}),
            400,
        ),
        (json!({"name": "t", "visibility": "public"}), 403),
    ] {
        let (status, _) = refused(app.post(&templates, &bad, a.admin.t()));
        assert_eq!(status, code, "{bad}");
    }
    // A plain member holds no device:template.
    assert_eq!(refused(app.post(&templates, &body, a.member.t())).0, 403);
    assert_eq!(app.count("device", "SELECT count(*) FROM templates"), 0);

    let t = expect_json(app.post(&templates, &body, a.admin.t()), 201);
    let tid = t["id"].as_str().unwrap().to_string();
    assert_eq!(
        (t["visibility"].as_str(), t["usage_count"].as_i64()),
        (Some("tenant"), Some(0))
    );
    // The same name again in the same tenant is a conflict; in another tenant it is not.
    assert_eq!(
        refused(app.post(&templates, &body, a.admin.t())),
        (409, "conflict".into())
    );
    expect_json(app.post(&templates, &body, b.admin.t()), 201);

    // Tenant A's members see it; tenant B and a user without a tenant do not.
    let seen = |token: &str| -> Vec<String> {
        let page = expect_json(app.get(&templates, Some(token)), 200);
        e2e::ids(&page)
    };
    assert!(seen(&a.member.token).contains(&tid));
    assert!(!seen(&b.member.token).contains(&tid));
    assert!(!seen(&outsider).contains(&tid));
    assert!(seen(&platform.token).contains(&tid));
    let one = format!("{templates}/{tid}");
    assert_eq!(refused(app.get(&one, b.admin.t())).0, 404);
    assert_eq!(
        refused(app.patch(&one, &json!({"name": "x"}), b.admin.t())).0,
        404
    );
    assert_eq!(refused(app.delete(&one, b.admin.t())).0, 404);
    // Filters and their bad values.
    let page = expect_json(
        app.get(&format!("{templates}?category=testing&q=qa"), a.member.t()),
        200,
    );
    assert_eq!(e2e::ids(&page), vec![tid.clone()]);
    assert_eq!(
        refused(app.get(&format!("{templates}?category=Bad!"), a.member.t())).0,
        400
    );
    assert_eq!(
        refused(app.get(&format!("{templates}?visibility=secret"), a.member.t())).0,
        400
    );
    // A change is checked whole; visibility never changes.
    assert_eq!(
        refused(app.patch(&one, &json!({"visibility": "private"}), a.admin.t())).0,
        400
    );
    assert_eq!(
        refused(app.patch(&one, &json!({"spec": {"cpu_cores": 999}}), a.admin.t())).0,
        400
    );
    let changed = expect_json(
        app.patch(&one, &json!({"description": "for QA"}), a.admin.t()),
        200,
    );
    assert_eq!(
        (changed["description"].as_str(), changed["version"].as_i64()),
        (Some("for QA"), Some(2))
    );

    // A device from it: both a spec and a template is refused, another
    // tenant's template is not found.
    let devices = format!("{D}/devices");
    let from = |name: &str| json!({"name": name, "template_id": tid});
    let (status, _) = refused(app.post(
        &devices,
        &json!({"name": "p", "template_id": tid, "spec": {}}),
        a.member.t(),
    ));
    assert_eq!(status, 400);
    assert_eq!(refused(app.post(&devices, &from("p"), b.member.t())).0, 404);
    assert_eq!(
        refused(app.post(
            &devices,
            &json!({"name": "p", "template_id": "nope"}),
            a.member.t()
        ))
        .0,
        400
    );

    let mut conn = redis_connection(&app);
    let mut pubsub = listen(&mut conn, &agent);
    let op = expect_json(app.post(&devices, &from("p1"), a.member.t()), 202);
    let id = device_of(&op);
    let create = next_command(&mut pubsub, &agent);
    assert_eq!(create.body["op"], "create");
    assert_eq!(
        create.body["device"]["spec"]["resources"]["cpu_millis"],
        1000
    );
    let device = expect_json(app.get(&format!("{devices}/{id}"), a.member.t()), 200);
    assert_eq!(
        (device["template_id"].as_str(), device["tags"].clone()),
        (Some(tid.as_str()), json!(["qa"]))
    );
    // The template's lifecycle defaults apply where the request left them out.
    assert_eq!(device["idle_timeout_secs"], 600, "{device}");
    let provisioning = format!("{devices}/{id}/provisioning");
    let p = expect_json(app.get(&provisioning, a.member.t()), 200);
    assert_eq!(p["status"], "pending");
    assert_eq!(p["steps"].as_array().unwrap().len(), 3);

    // Once it runs, the steps go out one at a time, in order.
    let install = comes_up(&agent, &mut pubsub, &id);
    assert_eq!(
        (
            install.body["op"].as_str(),
            install.body["url"].as_str(),
            install.body["sha256"].as_str()
        ),
        (
            Some("install_apk"),
            Some("https://cp.example/apks/hello.apk"),
            Some(SHA)
        )
    );
    let op_of = |env: &agent_protocol::messages::Envelope| {
        env.body["operation_id"].as_str().unwrap().to_string()
    };
    answer(
        &agent,
        &op_of(&install),
        true,
        json!({"device_id": id, "sha256": SHA, "bytes": 10}),
    );
    let setprop = next_command(&mut pubsub, &agent);
    assert_eq!(
        setprop.body["command"],
        "setprop persist.sys.timezone 'UTC'"
    );
    let p = expect_json(app.get(&provisioning, a.member.t()), 200);
    assert_eq!(p["steps"][0]["status"], "succeeded");
    assert_eq!(p["steps"][1]["status"], "running");
    assert_eq!(p["steps"][2]["status"], "pending");
    let ok_shell = json!({"exit_code": 0, "stdout": "", "stderr": "", "truncated": false});
    answer(&agent, &op_of(&setprop), true, ok_shell.clone());
    let init = next_command(&mut pubsub, &agent);
    assert_eq!(init.body["command"], "touch /data/local/tmp/ready");
    answer(&agent, &op_of(&init), true, ok_shell);
    let p = expect_json(app.get(&provisioning, a.member.t()), 200);
    assert_eq!(p["status"], "done", "{p}");
    assert!(events_of(&app, &id).contains(&"device.provisioned".to_string()));
    // The steps ran as the platform's operations, on the owner's device.
    let step_op = expect_json(
        app.get(&format!("{D}/operations/{}", op_of(&install)), a.member.t()),
        200,
    );
    assert_eq!(
        (step_op["kind"].as_str(), step_op["requested_by"].clone()),
        (Some("install_apk"), Value::Null)
    );
    let t = expect_json(app.get(&one, a.member.t()), 200);
    assert_eq!(
        (t["usage_count"].as_i64(), t["active_devices"].as_i64()),
        (Some(1), Some(1))
    );

    // A failed step skips the rest, and the event says why.
    let op = expect_json(app.post(&devices, &from("p2"), a.member.t()), 202);
    let id2 = device_of(&op);
    assert_eq!(next_command(&mut pubsub, &agent).body["op"], "create");
    let install = comes_up(&agent, &mut pubsub, &id2);
    answer(&agent, &op_of(&install), false, Value::Null);
    let p = expect_json(
        app.get(&format!("{devices}/{id2}/provisioning"), a.member.t()),
        200,
    );
    assert_eq!(p["status"], "failed", "{p}");
    let statuses: Vec<_> = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!("failed"), json!("skipped"), json!("skipped")]
    );
    let reason: String = app
        .db("device")
        .query_one(
            "SELECT payload->>'reason' FROM outbox WHERE aggregate_id = $1 AND event_type = 'device.provisioned'",
            &[&id2],
        )
        .unwrap()
        .get(0);
    assert!(reason.contains("it failed"), "{reason}");

    // Deleting the template leaves its devices as they are.
    assert_eq!(app.delete(&one, a.admin.t()).status(), 204);
    assert_eq!(refused(app.get(&one, a.member.t())).0, 404);
    assert_eq!(
        refused(app.post(&devices, &from("p3"), a.member.t())).0,
        404
    );
    let device = expect_json(app.get(&format!("{devices}/{id}"), a.member.t()), 200);
    assert_eq!(device["template_id"].as_str(), Some(tid.as_str()));
}

#[test]
fn snapshots_of_stopped_devices_are_taken_restored_and_deleted_through_their_node_and_outlive_it() {
    let app = TestApp::spawn();
    let platform = app.platform_admin();
    let agent = enroll(&app, &platform, "node-s", json!({}));
    bring_online(&app, &platform, &agent);
    let (user, token) = app.signed_up_user();
    set_quota(&app, &platform, &user, 5);
    let (_, stranger) = app.signed_up_user();
    let mut conn = redis_connection(&app);
    let mut pubsub = listen(&mut conn, &agent);
    let op = expect_json(
        app.post(&format!("{D}/devices"), &json!({"name": "p"}), Some(&token)),
        202,
    );
    let id = device_of(&op);
    assert_eq!(next_command(&mut pubsub, &agent).body["op"], "create");

    // A phone on its way up is not snapshotted; nothing is recorded.
    let take = format!("{D}/devices/{id}/snapshots");
    let (status, code) = refused(app.post(&take, &json!({}), Some(&token)));
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert_eq!(app.count("device", "SELECT count(*) FROM snapshots"), 0);

    agent.report(vec![agent.status(&id, DeviceStatus::Ready, 1)]);
    assert_eq!(
        wait_op(&app, &token, op["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    // Bad input and strangers.
    assert_eq!(
        refused(app.post(&take, &json!({"name": "a/b"}), Some(&token))).0,
        400
    );
    assert_eq!(
        refused(app.post(&take, &json!({"colour": 1}), Some(&token))).0,
        400
    );
    assert_eq!(refused(app.post(&take, &json!({}), Some(&stranger))).0, 404);

    let stop = expect_json(
        app.post(&format!("{D}/devices/{id}/stop"), &json!({}), Some(&token)),
        202,
    );
    assert_eq!(next_command(&mut pubsub, &agent).body["op"], "stop");
    agent.report(vec![agent.status(&id, DeviceStatus::Stopped, 2)]);
    assert_eq!(
        wait_op(&app, &token, stop["id"].as_str().unwrap())["status"],
        "succeeded"
    );

    let taken = expect_json(
        app.post(&take, &json!({"name": "before"}), Some(&token)),
        202,
    );
    let snap = taken["snapshot"]["id"].as_str().unwrap().to_string();
    assert_eq!(taken["snapshot"]["status"], "creating");
    assert_eq!(taken["operation"]["kind"], "snapshot");
    let cmd = next_command(&mut pubsub, &agent);
    assert_eq!(
        (
            cmd.body["op"].as_str(),
            cmd.body["device_id"].as_str(),
            cmd.body["snapshot_id"].as_str()
        ),
        (Some("snapshot"), Some(id.as_str()), Some(snap.as_str()))
    );
    let image = format!("localhost/cloudphone-snapshot-{id}:{snap}");
    let (_, a) = agent.report(vec![agent.result(
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": snap, "image": image, "image_id": "sha256:abc", "created_at": "2026-12-05T00:00:00Z"}),
    )]);
    assert_eq!(a["applied"], 1, "{a}");
    let one = format!("{D}/snapshots/{snap}");
    let s = expect_json(app.get(&one, Some(&token)), 200);
    assert_eq!(
        (s["status"].as_str(), s["image"].as_str()),
        (Some("ready"), Some(image.as_str()))
    );
    assert_eq!(refused(app.get(&one, Some(&stranger))).0, 404);
    let theirs = expect_json(app.get(&format!("{D}/snapshots"), Some(&stranger)), 200);
    assert_eq!(theirs["total"], 0);
    let mine = expect_json(app.get(&take, Some(&token)), 200);
    assert_eq!(e2e::ids(&mine), vec![snap.clone()]);
    assert_eq!(events_of(&app, &snap), ["snapshot.created"]);

    // Restore: bad ids are refused; the device's own ready snapshot goes back.
    let restore = format!("{D}/devices/{id}/restore");
    assert_eq!(
        refused(app.post(&restore, &json!({"snapshot_id": "x"}), Some(&token))).0,
        400
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        refused(app.post(&restore, &json!({"snapshot_id": unknown}), Some(&token))).0,
        404
    );
    assert_eq!(
        refused(app.post(&restore, &json!({"snapshot_id": snap}), Some(&stranger))).0,
        404
    );
    let r = expect_json(
        app.post(&restore, &json!({"snapshot_id": snap}), Some(&token)),
        202,
    );
    let cmd = next_command(&mut pubsub, &agent);
    assert_eq!(
        (cmd.body["op"].as_str(), cmd.body["snapshot_id"].as_str()),
        (Some("restore"), Some(snap.as_str()))
    );
    agent.report(vec![agent.result(
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": snap, "image": image}),
    )]);
    assert_eq!(
        wait_op(&app, &token, r["operation"]["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    assert_eq!(expect_json(app.get(&one, Some(&token)), 200)["restores"], 1);
    assert_eq!(
        events_of(&app, &snap),
        ["snapshot.created", "snapshot.restored"]
    );

    // A clone: a new device on the snapshot's node (not on the emptier one),
    // whose first step restores the snapshot's image and data.
    let empty = enroll(&app, &platform, "node-x", json!({}));
    bring_online(&app, &platform, &empty);
    let clone = format!("{one}/clone");
    assert_eq!(
        refused(app.post(&clone, &json!({"name": "copy"}), Some(&stranger))).0,
        404
    );
    assert_eq!(refused(app.post(&clone, &json!({}), Some(&token))).0, 400);
    let made = expect_json(
        app.post(&clone, &json!({"name": "copy"}), Some(&token)),
        202,
    );
    let copy = device_of(&made);
    let cmd = next_command(&mut pubsub, &agent);
    assert_eq!(
        (
            cmd.body["op"].as_str(),
            cmd.body["device"]["device_id"].as_str()
        ),
        (Some("create"), Some(copy.as_str()))
    );
    let cmd = comes_up(&agent, &mut pubsub, &copy);
    assert_eq!(
        (
            cmd.body["op"].as_str(),
            cmd.body["device_id"].as_str(),
            cmd.body["source_device_id"].as_str(),
            cmd.body["snapshot_id"].as_str()
        ),
        (
            Some("restore"),
            Some(copy.as_str()),
            Some(id.as_str()),
            Some(snap.as_str())
        )
    );
    answer(
        &agent,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": copy, "snapshot_id": snap, "image": image}),
    );
    let p = expect_json(
        app.get(&format!("{D}/devices/{copy}/provisioning"), Some(&token)),
        200,
    );
    assert_eq!(p["status"], "done", "{p}");
    assert_eq!(expect_json(app.get(&one, Some(&token)), 200)["restores"], 2);

    // The snapshot outlives its device; deleting it goes through its node.
    let del = expect_json(app.delete(&format!("{D}/devices/{id}"), Some(&token)), 202);
    assert_eq!(next_command(&mut pubsub, &agent).body["op"], "delete");
    agent.report(vec![agent.status(&id, DeviceStatus::Removed, 3)]);
    assert_eq!(
        wait_op(&app, &token, del["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    assert_eq!(
        expect_json(app.get(&one, Some(&token)), 200)["status"],
        "ready"
    );
    assert_eq!(refused(app.delete(&one, Some(&stranger))).0, 404);
    let gone = expect_json(app.delete(&one, Some(&token)), 202);
    assert_eq!(gone["snapshot"]["status"], "deleting");
    let cmd = next_command(&mut pubsub, &agent);
    assert_eq!(cmd.body["op"], "delete_snapshot");
    // A second delete while the first runs is a conflict.
    assert_eq!(refused(app.delete(&one, Some(&token))).0, 409);
    agent.report(vec![agent.result(
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": snap, "status": "deleted"}),
    )]);
    assert_eq!(
        expect_json(app.get(&one, Some(&token)), 200)["status"],
        "deleted"
    );
    assert_eq!(
        expect_json(app.get(&format!("{D}/snapshots"), Some(&token)), 200)["total"],
        0
    );
    let deleted = expect_json(
        app.get(&format!("{D}/snapshots?status=deleted"), Some(&token)),
        200,
    );
    assert_eq!(e2e::ids(&deleted), vec![snap.clone()]);
    assert_eq!(
        events_of(&app, &snap),
        [
            "snapshot.created",
            "snapshot.restored",
            "snapshot.restored",
            "snapshot.deleted"
        ]
    );
}

/// Runs the snapshot job once; what it did.
fn maintain(app: &TestApp) -> Value {
    expect_json(
        app.post_as("scheduler", &format!("{D}/internal/snapshots/maintain")),
        200,
    )
}

/// The storage the user's quota holds, in GiB.
fn used_storage(app: &TestApp, admin: &Session, user: &str) -> i64 {
    let q = expect_json(
        app.get(&format!("/api/v1/user/quotas/{user}"), admin.t()),
        200,
    );
    q["used"]["storage_gb"].as_i64().unwrap()
}

/// Makes the device's automatic backup due (as if a day had passed), runs
/// the job, which must take it, answers it with `bytes` of data, and runs
/// the job again; the snapshot and what the second run did.
fn backup(
    app: &TestApp,
    agent: &ScriptedAgent,
    pubsub: &mut redis::PubSub,
    id: &str,
    bytes: u64,
) -> (String, Value) {
    app.db("device")
        .execute(
            "UPDATE snapshot_policies SET next_backup_at = now() AT TIME ZONE 'UTC' - interval '1 second' WHERE device_id = $1",
            &[&uuid::Uuid::parse_str(id).unwrap()],
        )
        .unwrap();
    let done = maintain(app);
    assert_eq!(done["backups"], 1, "{done}");
    let cmd = next_command(pubsub, agent);
    assert_eq!(cmd.body["op"], "snapshot");
    let snap = cmd.body["snapshot_id"].as_str().unwrap().to_string();
    answer(
        agent,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": snap, "image": "i", "image_id": "sha256:2", "data_bytes": bytes, "paused": true}),
    );
    (snap, maintain(app))
}

#[test]
fn a_snapshot_policy_backs_up_on_time_keeps_the_newest_and_charges_storage_until_it_is_full() {
    const GIB: u64 = 1 << 30;
    let app = e2e::TestApp::spawn_with(e2e::Options {
        disable_triggers: vec!["cron"],
        ..e2e::Options::default()
    });
    let platform = app.platform_admin();
    let agent = enroll(&app, &platform, "node-b", json!({}));
    bring_online(&app, &platform, &agent);
    let (user, token) = app.signed_up_user();
    set_quota(&app, &platform, &user, 5);
    // Room for the device's 16 GiB disk and 4 GiB of snapshots.
    expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{user}"),
            &json!({"max_storage_gb": 20}),
            platform.t(),
        ),
        200,
    );
    let (_, stranger) = app.signed_up_user();
    let mut conn = redis_connection(&app);
    let mut pubsub = listen(&mut conn, &agent);
    let op = expect_json(
        app.post(&format!("{D}/devices"), &json!({"name": "b"}), Some(&token)),
        202,
    );
    let id = device_of(&op);
    assert_eq!(next_command(&mut pubsub, &agent).body["op"], "create");
    agent.report(vec![agent.status(&id, DeviceStatus::Ready, 1)]);
    assert_eq!(
        wait_op(&app, &token, op["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    assert_eq!(used_storage(&app, &platform, &user), 16);

    // No policy until one is set; bad ones change nothing.
    let policy = format!("{D}/devices/{id}/snapshot-policy");
    let none = expect_json(app.get(&policy, Some(&token)), 200);
    assert_eq!(
        (none["every_secs"].clone(), none["version"].clone()),
        (Value::Null, json!(0))
    );
    for bad in [
        json!({"every_secs": 60}),
        json!({"every_secs": 400 * 24 * 3600}),
        json!({"keep_last": 0}),
        json!({"keep_last": 21}),
        json!({"max_age_secs": -1}),
        json!({"applies_to": "some"}),
        json!({"every": 3600}),
        json!([]),
    ] {
        let (status, code) = refused(app.put(&policy, &bad, Some(&token)));
        assert_eq!((status, code.as_str()), (400, "invalid_input"), "{bad}");
    }
    assert_eq!(
        refused(app.put(&policy, &json!({}), Some(&stranger))).0,
        404
    );
    assert_eq!(refused(app.get(&policy, Some(&stranger))).0, 404);
    assert_eq!(
        app.count("device", "SELECT count(*) FROM snapshot_policies"),
        0
    );

    // A running phone is snapshotted (its agent freezes it for the copy).
    // The user's own snapshot is charged its size, at least 1 GiB.
    let taken = expect_json(
        app.post(
            &format!("{D}/devices/{id}/snapshots"),
            &json!({"name": "mine"}),
            Some(&token),
        ),
        202,
    );
    let mine = taken["snapshot"]["id"].as_str().unwrap().to_string();
    let cmd = next_command(&mut pubsub, &agent);
    assert_eq!(cmd.body["op"], "snapshot");
    answer(
        &agent,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": mine, "image": "i", "image_id": "sha256:1", "data_bytes": 100, "paused": true}),
    );
    let done = maintain(&app);
    assert_eq!(
        (done["charged"].clone(), done["backups"].clone()),
        (json!(1), json!(0)),
        "{done}"
    );
    let s = expect_json(app.get(&format!("{D}/snapshots/{mine}"), Some(&token)), 200);
    assert_eq!(
        (
            s["origin"].as_str(),
            s["data_bytes"].as_i64(),
            s["storage_gb"].as_i64(),
            s["quota_state"].as_str()
        ),
        (Some("manual"), Some(100), Some(1), Some("held"))
    );
    assert_eq!(used_storage(&app, &platform, &user), 17);
    // Charging again charges nothing more.
    assert_eq!(maintain(&app)["charged"], 0);
    assert_eq!(used_storage(&app, &platform, &user), 17);

    // Daily backups, the newest two kept.
    let set = expect_json(
        app.put(
            &policy,
            &json!({"every_secs": 86400, "keep_last": 2}),
            Some(&token),
        ),
        200,
    );
    assert_eq!(
        (
            set["every_secs"].clone(),
            set["keep_last"].clone(),
            set["applies_to"].clone()
        ),
        (json!(86400), json!(2), json!("scheduled"))
    );
    assert!(set["next_backup_at"].is_string(), "{set}");
    // Not due yet: the job takes nothing.
    assert_eq!(maintain(&app)["backups"], 0);

    // Each backup falls due (the clock moved on by a day), is taken through
    // the node and charged.
    let (first, done) = backup(&app, &agent, &mut pubsub, &id, GIB);
    assert_eq!(done["charged"], 1, "{done}");
    let (second, _) = backup(&app, &agent, &mut pubsub, &id, GIB / 2);
    assert_eq!(used_storage(&app, &platform, &user), 19);
    let s = expect_json(
        app.get(&format!("{D}/snapshots/{second}"), Some(&token)),
        200,
    );
    assert_eq!(
        (s["origin"].as_str(), s["status"].as_str()),
        (Some("scheduled"), Some("ready"))
    );
    let p = expect_json(app.get(&policy, Some(&token)), 200);
    assert!(
        p["last_backup_at"].is_string() && p["last_skipped"].is_null(),
        "{p}"
    );

    // A third pushes the first out: charged, then the first is deleted
    // through the node and its charge given back. The user's own stays.
    let (third, done) = backup(&app, &agent, &mut pubsub, &id, GIB);
    assert_eq!(
        (done["charged"].clone(), done["expired"].clone()),
        (json!(1), json!(1)),
        "{done}"
    );
    assert_eq!(used_storage(&app, &platform, &user), 20);
    let cmd = next_command(&mut pubsub, &agent);
    assert_eq!(
        (cmd.body["op"].as_str(), cmd.body["snapshot_id"].as_str()),
        (Some("delete_snapshot"), Some(first.as_str()))
    );
    answer(
        &agent,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": first, "status": "deleted"}),
    );
    let done = maintain(&app);
    assert_eq!(done["released"], 1, "{done}");
    assert_eq!(used_storage(&app, &platform, &user), 19);
    let left = expect_json(
        app.get(&format!("{D}/devices/{id}/snapshots"), Some(&token)),
        200,
    );
    let mut ids = e2e::ids(&left);
    ids.sort();
    let mut want = vec![mine.clone(), second.clone(), third.clone()];
    want.sort();
    assert_eq!(ids, want);

    // A backup bigger than the room left is refused: `snapshot.failed`
    // with the reason, deleted through the node, nothing held.
    let (big, done) = backup(&app, &agent, &mut pubsub, &id, 3 * GIB);
    // Refused and, in the same run, expired.
    assert_eq!(
        (done["refused"].clone(), done["expired"].clone()),
        (json!(1), json!(1)),
        "{done}"
    );
    assert_eq!(used_storage(&app, &platform, &user), 19);
    let s = expect_json(app.get(&format!("{D}/snapshots/{big}"), Some(&token)), 200);
    assert_eq!(
        (s["status"].as_str(), s["quota_state"].as_str()),
        (Some("deleting"), Some("refused"))
    );
    assert!(
        s["error"].as_str().unwrap().contains("storage quota"),
        "{s}"
    );
    assert_eq!(
        events_of(&app, &big),
        ["snapshot.created", "snapshot.failed"]
    );
    let cmd = next_command(&mut pubsub, &agent);
    assert_eq!(
        (cmd.body["op"].as_str(), cmd.body["snapshot_id"].as_str()),
        (Some("delete_snapshot"), Some(big.as_str()))
    );
    answer(
        &agent,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": big, "status": "deleted"}),
    );
    let s = expect_json(app.get(&format!("{D}/snapshots/{big}"), Some(&token)), 200);
    assert_eq!(
        (s["status"].as_str(), s["quota_state"].as_str()),
        (Some("deleted"), Some("released"))
    );
    assert!(
        s["error"].as_str().unwrap().contains("storage quota"),
        "{s}"
    );

    // Retention over every snapshot, by age: none may be older than an
    // hour. Moving the clock on deletes all three, the user's own too.
    expect_json(
        app.put(
            &policy,
            &json!({"max_age_secs": 3600, "applies_to": "all"}),
            Some(&token),
        ),
        200,
    );
    assert_eq!(maintain(&app)["expired"], 0);
    app.db("device")
        .execute(
            "UPDATE snapshots SET expires_at = expires_at - interval '2 hours' WHERE device_id = $1 AND status = 'ready'",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .unwrap();
    let done = maintain(&app);
    assert_eq!(
        (done["expired"].clone(), done["backups"].clone()),
        (json!(3), json!(0)),
        "{done}"
    );
    for _ in 0..3 {
        let cmd = next_command(&mut pubsub, &agent);
        assert_eq!(cmd.body["op"], "delete_snapshot");
        answer(
            &agent,
            cmd.body["operation_id"].as_str().unwrap(),
            true,
            json!({"device_id": id, "snapshot_id": cmd.body["snapshot_id"], "status": "deleted"}),
        );
    }
    let done = maintain(&app);
    assert_eq!(done["released"], 3, "{done}");
    assert_eq!(used_storage(&app, &platform, &user), 16);

    // A template's snapshot policy is given to each device made from it;
    // one shorter than the deployment allows is refused.
    let templates = format!("{D}/templates");
    for bad in [
        json!({"every_secs": 60}),
        json!({"keep_last": 0}),
        json!({"every_secs": 86400, "often": true}),
        json!("daily"),
    ] {
        let body = json!({"name": "daily", "default_snapshot_policy": bad});
        let (status, code) = refused(app.post(&templates, &body, platform.t()));
        assert_eq!((status, code.as_str()), (400, "invalid_input"), "{bad}");
    }
    assert_eq!(app.count("device", "SELECT count(*) FROM templates"), 0);
    let t = expect_json(
        app.post(
            &templates,
            &json!({"name": "daily", "visibility": "public", "default_snapshot_policy": {"every_secs": 86400, "keep_last": 3}}),
            platform.t(),
        ),
        201,
    );
    assert_eq!(t["default_snapshot_policy"]["keep_last"], 3, "{t}");
    expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{user}"),
            &json!({"max_storage_gb": 100}),
            platform.t(),
        ),
        200,
    );
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "from-daily", "template_id": t["id"]}),
            Some(&token),
        ),
        202,
    );
    let made = device_of(&op);
    let p = expect_json(
        app.get(&format!("{D}/devices/{made}/snapshot-policy"), Some(&token)),
        200,
    );
    assert_eq!(
        (
            p["every_secs"].clone(),
            p["keep_last"].clone(),
            p["applies_to"].clone()
        ),
        (json!(86400), json!(3), json!("scheduled")),
        "{p}"
    );
    assert!(p["next_backup_at"].is_string(), "{p}");
}

#[test]
fn gpu_slots_spread_over_a_nodes_gpus_and_are_never_given_twice_under_concurrency() {
    let app = TestApp::spawn();
    let platform = app.platform_admin();
    let mut agent = enroll(&app, &platform, "node-g", json!({}));
    agent.gpus = vec!["/dev/dri/renderD128".into(), "/dev/dri/renderD129".into()];
    bring_online(&app, &platform, &agent);
    let (user, token) = app.signed_up_user();
    set_quota(&app, &platform, &user, 20);
    let node = format!("{D}/nodes/{}", agent.node);
    assert_eq!(
        refused(app.patch(&node, &json!({"gpu_slots": 0}), platform.t())).0,
        400
    );
    let n = expect_json(
        app.patch(&node, &json!({"gpu_slots": 2}), platform.t()),
        200,
    );
    assert_eq!(
        (n["capacity"]["gpus"].as_i64(), n["gpu_slots"].as_i64()),
        (Some(4), Some(2))
    );

    // Twelve concurrent creates for four slots: four devices, each its own slot.
    let gpu = |i: usize| json!({"name": format!("g{i}"), "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4, "gpu_mode": "host"}});
    let outcomes = concurrent_creates(&app, &token, (0..12).map(gpu).collect(), "gpu");
    let (made, full) = made_and_refused(&outcomes, "no_capacity");
    assert_eq!((made, full), (4, 8), "{outcomes:?}");
    let gpus = expect_json(app.get(&format!("{node}/gpus"), platform.t()), 200);
    let used: Vec<_> = gpus["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["used"].as_i64().unwrap())
        .collect();
    assert_eq!(used, [2, 2], "{gpus}");
    let distinct: std::collections::BTreeSet<_> = app
        .db("device")
        .query("SELECT gpu, slot FROM gpu_allocations", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
        .collect();
    assert_eq!(distinct.len(), 4);
    // Each device's agent is told its GPU.
    let desired = agent.desired_state();
    let mut told: Vec<_> = desired
        .devices
        .iter()
        .map(|d| d.spec.gpu.node.clone().unwrap())
        .collect();
    told.sort();
    assert_eq!(
        told,
        [
            "/dev/dri/renderD128",
            "/dev/dri/renderD128",
            "/dev/dri/renderD129",
            "/dev/dri/renderD129"
        ]
    );

    // Fewer slots than are held is refused; a removed device frees its slot.
    assert_eq!(
        refused(app.patch(&node, &json!({"gpu_slots": 1}), platform.t())).0,
        409
    );
    let victim = desired.devices[0].device_id.to_string();
    let freed = desired.devices[0].spec.gpu.node.clone().unwrap();
    let del = expect_json(
        app.delete(&format!("{D}/devices/{victim}"), Some(&token)),
        202,
    );
    agent.report(vec![agent.status(&victim, DeviceStatus::Removed, 2)]);
    assert_eq!(
        wait_op(&app, &token, del["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    let op = expect_json(
        app.post(&format!("{D}/devices"), &gpu(99), Some(&token)),
        202,
    );
    let again = device_of(&op);
    let dd = agent.desired_state();
    let spec = &dd
        .devices
        .iter()
        .find(|d| d.device_id.as_str() == again)
        .unwrap()
        .spec;
    assert_eq!(spec.gpu.node.as_deref(), Some(freed.as_str()));
    // A device without a GPU takes no slot.
    expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "plain", "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}}),
            Some(&token),
        ),
        202,
    );
    assert_eq!(
        app.count("device", "SELECT count(*) FROM gpu_allocations"),
        4
    );
}

/// Plays every node's agent once: each device of its desired state is
/// reported where it is wanted (running or stopped), at its generation.
fn converge(agents: &[&ScriptedAgent]) {
    for agent in agents {
        let devices: Vec<_> = agent
            .desired_state()
            .devices
            .iter()
            .map(|d| {
                let status = match d.state {
                    agent_protocol::messages::RunState::Running => DeviceStatus::Ready,
                    agent_protocol::messages::RunState::Stopped => DeviceStatus::Stopped,
                };
                e2e::agent::observed(d.device_id.as_str(), status, d.generation)
            })
            .collect();
        let (status, _) = agent.report(vec![agent.heartbeat(devices)]);
        assert_eq!(status, 200);
    }
}

/// Converges the nodes until the batch finishes; the most items seen
/// running at once.
fn run_batch(app: &TestApp, token: &str, batch: &str, agents: &[&ScriptedAgent]) -> (Value, i64) {
    let mut most = 0;
    for _ in 0..120 {
        let b = expect_json(app.get(&format!("{D}/batches/{batch}"), Some(token)), 200);
        most = most.max(b["running"].as_i64().unwrap());
        if b["status"] == "finished" {
            return (b, most);
        }
        converge(agents);
    }
    panic!("batch {batch} did not finish");
}

#[test]
fn a_batch_makes_twenty_devices_from_a_template_and_stops_them_with_a_result_per_device() {
    let app = TestApp::spawn();
    let platform = app.platform_admin();
    let (a, b) = (
        enroll(&app, &platform, "node-b1", json!({})),
        enroll(&app, &platform, "node-b2", json!({})),
    );
    bring_online(&app, &platform, &a);
    bring_online(&app, &platform, &b);
    let (user, token) = app.signed_up_user();
    set_quota(&app, &platform, &user, 25);
    let (_, stranger) = app.signed_up_user();
    let template = expect_json(
        app.post(
            &format!("{D}/templates"),
            &json!({"name": "small", "visibility": "public", "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}, "tags": ["fleet"]}),
            platform.t(),
        ),
        201,
    );
    let batches = format!("{D}/batches");

    // Bad input and missing permissions are refused before anything is recorded.
    for (bad, code) in [
        (
            json!({"action": "reboot", "device_ids": [template["id"]]}),
            400,
        ),
        (
            json!({"action": "create", "count": 0, "template_id": template["id"]}),
            400,
        ),
        (
            json!({"action": "create", "count": 2, "template_id": uuid::Uuid::new_v4()}),
            404,
        ),
        (
            json!({"action": "shell", "filter": {}, "command": "id"}),
            403,
        ),
        (
            json!({"action": "stop", "filter": {"tag": "nothing-has-this"}}),
            400,
        ),
    ] {
        assert_eq!(
            refused(app.post(&batches, &bad, Some(&token))).0,
            code,
            "{bad}"
        );
    }
    assert_eq!(app.count("device", "SELECT count(*) FROM batches"), 0);

    // Twenty from the template, five at a time.
    let made = expect_json(
        app.post(
            &batches,
            &json!({"action": "create", "count": 20, "template_id": template["id"], "name_prefix": "qa", "concurrency": 5}),
            Some(&token),
        ),
        202,
    );
    assert_eq!(
        (made["total"].as_i64(), made["running"].as_i64()),
        (Some(20), Some(5))
    );
    let id = made["id"].as_str().unwrap().to_string();
    let (done, most) = run_batch(&app, &token, &id, &[&a, &b]);
    assert!(most <= 5, "at most 5 at once, saw {most}");
    assert_eq!(
        (
            done["succeeded"].as_i64(),
            done["failed"].as_i64(),
            done["progress"].as_i64()
        ),
        (Some(20), Some(0), Some(100)),
        "{done}"
    );
    let ids: Vec<String> = done["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["device_id"].as_str().unwrap().to_string())
        .collect();
    let names: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|d| {
            expect_json(app.get(&format!("{D}/devices/{d}"), Some(&token)), 200)["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, (1..=20).map(|i| format!("qa-{i}")).collect());
    assert_eq!(
        expect_json(
            app.get(
                &format!("{D}/templates/{}", template["id"].as_str().unwrap()),
                Some(&token)
            ),
            200
        )["usage_count"],
        20
    );
    // The stranger sees neither the batch nor the devices.
    assert_eq!(
        refused(app.get(&format!("{batches}/{id}"), Some(&stranger))).0,
        404
    );
    assert_eq!(
        expect_json(app.get(&batches, Some(&stranger)), 200)["total"],
        0
    );

    // Stop them all, plus a device the requester does not see and one that
    // does not exist: twenty results, two failures, each saying why.
    let c = enroll(&app, &platform, "node-b3", json!({}));
    bring_online(&app, &platform, &c);
    let theirs = device_of(&expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "theirs"}),
            Some(&stranger),
        ),
        202,
    ));
    let mut targets = ids.clone();
    targets.push(theirs.clone());
    targets.push(uuid::Uuid::new_v4().to_string());
    // A retried request (same Idempotency-Key) gets the first batch.
    let body = json!({"action": "stop", "device_ids": targets});
    let stop = expect_json(
        app.post_idempotent(&batches, &body, Some(&token), "stop-all"),
        202,
    );
    let again = expect_json(
        app.post_idempotent(&batches, &body, Some(&token), "stop-all"),
        200,
    );
    assert_eq!(again["id"], stop["id"]);
    let (done, most) = run_batch(&app, &token, stop["id"].as_str().unwrap(), &[&a, &b]);
    assert!(most <= 10, "{most}");
    assert_eq!(
        (done["succeeded"].as_i64(), done["failed"].as_i64()),
        (Some(20), Some(2)),
        "{done}"
    );
    let failed: Vec<_> = done["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "failed")
        .map(|i| {
            (
                i["device_id"].as_str().unwrap().to_string(),
                i["error_code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(failed[0], (theirs.clone(), "not_found".to_string()));
    assert_eq!(failed[1].1, "not_found");
    for d in &ids {
        let v = expect_json(app.get(&format!("{D}/devices/{d}"), Some(&token)), 200);
        assert_eq!(v["observed_status"], "stopped", "{v}");
    }
    let v = expect_json(
        app.get(&format!("{D}/devices/{theirs}"), Some(&stranger)),
        200,
    );
    assert_eq!(
        v["desired_status"], "running",
        "the stranger's device is untouched"
    );
    // Start them again by filter: the requester's devices tagged by the template.
    let start = expect_json(
        app.post(
            &batches,
            &json!({"action": "start", "filter": {"tag": "fleet"}, "concurrency": 20}),
            Some(&token),
        ),
        202,
    );
    assert_eq!(start["total"], 20);
    let (done, _) = run_batch(&app, &token, start["id"].as_str().unwrap(), &[&a, &b]);
    assert_eq!(done["succeeded"], 20, "{done}");
}

#[test]
fn a_warm_pool_of_three_serves_a_create_at_once_and_refills() {
    let app = TestApp::spawn_with(e2e::Options {
        disable_triggers: vec!["cron"],
        ..e2e::Options::default()
    });
    let platform = app.platform_admin();
    let agent = enroll(&app, &platform, "node-p", json!({}));
    bring_online(&app, &platform, &agent);
    let (user, token) = app.signed_up_user();
    set_quota(&app, &platform, &user, 1);
    let template = expect_json(
        app.post(
            &format!("{D}/templates"),
            &json!({"name": "warm", "visibility": "public", "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4},
                    "default_idle_timeout_secs": 900}),
            platform.t(),
        ),
        201,
    );
    let tid = template["id"].as_str().unwrap().to_string();
    let pool = format!("{D}/templates/{tid}/pool");
    assert_eq!(
        refused(app.put(&pool, &json!({"size": 3}), Some(&token))).0,
        403
    );
    assert_eq!(
        refused(app.put(&pool, &json!({"size": 101}), platform.t())).0,
        400
    );
    assert_eq!(
        refused(app.put(&pool, &json!({"size": "3"}), platform.t())).0,
        400
    );
    let p = expect_json(app.put(&pool, &json!({"size": 3}), platform.t()), 200);
    assert_eq!(
        (p["size"].as_i64(), p["ready"].as_i64()),
        (Some(3), Some(0))
    );
    let replenish = || {
        let r = app.post_as("scheduler", &format!("{D}/internal/pools/replenish"));
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()
    };
    let ready = || {
        expect_json(app.get(&pool, platform.t()), 200)["ready"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(replenish()["made"], 3);
    assert_eq!(
        replenish()["made"],
        0,
        "a second run makes none of them again"
    );
    converge(&[&agent]);
    assert_eq!(ready(), 3);
    // Pooled devices are nobody's: the user sees none of them.
    assert_eq!(
        expect_json(app.get(&format!("{D}/devices"), Some(&token)), 200)["total"],
        0
    );

    // A create from the template gets a running device at once.
    let started = std::time::Instant::now();
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "mine", "template_id": tid}),
            Some(&token),
        ),
        201,
    );
    let took = started.elapsed();
    assert_eq!(
        (op["kind"].as_str(), op["status"].as_str()),
        (Some("create"), Some("succeeded")),
        "{op}"
    );
    let id = device_of(&op);
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(
        (
            d["name"].as_str(),
            d["observed_status"].as_str(),
            d["owner_id"].as_str(),
            d["idle_timeout_secs"].as_i64()
        ),
        (
            Some("mine"),
            Some("running"),
            Some(user.as_str()),
            Some(900)
        ),
        "{d}"
    );
    eprintln!("a create from the warm pool answered in {took:?}");
    let runs = expect_json(
        app.get(&format!("{D}/devices/{id}/runs"), Some(&token)),
        200,
    );
    assert_eq!(
        runs["items"][0]["owner_id"].as_str(),
        Some(user.as_str()),
        "metered to its user from now on"
    );
    assert_eq!(ready(), 2);
    // The quota holds for pooled devices too: a second one is refused and
    // leaves the pool as it is.
    let (status, code) = refused(app.post(
        &format!("{D}/devices"),
        &json!({"name": "more", "template_id": tid}),
        Some(&token),
    ));
    assert_eq!((status, code.as_str()), (409, "quota_exceeded"));
    assert_eq!(ready(), 2);

    // The pool refills, and empties when its size goes to 0.
    assert_eq!(replenish()["made"], 1);
    converge(&[&agent]);
    assert_eq!(ready(), 3);
    expect_json(app.put(&pool, &json!({"size": 0}), platform.t()), 200);
    assert_eq!(replenish()["removed"], 3);
    converge(&[&agent]);
    let p = expect_json(app.get(&pool, platform.t()), 200);
    assert_eq!(
        (p["waiting"].as_i64(), p["ready"].as_i64()),
        (Some(0), Some(0)),
        "{p}"
    );
    // The user's device was never part of that.
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(d["desired_status"], "running");
}

#[test]
fn a_lost_nodes_fresh_devices_are_made_again_elsewhere_and_its_return_duplicates_nothing() {
    let app = TestApp::spawn_with(e2e::Options {
        disable_triggers: vec!["cron"],
        env: vec![
            ("SPIN_VARIABLE_NODE_HEARTBEAT_SECS".into(), "1".into()),
            ("SPIN_VARIABLE_FAILOVER_AFTER_SECS".into(), "2".into()),
        ],
        ..e2e::Options::default()
    });
    let platform = app.platform_admin();
    let (a, b) = (
        enroll(&app, &platform, "node-fa", json!({"priority": 10})),
        enroll(&app, &platform, "node-fb", json!({})),
    );
    bring_online(&app, &platform, &a);
    let (user, token) = app.signed_up_user();
    set_quota(&app, &platform, &user, 5);
    let create = |name: &str, policy: &str| {
        device_of(&expect_json(
            app.post(
                &format!("{D}/devices"),
                &json!({"name": name, "recover_policy": policy}),
                Some(&token),
            ),
            202,
        ))
    };
    assert_eq!(
        refused(app.post(
            &format!("{D}/devices"),
            &json!({"name": "x", "recover_policy": "later"}),
            Some(&token)
        ))
        .0,
        400
    );
    let (fresh, stay) = (create("fresh", "fresh"), create("stay", "none"));
    converge(&[&a]);
    bring_online(&app, &platform, &b);
    let on = |id: &str| expect_json(app.get(&format!("{D}/devices/{id}"), platform.t()), 200);
    assert_eq!(on(&fresh)["node_id"], "node-fa");
    // An operator cannot "recover" a device whose node is online.
    assert_eq!(
        refused(app.post(
            &format!("{D}/devices/{fresh}/recover"),
            &json!({}),
            platform.t()
        ))
        .0,
        409
    );

    // node-fa falls silent: unreachable after three missed heartbeats, then
    // past failover_after_secs its `fresh` device is made again on node-fb.
    let job = |path: &str| {
        let r = app.post_as("scheduler", &format!("{D}/internal/{path}"));
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()
    };
    app.eventually(std::time::Duration::from_secs(30), || {
        converge(&[&b]);
        job("nodes/liveness");
        let v = job("devices/failover");
        (v["recovered"] == 1).then_some(())
    })
    .expect("the failover job recovers the device");
    let d = on(&fresh);
    assert_eq!(
        (d["node_id"].as_str(), d["observed_status"].as_str()),
        (Some("node-fb"), Some("creating")),
        "{d}"
    );
    assert_eq!(
        on(&stay)["node_id"],
        "node-fa",
        "a device without the policy waits for its node"
    );
    converge(&[&b]);
    let d = on(&fresh);
    assert_eq!(d["observed_status"], "running", "{d}");
    let rec = expect_json(
        app.get(&format!("{D}/devices/{fresh}/recoveries"), platform.t()),
        200,
    );
    assert_eq!(
        (
            rec["items"][0]["from_node"].as_str(),
            rec["items"][0]["to_node"].as_str(),
            rec["items"][0]["reason"].as_str()
        ),
        (Some("node-fa"), Some("node-fb"), Some("node_lost")),
        "{rec}"
    );
    assert!(rec["items"][0]["lost"].as_str().unwrap().contains("data"));
    // Its owner sees the record, but not which nodes (as in the device itself).
    let theirs = expect_json(
        app.get(&format!("{D}/devices/{fresh}/recoveries"), Some(&token)),
        200,
    );
    assert_eq!(
        (
            theirs["items"][0]["from_node"].clone(),
            theirs["items"][0]["reason"].as_str()
        ),
        (Value::Null, Some("node_lost"))
    );
    assert!(events_of(&app, &fresh).contains(&"device.recovered".to_string()));
    // Nothing more is due: the next run recovers nothing.
    assert_eq!(job("devices/failover")["recovered"], 0);

    // node-fa comes back: its desired state no longer holds the moved
    // device, and what it still reports about it changes nothing.
    let back = a.desired_state();
    assert!(back.devices.iter().all(|x| x.device_id.as_str() != fresh));
    assert!(back.devices.iter().any(|x| x.device_id.as_str() == stay));
    let (_, answer) = a.report(vec![a.heartbeat(vec![
        e2e::agent::observed(&fresh, DeviceStatus::Ready, 1),
        e2e::agent::observed(&stay, DeviceStatus::Ready, 1),
    ])]);
    assert!(answer["applied"].as_i64().unwrap() >= 1, "{answer}");
    let d = on(&fresh);
    assert_eq!(
        (d["node_id"].as_str(), d["observed_status"].as_str()),
        (Some("node-fb"), Some("running"))
    );
    assert_eq!(
        app.count(
            "device",
            "SELECT count(*) FROM devices WHERE desired_status <> 'deleted'"
        ),
        2,
        "no device was duplicated"
    );
    // An operator recovers the other one by hand once its node is lost again.
    app.eventually(std::time::Duration::from_secs(30), || {
        converge(&[&b]);
        job("nodes/liveness");
        (on(&stay)["observed_status"] == "unknown").then_some(())
    })
    .expect("node-fa is lost again");
    assert_eq!(
        refused(app.post(
            &format!("{D}/devices/{stay}/recover"),
            &json!({}),
            Some(&token)
        ))
        .0,
        403
    );
    let op = expect_json(
        app.post(
            &format!("{D}/devices/{stay}/recover"),
            &json!({}),
            platform.t(),
        ),
        202,
    );
    assert_eq!(op["kind"], "recover");
    converge(&[&b]);
    assert_eq!(
        wait_op(&app, &platform.token, op["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    let rec = expect_json(
        app.get(&format!("{D}/devices/{stay}/recoveries"), Some(&token)),
        200,
    );
    assert_eq!(rec["items"][0]["reason"], "operator");
}

#[test]
fn snapshot_archives_come_only_from_their_node_and_go_only_to_the_node_the_device_is_recovered_on()
{
    let app = TestApp::spawn_with(e2e::Options {
        env: vec![
            ("SPIN_VARIABLE_NODE_HEARTBEAT_SECS".into(), "1".into()),
            ("SPIN_VARIABLE_FAILOVER_AFTER_SECS".into(), "2".into()),
        ],
        ..e2e::Options::default()
    });
    let platform = app.platform_admin();
    let (a, b) = (
        enroll(&app, &platform, "node-xa", json!({"priority": 10})),
        enroll(&app, &platform, "node-xb", json!({})),
    );
    bring_online(&app, &platform, &a);
    let (user, token) = app.signed_up_user();
    set_quota(&app, &platform, &user, 5);
    let mut conn = redis_connection(&app);
    let mut on_a = listen(&mut conn, &a);
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "kept", "recover_policy": "snapshot"}),
            Some(&token),
        ),
        202,
    );
    let id = device_of(&op);
    assert_eq!(next_command(&mut on_a, &a).body["op"], "create");
    let take = |name: &str| {
        let taken = expect_json(
            app.post(
                &format!("{D}/devices/{id}/snapshots"),
                &json!({"name": name}),
                Some(&token),
            ),
            202,
        );
        taken["snapshot"]["id"].as_str().unwrap().to_string()
    };
    let chunk = |agent: &ScriptedAgent, method: &str, snap: &str, seq: u32, body: Vec<u8>| {
        let path = agent_protocol::messages::snapshot_archive_path(agent.node.as_str(), snap, seq);
        let r = agent.request_typed(method, &path, body, "application/octet-stream");
        let status = r.status().as_u16();
        (status, r.bytes().unwrap().to_vec())
    };
    let chunks_of = |snap: &str| {
        app.count(
            "device",
            &format!("SELECT count(*) FROM snapshot_archive_chunks WHERE snapshot_id = '{snap}'"),
        )
    };
    let snapshot =
        |snap: &str| expect_json(app.get(&format!("{D}/snapshots/{snap}"), Some(&token)), 200);

    // The snapshot command of a device with the policy asks for an archive;
    // only its node may upload it, and only while it is taken.
    let (_, up) = a.report(vec![a.status(&id, DeviceStatus::Ready, 1)]);
    assert_eq!(up["applied"], 1, "{up}");
    let first = take("first");
    let cmd = next_command(&mut on_a, &a);
    assert_eq!(
        (cmd.body["op"].as_str(), cmd.body["archive"].as_bool()),
        (Some("snapshot"), Some(true)),
        "{:?}",
        cmd.body
    );
    assert_eq!(
        chunk(&b, "PUT", &first, 0, vec![9; 10]).0,
        404,
        "another node"
    );
    let (c0, c1) = (vec![1u8; 1000], vec![2u8; 500]);
    assert_eq!(chunk(&a, "PUT", &first, 0, vec![7; 1000]).0, 204);
    assert_eq!(
        chunk(&a, "PUT", &first, 0, c0.clone()).0,
        204,
        "the same chunk again replaces it"
    );
    assert_eq!(chunk(&a, "PUT", &first, 1, c1.clone()).0, 204);
    assert_eq!(chunk(&a, "GET", &first, 0, vec![]).0, 404, "not kept yet");
    let whole = [c0.clone(), c1].concat();
    let sha = agent_protocol::messages::sha256_hex(&whole);
    answer(
        &a,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": first, "image": "localhost/s:1", "image_id": "sha256:1",
               "data_bytes": 1500, "archive": {"bytes": 1500, "sha256": sha, "chunks": 2}}),
    );
    let s = snapshot(&first);
    assert_eq!(
        (
            s["status"].as_str(),
            s["archive_bytes"].as_i64(),
            s["archive_error"].as_str()
        ),
        (Some("ready"), Some(1500), None),
        "{s}"
    );
    assert!(s["archived_at"].is_string(), "{s}");
    assert_eq!(
        chunk(&a, "PUT", &first, 2, vec![3; 10]).0,
        404,
        "taken: closed"
    );
    // Served to the node the device is on, and to no other.
    assert_eq!(chunk(&a, "GET", &first, 0, vec![]), (200, c0.clone()));
    assert_eq!(chunk(&b, "GET", &first, 0, vec![]).0, 404);
    assert_eq!(chunk(&a, "GET", &first, 2, vec![]).0, 404);

    // An archive whose chunks do not add up to what the result names is
    // dropped, and so is one whose upload failed; the snapshots stand.
    let second = take("second");
    let cmd = next_command(&mut on_a, &a);
    assert_eq!(chunk(&a, "PUT", &second, 0, vec![5; 10]).0, 204);
    answer(
        &a,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": second, "image": "localhost/s:2", "data_bytes": 10,
               "archive": {"bytes": 1500, "sha256": sha, "chunks": 2}}),
    );
    let s = snapshot(&second);
    assert_eq!(s["status"], "ready", "{s}");
    assert!(s["archived_at"].is_null(), "{s}");
    assert!(
        s["archive_error"]
            .as_str()
            .unwrap_or_default()
            .contains("chunks"),
        "{s}"
    );
    assert_eq!(chunks_of(&second), 0);
    let third = take("third");
    let cmd = next_command(&mut on_a, &a);
    answer(
        &a,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"device_id": id, "snapshot_id": third, "image": "localhost/s:3", "data_bytes": 10,
               "archive_error": "download failed: connection refused"}),
    );
    let s = snapshot(&third);
    assert_eq!(
        (s["status"].as_str(), s["archive_error"].as_str()),
        (
            Some("ready"),
            Some("archive: download failed: connection refused")
        ),
        "{s}"
    );

    // node-xa falls silent: the device is made on node-xb from its newest
    // archived snapshot (the first), whose chunks node-xb may now read.
    bring_online(&app, &platform, &b);
    let mut conn_b = redis_connection(&app);
    let mut on_b = listen(&mut conn_b, &b);
    let job = |path: &str| {
        let r = app.post_as("scheduler", &format!("{D}/internal/{path}"));
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()
    };
    app.eventually(std::time::Duration::from_secs(30), || {
        let (status, _) = b.report(vec![b.heartbeat(vec![])]);
        assert_eq!(status, 200);
        job("nodes/liveness");
        (job("devices/failover")["recovered"] == 1).then_some(())
    })
    .expect("the failover job recovers the device");
    let cmd = next_command(&mut on_b, &b);
    assert_eq!(cmd.body["op"], "create", "{:?}", cmd.body);
    assert_eq!(
        cmd.body["import"],
        json!({"snapshot_id": first, "bytes": 1500, "sha256": sha, "chunks": 2})
    );
    assert_eq!(chunk(&b, "GET", &first, 0, vec![]), (200, c0));
    assert_eq!(
        chunk(&a, "GET", &first, 0, vec![]).0,
        404,
        "the old node no longer"
    );
    let rec = expect_json(
        app.get(&format!("{D}/devices/{id}/recoveries"), Some(&token)),
        200,
    );
    assert_eq!(rec["recover_policy"], "snapshot", "{rec}");
    assert_eq!(rec["items"][0]["snapshot_id"], first.as_str(), "{rec}");
    assert!(
        rec["items"][0]["lost"].as_str().unwrap().contains(&first),
        "{rec}"
    );

    // The import fails on node-xb (say the archive did not check out): the
    // record says so.
    answer(
        &b,
        cmd.body["operation_id"].as_str().unwrap(),
        false,
        json!({}),
    );
    let rec = expect_json(
        app.get(&format!("{D}/devices/{id}/recoveries"), Some(&token)),
        200,
    );
    assert!(
        rec["items"][0]["lost"]
            .as_str()
            .unwrap()
            .contains("the recover operation failed: device_command_failed: it failed"),
        "{rec}"
    );

    // Deleting the snapshot (on the node that keeps it) deletes its archive.
    assert_eq!(chunks_of(&first), 2);
    let gone = expect_json(
        app.delete(&format!("{D}/snapshots/{first}"), Some(&token)),
        202,
    );
    let cmd = next_command(&mut on_a, &a);
    assert_eq!(cmd.body["op"], "delete_snapshot");
    answer(
        &a,
        cmd.body["operation_id"].as_str().unwrap(),
        true,
        json!({"status": "deleted"}),
    );
    assert_eq!(
        wait_op(&app, &token, gone["operation"]["id"].as_str().unwrap())["status"],
        "succeeded"
    );
    assert_eq!(chunks_of(&first), 0);
}
