//! Load benchmark (`cargo xtask bench`): 64 and 256 concurrent keep-alive
//! clients for a fixed time against `GET /user/me`, a list
//! (`GET /user/users` as platform staff) and `POST /auth/login`, on real
//! Spin (when a `spin` binary is found) and on the local host. Reports
//! throughput, p50/p99, responses by status, the app's peak resident memory
//! (every process of its process group) and the most Postgres connections
//! its roles held at once. The only answers expected are 2xx and the
//! documented back-pressure status (503 with `Retry-After`).

use e2e::{Host, Options, TestApp};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECONDS: u64 = 10;

/// One request as bytes, sent again and again on one connection.
struct Shot {
    bytes: Vec<u8>,
}

impl Shot {
    fn new(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Self {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: bench\r\n");
        if let Some(t) = token {
            head.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b.as_bytes());
        }
        Self { bytes }
    }
}

/// One answer: its status (`0` for a connection error), whether a 503 said
/// when to retry, and the body of the first answer that is neither 2xx nor
/// back-pressure (to say what went wrong).
struct Answers {
    all: Vec<(u16, Duration)>,
    /// 503s without `Retry-After`: not the documented back-pressure.
    bare_503: usize,
    /// The body of the first answer that was not 2xx.
    unexpected: Option<String>,
}

/// Sends `shot` until `stop`; returns (status, latency) of each answer.
async fn client(addr: std::net::SocketAddr, shot: Arc<Shot>, stop: Arc<AtomicBool>) -> Answers {
    let mut out = Vec::new();
    let mut bare_503 = 0;
    let mut unexpected = None;
    let mut s: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16384);
    while !stop.load(Ordering::Relaxed) {
        if s.is_none() {
            match TcpStream::connect(addr).await {
                Ok(c) => {
                    c.set_nodelay(true).ok();
                    s = Some(c);
                }
                Err(_) => {
                    out.push((0, Duration::ZERO));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let conn = s.as_mut().expect("connected");
        let t0 = Instant::now();
        if conn.write_all(&shot.bytes).await.is_err() {
            s = None;
            out.push((0, t0.elapsed()));
            continue;
        }
        buf.clear();
        let status = loop {
            let mut chunk = [0u8; 8192];
            let k = match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(k) => k,
            };
            buf.extend_from_slice(&chunk[..k]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let done = match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                Some(v) => buf.len() >= end + 4 + v.trim().parse::<usize>().unwrap_or(0),
                None => buf.ends_with(b"\r\n0\r\n\r\n"),
            };
            if done {
                if status == 503 && !head.contains("\r\nretry-after:") {
                    bare_503 += 1;
                }
                if !(200..300).contains(&status) && unexpected.is_none() {
                    unexpected = Some(String::from_utf8_lossy(&buf[end + 4..]).into_owned());
                }
                break Some(status);
            }
        };
        match status {
            Some(st) => out.push((st, t0.elapsed())),
            None => {
                s = None;
                out.push((0, t0.elapsed()));
            }
        }
    }
    Answers {
        all: out,
        bare_503,
        unexpected,
    }
}

/// Resident memory (KiB) of every process in a process group.
fn group_rss_kib(pgid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, pgrp.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let pgrp: u32 = rest
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pgrp != pgid {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

struct Row {
    rps: f64,
    p50: f64,
    p99: f64,
    statuses: BTreeMap<u16, usize>,
    peak_rss_mib: f64,
    peak_pg: i64,
    bare_503: usize,
    unexpected: Option<String>,
}

async fn run(app: &TestApp, shot: Shot, clients: usize) -> Row {
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let shot = Arc::new(shot);
    // Samplers: memory of the app's processes, connections of its roles.
    let pgid = app.pid().expect("running");
    let peak_rss = Arc::new(AtomicU64::new(0));
    let peak_pg = Arc::new(AtomicU64::new(0));
    let roles: Vec<String> = app.db_urls.iter().map(|(c, _)| app.db_name(c)).collect();
    let sampler = {
        let (stop, peak_rss, peak_pg) = (stop.clone(), peak_rss.clone(), peak_pg.clone());
        std::thread::spawn(move || {
            let mut admin = postgres::Client::connect(
                "host=127.0.0.1 user=postgres dbname=postgres",
                postgres::NoTls,
            )
            .ok();
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(group_rss_kib(pgid), Ordering::Relaxed);
                if let Some(db) = admin.as_mut() {
                    if let Ok(row) = db.query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)",
                        &[&roles],
                    ) {
                        peak_pg.fetch_max(row.get::<_, i64>(0) as u64, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(addr, shot.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let (mut bare_503, mut unexpected) = (0, None);
    for t in tasks {
        let a = t.await.unwrap();
        all.extend(a.all);
        bare_503 += a.bare_503;
        unexpected = unexpected.or(a.unexpected);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    sampler.join().unwrap();
    let mut statuses = BTreeMap::new();
    for (s, _) in &all {
        *statuses.entry(*s).or_default() += 1;
    }
    let mut ok: Vec<Duration> = all
        .iter()
        .filter(|(s, _)| (200..300).contains(s))
        .map(|(_, d)| *d)
        .collect();
    ok.sort();
    let pct = |p: f64| {
        ok.get(((ok.len() as f64 * p) as usize).min(ok.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Row {
        rps: ok.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        statuses,
        peak_rss_mib: peak_rss.load(Ordering::Relaxed) as f64 / 1024.0,
        peak_pg: peak_pg.load(Ordering::Relaxed) as i64,
        bare_503,
        unexpected,
    }
}

fn main() {
    let mut hosts = Vec::new();
    if let Some(spin) = e2e::spin_binary() {
        hosts.push(("spin", Host::Spin(spin)));
    }
    hosts.push(("local", Host::Local(e2e::local_host_binary())));
    // `LOAD_HOSTS=spin` or `=local` runs one host only.
    if let Ok(only) = std::env::var("LOAD_HOSTS") {
        hosts.retain(|(name, _)| only.split(',').any(|o| o == *name));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "load benchmark: {SECONDS} s per row, keep-alive clients; each component's role CONNECTION LIMIT {} (no [outbound_pg] max_connections: see runtime-config.toml), hash_slots = 4",
        migrator::admin::ROLE_CONNECTION_LIMIT
    );
    println!(
        "{:<6} {:<28} {:>5} {:>9} {:>8} {:>9} {:>9} {:>8}  statuses",
        "host", "route", "conc", "ok req/s", "p50 ms", "p99 ms", "peak MiB", "peak pg"
    );
    for (name, host) in hosts {
        let app = TestApp::spawn_with(Options {
            host: Some(host),
            ..Options::default()
        });
        let admin = app.platform_admin();
        let (_, token) = app.signed_up_user();
        app.register("load@example.com", e2e::PASSWORD, "Load");
        let idle_rss = group_rss_kib(app.pid().unwrap()) as f64 / 1024.0;
        println!("{name:<6} idle: {idle_rss:.0} MiB resident");
        let login = format!(
            r#"{{"email":"load@example.com","password":"{}"}}"#,
            e2e::PASSWORD
        );
        for clients in [64, 256] {
            let scenarios = [
                (
                    "GET /user/me",
                    Shot::new("GET", "/api/v1/user/me", Some(&token), None),
                ),
                (
                    "GET /user/users (list)",
                    Shot::new(
                        "GET",
                        "/api/v1/user/users?per_page=20",
                        Some(&admin.token),
                        None,
                    ),
                ),
                (
                    "POST /auth/login",
                    Shot::new("POST", "/api/v1/auth/login", None, Some(&login)),
                ),
            ];
            for (route, shot) in scenarios {
                let r = rt.block_on(run(&app, shot, clients));
                println!(
                    "{name:<6} {route:<28} {clients:>5} {:>9.0} {:>8.1} {:>9.1} {:>9.0} {:>8}  {:?}",
                    r.rps, r.p50, r.p99, r.peak_rss_mib, r.peak_pg, r.statuses
                );
                if r.bare_503 > 0 {
                    println!("       {} × 503 without Retry-After", r.bare_503);
                }
                if let Some(body) = r.unexpected {
                    println!("       first answer other than 2xx: {body}");
                }
                // Let lockouts and queues drain between rows.
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}
