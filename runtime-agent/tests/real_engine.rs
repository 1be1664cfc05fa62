//! Agent tests against a real container engine (Podman's or Docker's API at
//! `DOCKER_HOST`) and real Redis. They fail, never skip, when either is missing.

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use runtime_agent::protocol::{Operation, RunState};
use runtime_agent::spec::{DeviceId, LABEL_ADB_PORT};
use runtime_agent::testkit::TestEnv;

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
        .inspect_container("cloudphone-d1", None::<InspectContainerOptions>)
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
