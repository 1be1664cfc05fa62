//! The APK catalogue end to end on the compiled `app` component: real APKs
//! made with Debian's Android tools are uploaded in chunks, and what the
//! catalogue says about them is what `aapt dump badging`, `apksigner` and
//! `sha256sum` say; damaged, hostile and duplicate uploads are refused and
//! leave no row and no chunk behind; other users do not see what is not
//! theirs; a signed link serves a file by Range, and only until it expires.

use e2e::apks::{run, upload, write, ApkTools, MANIFEST};
use e2e::{error_code, expect_json, roles, TestApp};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const A: &str = "/api/v1/app";

fn leftovers(app: &TestApp) -> (i64, i64) {
    (
        app.count("app", "SELECT count(*) FROM uploads WHERE status = 'open'"),
        app.count(
            "app",
            "SELECT count(*) FROM upload_chunks c JOIN uploads u ON u.id = c.upload_id WHERE u.status = 'open'",
        ),
    )
}

fn sha256sum(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))[..64].to_string()
}

#[test]
fn an_uploaded_apk_is_catalogued_as_its_file_says_and_bad_files_leave_nothing() {
    let app = TestApp::spawn();
    let tools = ApkTools::new();
    let (_, token) = app.signed_up_user();
    let (_, stranger) = app.signed_up_user();

    // An APK over 8 MiB (an incompressible asset), so it travels in three chunks.
    let signed = tools.big_apk("hello", MANIFEST, &["arm64-v8a"], 17);
    let bytes = std::fs::read(&signed).unwrap();
    assert!(bytes.len() > 16 << 20, "{}", bytes.len());
    let made = expect_json(
        upload(
            &app,
            &token,
            &bytes,
            json!({"category": "tools", "tags": ["demo"]}),
        ),
        201,
    );
    let (application, version) = (&made["application"], &made["version"]);

    // What the file says, as Debian's tools read it.
    let dump = run(Command::new("aapt").args(["dump", "badging"]).arg(&signed));
    assert!(
        dump.contains("package: name='com.example.hello' versionCode='42' versionName='1.2.3'"),
        "{dump}"
    );
    assert!(dump.contains("application-label:'Hello Cloud'"), "{dump}");
    let certs = run(Command::new("apksigner")
        .args(["verify", "--print-certs"])
        .arg(&signed));
    let digest = certs
        .lines()
        .find_map(|l| l.strip_prefix("Signer #1 certificate SHA-256 digest: "))
        .unwrap();
    assert_eq!(application["package_name"], "com.example.hello");
    assert_eq!(application["label"], "Hello Cloud");
    assert_eq!(application["visibility"], "private");
    assert_eq!(application["versions"], 1);
    assert_eq!(application["latest_version_id"], version["id"]);
    assert_eq!(
        (
            version["version_code"].as_i64(),
            version["version_name"].as_str(),
            version["min_sdk"].as_i64(),
            version["target_sdk"].as_i64()
        ),
        (Some(42), Some("1.2.3"), Some(21), Some(30))
    );
    assert_eq!(version["sha256"], sha256sum(&signed).as_str());
    assert_eq!(version["size_bytes"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(version["signing"]["certificate_sha256"], digest);
    assert_eq!(
        version["permissions"],
        json!(["android.permission.INTERNET", "android.permission.CAMERA"])
    );
    assert_eq!(version["abis"], json!(["arm64-v8a"]));
    assert_eq!(version["icon"], "res/drawable/icon.png");
    assert_eq!(leftovers(&app), (0, 0));

    // Read back; strangers see nothing of it.
    let id = application["id"].as_str().unwrap();
    let got = expect_json(
        app.get(&format!("{A}/applications/{id}"), Some(&token)),
        200,
    );
    assert_eq!(got["items"][0]["id"], version["id"]);
    let vid = version["id"].as_str().unwrap();
    expect_json(app.get(&format!("{A}/versions/{vid}"), Some(&token)), 200);
    let list = expect_json(
        app.get(&format!("{A}/applications?q=hello"), Some(&token)),
        200,
    );
    assert_eq!(list["total"], 1);
    for (query, total) in [
        ("tag=demo", 1),
        ("tag=other", 0),
        ("category=tools&tag=demo", 1),
    ] {
        let list = expect_json(
            app.get(&format!("{A}/applications?{query}"), Some(&token)),
            200,
        );
        assert_eq!(list["total"], total, "{query}");
    }
    for path in [
        format!("{A}/applications/{id}"),
        format!("{A}/versions/{vid}"),
    ] {
        assert_eq!(error_code(app.get(&path, Some(&stranger))).unwrap().0, 404);
    }
    assert_eq!(
        expect_json(app.get(&format!("{A}/applications"), Some(&stranger)), 200)["total"],
        0
    );

    // A signed link serves the file by Range to anyone who holds it (an
    // agent has no account); strangers get no link.
    let link = expect_json(
        app.get(&format!("{A}/versions/{vid}/download"), Some(&token)),
        200,
    );
    assert_eq!(link["sha256"], version["sha256"]);
    assert_eq!(
        error_code(app.get(&format!("{A}/versions/{vid}/download"), Some(&stranger)))
            .unwrap()
            .0,
        404
    );
    let path = link["path"].as_str().unwrap().to_string();
    let fetch = |path: &str, range: Option<&str>| {
        let mut r = reqwest::blocking::Client::new().get(format!("{}{path}", app.base));
        if let Some(range) = range {
            r = r.header("range", range);
        }
        r.send().unwrap()
    };
    let r = fetch(&path, Some("bytes=0-99"));
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 0-99/{}", bytes.len())
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &bytes[..100]);
    // The whole file, 8 MiB at a time, is the file.
    let mut whole = Vec::new();
    while whole.len() < bytes.len() {
        let r = fetch(&path, Some(&format!("bytes={}-", whole.len())));
        assert_eq!(r.status(), 206);
        let part = r.bytes().unwrap();
        assert!(part.len() <= 8 << 20);
        whole.extend_from_slice(&part);
    }
    assert_eq!(whole, bytes);
    assert_eq!(
        fetch(&path, None).status(),
        413,
        "too large to ask for whole"
    );
    assert_eq!(
        fetch(&path, Some(&format!("bytes={}-", bytes.len()))).status(),
        416
    );
    let forged = path.replace("sig=", "sig=00");
    assert_eq!(fetch(&forged, Some("bytes=0-9")).status(), 403);
    let later = path.replace("expires=", "expires=9");
    assert_eq!(
        fetch(&later, Some("bytes=0-9")).status(),
        403,
        "the expiry is signed"
    );

    // The same package version again: refused, nothing kept.
    let again = error_code(upload(&app, &token, &bytes, json!({}))).unwrap();
    assert_eq!(again.0, 409, "{again:?}");
    assert_eq!(leftovers(&app), (0, 0));
    // A higher version of it: the same application, now its latest.
    let v43 = tools.apk(
        "hello43",
        &MANIFEST.replace("versionCode=\"42\"", "versionCode=\"43\""),
        &[],
        Some([true, true, false]),
    );
    let made = expect_json(
        upload(&app, &token, &std::fs::read(&v43).unwrap(), json!({})),
        201,
    );
    assert_eq!(made["application"]["id"], application["id"]);
    assert_eq!(made["application"]["versions"], 2);
    assert_eq!(
        made["application"]["latest_version_id"],
        made["version"]["id"]
    );
    // A small file comes whole.
    let small = expect_json(
        app.get(
            &format!(
                "{A}/versions/{}/download",
                made["version"]["id"].as_str().unwrap()
            ),
            Some(&token),
        ),
        200,
    );
    let r = fetch(small["path"].as_str().unwrap(), None);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().to_vec(), std::fs::read(&v43).unwrap());

    // Files that are not APKs this platform takes: 422 with the reason, nothing kept.
    let cut = bytes[..bytes.len() - 1000].to_vec();
    let dir = tools.dir.join("plain");
    write(&dir.join("readme.txt"), b"no manifest");
    run(Command::new("aapt")
        .current_dir(&dir)
        .args(["add", "plain.zip", "readme.txt"]));
    let zeros = tools.dir.join("zeros");
    std::fs::create_dir_all(&zeros).unwrap();
    std::fs::File::create(zeros.join("zeros.bin"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let bomb = zeros.join("bomb.apk");
    std::fs::copy(&v43, &bomb).unwrap();
    run(Command::new("aapt")
        .current_dir(&zeros)
        .args(["add", "bomb.apk", "zeros.bin"]));
    for (what, file, says) in [
        ("text", b"just some text, not a zip".to_vec(), "not a zip"),
        ("truncated", cut, "truncated"),
        (
            "no manifest",
            std::fs::read(dir.join("plain.zip")).unwrap(),
            "AndroidManifest",
        ),
        ("zip bomb", std::fs::read(&bomb).unwrap(), "zip bomb"),
    ] {
        let r = upload(&app, &token, &file, json!({}));
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_apk")),
            "{what}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{what}: {body}"
        );
        assert_eq!(leftovers(&app), (0, 0), "{what} left something");
    }
    assert_eq!(app.count("app", "SELECT count(*) FROM app_versions"), 2);
}

#[test]
fn uploads_take_chunks_as_announced_and_tenant_apps_are_seen_in_the_tenant_only() {
    // Download links last two seconds here.
    let app = TestApp::spawn_with(e2e::Options {
        env: vec![("SPIN_VARIABLE_APK_URL_TTL_SECS".into(), "2".into())],
        ..e2e::Options::default()
    });
    let tools = ApkTools::new();
    let platform = app.platform_admin();
    let tenant = app.create_tenant(&platform.token, "apps-a");
    let other = app.create_tenant(&platform.token, "apps-b");
    let member = |t: &str| {
        app.create_user(
            &platform.token,
            json!({"tenant_id": t, "role_ids": [roles::USER]}),
        )
    };
    let (a1, a2, b1) = (member(&tenant), member(&tenant), member(&other));

    // Chunks must be what the upload announced; completing early is refused.
    let u = expect_json(
        app.post(&format!("{A}/uploads"), &json!({"size": 10}), a1.t()),
        201,
    );
    let id = u["id"].as_str().unwrap();
    let put = |body: Vec<u8>, token: Option<&str>| {
        app.call_raw(
            "PUT",
            &format!("{A}/uploads/{id}/chunks/0"),
            "application/octet-stream",
            body,
            token,
        )
        .status()
        .as_u16()
    };
    assert_eq!(put(vec![1; 9], a1.t()), 400);
    assert_eq!(put(vec![1; 10], b1.t()), 404, "another user's upload");
    let early =
        error_code(app.post(&format!("{A}/uploads/{id}/complete"), &json!({}), a1.t())).unwrap();
    assert_eq!(early.0, 409, "{early:?}");
    assert_eq!(put(vec![1; 10], a1.t()), 204);
    for size in [json!(0), json!(-1), json!((1u64 << 30) + 1), json!("10")] {
        let r =
            error_code(app.post(&format!("{A}/uploads"), &json!({"size": size}), a1.t())).unwrap();
        assert_eq!(r.0, 400, "{size}: {r:?}");
    }
    assert_eq!(
        app.delete(&format!("{A}/uploads/{id}"), a1.t()).status(),
        204
    );
    assert_eq!(leftovers(&app), (0, 0));

    // Shared with the tenant: its other member sees it, the other tenant does not.
    let apk = std::fs::read(tools.apk("shared", MANIFEST, &[], Some([true, true, false]))).unwrap();
    let made = expect_json(
        upload(&app, &a1.token, &apk, json!({"visibility": "tenant"})),
        201,
    );
    let aid = made["application"]["id"].as_str().unwrap();
    assert_eq!(made["application"]["visibility"], "tenant");
    expect_json(app.get(&format!("{A}/applications/{aid}"), a2.t()), 200);
    assert_eq!(
        error_code(app.get(&format!("{A}/applications/{aid}"), b1.t()))
            .unwrap()
            .0,
        404
    );
    let seen = expect_json(
        app.get(&format!("{A}/applications?visibility=tenant"), a2.t()),
        200,
    );
    assert_eq!(seen["total"], 1);
    // Its tenant's other member may download it, until the link expires.
    let vid = made["version"]["id"].as_str().unwrap();
    let link = expect_json(
        app.get(&format!("{A}/versions/{vid}/download"), a2.t()),
        200,
    );
    let url = format!("{}{}", app.base, link["path"].as_str().unwrap());
    let get = || reqwest::blocking::get(&url).unwrap().status().as_u16();
    assert_eq!(get(), 200);
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(get(), 410, "expired");
    // The same package may be private elsewhere: b1 has their own copy.
    expect_json(upload(&app, &b1.token, &apk, json!({})), 201);
    // The tenant already has that version.
    assert_eq!(
        error_code(upload(
            &app,
            &a2.token,
            &apk,
            json!({"visibility": "tenant"})
        ))
        .unwrap()
        .0,
        409
    );
    // Platform staff see every application.
    assert_eq!(
        expect_json(app.get(&format!("{A}/applications"), platform.t()), 200)["total"],
        2
    );
    assert_eq!(leftovers(&app), (0, 0));
    // An upload left open past its 24 hours is dropped by the job, chunks
    // and all; a fresh one stays.
    let stale = expect_json(
        app.post(&format!("{A}/uploads"), &json!({"size": 3}), a1.t()),
        201,
    );
    let fresh = expect_json(
        app.post(&format!("{A}/uploads"), &json!({"size": 3}), a1.t()),
        201,
    );
    for u in [&stale, &fresh] {
        let r = app.call_raw(
            "PUT",
            &format!("{A}/uploads/{}/chunks/0", u["id"].as_str().unwrap()),
            "application/octet-stream",
            b"abc".to_vec(),
            a1.t(),
        );
        assert_eq!(r.status(), 204);
    }
    app.db("app")
        .execute(
            "UPDATE uploads SET expires_at = expires_at - interval '25 hours' WHERE id = $1::text::uuid",
            &[&stale["id"].as_str().unwrap()],
        )
        .unwrap();
    let done = expect_json(
        app.post_as("scheduler", "/api/v1/app/internal/uploads/expire"),
        200,
    );
    assert_eq!(done["expired"], 1, "{done}");
    assert_eq!(
        leftovers(&app),
        (1, 1),
        "the fresh upload and its chunk stay"
    );
    let gone = app.call_raw(
        "PUT",
        &format!("{A}/uploads/{}/chunks/0", stale["id"].as_str().unwrap()),
        "application/octet-stream",
        b"abc".to_vec(),
        a1.t(),
    );
    assert_eq!(gone.status(), 404);
}

#[test]
fn what_goes_public_is_reviewed_with_a_trail_and_others_see_approved_versions_only() {
    let app = TestApp::spawn();
    let tools = ApkTools::new();
    let reviewer = app.platform_admin();
    let (_, owner) = app.signed_up_user();
    let (_, stranger) = app.signed_up_user();
    let v1 = std::fs::read(tools.apk("rv1", MANIFEST, &[], Some([true, true, false]))).unwrap();
    let stored = expect_json(upload(&app, &owner, &v1, json!({})), 201);
    let (application, version) = (
        stored["application"]["id"].as_str().unwrap().to_string(),
        stored["version"]["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(stored["version"]["review_status"], "none");
    let path = |what: &str| format!("{A}/versions/{version}/{what}");
    // Private until reviewed: the stranger sees nothing of it.
    assert_eq!(
        app.get(&format!("{A}/applications/{application}"), Some(&stranger))
            .status(),
        404
    );

    // Only the owner submits; only a reviewer decides, and a refusal says why.
    let r = error_code(app.post(&path("submit"), &json!({}), Some(&stranger))).unwrap();
    assert_eq!(r.0, 404, "{r:?}");
    let submitted = expect_json(
        app.post(
            &path("submit"),
            &json!({"comment": "for everyone"}),
            Some(&owner),
        ),
        200,
    );
    assert_eq!(submitted["review_status"], "pending");
    let again = error_code(app.post(&path("submit"), &json!({}), Some(&owner))).unwrap();
    assert_eq!(again.0, 409, "{again:?}");
    let r = error_code(app.post(
        &path("review"),
        &json!({"decision": "approve"}),
        Some(&owner),
    ))
    .unwrap();
    assert_eq!(r.0, 403, "{r:?}");
    // A tenant's holder of app:manage does not decide for every tenant.
    let tenant_manager = app.mint_token_in(
        uuid::Uuid::new_v4(),
        Some(uuid::Uuid::new_v4()),
        &["app:read", "app:manage"],
    );
    for r in [
        app.post(
            &path("review"),
            &json!({"decision": "approve"}),
            Some(&tenant_manager),
        ),
        app.get(&format!("{A}/reviews"), Some(&tenant_manager)),
    ] {
        let r = error_code(r).unwrap();
        assert_eq!(r.0, 403, "{r:?}");
    }
    let queue = expect_json(app.get(&format!("{A}/reviews"), reviewer.t()), 200);
    assert_eq!(queue["total"], 1, "{queue}");
    assert_eq!(queue["items"][0]["version_id"], version.as_str());
    assert_eq!(
        queue["items"][0]["permissions"][0],
        "android.permission.INTERNET"
    );
    for (body, why) in [
        (
            json!({"decision": "request_changes"}),
            "a comment is required",
        ),
        (json!({"decision": "maybe", "comment": "x"}), "decision"),
        (json!({"decision": "reject", "comment": ""}), "comment"),
    ] {
        let r = error_code(app.post(&path("review"), &body, reviewer.t())).unwrap();
        assert_eq!(r.0, 400, "{why}: {r:?}");
    }
    let changes = expect_json(
        app.post(
            &path("review"),
            &json!({"decision": "request_changes", "comment": "drop the CAMERA permission"}),
            reviewer.t(),
        ),
        200,
    );
    assert_eq!(changes["review_status"], "changes_requested");
    assert_eq!(changes["review_comment"], "drop the CAMERA permission");
    assert_eq!(
        app.get(&format!("{A}/applications/{application}"), Some(&stranger))
            .status(),
        404
    );
    expect_json(app.post(&path("submit"), &json!({}), Some(&owner)), 200);
    let approved = expect_json(
        app.post(
            &path("review"),
            &json!({"decision": "approve"}),
            reviewer.t(),
        ),
        200,
    );
    assert_eq!(approved["review_status"], "approved");
    let r = error_code(app.post(
        &path("review"),
        &json!({"decision": "reject", "comment": "late"}),
        reviewer.t(),
    ))
    .unwrap();
    assert_eq!(r.0, 409, "only a pending version is reviewed: {r:?}");

    // Public now: in everyone's catalogue, with the approved version only.
    let v2 = std::fs::read(tools.apk(
        "rv2",
        &MANIFEST.replace("versionCode=\"42\"", "versionCode=\"43\""),
        &[],
        Some([true, true, false]),
    ))
    .unwrap();
    let newer = expect_json(upload(&app, &owner, &v2, json!({})), 201);
    let version2 = newer["version"]["id"].as_str().unwrap().to_string();
    let public = expect_json(
        app.get(
            &format!("{A}/applications?visibility=public"),
            Some(&stranger),
        ),
        200,
    );
    assert_eq!(public["total"], 1, "{public}");
    assert_eq!(public["items"][0]["public_version_id"], version.as_str());
    let seen = expect_json(
        app.get(&format!("{A}/applications/{application}"), Some(&stranger)),
        200,
    );
    let versions: Vec<&str> = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        vec![version.as_str()],
        "the unreviewed version stays the owner's"
    );
    let mine = expect_json(
        app.get(&format!("{A}/applications/{application}"), Some(&owner)),
        200,
    );
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.get(&format!("{A}/versions/{version2}"), Some(&stranger))
            .status(),
        404
    );
    let link = expect_json(app.get(&path("download"), Some(&stranger)), 200);
    assert!(link["path"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{A}/files/{version}")));
    // The stranger cannot withdraw it; a rejected version says why.
    let r = error_code(app.post(&path("withdraw"), &json!({}), Some(&stranger))).unwrap();
    assert_eq!(r.0, 403, "{r:?}");
    let p2 = format!("{A}/versions/{version2}");
    expect_json(
        app.post(&format!("{p2}/submit"), &json!({}), Some(&owner)),
        200,
    );
    let rejected = expect_json(
        app.post(
            &format!("{p2}/review"),
            &json!({"decision": "reject", "comment": "crashes at start"}),
            reviewer.t(),
        ),
        200,
    );
    assert_eq!(rejected["review_status"], "rejected");

    // Withdrawn: out of the public catalogue, no more links; the trail has it all.
    let withdrawn = expect_json(
        app.post(
            &path("withdraw"),
            &json!({"reason": "a security fix is coming"}),
            Some(&owner),
        ),
        200,
    );
    assert_eq!(withdrawn["status"], "withdrawn");
    assert!(withdrawn["withdrawn_at"].is_string());
    assert_eq!(
        app.get(&format!("{A}/applications/{application}"), Some(&stranger))
            .status(),
        404
    );
    let r = error_code(app.get(&path("download"), Some(&owner))).unwrap();
    assert_eq!(r.0, 409, "{r:?}");
    let r = error_code(app.post(&path("withdraw"), &json!({}), Some(&owner))).unwrap();
    assert_eq!(r.0, 409, "{r:?}");
    let trail = expect_json(app.get(&path("reviews"), Some(&owner)), 200);
    let steps: Vec<(&str, Option<&str>)> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["action"].as_str().unwrap(), s["comment"].as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("submitted", Some("for everyone")),
            ("changes_requested", Some("drop the CAMERA permission")),
            ("submitted", None),
            ("approved", None),
            ("withdrawn", Some("a security fix is coming")),
        ]
    );
    // The owner heard of each decision, in-app, with the reviewer's words.
    let heard = app
        .eventually(std::time::Duration::from_secs(30), || {
            let mut kinds: Vec<(String, String)> = app
                .notifications(&owner)
                .iter()
                .filter(|n| n["kind"].as_str().unwrap().starts_with("app."))
                .map(|n| {
                    (
                        n["kind"].as_str().unwrap().to_string(),
                        n["body"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            kinds.sort();
            (kinds.len() == 3).then_some(kinds)
        })
        .expect("three app notices for the owner");
    assert_eq!(heard[0].0, "app.approved");
    assert_eq!(heard[1].0, "app.changes_requested");
    assert!(
        heard[1].1.contains("drop the CAMERA permission"),
        "{heard:?}"
    );
    assert_eq!(heard[2].0, "app.rejected");
    assert!(heard[2].1.contains("crashes at start"), "{heard:?}");
    let events = |t: &str| {
        app.count(
            "app",
            &format!("SELECT count(*) FROM outbox WHERE event_type = '{t}'"),
        )
    };
    assert_eq!(
        (
            events("app.uploaded"),
            events("app.review_requested"),
            events("app.changes_requested"),
            events("app.approved"),
            events("app.rejected"),
            events("app.withdrawn")
        ),
        (2, 3, 1, 1, 1, 1)
    );
}
