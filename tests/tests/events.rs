//! The event backbone end to end (docs/events.md): nothing lost while a
//! consumer is down or the host is killed, nothing applied twice or out of
//! order, poison events parked without blocking the rest, pruned feeds resynced.

use e2e::{expect_json, Options, TestApp};
use events::catalogue::{USER_CREATED, USER_UPDATED};
use events::{Envelope, EventType};
use serde_json::{json, Value};
use std::time::Duration;

fn user_event(kind: &EventType, user: uuid::Uuid, version: i64, email: &str) -> Envelope {
    e2e::identity_event(kind, user, version, email)
}

/// Publishes a `user` event signed as the producer signs it.
fn send(app: &TestApp, event: &Envelope) {
    app.publish_event(event);
}

fn change_profile(app: &TestApp, token: &str, n: usize, threads: usize) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut ok = 0;
                    for i in (t..n).step_by(threads) {
                        let r = app.patch(
                            "/api/v1/user/me",
                            &json!({"metadata": {"i": i}}),
                            Some(token),
                        );
                        if r.status() == 200 {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[test]
fn a_consumer_that_was_down_receives_all_1000_changes_once_after_it_starts() {
    let mut app = TestApp::spawn_with(Options {
        disable_triggers: vec!["redis", "cron"],
        ..Options::default()
    });
    let (id, token) = app.signed_up_user();
    assert_eq!(change_profile(&app, &token, 1000, 4), 1000);
    assert_eq!(
        app.count("auth", "SELECT count(*) FROM processed_events"),
        0,
        "the consumer was down"
    );

    app.stop();
    app.options_mut().disable_triggers.clear();
    app.start();
    let uid = uuid::Uuid::parse_str(&id).unwrap();
    let mut auth = app.db("auth");
    app.eventually(Duration::from_secs(60), || {
        let v: Option<i64> = auth
            .query_opt("SELECT version FROM identities WHERE user_id = $1", &[&uid])
            .ok()??
            .get(0);
        (v == Some(1001)).then_some(())
    })
    .expect("the identity copy reaches the source's version");
    assert_eq!(
        app.count("auth", "SELECT count(*) FROM processed_events"),
        1001,
        "1 created + 1000 updated, once each"
    );
    assert_eq!(app.count("auth", "SELECT count(*) FROM event_failures"), 0);
    let report = e2e::consistency::check(app.db_url("user"), app.db_url("auth")).unwrap();
    assert_eq!(report.differences, Vec::<String>::new());
}

#[test]
fn a_host_killed_during_a_burst_of_writes_delivers_every_committed_change_after_restart() {
    let mut app = TestApp::spawn();
    let users: Vec<(String, String)> = (0..4).map(|_| app.signed_up_user()).collect();
    std::thread::scope(|s| {
        for (_, token) in &users {
            let app = &app;
            s.spawn(move || {
                // Runs until the host dies under it.
                for i in 0..10_000 {
                    let r = app.client_patch_quiet(
                        "/api/v1/user/me",
                        &json!({"metadata": {"i": i}}),
                        token,
                    );
                    if r.is_none() {
                        break;
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        app.kill_quiet();
    });
    let committed = app.count(
        "user",
        "SELECT coalesce(sum(version), 0)::bigint FROM users",
    );
    assert!(
        committed > 4 + 10,
        "the burst made changes before the kill ({committed})"
    );
    app.start();
    app.eventually(Duration::from_secs(60), || {
        // An older event can still be on its way through catch-up after a newer
        // one made the copy consistent over pub/sub: wait for every event too.
        let pending = app.count(
            "user",
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        );
        let events = app.count("user", "SELECT count(*) FROM outbox");
        let applied = app.count("auth", "SELECT count(*) FROM processed_events");
        let report = e2e::consistency::check(app.db_url("user"), app.db_url("auth")).ok()?;
        (pending == 0 && applied == events && report.differences.is_empty()).then_some(())
    })
    .expect("every committed change is published and applied");
    // Exactly once: nothing recorded twice, nothing left failing, once
    // auth's catch-up has read the whole feed (so a duplicate delivery by
    // catch-up would have happened by now).
    app.eventually(Duration::from_secs(60), || {
        let end = app.count(
            "user",
            "SELECT coalesce(max(feed_seq), 0)::bigint FROM outbox",
        );
        let cursor = app.count(
            "auth",
            "SELECT coalesce(max(last_seq), 0)::bigint FROM event_cursors WHERE source = 'user'",
        );
        (cursor >= end).then_some(())
    })
    .expect("auth's catch-up reads user's feed to its end");
    assert_eq!(
        app.count("auth", "SELECT count(*) FROM processed_events"),
        app.count("user", "SELECT count(*) FROM outbox")
    );
    assert_eq!(app.count("auth", "SELECT count(*) FROM event_failures"), 0);
}

#[test]
fn versions_delivered_as_3_1_2_leave_version_3() {
    let app = TestApp::spawn();
    let user = uuid::Uuid::new_v4();
    let mut auth = app.db("auth");
    for (n, v) in [3, 1, 2].into_iter().enumerate() {
        send(
            &app,
            &user_event(&USER_UPDATED, user, v, &format!("v{v}@example.com")),
        );
        app.eventually(Duration::from_secs(10), || {
            let seen: i64 = auth
                .query_one("SELECT count(*) FROM processed_events", &[])
                .ok()?
                .get(0);
            (seen == n as i64 + 1).then_some(())
        })
        .expect("event processed");
    }
    let row = auth
        .query_one(
            "SELECT version, email FROM identities WHERE user_id = $1",
            &[&user],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (3, "v3@example.com".to_string())
    );
}

#[test]
fn a_poison_event_is_parked_visible_and_replayable_and_does_not_block_the_next() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SPIN_VARIABLE_EVENT_MAX_ATTEMPTS".into(), "2".into())],
        ..Options::default()
    });
    let (poison_user, good_user) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // Sabotage: auth's copy table is gone, so this event fails until it is back.
    app.db("auth")
        .batch_execute("ALTER TABLE identities RENAME TO identities_gone")
        .unwrap();
    let poison = user_event(&USER_CREATED, poison_user, 1, "p@example.com");
    let poison_id = poison.id.to_string();
    send(&app, &poison);
    let mut auth = app.db("auth");
    app.eventually(Duration::from_secs(30), || {
        let parked: bool = auth
            .query_opt("SELECT parked FROM event_failures", &[])
            .ok()??
            .get(0);
        parked.then_some(())
    })
    .expect("retried with backoff, then parked");
    auth.batch_execute("ALTER TABLE identities_gone RENAME TO identities")
        .unwrap();

    // The next event is applied: the parked one blocks nothing.
    send(
        &app,
        &user_event(&USER_CREATED, good_user, 1, "g@example.com"),
    );
    app.eventually(Duration::from_secs(10), || {
        let n: i64 = auth
            .query_one(
                "SELECT count(*) FROM identities WHERE user_id = $1",
                &[&good_user],
            )
            .ok()?
            .get(0);
        (n == 1).then_some(())
    })
    .expect("the next event is applied");

    // Visible to admins only, and replayable.
    let user_token = app.mint_token(uuid::Uuid::new_v4(), &["user"]);
    assert_eq!(
        app.get("/api/v1/auth/admin/dead-letters", Some(&user_token))
            .status(),
        403
    );
    let admin = app.mint_token(uuid::Uuid::new_v4(), &["event:manage"]);
    let page: Value = app
        .get("/api/v1/auth/admin/dead-letters", Some(&admin))
        .json()
        .unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["event_id"], poison_id.as_str());
    assert!(page["items"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("identities"));
    let r: Value = app
        .post(
            &format!("/api/v1/auth/admin/dead-letters/{poison_id}/replay"),
            &json!({}),
            Some(&admin),
        )
        .json()
        .unwrap();
    assert_eq!(r["applied"], true);
    let n: i64 = auth
        .query_one(
            "SELECT count(*) FROM identities WHERE user_id = $1",
            &[&poison_user],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(app.count("auth", "SELECT count(*) FROM event_failures"), 0);
}

#[test]
fn a_consumer_whose_cursor_is_older_than_retention_resyncs_from_the_source() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SPIN_VARIABLE_EVENT_RETENTION_DAYS".into(), "0".into())],
        ..Options::default()
    });
    for _ in 0..3 {
        app.signed_up_user();
    }
    app.eventually(Duration::from_secs(20), || {
        let r = e2e::consistency::check(app.db_url("user"), app.db_url("auth")).ok()?;
        (r.differences.is_empty() && r.checked == 3).then_some(())
    })
    .expect("copies converge");
    // Simulate a consumer that lost everything while the feed was pruned.
    let r: Value = app
        .post_as("scheduler", "/api/v1/user/internal/events/prune")
        .json()
        .unwrap();
    assert!(r["deleted"].as_u64().unwrap() >= 3, "{r}");
    app.db("auth")
        .batch_execute(
            "DELETE FROM identities; DELETE FROM event_cursors; DELETE FROM processed_events",
        )
        .unwrap();
    let summary: Value = app
        .post_as("scheduler", "/api/v1/auth/internal/events/catch-up")
        .json()
        .unwrap();
    assert_eq!(summary["resynced"], 1, "{summary}");
    let report = e2e::consistency::check(app.db_url("user"), app.db_url("auth")).unwrap();
    assert_eq!(
        (report.checked, report.differences),
        (3, Vec::<String>::new())
    );
}

#[test]
fn a_device_carries_its_owners_current_profile_and_the_copies_match_their_source() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let (_user, token) = app.signed_up_user();
    // A node and a phone (a scripted agent is enough: this is about copies).
    let node = expect_json(
        app.post(
            "/api/v1/device/nodes",
            &json!({"id": "copies-1"}),
            admin.t(),
        ),
        201,
    );
    let agent =
        e2e::agent::ScriptedAgent::new(&app.base, "copies-1", node["secret"].as_str().unwrap());
    assert_eq!(agent.register(), 204);
    assert_eq!(agent.report(vec![agent.heartbeat(vec![])]).0, 200);
    let op = expect_json(
        app.post(
            "/api/v1/device/devices",
            &json!({"name": "p"}),
            Some(&token),
        ),
        202,
    );
    let id = op["device_id"].as_str().unwrap().to_string();
    // The owner renames themself: the device's copy follows, at the source's version.
    expect_json(
        app.patch(
            "/api/v1/user/me",
            &json!({"display_name": "Renamed"}),
            Some(&token),
        ),
        200,
    );
    app.eventually(Duration::from_secs(30), || {
        let d = expect_json(
            app.get(&format!("/api/v1/device/devices/{id}"), Some(&token)),
            200,
        );
        (d["owner_name"] == "Renamed").then_some(())
    })
    .expect("the owner copy follows the profile");
    let report = app
        .eventually(Duration::from_secs(30), || {
            let r =
                e2e::consistency::check_devices(app.db_url("user"), app.db_url("device")).ok()?;
            r.differences.is_empty().then_some(r)
        })
        .unwrap_or_else(|_| {
            let r =
                e2e::consistency::check_devices(app.db_url("user"), app.db_url("device")).unwrap();
            panic!("copies differ: {:?}", r.differences)
        });
    assert!(
        report.checked >= 3,
        "users and the device compared: {report:?}"
    );
    // A copy changed behind the consumer's back is found.
    app.db("device")
        .execute("UPDATE devices SET owner_email = 'stale@example.com'", &[])
        .unwrap();
    let report = e2e::consistency::check_devices(app.db_url("user"), app.db_url("device")).unwrap();
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
}
