//! The auth flow end to end: rotating refresh tokens with reuse detection,
//! logout, lockout that reveals nothing, password change, key rotation.

use e2e::{error_code, Options, TestApp};
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
