//! Device benchmarks on the whole stack (`cargo xtask bench`), on real Spin
//! when a `spin` binary is found:
//!
//! - create→running through the API with the real `runtime-agent` on the
//!   real engine (Podman's API; the test image, which "boots" one second
//!   after it starts): the request, placement, quota, the command, the
//!   agent's work and its report, until the operation has succeeded; and
//!   delete the same way. Compare with `cargo bench -p runtime-agent`, which
//!   times the agent alone and the raw engine for the same image.
//! - `GET /devices` with 10,000 devices in the table: p50 and p99 of the
//!   first page as their owner and as platform staff, a status filter, a
//!   name search and a tag filter.
//! - the lifecycle job (`POST /internal/devices/lifecycle`: expiry, idle
//!   and session rules) with 10,000 running devices that all have a
//!   policy, 10 of them due (idle: each warned and stopped through the
//!   same path as a user's stop), and with none due; next to what a job
//!   that scanned every device each tick would read, and the claim query
//!   without its index.
//!
//! - the snapshot job (`POST /internal/snapshots/maintain`: automatic
//!   snapshots, storage charges, retention) with 10,000 devices that all
//!   have a policy and a snapshot, 10 backups due per run, and none due.
//!
//! - fleet: a batch creating 100 devices from a template through the whole
//!   stack (four real agents of 25 devices each, 50 at a time), until every
//!   device runs, then a batch deleting them; and creates from a warm pool
//!   of 10 (p50/p99 of the API answer with a running device).
//!
//! - archive: failover from a snapshot with 64 MiB under `/data`, two
//!   real agents: the snapshot with its archive (tar, 4 MiB chunks through
//!   Spin into Postgres) against one without, and the time from the node's
//!   freeze until the phone runs on the other node with the data, and the
//!   `recover` operation's own time (download, check, untar, boot).
//!
//! Prints figures; asserts nothing about time.

use e2e::real_agent::{
    dense_node, fake_redroid_image, small_template, RealAgent, FAKE_IMAGE_PREFIX,
};
use e2e::{expect_json, Options, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const D: &str = "/api/v1/device";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:7.1} ms  p99 {:7.1} ms  min {:7.1} ms  max {:7.1} ms  (n={})",
        ms(p(0.5)),
        ms(p(0.99)),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn wait_done(app: &TestApp, token: &str, op: &Value) -> Value {
    let id = op["id"].as_str().expect("operation id");
    loop {
        let v = expect_json(
            app.get(&format!("{D}/operations/{id}?wait=20"), Some(token)),
            200,
        );
        if v["status"] != "running" {
            assert_eq!(v["status"], "succeeded", "{v}");
            return v;
        }
    }
}

fn lifecycle(app: &TestApp) {
    let admin = app.platform_admin();
    let (_user, token) = app.signed_up_user();
    let node = expect_json(
        app.post(&format!("{D}/nodes"), &json!({"id": "bench-1"}), admin.t()),
        201,
    );
    let agent = RealAgent::start(app, "bench-1", node["secret"].as_str().unwrap());
    app.eventually(Duration::from_secs(60), || {
        let n = expect_json(app.get(&format!("{D}/nodes/bench-1"), admin.t()), 200);
        (n["status"] == "online").then_some(())
    })
    .expect("the node comes online");
    let image = fake_redroid_image();
    let (mut create, mut delete) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let t = Instant::now();
        let op = expect_json(
            app.post(
                &format!("{D}/devices"),
                &json!({"name": format!("b{i}"), "spec": {"image": image, "cpu_cores": 1, "memory_mb": 1024}}),
                Some(&token),
            ),
            202,
        );
        wait_done(app, &token, &op);
        let took = t.elapsed();
        let id = op["device_id"].as_str().unwrap().to_string();
        let t = Instant::now();
        let del = expect_json(app.delete(&format!("{D}/devices/{id}"), Some(&token)), 202);
        wait_done(app, &token, &del);
        // The first round pays for connections and caches: not counted.
        if i > 0 {
            create.push(took);
            delete.push(t.elapsed());
        }
    }
    println!(
        "devices: create->running via the API, real agent and engine: {}",
        summary(create)
    );
    println!(
        "devices: delete->removed via the API, real agent and engine: {}",
        summary(delete)
    );
    drop(agent);
}

fn lists(app: &TestApp) {
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    let owner = uuid::Uuid::parse_str(&user).unwrap();
    app.db("device")
        .execute(
            "INSERT INTO devices (id, name, owner_id, owner_name, owner_email, owner_version, spec, cpu_millis, \
               memory_mb, disk_gb, tags, desired_status, observed_status, created_at) \
             SELECT gen_random_uuid(), 'phone-' || i, $1, 'Bench', 'bench@example.com', 1, '{}'::jsonb, 2000, 4096, 16, \
               ARRAY['t' || (i % 50)], CASE WHEN i % 3 = 0 THEN 'stopped' ELSE 'running' END, \
               CASE WHEN i % 3 = 0 THEN 'stopped' ELSE 'running' END, \
               (now() AT TIME ZONE 'UTC') - make_interval(secs => i) \
             FROM generate_series(1, 10000) AS i",
            &[&owner],
        )
        .expect("seed 10,000 devices");
    app.db("device").execute("ANALYZE devices", &[]).unwrap();
    let cases: [(&str, String, Option<&str>); 5] = [
        (
            "owner, first page",
            format!("{D}/devices"),
            Some(token.as_str()),
        ),
        ("staff, first page", format!("{D}/devices"), admin.t()),
        (
            "owner, status=stopped",
            format!("{D}/devices?status=stopped"),
            Some(token.as_str()),
        ),
        (
            "owner, q=phone-99",
            format!("{D}/devices?q=phone-99"),
            Some(token.as_str()),
        ),
        (
            "owner, tag=t7",
            format!("{D}/devices?tag=t7"),
            Some(token.as_str()),
        ),
    ];
    for (what, path, t) in cases {
        let first = expect_json(app.get(&path, t), 200);
        assert!(first["total"].as_i64().unwrap_or(0) > 0, "{what}: {first}");
        let mut times = Vec::new();
        for _ in 0..200 {
            let s = Instant::now();
            let r = app.get(&path, t);
            assert_eq!(r.status(), 200);
            let _ = r.bytes();
            times.push(s.elapsed());
        }
        println!(
            "devices: GET /devices with 10,000 devices, {what:<22} (total {:>5}): {}",
            first["total"],
            summary(times)
        );
    }
}

/// 10,000 running devices of one user on node `node` (enrolled, with no
/// agent), straight into `device`'s table: each runs with an idle timeout
/// of an hour, a third of them also expire within a month, and every due
/// time is in the future. A connection to `device`'s database.
fn seed_devices(app: &TestApp, node: &str) -> postgres::Client {
    let admin = app.platform_admin();
    let (user, _) = app.signed_up_user();
    let owner = uuid::Uuid::parse_str(&user).unwrap();
    expect_json(
        app.post(&format!("{D}/nodes"), &json!({"id": node}), admin.t()),
        201,
    );
    let mut db = app.db("device");
    db.execute(
        "INSERT INTO devices (id, name, owner_id, owner_name, owner_email, owner_version, node_id, spec, cpu_millis, \
           memory_mb, disk_gb, desired_status, observed_status, idle_timeout_secs, session_started_at, \
           expires_at, expiry_warned_at, lifecycle_due_at) \
         SELECT gen_random_uuid(), 'phone-' || i, $1, 'Bench', 'bench@example.com', 1, $2, '{}'::jsonb, 1000, \
           1024, 4, 'running', 'running', 3600, (now() AT TIME ZONE 'UTC') - make_interval(secs => i % 600), \
           CASE WHEN i % 3 = 0 THEN (now() AT TIME ZONE 'UTC') + make_interval(days => 2 + i % 28) END, NULL, \
           (now() AT TIME ZONE 'UTC') + make_interval(secs => 3000 - i % 600) \
         FROM generate_series(1, 10000) AS i",
        &[&owner, &node],
    )
    .expect("seed 10,000 devices");
    db
}

/// The snapshot job (`POST /internal/snapshots/maintain`) with 10,000
/// devices that all have a daily snapshot policy and one charged snapshot
/// each, 10 of them due for a backup per run (each run takes other ones);
/// and with none due.
fn snapshot_job() {
    let app = TestApp::spawn_with(Options {
        disable_triggers: vec!["cron"],
        ..Options::default()
    });
    let mut db = seed_devices(&app, "bench-snap");
    db.batch_execute(
        "INSERT INTO snapshot_policies (device_id, every_secs, keep_last, next_backup_at) \
           SELECT id, 86400, 7, (now() AT TIME ZONE 'UTC') + interval '1 hour' FROM devices; \
         INSERT INTO snapshots (id, device_id, node_id, owner_id, name, status, generation, operation_id, \
             origin, ready_at, data_bytes, storage_gb, quota_state, expires_at) \
           SELECT gen_random_uuid(), id, node_id, owner_id, 'auto', 'ready', 1, gen_random_uuid(), 'scheduled', \
             now() AT TIME ZONE 'UTC', 1000, 1, 'held', (now() AT TIME ZONE 'UTC') + interval '30 days' FROM devices; \
         ANALYZE snapshot_policies; ANALYZE snapshots",
    )
    .expect("seed policies and snapshots");
    let job = || {
        let s = Instant::now();
        let v = expect_json(
            app.post_as("scheduler", &format!("{D}/internal/snapshots/maintain")),
            200,
        );
        (s.elapsed(), v)
    };
    let mut busy = Vec::new();
    for i in 0..31 {
        db.execute(
            "UPDATE snapshot_policies SET next_backup_at = (now() AT TIME ZONE 'UTC') - interval '1 second' \
             WHERE device_id IN (SELECT device_id FROM snapshot_policies ORDER BY device_id OFFSET $1 LIMIT 10)",
            &[&(i * 10_i64)],
        )
        .unwrap();
        let (took, v) = job();
        assert_eq!(v["backups"], 10, "{v}");
        if i > 0 {
            busy.push(took);
        }
    }
    let mut idle = Vec::new();
    for _ in 0..200 {
        let (took, v) = job();
        assert_eq!(v["backups"], 0, "{v}");
        idle.push(took);
    }
    println!(
        "devices: snapshot job, 10,000 policies, 10 backups due (queued):       {}",
        summary(busy)
    );
    println!(
        "devices: snapshot job, 10,000 policies and snapshots, none due:        {}",
        summary(idle)
    );
}

/// The lifecycle job with 10,000 devices of which 10 are due (a second
/// app without the cron trigger, so that only the benchmark runs the job).
fn lifecycle_job() {
    let app = TestApp::spawn_with(Options {
        disable_triggers: vec!["cron"],
        ..Options::default()
    });
    let mut db = seed_devices(&app, "bench-life");
    // Ten of them are idle: stopped at once (their warning first).
    let due: Vec<uuid::Uuid> = db
        .query(
            "UPDATE devices SET idle_timeout_secs = 60 WHERE id IN (SELECT id FROM devices ORDER BY id LIMIT 10) RETURNING id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.execute("ANALYZE devices", &[]).unwrap();
    let make_due = |db: &mut postgres::Client| {
        db.execute(
            "UPDATE devices SET desired_status = 'running', idle_warned_at = NULL, \
               session_started_at = (now() AT TIME ZONE 'UTC') - interval '1 hour', \
               lifecycle_due_at = (now() AT TIME ZONE 'UTC') - interval '1 second' WHERE id = ANY($1)",
            &[&due],
        )
        .unwrap();
    };
    let job = || {
        let s = Instant::now();
        let v = expect_json(
            app.post_as("scheduler", &format!("{D}/internal/devices/lifecycle")),
            200,
        );
        (s.elapsed(), v)
    };
    let (mut busy, mut idle) = (Vec::new(), Vec::new());
    for i in 0..31 {
        make_due(&mut db);
        let (took, v) = job();
        assert_eq!(
            (v["stopped"].as_i64(), v["warnings"].as_i64()),
            (Some(10), Some(10)),
            "{v}"
        );
        if i > 0 {
            busy.push(took);
        }
    }
    for _ in 0..200 {
        let (took, v) = job();
        assert_eq!(v["claimed"], 0, "{v}");
        idle.push(took);
    }
    println!(
        "devices: lifecycle job, 10,000 devices, 10 due (warned + stopped):      {}",
        summary(busy)
    );
    println!(
        "devices: lifecycle job, 10,000 devices, none due:                       {}",
        summary(idle)
    );
    // What a job that scanned every device each tick would at least read.
    let mut scan = Vec::new();
    for _ in 0..50 {
        let s = Instant::now();
        let rows = db
            .query(
                "SELECT id, desired_status, observed_status, expires_at::text, expiry_warned_at::text, idle_timeout_secs, \
                   max_session_secs, last_client_heartbeat_at::text, session_started_at::text, idle_warned_at::text \
                 FROM devices WHERE desired_status <> 'deleted'",
                &[],
            )
            .unwrap();
        assert!(rows.len() >= 10_000);
        scan.push(s.elapsed());
    }
    println!(
        "devices: full scan instead (read every live device's lifecycle, SQL only): {}",
        summary(scan)
    );
    // The claim's selection in Postgres, with its partial index and without.
    let claim = "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM devices \
                 WHERE lifecycle_due_at <= now() AT TIME ZONE 'UTC' ORDER BY lifecycle_due_at LIMIT 100";
    let plan = |db: &mut postgres::Client| -> (f64, String) {
        let v: Value = db.query_one(claim, &[]).unwrap().get(0);
        let p = &v[0];
        let mut node = &p["Plan"];
        let mut kinds = Vec::new();
        loop {
            kinds.push(node["Node Type"].as_str().unwrap_or("?").to_string());
            match node["Plans"].get(0) {
                Some(child) => node = child,
                None => break,
            }
        }
        (
            p["Execution Time"].as_f64().unwrap_or(f64::NAN),
            kinds.join(" > "),
        )
    };
    make_due(&mut db);
    let (with_index, how) = plan(&mut db);
    db.batch_execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        .unwrap();
    let (without, how_without) = plan(&mut db);
    println!(
        "devices: the claim's selection in Postgres: {with_index:.3} ms ({how}); without the index {without:.3} ms ({how_without})"
    );
}

/// Waits for a batch to finish; how long it took from `since`.
fn batch_done(app: &TestApp, token: &str, id: &str, since: Instant) -> Duration {
    loop {
        let b = expect_json(app.get(&format!("{D}/batches/{id}"), Some(token)), 200);
        if b["status"] == "finished" {
            assert_eq!(b["failed"], 0, "{}", b["items"]);
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fleet(app: &TestApp) {
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{user}"),
            &json!({"max_devices": 500, "max_concurrent_devices": 500, "max_cpu_cores": 1000,
                    "max_memory_mb": 1_000_000, "max_storage_gb": 100_000}),
            admin.t(),
        ),
        200,
    );
    let agents: Vec<RealAgent> = (0..4)
        .map(|i| dense_node(app, &admin, &format!("fleet-{i}"), 25))
        .collect();
    let tid = small_template(app, &admin, "bench");
    let t = Instant::now();
    let b = expect_json(
        app.post(
            &format!("{D}/batches"),
            &json!({"action": "create", "count": 100, "template_id": tid, "concurrency": 50}),
            Some(&token),
        ),
        202,
    );
    let took = batch_done(app, &token, b["id"].as_str().unwrap(), t);
    println!(
        "fleet: batch create of 100 devices from a template, 4 real agents, 50 at a time: {:.1} s until all run ({:.2} devices/s)",
        took.as_secs_f64(),
        100.0 / took.as_secs_f64()
    );
    let t = Instant::now();
    let b = expect_json(
        app.post(
            &format!("{D}/batches"),
            &json!({"action": "delete", "filter": {}, "concurrency": 50}),
            Some(&token),
        ),
        202,
    );
    let took = batch_done(app, &token, b["id"].as_str().unwrap(), t);
    println!(
        "fleet: batch delete of those 100: {:.1} s",
        took.as_secs_f64()
    );

    // A warm pool of 10; creates from it, waiting for the refill between rounds.
    let pool = format!("{D}/templates/{tid}/pool");
    expect_json(app.put(&pool, &json!({"size": 10}), admin.t()), 200);
    let mut answers = Vec::new();
    for round in 0..4 {
        app.eventually(Duration::from_secs(120), || {
            let p = expect_json(app.get(&pool, admin.t()), 200);
            (p["ready"] == 10).then_some(())
        })
        .expect("the pool fills");
        for i in 0..10 {
            let t = Instant::now();
            let op = expect_json(
                app.post(
                    &format!("{D}/devices"),
                    &json!({"name": format!("w{round}-{i}"), "template_id": tid}),
                    Some(&token),
                ),
                201,
            );
            let took = t.elapsed();
            assert_eq!(op["status"], "succeeded");
            // The first round pays for connections and caches: not counted.
            if round > 0 {
                answers.push(took);
            }
        }
    }
    println!(
        "fleet: create from a warm pool (API answer with a running device): {}",
        summary(answers)
    );
    drop(agents);
}

fn secs_between(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("rfc 3339")
    };
    (t(b) - t(a)).num_milliseconds() as f64 / 1e3
}

/// Failover from a snapshot with 64 MiB of data (see the module's notes).
fn archive() {
    const MIB: usize = 64;
    let app = TestApp::spawn_with(Options {
        env: vec![
            (
                "SPIN_VARIABLE_DEVICE_IMAGES".into(),
                format!("redroid/redroid:,{FAKE_IMAGE_PREFIX}"),
            ),
            ("SPIN_VARIABLE_NODE_HEARTBEAT_SECS".into(), "1".into()),
            ("SPIN_VARIABLE_FAILOVER_AFTER_SECS".into(), "3".into()),
        ],
        ..Options::default()
    });
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    expect_json(
        app.patch(
            &format!("/api/v1/user/quotas/{user}"),
            &json!({"max_devices": 10, "max_storage_gb": 1000}),
            admin.t(),
        ),
        200,
    );
    let a = dense_node(&app, &admin, "archive-a", 4);
    let tid = small_template(&app, &admin, "archive");
    let op = expect_json(
        app.post(
            &format!("{D}/devices"),
            &json!({"name": "kept", "template_id": tid, "recover_policy": "snapshot"}),
            Some(&token),
        ),
        202,
    );
    wait_done(&app, &token, &op);
    let id = op["device_id"].as_str().unwrap().to_string();
    let b = dense_node(&app, &admin, "archive-b", 4);
    // Data that does not compress, written straight into the phone's /data.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..MIB << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(a.device_data(&id).join("big.bin"), &data).expect("write /data");
    let snapshot = |name: &str| {
        let t = Instant::now();
        let taken = expect_json(
            app.post(
                &format!("{D}/devices/{id}/snapshots"),
                &json!({"name": name}),
                Some(&token),
            ),
            202,
        );
        wait_done(&app, &token, &taken["operation"]);
        let took = t.elapsed();
        let s = expect_json(
            app.get(
                &format!(
                    "{D}/snapshots/{}",
                    taken["snapshot"]["id"].as_str().unwrap()
                ),
                Some(&token),
            ),
            200,
        );
        (took, s)
    };
    let policy = |p: &str| {
        expect_json(
            app.patch(
                &format!("{D}/devices/{id}"),
                &json!({"recover_policy": p}),
                Some(&token),
            ),
            200,
        );
    };
    policy("fresh");
    let (plain, _) = snapshot("plain");
    policy("snapshot");
    let (archived, s) = snapshot("archived");
    assert!(s["archived_at"].is_string(), "{s}");
    let bytes = s["archive_bytes"].as_f64().unwrap() / f64::from(1 << 20);
    println!(
        "archive: snapshot of a running phone with {MIB} MiB under /data: {:.2} s without an archive, {:.2} s with ({bytes:.1} MiB archived: {:.0} MiB/s for the archive)",
        plain.as_secs_f64(),
        archived.as_secs_f64(),
        bytes / (archived.as_secs_f64() - plain.as_secs_f64()).max(1e-3)
    );
    let t = Instant::now();
    a.signal("STOP");
    loop {
        let d = expect_json(app.get(&format!("{D}/devices/{id}"), admin.t()), 200);
        if d["node_id"] == "archive-b" && d["observed_status"] == "running" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "never recovered: {d}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = t.elapsed();
    assert_eq!(
        std::fs::read(b.device_data(&id).join("big.bin")).expect("the data came along"),
        data
    );
    let rec = expect_json(
        app.get(&format!("{D}/devices/{id}/recoveries"), Some(&token)),
        200,
    );
    let op = expect_json(
        app.get(
            &format!(
                "{D}/operations/{}",
                rec["items"][0]["operation_id"].as_str().unwrap()
            ),
            Some(&token),
        ),
        200,
    );
    println!(
        "archive: failover with {MIB} MiB from the snapshot: running on the other node {:.1} s after its node froze (heartbeat 1 s, failover after 3 s); the recover operation (download, check, untar, boot) took {:.1} s",
        total.as_secs_f64(),
        secs_between(&op["created_at"], &op["finished_at"])
    );
    a.signal("CONT");
}

/// Arguments name the parts to run (`agent`, `lists`, `lifecycle-job`,
/// `snapshot-job`, `fleet`, `archive`);
/// none runs all of them.
fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let part = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if part("lifecycle-job") {
        lifecycle_job();
    }
    if part("snapshot-job") {
        snapshot_job();
    }
    if part("archive") {
        archive();
    }
    if !part("agent") && !part("lists") && !part("fleet") {
        return;
    }
    let app = TestApp::spawn_with(Options {
        env: vec![(
            "SPIN_VARIABLE_DEVICE_IMAGES".into(),
            format!("redroid/redroid:,{FAKE_IMAGE_PREFIX}"),
        )],
        ..Options::default()
    });
    println!("devices: the app runs on {:?}", app.host());
    if part("agent") {
        lifecycle(&app);
    }
    if part("lists") {
        lists(&app);
    }
    if part("fleet") {
        fleet(&app);
    }
}
