//! The APK catalogue's upload path on the whole stack (`cargo xtask bench`),
//! on real Spin when a `spin` binary is found: a signed 64 MiB APK (an
//! incompressible asset, stored) made with Debian's tools is uploaded in
//! 8 MiB chunks, then completed (read by the `apk` crate from the stored
//! chunks, hashed, catalogued). Prints the chunk upload rate and the
//! completion's time; asserts nothing about time.

use e2e::apks::{ApkTools, MANIFEST};
use e2e::{expect_json, TestApp};
use serde_json::json;
use std::time::Instant;

const A: &str = "/api/v1/app";
const MIB: usize = 64;

fn main() {
    let app = TestApp::spawn();
    println!("apps: the app runs on {:?}", app.host());
    let tools = ApkTools::new();
    let (_, token) = app.signed_up_user();
    let signed = tools.big_apk("bench", MANIFEST, &["arm64-v8a"], MIB);
    let bytes = std::fs::read(&signed).unwrap();
    for round in 0..3 {
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
        let sent = t.elapsed();
        let t = Instant::now();
        let done = app.post(
            &format!("{A}/uploads/{id}/complete"),
            &json!({}),
            Some(&token),
        );
        let completed = t.elapsed();
        // Each round after the first is a duplicate version: refused after the same reading.
        let want = if round == 0 { 201 } else { 409 };
        assert_eq!(done.status(), want);
        let mib = bytes.len() as f64 / f64::from(1 << 20);
        println!(
            "apps: upload of a {mib:.1} MiB APK in {} chunks: {:.2} s ({:.0} MiB/s); complete (read, hash, catalogue{}): {:.2} s",
            bytes.len().div_ceil(chunk),
            sent.as_secs_f64(),
            mib / sent.as_secs_f64(),
            if round == 0 { "" } else { ", refused as a duplicate" },
            completed.as_secs_f64()
        );
    }
}
