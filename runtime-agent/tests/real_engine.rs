//! Agent tests against a real container engine (Podman's or Docker's API at
//! `DOCKER_HOST`), real Redis for commands and the control-plane double for
//! everything the agent reports. They fail, never skip, when either is missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use runtime_agent::protocol::{Operation, RunState};
use runtime_agent::spec::{DeviceId, LABEL_ADB_PORT};
use runtime_agent::testkit::{free_port, RedisServer, TestEnv};
use runtime_agent::AgentHandle;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_device_is_created_and_becomes_ready_with_the_redroid_spec() {
    let env = TestEnv::new("create-ready", 4).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    env.wait_until("d1 is ready", T, || async {
        env.last_status("d1").as_deref() == Some("ready")
    })
    .await;

    let c = env
        .engine
        .client()
        .inspect_container(&env.container("d1"), None::<InspectContainerOptions>)
        .await
        .unwrap();
    let cmd = c.config.as_ref().unwrap().cmd.clone().unwrap();
    assert!(
        cmd.contains(&"androidboot.redroid_width=720".to_string()),
        "{cmd:?}"
    );
    assert!(
        cmd.contains(&"androidboot.redroid_gpu_mode=auto".to_string()),
        "{cmd:?}"
    );
    let envs = c.config.as_ref().unwrap().env.clone().unwrap_or_default();
    assert!(
        !envs.iter().any(|e| e.contains("redroid")),
        "display settings must not be env vars: {envs:?}"
    );
    let host = c.host_config.unwrap();
    assert_eq!(host.privileged, Some(true));
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    assert_eq!(host.pids_limit, Some(256));
    let port: u16 = c.config.unwrap().labels.unwrap()[LABEL_ADB_PORT]
        .parse()
        .unwrap();
    assert!((env.ports.start..=env.ports.end).contains(&port));
    // ADB's port answers on the private address.
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("adb port is published");
    // The boot arguments reached the init, as redroid reads them.
    let r = env
        .call(
            "op-getprop",
            Operation::Shell {
                device_id: DeviceId::parse("d1").unwrap(),
                command: "getprop androidboot.redroid_dpi".into(),
                timeout_ms: None,
                max_output_bytes: None,
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.output["stdout"].as_str().unwrap().trim(), "320");
    assert!(
        !env.cp.state.registrations.lock().unwrap().is_empty(),
        "the agent registered"
    );
    agent.shutdown().await;
    // Shutdown leaves containers running.
    assert!(env.containers().await.iter().all(|c| c.running));
}

fn dev(id: &str) -> DeviceId {
    DeviceId::parse(id).unwrap()
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Waits until `n` more reconcile passes than now have finished. One pass may
/// already be under way, having observed the state before the caller's
/// change, so callers that need a pass which saw their change ask for two.
async fn wait_for_passes(env: &TestEnv, agent: &AgentHandle, n: u64) {
    let metrics = &agent.shared.metrics;
    let target = count(&metrics.reconcile_passes) + n;
    env.wait_until(
        &format!("{n} more reconcile passes finished"),
        T,
        || async { count(&metrics.reconcile_passes) >= target },
    )
    .await;
}

/// Waits until the agent has merged a desired state that it requested after
/// this call (two more pulls, as one may be in flight) and has then run a
/// full reconcile pass over it: everything the pulled state could make the
/// agent do has been done.
async fn wait_for_pull_and_reconcile(env: &TestEnv, agent: &AgentHandle) {
    let metrics = &agent.shared.metrics;
    let target = count(&metrics.desired_state_pulls) + 2;
    env.wait_until("two more desired-state pulls were merged", T, || async {
        count(&metrics.desired_state_pulls) >= target
    })
    .await;
    wait_for_passes(env, agent, 2).await;
}

async fn wait_status(env: &TestEnv, id: &str, status: &str) {
    env.wait_until(&format!("{id} is {status}"), T, || async {
        env.last_status(id).as_deref() == Some(status)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_commands_win_over_an_older_desired_state() {
    let env = TestEnv::new("stop-start", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;

    let r = env
        .call(
            "op-stop",
            Operation::Stop {
                device_id: dev("d1"),
                generation: 2,
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert!(!env.containers().await[0].running);
    // The control plane still serves generation 1 (running); the newer command
    // wins. Only a pull requested after the command, and a pass over it, could
    // restart the device, so both must have happened before the check.
    wait_for_pull_and_reconcile(&env, &agent).await;
    assert!(
        !env.containers().await[0].running,
        "an older pulled state must not restart the device"
    );
    wait_status(&env, "d1", "stopped").await;

    let id_before = env.containers().await[0].id.clone();
    let r = env
        .call(
            "op-start",
            Operation::Start {
                device_id: dev("d1"),
                generation: 3,
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.output["status"], "ready");
    let after = env.containers().await;
    assert_eq!(after.len(), 1);
    assert!(after[0].running);
    assert_eq!(after[0].id, id_before, "start reuses the container");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_create_adopts_the_container_on_restart_and_duplicates_nothing() {
    let env = TestEnv::new("restart-mid-op", 2).await;
    // The control plane records the device, then sends the command.
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    env.send(
        "op-create",
        Operation::Create {
            device: env.device("d1", RunState::Running),
            import: None,
        },
    )
    .await;
    // Kill the agent once the container exists but before the device booted.
    env.wait_until("the container exists", T, || async {
        !env.containers().await.is_empty()
    })
    .await;
    agent.crash();
    let first = env.containers().await;
    assert_eq!(first.len(), 1);

    let agent = env.start_agent().await;
    // Redelivery of the same operation after the restart.
    env.send(
        "op-create",
        Operation::Create {
            device: env.device("d1", RunState::Running),
            import: None,
        },
    )
    .await;
    let r = env.result("op-create", 1, T).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.output["status"], "ready");
    let now = env.containers().await;
    assert_eq!(now.len(), 1, "nothing duplicated");
    assert_eq!(
        now[0].id, first[0].id,
        "the container was adopted, not recreated"
    );
    assert!(agent
        .shared
        .metrics
        .render()
        .contains("cloudphone_agent_containers_adopted_total 1"));

    // A third delivery is answered from the ledger with the same result and no action.
    env.send(
        "op-create",
        Operation::Create {
            device: env.device("d1", RunState::Running),
            import: None,
        },
    )
    .await;
    let again = env.result("op-create", 2, T).await;
    assert_eq!(again, r);
    assert!(agent
        .shared
        .metrics
        .render()
        .contains("cloudphone_agent_commands_deduplicated_total 1"));
    assert_eq!(env.containers().await[0].id, first[0].id);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_or_removed_behind_the_agents_back_comes_back() {
    let env = TestEnv::new("killed", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;
    let port = env.containers().await[0].labels[LABEL_ADB_PORT].clone();

    env.engine
        .client()
        .kill_container(
            &env.container("d1"),
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    env.wait_until("the killed container runs again", T, || async {
        env.containers().await.first().is_some_and(|c| c.running)
    })
    .await;

    use runtime_agent::engine::Engine;
    env.engine.remove(&env.container("d1")).await.unwrap();
    env.wait_until(
        "the removed container is recreated and running",
        T,
        || async { env.containers().await.first().is_some_and(|c| c.running) },
    )
    .await;
    wait_status(&env, "d1", "ready").await;
    let c = &env.containers().await[0];
    assert_eq!(c.labels[LABEL_ADB_PORT], port, "the device keeps its port");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_from_desired_state_is_removed_with_its_data_after_the_grace_period() {
    let env = TestEnv::new("removed", 2).await;
    env.cp.set_desired(
        &env.node,
        vec![
            env.device("d1", RunState::Running),
            env.device("d2", RunState::Running),
        ],
    );
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;
    wait_status(&env, "d2", "ready").await;
    assert!(env.data_dir("d1").exists());

    env.cp
        .set_desired(&env.node, vec![env.device("d2", RunState::Running)]);
    wait_status(&env, "d1", "removed").await;
    let left = env.containers().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, env.container("d2"));
    assert!(
        !env.data_dir("d1").exists(),
        "the data directory goes with the device"
    );
    assert!(env.data_dir("d2").exists());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_restore_brings_back_data_directory_files() {
    let env = TestEnv::new("snapshot", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    // The command names the file; the agent fetches it from the control plane.
    env.cp.serve_content("op-push", b"before snapshot".to_vec());
    let r = env
        .call(
            "op-push",
            Operation::PushFile {
                device_id: dev("d1"),
                path: runtime_agent::spec::DevicePath::parse("/data/user/hello.txt").unwrap(),
                bytes: 15,
                sha256: runtime_agent::protocol::sha256_hex(b"before snapshot"),
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        std::fs::read(env.data_dir("d1").join("user/hello.txt")).unwrap(),
        b"before snapshot"
    );

    let snap = runtime_agent::spec::SnapshotId::parse("s1").unwrap();
    let r = env
        .call(
            "op-snap",
            Operation::Snapshot {
                device_id: dev("d1"),
                snapshot_id: snap.clone(),
                archive: false,
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    // The running phone was frozen for the copy, which holds the pushed file,
    // and thawed afterwards: a command runs in it at once.
    assert_eq!(r.output["paused"], true, "{r:?}");
    assert!(r.output["data_bytes"].as_u64().unwrap() >= 15, "{r:?}");
    let r = env
        .call(
            "op-after-snap",
            Operation::Shell {
                device_id: dev("d1"),
                command: "echo thawed".into(),
                timeout_ms: Some(5000),
                max_output_bytes: None,
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.output["stdout"].as_str().unwrap().trim(), "thawed");

    std::fs::remove_file(env.data_dir("d1").join("user/hello.txt")).unwrap();
    std::fs::write(env.data_dir("d1").join("after.txt"), b"x").unwrap();

    let r = env
        .call(
            "op-restore",
            Operation::Restore {
                device_id: dev("d1"),
                snapshot_id: snap,
                source_device_id: None,
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        std::fs::read(env.data_dir("d1").join("user/hello.txt")).unwrap(),
        b"before snapshot"
    );
    assert!(!env.data_dir("d1").join("after.txt").exists());
    let c = &env.containers().await[0];
    assert!(
        c.image.contains("snapshot-d1"),
        "runs the snapshot image: {}",
        c.image
    );

    let r = env
        .call(
            "op-pull",
            Operation::PullFile {
                device_id: dev("d1"),
                path: runtime_agent::spec::DevicePath::parse("/data/user/hello.txt").unwrap(),
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        b64.decode(r.output["content_base64"].as_str().unwrap())
            .unwrap(),
        b"before snapshot"
    );
    // The restored container is not replaced by the reconcile loop: two full
    // passes after the restore leave it in place.
    wait_for_passes(&env, &agent, 2).await;
    assert_eq!(env.containers().await[0].id, c.id);
    agent.shutdown().await;

    // Snapshots are deleted explicitly; the image of a running container stays
    // in use, so delete after the device is gone.
    let agent = env.start_agent().await;
    env.cp.set_desired(&env.node, vec![]);
    wait_status(&env, "d1", "removed").await;
    let r = env
        .call(
            "op-del-snap",
            Operation::DeleteSnapshot {
                device_id: dev("d1"),
                snapshot_id: runtime_agent::spec::SnapshotId::parse("s1").unwrap(),
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    use runtime_agent::engine::Engine;
    assert!(!env.engine.image_exists(&c.image).await.unwrap());
    assert!(!env.data_root.join("snapshots/d1/s1").exists());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apk_with_a_bad_checksum_is_refused_and_a_good_one_installed() {
    let env = TestEnv::new("apk", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;
    let apk = b"PK\x03\x04 not really an apk".to_vec();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&apk));
    let url = env.cp.serve_file("app.apk", apk);

    let wrong = "0".repeat(64);
    let r = env
        .call(
            "op-apk-bad",
            Operation::InstallApk {
                device_id: dev("d1"),
                url: url.clone(),
                sha256: wrong,
            },
        )
        .await;
    assert!(!r.ok);
    assert_eq!(r.error_code.as_deref(), Some("checksum_mismatch"), "{r:?}");
    assert!(r.error.unwrap().contains(&sha));
    assert!(
        !env.data_dir("d1").join("installed-apks").exists(),
        "nothing reached the device"
    );

    let r = env
        .call(
            "op-apk-good",
            Operation::InstallApk {
                device_id: dev("d1"),
                url,
                sha256: sha,
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    let installed = std::fs::read_to_string(env.data_dir("d1").join("installed-apks")).unwrap();
    assert!(installed.contains("/data/cloudphone-apk/"), "{installed}");
    let left = |dir: std::path::PathBuf| std::fs::read_dir(dir).unwrap().count();
    assert_eq!(
        left(env.data_dir("d1").join("cloudphone-apk")),
        0,
        "the APK is removed once installed"
    );
    assert_eq!(
        left(env.data_root.join("downloads")),
        0,
        "no download is left behind"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_port_range_gives_a_clear_error() {
    let env = TestEnv::new("ports", 1).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;
    let r = env
        .call(
            "op-d2",
            Operation::Create {
                device: env.device("d2", RunState::Running),
                import: None,
            },
        )
        .await;
    assert!(!r.ok);
    assert_eq!(
        r.error_code.as_deref(),
        Some("port_range_exhausted"),
        "{r:?}"
    );
    let p = env.ports.start;
    assert_eq!(
        r.error.as_deref(),
        Some(format!("no free adb port in range {p}-{p} (1 in use)").as_str())
    );
    assert_eq!(env.containers().await.len(), 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_unsigned_commands_are_rejected() {
    let env = TestEnv::new("forged", 2).await;
    env.cp.set_desired(&env.node, vec![]);
    let agent = env.start_agent().await;
    let body = serde_json::json!({"operation_id": "op-evil", "op": "create", "device": env.device("evil", RunState::Running)});
    // Unsigned.
    let unsigned = serde_json::json!({
        "id": "m1", "node_id": env.node.as_str(),
        "protocol_version": runtime_agent::protocol::PROTOCOL_VERSION,
        "sent_at": chrono::Utc::now().to_rfc3339(), "kind": "command", "body": body,
    });
    env.publish_raw(&unsigned.to_string()).await;
    // Signed with another secret.
    let other = runtime_agent::protocol::NodeSecret::new(b"not-the-node-secret".to_vec()).unwrap();
    let forged = runtime_agent::protocol::Envelope::signed(
        &other,
        &env.node,
        "command",
        body,
        chrono::Utc::now(),
    );
    env.publish_raw(&serde_json::to_string(&forged).unwrap())
        .await;
    env.wait_until("both messages are rejected", T, || async {
        agent
            .shared
            .metrics
            .render()
            .contains("cloudphone_agent_messages_rejected_total 2")
    })
    .await;
    // A message is counted as rejected on the path that drops it, before
    // anything could be run or recorded, so both are fully handled now.
    assert_eq!(count(&agent.shared.metrics.commands), 0, "no command ran");
    assert!(agent.shared.desired_snapshot().0.is_empty());
    // Two passes after the rejections would have created anything desired.
    wait_for_passes(&env, &agent, 2).await;
    assert!(
        env.containers().await.is_empty(),
        "a forged command created nothing"
    );
    assert!(!env.data_dir("evil").exists());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_delete_by_command_repeat_cleanly() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("runtime_agent=debug")
        .with_test_writer()
        .try_init();
    let env = TestEnv::new("create-delete", 2).await;
    env.cp.set_desired(&env.node, vec![]);
    let agent = env.start_agent().await;
    for i in 0..3 {
        let id = format!("cd{i}");
        // As the protocol requires, the control plane records the device first.
        env.cp
            .set_desired(&env.node, vec![env.device(&id, RunState::Running)]);
        let r = env
            .call(
                &format!("op-create-{i}"),
                Operation::Create {
                    device: env.device(&id, RunState::Running),
                    import: None,
                },
            )
            .await;
        assert!(r.ok, "{r:?}");
        let r = env
            .call(
                &format!("op-delete-{i}"),
                Operation::Delete {
                    device_id: dev(&id),
                    generation: 2,
                },
            )
            .await;
        assert!(r.ok, "{r:?}");
        assert!(env.containers().await.is_empty());
    }
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_state_signed_with_another_key_is_ignored() {
    let env = TestEnv::new("forged-cp", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    *env.cp.state.response_secret.lock().unwrap() = Some(
        runtime_agent::protocol::NodeSecret::new(b"an-impostor-control-plane".to_vec()).unwrap(),
    );
    let agent = env.start_agent().await;
    env.wait_until("two pulls were refused", T, || async {
        count(&agent.shared.metrics.desired_state_failures) >= 2
    })
    .await;
    assert_eq!(count(&agent.shared.metrics.desired_state_pulls), 0);
    assert!(
        env.containers().await.is_empty(),
        "a forged desired state drives nothing"
    );
    // The real control plane again: the device appears.
    *env.cp.state.response_secret.lock().unwrap() = None;
    wait_status(&env, "d1", "ready").await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_carry_the_full_inventory_and_metrics_are_served() {
    let env = TestEnv::new("heartbeat", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let mut cfg = env.config();
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let agent = env.start_agent_with(cfg).await;
    wait_status(&env, "d1", "ready").await;
    env.wait_until("a heartbeat lists d1 as ready", T, || async {
        env.messages().iter().any(|m| {
            m.kind == "heartbeat"
                && m.body["devices"].as_array().is_some_and(|d| {
                    d.iter()
                        .any(|d| d["device_id"] == "d1" && d["status"] == "ready")
                })
                && m.body["node"]["capacity"]["cpus"].as_u64().unwrap_or(0) >= 1
        })
    })
    .await;
    assert!(
        !env.cp.state.registrations.lock().unwrap().is_empty(),
        "the agent registered over HTTP"
    );
    assert_eq!(
        env.cp.state.rejected_messages.load(Ordering::SeqCst),
        0,
        "every reported message verified"
    );
    let url = format!("http://{}/metrics", agent.metrics_addr.unwrap());
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("cloudphone_agent_devices{status=\"ready\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cloudphone_agent_reconcile_passes_total"),
        "{text}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_survives_a_restart_of_redis_and_reports_while_it_is_down() {
    let port = free_port();
    let mut redis = RedisServer::start(port, &[]).await;
    let url = format!("redis://127.0.0.1:{port}/");
    let env = TestEnv::with_redis("redis-restart", 2, &url).await;
    env.cp.set_desired(&env.node, vec![]);
    let agent = env.start_agent().await;

    // Redis comes back only after the agent has seen it go, so the test covers
    // a real resubscription rather than a connection that never noticed.
    let subscriptions = count(&agent.shared.metrics.command_subscriptions);
    assert!(subscriptions >= 1);
    redis.kill().await;
    env.wait_until("the agent lost its command subscription", T, || async {
        count(&agent.shared.metrics.command_subscriptions_lost) >= 1
    })
    .await;

    // Reports do not go through Redis: heartbeats keep reaching the control
    // plane while Redis is down.
    let heartbeats = |env: &TestEnv| {
        env.messages()
            .iter()
            .filter(|m| m.kind == "heartbeat")
            .count()
    };
    let before = heartbeats(&env);
    env.wait_until("two heartbeats arrived while redis is down", T, || async {
        heartbeats(&env) >= before + 2
    })
    .await;

    redis.restart().await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    env.wait_until("the agent resubscribed", T, || async {
        count(&agent.shared.metrics.command_subscriptions) > subscriptions
    })
    .await;
    env.send(
        "op-after-restart",
        Operation::Create {
            device: env.device("d1", RunState::Running),
            import: None,
        },
    )
    .await;
    let r = env.result("op-after-restart", 1, T).await;
    assert!(r.ok, "{r:?}");
    assert!(env.containers().await.first().is_some_and(|c| c.running));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_results_survive_a_control_plane_that_is_down_for_a_while() {
    let env = TestEnv::new("results-cp-down", 1).await;
    env.cp.set_desired(&env.node, vec![]);
    let agent = env.start_agent().await;
    env.cp.state.down.store(true, Ordering::SeqCst);
    // Commands still arrive over Redis; their results wait in the queue.
    let screenshot = |id: &str| Operation::Screenshot { device_id: dev(id) };
    env.send("op-down-1", screenshot("nope-1")).await;
    env.send("op-down-2", screenshot("nope-2")).await;
    let failures = || count(&agent.shared.metrics.report_failures);
    env.wait_until("three reports failed", T, || async { failures() >= 3 })
        .await;
    env.wait_until("both commands ran", T, || async {
        count(&agent.shared.metrics.commands) >= 2
    })
    .await;
    let before = failures();
    env.wait_until("another report failed after both ran", T, || async {
        failures() > before
    })
    .await;
    assert!(
        env.messages().iter().all(|m| m.kind != "command_result"),
        "nothing got through while the control plane was down"
    );

    env.cp.state.down.store(false, Ordering::SeqCst);
    for op in ["op-down-1", "op-down-2"] {
        let r = env.result(op, 1, T).await;
        assert_eq!(r.error_code.as_deref(), Some("not_found"), "{r:?}");
    }
    let results: Vec<_> = env
        .messages()
        .into_iter()
        .filter(|m| m.kind == "command_result")
        .collect();
    assert_eq!(results.len(), 2, "each result once: {results:?}");
    assert_eq!(env.cp.state.duplicates.load(Ordering::SeqCst), 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_while_the_control_plane_is_down_keeps_every_device() {
    let env = TestEnv::new("cp-down", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;
    let before = env.containers().await;
    agent.shutdown().await;

    env.cp.state.down.store(true, Ordering::SeqCst);
    // Without a grace period, any pass that took the unknown desired state for
    // an empty one would remove the device at once.
    let mut cfg = env.config();
    cfg.removal_grace = Duration::ZERO;
    let agent = env.start_agent_with(cfg).await;
    env.wait_until("several pulls failed", T, || async {
        count(&agent.shared.metrics.desired_state_failures) >= 3
    })
    .await;
    wait_for_passes(&env, &agent, 2).await;
    assert_eq!(count(&agent.shared.metrics.desired_state_pulls), 0);
    let during = env.containers().await;
    assert_eq!(during.len(), 1);
    assert_eq!(during[0].id, before[0].id);
    assert!(during[0].running);

    env.cp.state.down.store(false, Ordering::SeqCst);
    wait_status(&env, "d1", "ready").await;
    assert_eq!(
        env.containers().await[0].id,
        before[0].id,
        "adopted, not recreated"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_screenshot_logcat_and_uninstall_run_inside_the_device_with_limits() {
    let env = TestEnv::new("device-ops", 2).await;
    env.cp
        .set_desired(&env.node, vec![env.device("d1", RunState::Running)]);
    let agent = env.start_agent().await;
    wait_status(&env, "d1", "ready").await;
    let shell = |command: &str, timeout_ms, max| Operation::Shell {
        device_id: dev("d1"),
        command: command.into(),
        timeout_ms,
        max_output_bytes: max,
    };

    let r = env
        .call("op-cap", shell("printf '%0100d' 0", None, Some(10)))
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.output["stdout"].as_str().unwrap().len(), 10);
    assert_eq!(r.output["truncated"], true);

    let r = env.call("op-slow", shell("sleep 5", Some(300), None)).await;
    assert!(!r.ok);
    assert_eq!(r.error_code.as_deref(), Some("timeout"), "{r:?}");

    let r = env
        .call("op-exit", shell("echo oops >&2; exit 3", None, None))
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.output["exit_code"], 3);
    assert_eq!(r.output["stderr"].as_str().unwrap().trim(), "oops");

    use base64::Engine as _;
    let r = env
        .call(
            "op-screen",
            Operation::Screenshot {
                device_id: dev("d1"),
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(r.output["png_base64"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    let r = env
        .call(
            "op-logcat",
            Operation::Logcat {
                device_id: dev("d1"),
                lines: Some(10),
            },
        )
        .await;
    assert!(r.ok, "{r:?}");
    assert!(r.output["text"]
        .as_str()
        .unwrap()
        .contains("androidboot.redroid_width=720"));

    let r = env
        .call(
            "op-uninstall",
            Operation::UninstallApk {
                device_id: dev("d1"),
                package: runtime_agent::spec::PackageName::parse("com.example.app").unwrap(),
            },
        )
        .await;
    assert!(r.ok, "{r:?}");

    let r = env
        .call(
            "op-nodev",
            Operation::Screenshot {
                device_id: dev("nope"),
            },
        )
        .await;
    assert_eq!(r.error_code.as_deref(), Some("not_found"), "{r:?}");
    agent.shutdown().await;
}
