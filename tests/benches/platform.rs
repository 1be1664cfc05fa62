//! Platform benchmark (`cargo xtask bench`): per-request latency and
//! throughput of the compiled components on real Spin (when a `spin` binary
//! is found) and on the local host (its release build), side by side, next
//! to the same work done by a native hyper handler on the same machine.
//!
//! Two routes: a trivial one (`GET /api/v1/user/health/live`: route, build a
//! JSON body) and one indexed Postgres read (`GET /api/v1/user/me`: verify an
//! Ed25519 access token, read the profile by primary key, serialize it). The
//! native handler does the same work with the same `access` crate and
//! tokio-postgres. One load generator drives both over keep-alive HTTP/1.1.

use bytes::Bytes;
use e2e::{Host, Options, TestApp};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WARMUP: usize = 200;
const REQUESTS: usize = 4000;

struct Native {
    verifier: access::TokenVerifier,
    db: tokio_postgres::Client,
}

async fn native_handler(
    state: Arc<Native>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let json = |status: u16, v: serde_json::Value| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    if req.uri().path().ends_with("/health/live") {
        return Ok(json(
            200,
            serde_json::json!({"status": "ok", "component": "user"}),
        ));
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let Ok(claims) = state.verifier.verify(token, now) else {
        return Ok(json(
            401,
            serde_json::json!({"error": {"code": "unauthenticated"}}),
        ));
    };
    let row = state
        .db
        .query_one(
            "SELECT u.id, u.email, u.display_name, u.tenant_id, u.status, \
               coalesce((SELECT array_agg(r.code ORDER BY r.code) FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}'), \
               u.metadata, u.version, \
             to_char(u.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), to_char(u.updated_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM users u WHERE u.id = $1 AND u.status <> 'deleted'",
            &[&claims.sub],
        )
        .await
        .unwrap();
    let id: uuid::Uuid = row.get(0);
    let tenant: Option<uuid::Uuid> = row.get(3);
    Ok(json(
        200,
        serde_json::json!({
            "id": id, "email": row.get::<_, String>(1), "display_name": row.get::<_, String>(2),
            "tenant_id": tenant, "status": row.get::<_, String>(4), "roles": row.get::<_, Vec<String>>(5),
            "metadata": row.get::<_, serde_json::Value>(6), "version": row.get::<_, i64>(7),
            "created_at": row.get::<_, String>(8), "updated_at": row.get::<_, String>(9),
        }),
    ))
}

async fn serve_native(state: Arc<Native>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |r| native_handler(state.clone(), r)),
                    )
                    .await;
            });
        }
    });
    addr
}

/// One keep-alive connection sending `n` GETs; returns each latency.
async fn client(
    addr: std::net::SocketAddr,
    path: String,
    token: Option<String>,
    n: usize,
) -> Vec<Duration> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n{auth}\r\n");
    let mut buf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        s.write_all(req.as_bytes()).await.unwrap();
        buf.clear();
        loop {
            let mut chunk = [0u8; 8192];
            let k = s.read(&mut chunk).await.unwrap();
            assert!(k > 0, "connection closed");
            buf.extend_from_slice(&chunk[..k]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                // Components stream their bodies, so the host answers chunked.
                let done = match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                    Some(v) => buf.len() >= end + 4 + v.trim().parse::<usize>().unwrap(),
                    None => buf.ends_with(b"\r\n0\r\n\r\n"),
                };
                if done {
                    break;
                }
            }
        }
        out.push(t0.elapsed());
    }
    out
}

struct Figures {
    rps: f64,
    p50: f64,
    p99: f64,
}

async fn measure(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    concurrency: usize,
) -> Figures {
    client(addr, path.to_string(), token.map(str::to_string), WARMUP).await;
    let per = REQUESTS / concurrency;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(client(
                addr,
                path.to_string(),
                token.map(str::to_string),
                per,
            ))
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    Figures {
        rps: lat.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// Login throughput: dominated by Argon2id (m=7168 KiB, t=5, p=1) in wasm.
fn login_bench(app: &TestApp, server: &str) {
    const LOGINS: usize = 100;
    app.register("bench@example.com", "correct horse battery", "Bench");
    for _ in 0..4 {
        app.login("bench@example.com", "correct horse battery");
    }
    let mut lat = Vec::with_capacity(LOGINS);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..LOGINS / 2)
                        .map(|_| {
                            let t = std::time::Instant::now();
                            assert_eq!(
                                app.login("bench@example.com", "correct horse battery")
                                    .status(),
                                200
                            );
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            lat.extend(h.join().unwrap());
        }
    });
    let total = t0.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "login    POST /auth/login on {server} (argon2id m=7168KiB t=5 p=1, 2 clients): {:.1} logins/s, p50 {:.1} ms, p99 {:.1} ms",
        LOGINS as f64 / total,
        lat[LOGINS / 2].as_secs_f64() * 1000.0,
        lat[LOGINS * 99 / 100].as_secs_f64() * 1000.0
    );
}

/// The hosts to compare: real Spin if a binary is found, and the local host.
fn hosts() -> Vec<(&'static str, Host)> {
    let mut hosts = Vec::new();
    if let Some(spin) = e2e::spin_binary() {
        hosts.push(("spin", Host::Spin(spin)));
    }
    hosts.push(("local", Host::Local(e2e::local_host_binary())));
    hosts
}

struct Running {
    server: &'static str,
    app: TestApp,
    token: String,
    key: String,
}

fn start(server: &'static str, host: Host) -> Running {
    let app = TestApp::spawn_with(Options {
        host: Some(host),
        ..Options::default()
    });
    let (_, token) = app.signed_up_user();
    let key = app
        .post(
            "/api/v1/auth/api-keys",
            &serde_json::json!({"name": "bench", "scopes": ["ticket:read"]}),
            Some(&token),
        )
        .json::<serde_json::Value>()
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    login_bench(&app, server);
    Running {
        server,
        app,
        token,
        key,
    }
}

fn main() {
    let running: Vec<Running> = hosts().into_iter().map(|(s, h)| start(s, h)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = &running[0];
        let (db, conn) = tokio_postgres::connect(first.app.db_url("user"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let signer = access::TokenSigner::parse(&first.app.signing_key).unwrap();
        let native = Arc::new(Native { verifier: access::TokenVerifier::parse(&signer.public_setting()).unwrap(), db });
        let native_addr = serve_native(native).await;

        println!("platform benchmark: {REQUESTS} requests per row after {WARMUP} warm-up, keep-alive HTTP/1.1, one machine");
        for r in &running {
            println!("{}: {:?}", r.server, r.app.host());
        }
        println!("{:<34} {:>6} {:>5} {:>10} {:>9} {:>9}", "route", "server", "conc", "req/s", "p50 ms", "p99 ms");
        for (name, path, auth) in [
            ("trivial  GET /user/health/live", "/api/v1/user/health/live", 0),
            ("pg read  GET /user/me", "/api/v1/user/me", 1),
            ("api key  GET /user/me", "/api/v1/user/me", 2),
            ("token    GET /auth/me", "/api/v1/auth/me", 1),
            ("trivial  GET /device/health/live", "/api/v1/device/health/live", 0),
        ] {
            for conc in [1, 16] {
                for r in &running {
                    let addr: std::net::SocketAddr = r.app.base.trim_start_matches("http://").parse().unwrap();
                    let tok = match auth {
                        1 => Some(r.token.as_str()),
                        2 => Some(r.key.as_str()),
                        _ => None,
                    };
                    let f = measure(addr, path, tok, conc).await;
                    println!("{name:<34} {:>6} {conc:>5} {:>10.0} {:>9.3} {:>9.3}", r.server, f.rps, f.p50, f.p99);
                }
                // The native handler does the token and read routes' work.
                if auth < 2 && !path.starts_with("/api/v1/auth") && !path.contains("device") {
                    let tok = (auth == 1).then_some(first.token.as_str());
                    let f = measure(native_addr, path, tok, conc).await;
                    println!("{name:<34} {:>6} {conc:>5} {:>10.0} {:>9.3} {:>9.3}", "native", f.rps, f.p50, f.p99);
                }
            }
        }
    });
}
