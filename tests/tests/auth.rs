//! The auth flow end to end: rotating refresh tokens with reuse detection,
//! logout, lockout that reveals nothing, password change, key rotation.

use e2e::{error_code, expect_json, Options, TestApp};
use serde_json::{json, Value};

fn login(app: &TestApp, email: &str, password: &str) -> Value {
    let r = app.login(email, password);
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

fn refresh(app: &TestApp, token: &str) -> reqwest::blocking::Response {
    app.post(
        "/api/v1/auth/refresh",
        &json!({"refresh_token": token}),
        None,
    )
}

#[test]
fn refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_family() {
    let app = TestApp::spawn();
    app.register("rt@example.com", "correct horse battery", "R");
    let s1 = login(&app, "rt@example.com", "correct horse battery");
    let r1 = s1["refresh_token"].as_str().unwrap();
    let s2: Value = refresh(&app, r1).json().unwrap();
    let r2 = s2["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert_eq!(
        app.get("/api/v1/auth/me", s2["access_token"].as_str())
            .status(),
        200
    );

    // r1 again: reuse. Refused, and r2 (same family) dies with it.
    let (status, code) = error_code(refresh(&app, r1)).unwrap();
    assert_eq!((status, code.as_str()), (401, "invalid_refresh_token"));
    assert_eq!(error_code(refresh(&app, r2)).unwrap().0, 401);
    // Another session of the same user is untouched.
    let other = login(&app, "rt@example.com", "correct horse battery");
    assert_eq!(
        refresh(&app, other["refresh_token"].as_str().unwrap()).status(),
        200
    );
    assert_eq!(error_code(refresh(&app, "not-a-token")).unwrap().0, 401);
}

#[test]
fn logout_ends_one_session_and_logout_all_ends_every_session() {
    let app = TestApp::spawn();
    app.register("lo@example.com", "correct horse battery", "L");
    let a = login(&app, "lo@example.com", "correct horse battery");
    let b = login(&app, "lo@example.com", "correct horse battery");
    let c = login(&app, "lo@example.com", "correct horse battery");
    let rt = |s: &Value| s["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.post(
            "/api/v1/auth/logout",
            &json!({"refresh_token": rt(&a)}),
            None
        )
        .status(),
        204
    );
    assert_eq!(refresh(&app, &rt(&a)).status(), 401);
    assert_eq!(refresh(&app, &rt(&b)).status(), 200);
    let token = c["access_token"].as_str().unwrap();
    assert_eq!(
        app.post("/api/v1/auth/logout-all", &json!({}), Some(token))
            .status(),
        204
    );
    assert_eq!(refresh(&app, &rt(&c)).status(), 401);
    assert_eq!(
        error_code(app.post("/api/v1/auth/logout-all", &json!({}), None))
            .unwrap()
            .0,
        401
    );
}

#[test]
fn repeated_failures_lock_an_email_the_same_way_whether_or_not_it_is_registered() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SPIN_VARIABLE_LOGIN_MAX_FAILURES".into(), "3".into()),
            ("SPIN_VARIABLE_LOGIN_LOCKOUT_SECS".into(), "3".into()),
        ],
        ..Options::default()
    });
    app.register("lk@example.com", "correct horse battery", "K");
    for email in ["lk@example.com", "ghost@example.com"] {
        for _ in 0..3 {
            assert_eq!(
                error_code(app.login(email, "wrong password")).unwrap(),
                (401, "bad_credentials".into())
            );
        }
        let (status, code) = error_code(app.login(email, "correct horse battery")).unwrap();
        assert_eq!((status, code.as_str()), (429, "locked"), "{email}");
    }
    std::thread::sleep(std::time::Duration::from_millis(3200));
    assert_eq!(
        app.login("lk@example.com", "correct horse battery")
            .status(),
        200,
        "the lock expires"
    );
}

#[test]
fn changing_the_password_needs_the_current_one_and_ends_every_session() {
    let app = TestApp::spawn();
    app.register("pw@example.com", "correct horse battery", "P");
    let s = login(&app, "pw@example.com", "correct horse battery");
    let token = s["access_token"].as_str().unwrap();
    let wrong = app.post(
        "/api/v1/auth/password",
        &json!({"current_password": "nope nope", "new_password": "new horse battery"}),
        Some(token),
    );
    assert_eq!(error_code(wrong).unwrap().0, 401);
    let short = app.post(
        "/api/v1/auth/password",
        &json!({"current_password": "correct horse battery", "new_password": "short"}),
        Some(token),
    );
    assert_eq!(error_code(short).unwrap().0, 400);
    let ok = app.post(
        "/api/v1/auth/password",
        &json!({"current_password": "correct horse battery", "new_password": "new horse battery"}),
        Some(token),
    );
    assert_eq!(ok.status(), 204);
    assert_eq!(
        refresh(&app, s["refresh_token"].as_str().unwrap()).status(),
        401
    );
    assert_eq!(
        app.login("pw@example.com", "correct horse battery")
            .status(),
        401
    );
    assert_eq!(
        app.login("pw@example.com", "new horse battery").status(),
        200
    );
}

#[test]
fn signing_keys_rotate_without_logging_anyone_out() {
    let mut app = TestApp::spawn();
    app.register("kr@example.com", "correct horse battery", "K");
    let old = login(&app, "kr@example.com", "correct horse battery");
    let old_token = old["access_token"].as_str().unwrap().to_string();

    // Publish the new public key next to the old one and sign with the new key.
    let old_signer = access::TokenSigner::parse(&app.signing_key).unwrap();
    let new_key = access::signing_key_setting("test-2", [42u8; 32]);
    let new_signer = access::TokenSigner::parse(&new_key).unwrap();
    app.stop();
    app.options_mut().env = vec![
        ("SPIN_VARIABLE_JWT_SIGNING_KEY".into(), new_key.clone()),
        (
            "SPIN_VARIABLE_JWT_PUBLIC_KEYS".into(),
            format!(
                "{},{}",
                old_signer.public_setting(),
                new_signer.public_setting()
            ),
        ),
    ];
    app.start();
    assert_eq!(
        app.get("/api/v1/user/me", Some(&old_token)).status(),
        200,
        "old tokens still verify"
    );
    let new = login(&app, "kr@example.com", "correct horse battery");
    let new_token = new["access_token"].as_str().unwrap();
    assert_ne!(
        new_token.split('.').next(),
        old_token.split('.').next(),
        "a different key id signs now"
    );
    assert_eq!(app.get("/api/v1/user/me", Some(new_token)).status(), 200);
    // The old refresh token keeps working across the rotation.
    assert_eq!(
        refresh(&app, old["refresh_token"].as_str().unwrap()).status(),
        200
    );
}

#[test]
fn api_keys_work_on_every_component_within_their_scopes_and_stop_when_revoked() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    let t = Some(token.as_str());
    // Scopes beyond the user's own permissions are refused.
    let r = app.post(
        "/api/v1/auth/api-keys",
        &json!({"name": "x", "scopes": ["tenant:create"]}),
        t,
    );
    assert_eq!(error_code(r).unwrap().0, 400);
    let created = expect_json(
        app.post(
            "/api/v1/auth/api-keys",
            &json!({"name": "ci", "scopes": ["ticket:read", "ticket:create", "notification:read"], "expires_in_days": 30}),
            t,
        ),
        201,
    );
    let key = created["key"].as_str().unwrap().to_string();
    let prefix = created["prefix"].as_str().unwrap();
    assert!(key.starts_with(prefix) && prefix.starts_with("cpk_"));
    // Shown once: listing shows the prefix, never the key or its hash.
    let list = expect_json(app.get("/api/v1/auth/api-keys", t), 200);
    assert_eq!(list["items"][0]["prefix"], prefix);
    assert!(!list.to_string().contains(&key[13..]));
    let stored: String = app
        .db("auth")
        .query_one("SELECT key_hash FROM api_keys", &[])
        .unwrap()
        .get(0);
    assert_ne!(stored, key);

    // The key works on user, notification and auth, as the user, within its scopes.
    let k = Some(key.as_str());
    assert_eq!(
        expect_json(app.get("/api/v1/user/me", k), 200)["id"],
        user.as_str()
    );
    expect_json(
        app.post(
            "/api/v1/user/tickets",
            &json!({"subject": "via key", "body": "hello", "category": "other"}),
            k,
        ),
        201,
    );
    let me = expect_json(app.get("/api/v1/auth/me", k), 200);
    assert_eq!(me["credential"]["kind"], "api_key");
    let via_header = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/notification/notifications", app.base))
        .header("x-api-key", &key)
        .send()
        .unwrap();
    assert_eq!(via_header.status(), 200);
    // The user may list their keys, but this key's scopes do not include it.
    let (status, code) = error_code(app.get("/api/v1/auth/api-keys", k)).unwrap();
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert_eq!(
        app.get("/api/v1/user/me/quota", k).status(),
        200,
        "authenticated-only routes take any key"
    );
    let used: i64 = app
        .db("auth")
        .query_one("SELECT usage_count FROM api_keys", &[])
        .unwrap()
        .get(0);
    assert!(used >= 4, "{used}");

    // Creation and revocation reach the audit log through auth's events.
    app.eventually(std::time::Duration::from_secs(30), || {
        let log = expect_json(
            app.get("/api/v1/user/audit-logs?action=api_key.", admin.t()),
            200,
        );
        (log["total"] == 1).then_some(())
    })
    .expect("api_key.create audited");

    let id = created["id"].as_str().unwrap();
    let revoked = expect_json(
        app.post(&format!("/api/v1/auth/api-keys/{id}/revoke"), &json!({}), t),
        200,
    );
    assert_eq!(revoked["status"], "revoked");
    for path in [
        "/api/v1/user/me",
        "/api/v1/auth/me",
        "/api/v1/notification/notifications",
    ] {
        let (status, code) = error_code(app.get(path, k)).unwrap();
        assert_eq!((status, code.as_str()), (401, "unauthenticated"), "{path}");
    }
    app.eventually(std::time::Duration::from_secs(30), || {
        let log = expect_json(
            app.get("/api/v1/user/audit-logs?action=api_key.", admin.t()),
            200,
        );
        (log["total"] == 2).then_some(())
    })
    .expect("api_key.revoke audited");
    // Malformed and expired keys are refused the same way.
    assert_eq!(
        error_code(app.get("/api/v1/user/me", Some("cpk_nonsense")))
            .unwrap()
            .0,
        401
    );
    let other = expect_json(
        app.post(
            "/api/v1/auth/api-keys",
            &json!({"name": "old", "scopes": ["ticket:read"]}),
            t,
        ),
        201,
    );
    app.db("auth")
        .execute("UPDATE api_keys SET expires_at = now() AT TIME ZONE 'UTC' - interval '1 minute' WHERE id = $1::text::uuid", &[&other["id"].as_str().unwrap()])
        .unwrap();
    assert_eq!(
        error_code(app.get("/api/v1/user/tickets", other["key"].as_str()))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        expect_json(app.get("/api/v1/auth/api-keys", t), 200)["items"][0]["status"],
        "expired"
    );
}

#[test]
fn a_password_reset_token_sets_a_new_password_once_and_ends_every_session() {
    let app = TestApp::spawn();
    app.register("reset@example.com", "correct horse battery", "R");
    let s = login(&app, "reset@example.com", "correct horse battery");
    // Locked out by failures: the reset lifts the lock too.
    for _ in 0..5 {
        app.login("reset@example.com", "wrong password");
    }
    assert_eq!(
        error_code(app.login("reset@example.com", "correct horse battery"))
            .unwrap()
            .0,
        429
    );
    let ask = |email: &str| {
        expect_json(
            app.post(
                "/api/v1/auth/password-reset/request",
                &json!({"email": email}),
                None,
            ),
            202,
        )
    };
    assert_eq!(
        ask("reset@example.com"),
        ask("nobody@example.com"),
        "the answer reveals nothing"
    );
    // The token reaches the user by email only: read it where the mail goes.
    let token = app
        .reset_token_from_mail("reset@example.com")
        .expect("the reset token is queued for email");
    assert_eq!(
        app.count(
            "auth",
            "SELECT count(*) FROM outbox WHERE event_type = 'credential.reset_requested'"
        ),
        1,
        "nothing is sent for an unknown email"
    );
    let confirm = |token: &str, pw: &str| {
        app.post(
            "/api/v1/auth/password-reset/confirm",
            &json!({"token": token, "new_password": pw}),
            None,
        )
    };
    assert_eq!(
        error_code(confirm("not-the-token", "brand new password")).unwrap(),
        (400, "invalid_reset_token".into())
    );
    assert_eq!(error_code(confirm(&token, "short")).unwrap().0, 400);
    assert_eq!(confirm(&token, "brand new password").status(), 204);
    assert_eq!(
        error_code(confirm(&token, "another new password"))
            .unwrap()
            .0,
        400,
        "single use"
    );
    assert_eq!(
        refresh(&app, s["refresh_token"].as_str().unwrap()).status(),
        401
    );
    assert_eq!(
        app.login("reset@example.com", "correct horse battery")
            .status(),
        401
    );
    assert_eq!(
        app.login("reset@example.com", "brand new password")
            .status(),
        200
    );
}

#[test]
fn locking_deleting_and_suspending_end_sessions_and_keys() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let a = admin.t();
    let (user, token) = app.signed_up_user();
    let email: String = expect_json(app.get("/api/v1/user/me", Some(&token)), 200)["email"]
        .as_str()
        .unwrap()
        .into();
    let session = login(&app, &email, e2e::PASSWORD);
    let key = expect_json(
        app.post(
            "/api/v1/auth/api-keys",
            &json!({"name": "k", "scopes": ["ticket:read"]}),
            Some(&token),
        ),
        201,
    );
    let key = key["key"].as_str().unwrap().to_string();

    let locked = expect_json(
        app.post(&format!("/api/v1/user/users/{user}/lock"), &json!({}), a),
        200,
    );
    assert_eq!(locked["status"], "locked");
    app.eventually(std::time::Duration::from_secs(30), || {
        (refresh(&app, session["refresh_token"].as_str().unwrap()).status() == 401).then_some(())
    })
    .expect("the session ends");
    assert_eq!(
        error_code(app.login(&email, e2e::PASSWORD)).unwrap(),
        (403, "inactive".into())
    );
    assert_eq!(
        error_code(app.get("/api/v1/user/me", Some(&key)))
            .unwrap()
            .0,
        401
    );
    // Nobody locks themselves out.
    assert_eq!(
        error_code(app.post(
            &format!("/api/v1/user/users/{}/lock", admin.id),
            &json!({}),
            a
        ))
        .unwrap()
        .0,
        409
    );

    expect_json(
        app.post(&format!("/api/v1/user/users/{user}/unlock"), &json!({}), a),
        200,
    );
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.login(&email, e2e::PASSWORD).status() == 200).then_some(())
    })
    .expect("login works again");
    assert_eq!(
        error_code(app.get("/api/v1/user/me", Some(&key)))
            .unwrap()
            .0,
        401,
        "revoked keys stay revoked"
    );

    // Deleted: credentials go, the email can register again as a new user.
    assert_eq!(
        app.delete(&format!("/api/v1/user/users/{user}"), a)
            .status(),
        204
    );
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.login(&email, e2e::PASSWORD).status() == 401).then_some(())
    })
    .expect("credentials dropped");
    let again = expect_json(app.register(&email, "another password", "Again"), 201);
    assert_ne!(again["id"], user.as_str());

    // A suspended tenant's members cannot sign in until it resumes.
    let tenant = app.create_tenant(&admin.token, "paused");
    let member = app.create_user(&admin.token, json!({"tenant_id": tenant}));
    expect_json(
        app.patch(
            &format!("/api/v1/user/tenants/{tenant}"),
            &json!({"status": "suspended"}),
            a,
        ),
        200,
    );
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.login(&member.email, e2e::PASSWORD).status() == 403).then_some(())
    })
    .expect("suspended");
    expect_json(
        app.patch(
            &format!("/api/v1/user/tenants/{tenant}"),
            &json!({"status": "active"}),
            a,
        ),
        200,
    );
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.login(&member.email, e2e::PASSWORD).status() == 200).then_some(())
    })
    .expect("resumed");
}

#[test]
fn an_administrator_sets_a_password_and_the_user_is_told() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let member = app.create_user(&admin.token, json!({}));
    let r = app.put(
        &format!("/api/v1/user/users/{}/password", member.id),
        &json!({"password": "set by admin"}),
        admin.t(),
    );
    assert_eq!(r.status(), 204);
    assert_eq!(app.login(&member.email, "set by admin").status(), 200);
    assert_eq!(app.login(&member.email, e2e::PASSWORD).status(), 401);
    app.eventually(std::time::Duration::from_secs(30), || {
        let page = expect_json(
            app.get(
                "/api/v1/notification/notifications",
                Some(&app.token(&member.email, "set by admin")),
            ),
            200,
        );
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "credential.password_changed")
            .then_some(())
    })
    .expect("a security notice");
    let log = expect_json(
        app.get(
            &format!("/api/v1/user/audit-logs?resource_id={}", member.id),
            admin.t(),
        ),
        200,
    );
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"user.password") && actions.contains(&"user.create"),
        "{actions:?}"
    );
}

#[test]
fn a_tenant_whose_contract_ended_is_suspended_by_its_job() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let r = app.post(
        "/api/v1/user/tenants",
        &json!({"code": "ended", "name": "Ended", "expires_at": "2020-01-01T00:00:00Z"}),
        admin.t(),
    );
    let tenant = expect_json(r, 201)["id"].as_str().unwrap().to_string();
    let member = app.create_user(&admin.token, json!({"tenant_id": tenant}));
    let done = expect_json(
        app.post_as("scheduler", "/api/v1/user/internal/tenants/expire"),
        200,
    );
    assert_eq!(done["suspended"], json!([tenant]));
    assert_eq!(
        expect_json(
            app.post_as("scheduler", "/api/v1/user/internal/tenants/expire"),
            200
        )["suspended"],
        json!([])
    );
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.login(&member.email, e2e::PASSWORD).status() == 403).then_some(())
    })
    .expect("members cannot sign in");
    let t = expect_json(
        app.get(&format!("/api/v1/user/tenants/{tenant}"), admin.t()),
        200,
    );
    assert_eq!(t["status"], "suspended");
}

#[test]
fn a_password_hashed_with_the_earlier_parameters_still_logs_in_and_is_rehashed_at_that_login() {
    let app = TestApp::spawn();
    let email = "rehash@example.com";
    let r = app.register(email, e2e::PASSWORD, "Rehash");
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let uid = uuid::Uuid::parse_str(&id).unwrap();
    // As the earlier release stored it: Argon2id at 19 MiB, 2 passes.
    let old = "$argon2id$v=19$m=19456,t=2,p=1$QUzMMsxamgDG2MCLyqDuZA$OLzfQItyLEH1dIqbz6HTN7mNUMxxt7iBPCjcxmH6IQ0";
    let auth = || app.db("auth");
    let version = |db: &mut postgres::Client| -> (String, i64) {
        let r = db
            .query_one(
                "SELECT password_hash, version FROM credentials WHERE user_id = $1",
                &[&uid],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    auth()
        .execute(
            "UPDATE credentials SET password_hash = $2 WHERE user_id = $1",
            &[&uid, &old],
        )
        .unwrap();
    let (_, before) = version(&mut auth());
    // A wrong password neither logs in nor touches the hash.
    let r = app.post(
        "/api/v1/auth/login",
        &json!({"email": email, "password": "wrong horse battery"}),
        None,
    );
    assert_eq!(r.status(), 401);
    assert_eq!(version(&mut auth()).0, old);
    let v = login(&app, email, e2e::PASSWORD);
    assert!(v["access_token"].is_string(), "{v}");
    let (hash, after) = version(&mut auth());
    assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
    // The same password, so no new credential version (sessions and keys stay).
    assert_eq!(after, before);
    let v = login(&app, email, e2e::PASSWORD);
    assert!(v["access_token"].is_string(), "{v}");
    assert_eq!(
        version(&mut auth()).0,
        hash,
        "a current hash stays as it is"
    );
}
