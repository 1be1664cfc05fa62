//! Benchmark of the runtime agent, run with `cargo bench -p runtime-agent`.
//! Prints, from one run: create→ready and delete through the agent (signed
//! command over Redis, result back in a signed HTTP report to the
//! control-plane double) next to the same steps made directly on
//! the engine API, and the time of one reconcile pass over 100 devices on the
//! in-memory fake engine. Needs `DOCKER_HOST` and Redis like the tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime_agent::engine::Engine;
use runtime_agent::protocol::{Operation, RunState};
use runtime_agent::reconcile;
use runtime_agent::spec::{self, DeviceId, HostPlacement};
use runtime_agent::testkit::{shared_on_fake, TestEnv};

const ROUNDS: usize = 5;

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:8.1} ms  min {:8.1} ms  max {:8.1} ms  (n={})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

async fn wait_booted(engine: &dyn Engine, name: &str) {
    loop {
        let out = engine
            .exec(
                name,
                &["getprop", "sys.boot_completed"],
                Duration::from_secs(5),
                64,
            )
            .await;
        if matches!(&out, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "1") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn real_engine() {
    let env = TestEnv::new("bench", 4).await;
    env.cp.set_desired(&env.node, vec![]);

    // Directly on the engine API: create + start, then poll getprop like the agent does.
    let (mut direct_create, mut direct_delete) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let want = env.device(&format!("direct{i}"), RunState::Running);
        let place = HostPlacement {
            node: &env.node,
            data_root: &env.data_root,
            adb_bind_address: "127.0.0.1",
            adb_host_port: env.ports.start,
            name_prefix: &env.config().container_name_prefix,
        };
        let c = spec::build_container_spec(&want.device_id, 1, &want.spec, &place, None);
        std::fs::create_dir_all(&c.data_dir).unwrap();
        let t = Instant::now();
        env.engine.create(&c).await.unwrap();
        env.engine.start(&c.name).await.unwrap();
        wait_booted(env.engine.as_ref(), &c.name).await;
        direct_create.push(t.elapsed());
        let t = Instant::now();
        env.engine.remove(&c.name).await.unwrap();
        std::fs::remove_dir_all(c.data_dir.parent().unwrap()).unwrap();
        direct_delete.push(t.elapsed());
    }

    // Through the agent: a signed command over Redis, the result back as a
    // signed report over HTTP (protocol version 2).
    let agent = env.start_agent().await;
    let (mut agent_create, mut agent_delete) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let id = format!("agent{i}");
        // As the protocol requires, the control plane records the device first.
        env.cp
            .set_desired(&env.node, vec![env.device(&id, RunState::Running)]);
        let t = Instant::now();
        let r = env
            .call(
                &format!("bench-create-{i}"),
                Operation::Create {
                    device: env.device(&id, RunState::Running),
                    import: None,
                },
            )
            .await;
        assert!(r.ok, "{r:?}");
        agent_create.push(t.elapsed());
        env.cp.set_desired(&env.node, vec![]);
        let t = Instant::now();
        let r = env
            .call(
                &format!("bench-delete-{i}"),
                Operation::Delete {
                    device_id: DeviceId::parse(&id).unwrap(),
                    generation: 2,
                },
            )
            .await;
        assert!(r.ok, "{r:?}");
        agent_delete.push(t.elapsed());
    }
    agent.shutdown().await;
    println!(
        "engine: {}",
        std::env::var("DOCKER_HOST").unwrap_or_default()
    );
    println!("note: the test image reports sys.boot_completed=1 one second after start");
    println!(
        "create->ready  direct engine API : {}",
        stats(direct_create)
    );
    println!("create->ready  through agent     : {}", stats(agent_create));
    println!(
        "delete         direct engine API : {}",
        stats(direct_delete)
    );
    println!("delete         through agent     : {}", stats(agent_delete));
}

async fn fake_engine() {
    let dir = std::env::temp_dir().join(format!("cloudphone-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (shared, fake) = shared_on_fake(&dir);
    let env_image = "redroid/redroid:14.0.0-latest";
    let devices: Vec<_> = (0..100)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "device_id": format!("d{i}"), "generation": 1, "state": "running",
                "spec": {"image": env_image, "display": {"width": 720, "height": 1280, "dpi": 320, "fps": 30},
                         "resources": {"cpu_millis": 1000, "memory_mb": 2048, "pids": 2048}}
            }))
            .unwrap()
        })
        .collect();
    shared
        .desired
        .lock()
        .unwrap()
        .merge_pulled(devices, std::time::Instant::now());
    let t = Instant::now();
    reconcile::run_pass(&shared).await.unwrap();
    let first = t.elapsed();
    assert_eq!(fake.containers().len(), 100);
    let t = Instant::now();
    reconcile::run_pass(&shared).await.unwrap();
    let probe = t.elapsed();
    let mut steady = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        reconcile::run_pass(&shared).await.unwrap();
        steady.push(t.elapsed());
    }
    println!(
        "reconcile pass, 100 devices, fake engine, all created  : {:8.2} ms",
        first.as_secs_f64() * 1e3
    );
    println!(
        "reconcile pass, 100 devices, fake engine, all probed   : {:8.2} ms",
        probe.as_secs_f64() * 1e3
    );
    println!(
        "reconcile pass, 100 devices, fake engine, steady state : {}",
        stats(steady)
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(Arc::clone(&shared));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        fake_engine().await;
        real_engine().await;
    });
}
