//! Helpers the device tests share: enrol a node and bring its scripted
//! agent online, set a user's quota, wait for an operation, and read the
//! signed commands on a node's channel.

use crate::agent::ScriptedAgent;
use crate::{expect_json, Session, TestApp};
use agent_protocol::messages::Envelope;
use serde_json::{json, Value};
use std::time::Duration;

/// The device component's routes.
pub const D: &str = "/api/v1/device";

/// Enrolls a node as `admin`; returns its scripted agent.
pub fn enroll(app: &TestApp, admin: &Session, id: &str, extra: Value) -> ScriptedAgent {
    let mut body = json!({"id": id, "zone": "sh-1", "region": "cn"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let node = expect_json(app.post(&format!("{D}/nodes"), &body, admin.t()), 201);
    assert_eq!(node["status"], "pending");
    let secret = node["secret"]
        .as_str()
        .expect("the secret, once")
        .to_string();
    ScriptedAgent::new(&app.base, id, &secret)
}

/// Registers and heartbeats a node until it is online.
pub fn bring_online(app: &TestApp, admin: &Session, agent: &ScriptedAgent) {
    assert_eq!(agent.register(), 204);
    let (status, answer) = agent.report(vec![agent.heartbeat(vec![])]);
    assert_eq!(
        (status, answer["applied"].as_i64()),
        (200, Some(1)),
        "{answer}"
    );
    let node = expect_json(
        app.get(&format!("{D}/nodes/{}", agent.node), admin.t()),
        200,
    );
    assert_eq!(node["status"], "online");
}

/// A node `node` online and a phone `name` of the user of `token` running
/// on it (created, reported ready, its operation succeeded): the node's
/// agent and the device's id.
pub fn running_device(
    app: &TestApp,
    admin: &Session,
    token: &str,
    node: &str,
    name: &str,
) -> (ScriptedAgent, String) {
    let agent = enroll(app, admin, node, json!({}));
    bring_online(app, admin, &agent);
    let op = expect_json(
        app.post(&format!("{D}/devices"), &json!({"name": name}), Some(token)),
        202,
    );
    let id = device_of(&op);
    agent.report(vec![agent.status(
        &id,
        agent_protocol::messages::DeviceStatus::Ready,
        1,
    )]);
    assert_eq!(
        wait_op(app, token, op["id"].as_str().expect("op id"))["status"],
        "succeeded"
    );
    (agent, id)
}

/// Sets a user's quota to `devices` devices (and room for their resources).
pub fn set_quota(app: &TestApp, admin: &Session, user: &str, devices: i32) {
    expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{user}"),
            &json!({"max_devices": devices, "max_concurrent_devices": devices, "max_cpu_cores": 1000,
                    "max_memory_mb": 1_000_000, "max_storage_gb": 100_000}),
            admin.t(),
        ),
        200,
    );
}

/// Waits (up to 20 s) for an operation to finish; returns it.
pub fn wait_op(app: &TestApp, token: &str, op: &str) -> Value {
    let v = expect_json(
        app.get(&format!("{D}/operations/{op}?wait=20"), Some(token)),
        200,
    );
    assert_ne!(v["status"], "running", "operation still running: {v}");
    v
}

/// The device id of an operation.
pub fn device_of(op: &Value) -> String {
    op["device_id"].as_str().expect("device id").to_string()
}

/// A connection to the app's Redis, for [`listen`].
pub fn redis_connection(app: &TestApp) -> redis::Connection {
    redis::Client::open(app.redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection")
}

/// The node's command channel, subscribed on `conn` (reads wait 10 s).
pub fn listen<'a>(conn: &'a mut redis::Connection, agent: &ScriptedAgent) -> redis::PubSub<'a> {
    let mut pubsub = conn.as_pubsub();
    pubsub
        .subscribe(agent_protocol::messages::commands_channel(&agent.node))
        .unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    pubsub
}

/// The next command on the channel, checked to be signed with the node's secret.
pub fn next_command(pubsub: &mut redis::PubSub, agent: &ScriptedAgent) -> Envelope {
    let msg = pubsub.get_message().expect("a command");
    Envelope::open(
        msg.get_payload_bytes(),
        &agent.secret,
        &agent.node,
        chrono::Utc::now(),
        chrono::Duration::seconds(300),
    )
    .expect("signed by the node's secret")
}

/// `POST /devices` with each body at once, from one thread each (a client
/// that retries an overloaded app's 502/503 with the same idempotency key,
/// `<key>-<i>`); each answer's status and error code.
pub fn concurrent_creates(
    app: &TestApp,
    token: &str,
    bodies: Vec<Value>,
    key: &str,
) -> Vec<(u16, String)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                s.spawn(move || {
                    let r = crate::retrying(|| {
                        app.post_idempotent(
                            &format!("{D}/devices"),
                            &body,
                            Some(token),
                            &format!("{key}-{i}"),
                        )
                    });
                    let status = r.status().as_u16();
                    let v: Value = r.json().unwrap_or(Value::Null);
                    (
                        status,
                        v["error"]["code"].as_str().unwrap_or("").to_string(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// How many answers made a device (202, or 200 for a retry answered with
/// the operation its lost first try made) and how many were refused with `code`.
pub fn made_and_refused(outcomes: &[(u16, String)], code: &str) -> (usize, usize) {
    let made = outcomes
        .iter()
        .filter(|(s, _)| matches!(*s, 200 | 202))
        .count();
    let refused = outcomes
        .iter()
        .filter(|(s, c)| *s == 409 && c == code)
        .count();
    (made, refused)
}
