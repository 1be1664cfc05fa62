//! What an agent needs from Redis in protocol version 2, tested against
//! private `redis-server` processes: the ACL lines of
//! `docs/agent-protocol.md` (read from the document itself, so the document
//! cannot drift from what is tested) and a TLS-only server with a private CA.
//! Like the other agent tests, these need `DOCKER_HOST` and fail, never skip,
//! without it or without `redis-server`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use runtime_agent::protocol::{commands_channel, Operation};
use runtime_agent::spec::{DeviceId, NodeId};
use runtime_agent::testkit::{free_port, RedisServer, TestEnv};

const T: Duration = Duration::from_secs(30);
const NODE_PASSWORD: &str = "node-password-for-the-acl-test";
const CONTROL_PLANE_PASSWORD: &str = "control-plane-password-for-the-acl-test";

/// The ACL lines of the "Redis access per node" section of the protocol
/// document, for `node` instead of the example node `host-17`.
fn documented_acl(node: &NodeId) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/agent-protocol.md"
    ))
    .expect("docs/agent-protocol.md");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Redis access per node"))
        .expect("the protocol document has a section \"Redis access per node\"");
    let lines: Vec<&str> = section.lines().filter(|l| l.starts_with("user ")).collect();
    assert!(
        lines.len() >= 3,
        "the section lists the ACL lines: {lines:?}"
    );
    let mut acl = lines.join("\n");
    acl.push('\n');
    acl.replace("host-17", node.as_str())
        .replace("NODE_PASSWORD", NODE_PASSWORD)
        .replace("CONTROL_PLANE_PASSWORD", CONTROL_PLANE_PASSWORD)
}

/// A command that needs no device: it runs, fails with `not_found`, and its
/// result proves that the agent received it.
fn probe() -> Operation {
    Operation::Screenshot {
        device_id: DeviceId::parse("no-such-device").unwrap(),
    }
}

async fn query(client: &redis::Client, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

fn assert_noperm(what: &str, r: redis::RedisResult<impl std::fmt::Debug>) {
    match r {
        Err(e) => assert!(e.to_string().contains("NOPERM"), "{what}: {e}"),
        Ok(v) => panic!("{what} was allowed: {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_documented_acl_gets_its_commands_and_can_do_nothing_else() {
    let port = free_port();
    let cp_url =
        format!("redis://cloudphone-control-plane:{CONTROL_PLANE_PASSWORD}@127.0.0.1:{port}/");
    // The test publishes commands as the control plane, with its ACL user.
    let env = TestEnv::with_redis("acl", 1, &cp_url).await;
    let acl_file = env.data_root.join("users.acl");
    std::fs::write(&acl_file, documented_acl(&env.node)).unwrap();
    let _redis =
        RedisServer::start(port, &["--aclfile".into(), acl_file.display().to_string()]).await;
    let node_url = format!(
        "redis://node-{}:{NODE_PASSWORD}@127.0.0.1:{port}/",
        env.node
    );
    env.cp.set_desired(&env.node, vec![]);
    let mut cfg = env.config();
    cfg.redis_url = node_url.clone();
    let agent = env.start_agent_with(cfg).await;

    // The agent, with nothing but the node's user, receives its commands.
    let r = env.call("op-acl", probe()).await;
    assert_eq!(r.error_code.as_deref(), Some("not_found"), "{r:?}");

    // The node's credentials allow nothing else.
    let node = redis::Client::open(node_url.as_str()).unwrap();
    let other = commands_channel(&NodeId::parse("another-node").unwrap());
    let own = commands_channel(&env.node);
    // Subscriptions are tried on ordinary connections: the redis crate's
    // pub/sub connection takes a refused SUBSCRIBE for a success.
    assert_noperm(
        "subscribing to another node's channel",
        query(&node, redis::cmd("SUBSCRIBE").arg(&other)).await,
    );
    assert_noperm(
        "subscribing to every node's channel by pattern",
        query(
            &node,
            redis::cmd("PSUBSCRIBE").arg("cloudphone.agent.node.*.commands"),
        )
        .await,
    );
    query(&node, redis::cmd("SUBSCRIBE").arg(&own))
        .await
        .expect("the node may subscribe to its own channel");
    let pong: String = redis::cmd("PING")
        .query_async(&mut node.get_multiplexed_async_connection().await.unwrap())
        .await
        .expect("the node may ping");
    assert_eq!(pong, "PONG");
    let denied: [(&str, redis::Cmd); 9] = [
        (
            "publishing on its own channel",
            redis::cmd("PUBLISH").arg(&own).arg("x").clone(),
        ),
        (
            "publishing on another node's channel",
            redis::cmd("PUBLISH").arg(&other).arg("x").clone(),
        ),
        ("reading a key", redis::cmd("GET").arg("k").clone()),
        ("writing a key", redis::cmd("SET").arg("k").arg("v").clone()),
        ("listing keys", redis::cmd("KEYS").arg("*").clone()),
        (
            "listing channels",
            redis::cmd("PUBSUB").arg("CHANNELS").clone(),
        ),
        (
            "reading the configuration",
            redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        ),
        ("listing clients", redis::cmd("CLIENT").arg("LIST").clone()),
        ("flushing", redis::cmd("FLUSHALL").clone()),
    ];
    for (what, cmd) in &denied {
        assert_noperm(what, query(&node, cmd).await);
    }

    // The control plane's user may publish to any node's commands, nothing else.
    let cp = redis::Client::open(cp_url.as_str()).unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&other)
        .arg("x")
        .query_async(&mut cp.get_multiplexed_async_connection().await.unwrap())
        .await
        .expect("the control plane may publish to any node's channel");
    assert_eq!(receivers, 0);
    assert_noperm(
        "the control plane publishing elsewhere",
        query(
            &cp,
            redis::cmd("PUBLISH")
                .arg("cloudphone.agent.results")
                .arg("x"),
        )
        .await,
    );
    assert_noperm(
        "the control plane reading a key",
        query(&cp, redis::cmd("GET").arg("k")).await,
    );
    assert_noperm(
        "the control plane subscribing",
        query(&cp, redis::cmd("SUBSCRIBE").arg(&own)).await,
    );

    // Without a user nothing works: the default user is off.
    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let r = query(&anonymous, &redis::cmd("PING")).await;
    assert!(r.is_err(), "an anonymous connection answered: {r:?}");
    agent.shutdown().await;

    // An agent given a user that may not subscribe to its channel says so
    // and never counts itself subscribed (the redis crate alone would take
    // the refusal for a subscription).
    let mut cfg = env.config();
    cfg.redis_url = cp_url.clone();
    let engine: std::sync::Arc<dyn runtime_agent::engine::Engine> = env.engine.clone();
    let agent = runtime_agent::start(cfg, engine).await.unwrap();
    let metrics = agent.shared.metrics.clone();
    env.wait_until("two subscriptions were refused", T, || async {
        metrics.command_subscription_failures.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(metrics.command_subscriptions.load(Ordering::SeqCst), 0);
    agent.shutdown().await;
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM: (CA, certificate, key).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "cloudphone test redis ca");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut server =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    server
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = server.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_its_commands_from_a_tls_only_redis_signed_by_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), &ca).unwrap();
    std::fs::write(path("redis.pem"), &cert).unwrap();
    std::fs::write(path("redis.key"), &key).unwrap();
    let port = free_port();
    let arg = |name: &str| path(name).display().to_string();
    // TLS only: the plain port is off.
    let _redis = RedisServer::start(
        port,
        &[
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            arg("redis.pem"),
            "--tls-key-file".into(),
            arg("redis.key"),
            "--tls-ca-cert-file".into(),
            arg("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    )
    .await;
    let url = format!("rediss://127.0.0.1:{port}/");
    let trusting = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.into_bytes()),
        },
    )
    .unwrap();
    let env = TestEnv::with_redis_client("tls", 1, &url, trusting).await;
    env.cp.set_desired(&env.node, vec![]);
    let mut cfg = env.config();
    cfg.redis_ca_file = Some(path("ca.pem"));
    let agent = env.start_agent_with(cfg).await;
    let r = env.call("op-tls", probe()).await;
    assert_eq!(r.error_code.as_deref(), Some("not_found"), "{r:?}");

    // The server's certificate is checked: the system's roots do not trust
    // the private CA, and a plain connection gets no answer.
    let untrusting = redis::Client::open(url.as_str()).unwrap();
    let r = tokio::time::timeout(T, query(&untrusting, &redis::cmd("PING"))).await;
    assert!(
        matches!(r, Ok(Err(_))),
        "a server signed by an unknown CA was accepted: {r:?}"
    );
    let plain = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), query(&plain, &redis::cmd("PING"))).await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "a plain connection was answered: {r:?}"
    );
    agent.shutdown().await;
}
