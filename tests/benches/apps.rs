//! The APK catalogue's file path on the whole stack (`cargo xtask bench`),
//! on real Spin when a `spin` binary is found: a signed 300 MiB APK (an
//! incompressible asset, stored) made with Debian's tools is uploaded in
//! 8 MiB chunks, completed (read by the `apk` crate from the stored chunks,
//! hashed, catalogued), and downloaded by its signed link in 8 MiB ranges,
//! as agents fetch it. Prints each rate next to a plain copy of the same
//! file on the same disk; the largest linear memory of an `app` instance
//! serving a chunk, the completion or a range (what one request holds,
//! logged by `app`); and the peak resident memory of Spin's process before
//! and after. Asserts nothing about time.

use e2e::apks::{ApkTools, MANIFEST};
use e2e::{expect_json, TestApp};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::Instant;

const A: &str = "/api/v1/app";
/// The APK's size in MiB (`APPS_BENCH_MIB`, default 300).
fn mib_of_file() -> usize {
    std::env::var("APPS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// The process and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// A `/proc/<pid>/status` field in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Peak resident memory (VmHWM) of the largest process of the app's tree.
fn peak_mib(app: &TestApp) -> f64 {
    app.pid()
        .map(tree)
        .unwrap_or_default()
        .into_iter()
        .map(|p| status_mib(p, "VmHWM:"))
        .fold(0.0, f64::max)
}

fn main() {
    let app = TestApp::spawn();
    println!("apps: the app runs on {:?}", app.host());
    let tools = ApkTools::new();
    let (_, token) = app.signed_up_user();
    let signed = tools.big_apk("bench", MANIFEST, &["arm64-v8a"], mib_of_file());
    let bytes = std::fs::read(&signed).unwrap();
    let mib = bytes.len() as f64 / f64::from(1 << 20);

    // The baseline: the same file copied on the same disk, synced.
    let copy = tools.dir.join("copy.apk");
    let t = Instant::now();
    std::fs::copy(&signed, &copy).unwrap();
    std::fs::File::open(&copy).unwrap().sync_all().unwrap();
    let copied = t.elapsed().as_secs_f64();
    println!(
        "apps: plain copy of the {mib:.1} MiB file on the same disk: {copied:.2} s ({:.0} MiB/s)",
        mib / copied
    );

    let before = peak_mib(&app);
    let t = Instant::now();
    let u = expect_json(
        app.post(
            &format!("{A}/uploads"),
            &json!({"size": bytes.len()}),
            Some(&token),
        ),
        201,
    );
    let id = u["id"].as_str().unwrap();
    let chunk = u["chunk_bytes"].as_u64().unwrap() as usize;
    for (seq, part) in bytes.chunks(chunk).enumerate() {
        let r = app.call_raw(
            "PUT",
            &format!("{A}/uploads/{id}/chunks/{seq}"),
            "application/octet-stream",
            part.to_vec(),
            Some(&token),
        );
        assert_eq!(r.status(), 204);
    }
    let sent = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let done = expect_json(
        app.post(
            &format!("{A}/uploads/{id}/complete"),
            &json!({}),
            Some(&token),
        ),
        201,
    );
    let completed = t.elapsed().as_secs_f64();
    println!(
        "apps: upload of the {mib:.1} MiB APK in {} chunks: {sent:.2} s ({:.0} MiB/s); complete (read, hash, catalogue): {completed:.2} s ({:.0} MiB/s read)",
        bytes.len().div_ceil(chunk),
        mib / sent,
        mib / completed
    );
    let uploaded = peak_mib(&app);

    // Downloaded as an agent does: by the signed link, 8 MiB a request.
    let version = done["version"]["id"].as_str().unwrap();
    let link = expect_json(
        app.get(&format!("{A}/versions/{version}/download"), Some(&token)),
        200,
    );
    let url = format!("{}{}", app.base, link["path"].as_str().unwrap());
    let client = reqwest::blocking::Client::new();
    let t = Instant::now();
    let (mut pos, mut hash, mut requests) = (0usize, Sha256::new(), 0);
    while pos < bytes.len() {
        let r = client
            .get(&url)
            .header("range", format!("bytes={pos}-{}", pos + (8 << 20) - 1))
            .send()
            .unwrap();
        assert_eq!(r.status(), 206);
        let body = r.bytes().unwrap();
        hash.update(&body);
        pos += body.len();
        requests += 1;
    }
    let fetched = t.elapsed().as_secs_f64();
    assert_eq!(
        hex::encode(hash.finalize()),
        done["version"]["sha256"].as_str().unwrap()
    );
    println!(
        "apps: download of the {mib:.1} MiB APK by its signed link in {requests} ranges: {fetched:.2} s ({:.0} MiB/s)",
        mib / fetched
    );
    let downloaded = peak_mib(&app);
    // What one instance held: `app` logs its linear memory (which only
    // grows) after each chunk, completion and file answer.
    let log = app.log_text();
    for route in ["chunk", "complete", "file"] {
        let most = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["msg"] == "linear memory" && v["route"] == route)
            .filter_map(|v| v["bytes"].as_u64())
            .max()
            .unwrap_or(0);
        println!(
            "apps: largest linear memory of an `app` instance serving a {route} request: {:.1} MiB",
            most as f64 / f64::from(1 << 20)
        );
    }
    println!(
        "apps: peak resident memory of the app's largest process: {before:.0} MiB before, {uploaded:.0} MiB after the upload and completion, {downloaded:.0} MiB after the download (the file is {mib:.0} MiB)"
    );
}
