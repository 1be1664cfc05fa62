//! The ledger end to end on the compiled `billing` component: operators'
//! postings move balances by each kind's fixed legs, once per idempotency
//! key, never below a balance's floor; what users and tenant admins see is
//! their own; the database itself refuses an unbalanced or edited ledger;
//! and 10,000 random postings from 16 clients at once leave every
//! transaction balanced, every account the sum of its entries, and every
//! balance what an independent model of the accepted postings says, to the
//! cent. A balance left exhausted past its grace stops its owner's phones
//! through `device`, which refuses to start them until money pays the debt.
//! A tenant's month is one statement over its members' invoices.

use e2e::billing::{run_event, storm, wait_for_owner, B};
use e2e::{error_code, expect_json, roles, Options, TestApp};
use serde_json::{json, Value};

fn post(app: &TestApp, token: &str, key: &str, body: Value) -> reqwest::blocking::Response {
    app.post_idempotent(&format!("{B}/admin/postings"), &body, Some(token), key)
}

fn balance(app: &TestApp, token: &str, user: &str, currency: &str) -> (i64, i64, i64) {
    let v = expect_json(
        app.get(&format!("{B}/balance?user_id={user}"), Some(token)),
        200,
    );
    let b = v["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == currency)
        .cloned()
        .unwrap_or(json!({"available_minor": 0, "frozen_minor": 0, "credit_limit_minor": 0}));
    (
        b["available_minor"].as_i64().unwrap(),
        b["frozen_minor"].as_i64().unwrap(),
        b["credit_limit_minor"].as_i64().unwrap(),
    )
}

#[test]
fn postings_move_balances_by_fixed_legs_once_per_key_and_never_below_the_floor() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let a = admin.token.as_str();
    let tenant = app.create_tenant(a, "billed");
    let tenant_admin = app.create_user(
        a,
        json!({"tenant_id": tenant, "role_ids": [roles::TENANT_ADMIN]}),
    );
    let member = app.create_user(a, json!({"tenant_id": tenant, "role_ids": [roles::USER]}));
    let (stranger, stranger_token) = app.signed_up_user();
    for u in [&member.id, &stranger] {
        wait_for_owner(&app, u);
    }
    let m = member.id.as_str();

    // A user with no account yet sees a zero balance in the default currency.
    let fresh = expect_json(app.get(&format!("{B}/balance"), member.t()), 200);
    assert_eq!(fresh["balances"][0]["currency"], "CNY");
    assert_eq!(fresh["balances"][0]["available"], "0.00");

    // A recorded recharge: 100.00 CNY.
    let body = json!({"user_id": m, "kind": "recharge", "amount_minor": 10_000, "currency": "CNY",
                      "reason": "bank transfer 2026-12-01", "reference": "=HYPERLINK(\"x\")"});
    let t = expect_json(post(&app, a, "r-1", body.clone()), 201);
    assert_eq!(t["amount_minor"], 10_000);
    assert_eq!(t["available_after_minor"], 10_000);
    assert_eq!(t["actor_id"], admin.id.as_str());
    let entries = t["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries
            .iter()
            .map(|e| e["amount_minor"].as_i64().unwrap())
            .sum::<i64>(),
        0
    );
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["account"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"available") && kinds.contains(&"provider_clearing"),
        "{kinds:?}"
    );
    assert_eq!(balance(&app, a, m, "CNY"), (10_000, 0, 0));

    // The same key again: the same transaction, nothing moves twice.
    let again = expect_json(post(&app, a, "r-1", body), 200);
    assert_eq!(again["id"], t["id"]);
    assert_eq!(balance(&app, a, m, "CNY"), (10_000, 0, 0));
    // The same key for something else is refused.
    let other = json!({"user_id": m, "kind": "recharge", "amount_minor": 99, "currency": "CNY", "reason": "r"});
    let (status, code) = error_code(post(&app, a, "r-1", other)).unwrap();
    assert_eq!((status, code.as_str()), (409, "idempotency_key_reused"));
    // No key, no money moved.
    let r = app.post(
        &format!("{B}/admin/postings"),
        &json!({"user_id": m, "kind": "reward", "amount_minor": 1, "currency": "CNY", "reason": "r"}),
        Some(a),
    );
    assert_eq!(error_code(r).unwrap().0, 400);

    // A charge beyond the balance is refused whole.
    let charge = |key: &str, x: i64| {
        post(
            &app,
            a,
            key,
            json!({"user_id": m, "kind": "charge", "amount_minor": x, "currency": "CNY", "reason": "usage"}),
        )
    };
    let (status, code) = error_code(charge("c-1", 12_000)).unwrap();
    assert_eq!((status, code.as_str()), (409, "insufficient_balance"));
    assert_eq!(balance(&app, a, m, "CNY"), (10_000, 0, 0));
    // ... until a credit limit allows it.
    let limited = expect_json(
        app.put(
            &format!("{B}/admin/credit-limits/{m}"),
            &json!({"currency": "CNY", "credit_limit_minor": 5_000, "reason": "trusted customer"}),
            Some(a),
        ),
        200,
    );
    assert_eq!(limited["previous_credit_limit_minor"], 0);
    expect_json(charge("c-2", 12_000), 201);
    assert_eq!(balance(&app, a, m, "CNY"), (-2_000, 0, 5_000));
    // The limit cannot be lowered below what is owed.
    let r = app.put(
        &format!("{B}/admin/credit-limits/{m}"),
        &json!({"currency": "CNY", "credit_limit_minor": 1_000, "reason": "lower"}),
        Some(a),
    );
    assert_eq!(error_code(r).unwrap().0, 409);

    // Freeze within what may be spent, settle part, release the rest.
    let move_ = |key: &str, kind: &str, x: i64| {
        post(
            &app,
            a,
            key,
            json!({"user_id": m, "kind": kind, "amount_minor": x, "currency": "CNY", "reason": kind}),
        )
    };
    assert_eq!(
        error_code(move_("f-0", "freeze", 3_001)).unwrap().1,
        "insufficient_balance"
    );
    expect_json(move_("f-1", "freeze", 3_000), 201);
    assert_eq!(balance(&app, a, m, "CNY"), (-5_000, 3_000, 5_000));
    expect_json(move_("s-1", "settle", 1_000), 201);
    assert_eq!(
        error_code(move_("u-0", "unfreeze", 2_001)).unwrap().1,
        "insufficient_balance"
    );
    expect_json(move_("u-1", "unfreeze", 2_000), 201);
    expect_json(move_("rf-1", "refund", 500), 201);
    expect_json(move_("rw-1", "reward", 800), 201);
    expect_json(move_("adj-1", "adjustment", -300), 201);
    assert_eq!(error_code(move_("adj-0", "adjustment", 0)).unwrap().0, 400);
    assert_eq!(error_code(move_("neg", "charge", -5)).unwrap().0, 400);
    // 10000 - 12000 - 3000 + 2000 + 500 + 800 - 300 = -2000; frozen 0.
    assert_eq!(balance(&app, a, m, "CNY"), (-2_000, 0, 5_000));
    // Other currencies are other balances.
    expect_json(
        post(
            &app,
            a,
            "usd-1",
            json!({"user_id": m, "kind": "reward", "amount_minor": 250, "currency": "USD", "reason": "promo"}),
        ),
        201,
    );
    assert_eq!(balance(&app, a, m, "USD"), (250, 0, 0));
    let (status, _) = error_code(post(&app, a, "x-1", json!({"user_id": m, "kind": "reward", "amount_minor": 1, "currency": "XXX", "reason": "r"}))).unwrap();
    assert_eq!(status, 400);
    let r = app.call_raw(
        "POST",
        &format!("{B}/admin/postings"),
        "application/json",
        br#"{"user_id": "00000000-0000-0000-0000-000000000000", "kind": "reward", "amount_minor": 1.5, "currency": "CNY", "reason": "r"}"#.to_vec(),
        Some(a),
    );
    assert_eq!(
        error_code(r).unwrap().0,
        400,
        "a fraction of a minor unit is refused"
    );

    // The member sees their own transactions, newest first, filtered.
    let mine = expect_json(
        app.get(&format!("{B}/transactions?per_page=100"), member.t()),
        200,
    );
    assert_eq!(mine["total"], 9, "{mine}");
    assert_eq!(mine["items"][0]["currency"], "USD");
    let charges = expect_json(
        app.get(&format!("{B}/transactions?kind=charge"), member.t()),
        200,
    );
    assert_eq!(charges["total"], 1);
    assert_eq!(charges["items"][0]["amount_minor"], -12_000);
    assert_eq!(charges["items"][0]["available_after_minor"], -2_000);
    let one = expect_json(
        app.get(
            &format!("{B}/transactions/{}", t["id"].as_str().unwrap()),
            member.t(),
        ),
        200,
    );
    assert_eq!(one["entries"].as_array().unwrap().len(), 2);
    for bad in [
        "kind=steal",
        "currency=cny",
        "from=yesterday",
        "user_id=nope",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "per_page=0",
    ] {
        let r = app.get(&format!("{B}/transactions?{bad}"), member.t());
        assert_eq!(error_code(r).unwrap().0, 400, "{bad}");
    }

    // The CSV export: a header and one line per transaction, formulas defused.
    let r = app.get(&format!("{B}/transactions/export?currency=CNY"), member.t());
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("id,created_at,user_id,"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 1 + 8, "{csv}");
    assert!(
        lines[1].contains(",recharge,CNY,10000,10000,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "{}",
        lines[1]
    );

    // Statistics: the member's, and their tenant's as its admin sees them.
    let stats = expect_json(
        app.get(&format!("{B}/statistics?currency=CNY"), member.t()),
        200,
    );
    let net: i64 = stats["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["net_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(net, -2_000);
    assert_eq!(stats["held"][0]["available_minor"], -2_000);
    assert_eq!(stats["held"][0]["overdrawn_minor"], -2_000);
    let tstats = expect_json(
        app.get(
            &format!("{B}/statistics?tenant_id={tenant}"),
            tenant_admin.t(),
        ),
        200,
    );
    assert_eq!(tstats["held"].as_array().unwrap().len(), 2, "{tstats}");

    // Others see nothing of it.
    for path in [
        format!("{B}/balance?user_id={m}"),
        format!("{B}/transactions/{}", t["id"].as_str().unwrap()),
    ] {
        let (status, _) = error_code(app.get(&path, Some(&stranger_token))).unwrap();
        assert_eq!(status, 404, "{path}");
    }
    let theirs = expect_json(
        app.get(
            &format!("{B}/transactions?user_id={m}"),
            Some(&stranger_token),
        ),
        200,
    );
    assert_eq!(theirs["total"], 0);
    // The tenant admin sees their member's balance, but may not move money.
    assert_eq!(balance(&app, &tenant_admin.token, m, "CNY").0, -2_000);
    let r = post(
        &app,
        &tenant_admin.token,
        "ta-1",
        json!({"user_id": m, "kind": "reward", "amount_minor": 1, "currency": "CNY", "reason": "r"}),
    );
    assert_eq!(error_code(r).unwrap().0, 403);
    let r = app.get(&format!("{B}/admin/ledger/check"), tenant_admin.t());
    assert_eq!(error_code(r).unwrap().0, 403);
    // A tenant's holder of billing:adjust cannot reach another tenant's user.
    let minted = app.mint_token_in(
        uuid::Uuid::new_v4(),
        Some(uuid::Uuid::parse_str(&tenant).unwrap()),
        &["billing:adjust", "billing:read"],
    );
    let r = post(
        &app,
        &minted,
        "mt-1",
        json!({"user_id": stranger, "kind": "reward", "amount_minor": 1, "currency": "CNY", "reason": "r"}),
    );
    assert_eq!(error_code(r).unwrap().0, 404);

    // The database keeps the ledger as it is.
    let mut db = app.db("billing");
    for sql in [
        "UPDATE accounts SET balance = balance + 1",
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_transactions",
        "TRUNCATE ledger_entries CASCADE",
    ] {
        assert!(db.batch_execute(sql).is_err(), "{sql} was allowed");
    }
    // An unbalanced transaction cannot commit.
    let unbalanced = db.batch_execute(
        "BEGIN; \
         INSERT INTO ledger_transactions (id, kind, currency, user_id, amount, reason, idempotency_key, fingerprint) \
           VALUES ('00000000-0000-0000-0000-0000000000aa', 'reward', 'CNY', gen_random_uuid(), 1, 'forged', 'forged', 'f'); \
         INSERT INTO ledger_entries (transaction_id, account_id, currency, amount) \
           SELECT '00000000-0000-0000-0000-0000000000aa', id, 'CNY', 1 FROM accounts WHERE kind = 'promotions' AND currency = 'CNY' LIMIT 1; \
         COMMIT;",
    );
    assert!(unbalanced.is_err(), "an unbalanced transaction committed");
    let _ = db.batch_execute("ROLLBACK");
    let check = expect_json(app.get(&format!("{B}/admin/ledger/check"), Some(a)), 200);
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["transactions"], 9);

    // Every posting announced itself.
    assert_eq!(
        app.count(
            "billing",
            "SELECT count(*) FROM outbox WHERE event_type = 'balance.adjusted'"
        ),
        9
    );
}

#[test]
fn ten_thousand_random_postings_from_16_clients_balance_to_the_cent() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let users: Vec<String> = (0..6).map(|_| app.signed_up_user().0).collect();
    for u in &users {
        wait_for_owner(&app, u);
    }
    let seed = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    eprintln!("storm seed {seed} (STORM_SEED replays it)");
    let out = storm(
        &app,
        &admin.token,
        &users,
        &["CNY", "USD"],
        10_000,
        16,
        seed,
    );
    eprintln!(
        "{} requests: {} posted, {} refused by a floor, {} repeats, {} credit changes in {:.1} s",
        out.requests,
        out.posted,
        out.refused,
        out.repeats,
        out.credit_changes,
        out.elapsed.as_secs_f64()
    );
    assert_eq!(out.requests, 10_000);
    assert!(
        out.posted > 5_000 && out.refused > 0 && out.repeats > 0,
        "{out:?}"
    );

    let mut db = app.db("billing");
    let one =
        |db: &mut postgres::Client, sql: &str| -> i64 { db.query_one(sql, &[]).unwrap().get(0) };
    // Every accepted posting is one transaction; no repeat made another.
    assert_eq!(
        one(&mut db, "SELECT count(*) FROM ledger_transactions"),
        out.posted as i64
    );
    // Every transaction balances, with at least two legs.
    assert_eq!(
        one(&mut db, "SELECT count(*) FROM (SELECT t.id FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id GROUP BY t.id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) < 2) x"),
        0
    );
    // The accounts of each currency sum to zero.
    for row in db
        .query(
            "SELECT currency::text, sum(balance)::bigint FROM accounts GROUP BY currency",
            &[],
        )
        .unwrap()
    {
        let (c, sum): (String, i64) = (row.get(0), row.get(1));
        assert_eq!(sum, 0, "{c}");
    }
    // Each balance is the sum of its entries.
    assert_eq!(
        one(&mut db, "SELECT count(*) FROM accounts a WHERE a.balance <> (SELECT coalesce(sum(amount), 0) FROM ledger_entries e WHERE e.account_id = a.id)"),
        0
    );
    // No available balance below minus its credit limit, no frozen below zero.
    assert_eq!(
        one(&mut db, "SELECT count(*) FROM accounts WHERE (kind = 'available' AND balance + credit_limit < 0) OR (kind = 'frozen' AND balance < 0)"),
        0
    );
    // Each user's balances are what the model of the accepted postings says.
    for user in &users {
        for currency in ["CNY", "USD"] {
            let (available, frozen) = out
                .balances
                .get(&(user.clone(), currency.to_string()))
                .copied()
                .unwrap_or_default();
            let (got_a, got_f, _) = balance(&app, &admin.token, user, currency);
            assert_eq!((got_a, got_f), (available, frozen), "{user} {currency}");
        }
    }
    // And so are the platform's accounts (summed over their shards).
    for ((kind, currency), expected) in &out.platform {
        let got: i64 = db
            .query_one(
                "SELECT coalesce(sum(balance), 0)::bigint FROM accounts WHERE kind = $1 AND currency = $2",
                &[kind, currency],
            )
            .unwrap()
            .get(0);
        assert_eq!(got, *expected, "{kind} {currency}");
    }
    let check = expect_json(
        app.get(&format!("{B}/admin/ledger/check"), Some(&admin.token)),
        200,
    );
    assert_eq!(check["ok"], true, "{check}");
}

/// A `device.run_*` event as `device` signs it.

#[test]
fn ninety_minutes_of_device_time_across_a_tick_and_a_restart_are_charged_exactly_once() {
    use agent_protocol::messages::DeviceStatus;
    use e2e::nodes::running_device;
    use events::catalogue::{DEVICE_RUN_ENDED, DEVICE_RUN_STARTED};
    let mut app = TestApp::spawn();
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    wait_for_owner(&app, &user);
    let a = admin.token.as_str();
    let tick = |app: &TestApp| {
        let r = app.post_as("scheduler", &format!("{B}/internal/metering/tick"));
        assert_eq!(r.status(), 200);
    };
    let run_row = |app: &TestApp, run: i64| -> (i64, i64, bool, bool) {
        let row = app
            .db("billing")
            .query_opt(
                "SELECT charged_minutes, charged_minor, ended_at IS NOT NULL, settled FROM metered_runs WHERE run_id = $1",
                &[&run],
            )
            .unwrap();
        row.map_or((-1, -1, false, false), |r| {
            (r.get(0), r.get(1), r.get(2), r.get(3))
        })
    };
    // 1.50 on the balance: less than 90 minutes cost at 1.20 an hour (1.80).
    expect_json(
        post(
            &app,
            a,
            "top-1",
            json!({"user_id": user, "kind": "recharge", "amount_minor": 150, "currency": "CNY", "reason": "top up"}),
        ),
        201,
    );

    // A run that began 59.5 minutes ago: the tick charges its whole minutes.
    let run = 9_000_000 + i64::from(rand_u16());
    let device = uuid::Uuid::new_v4();
    let started = chrono::Utc::now() - chrono::Duration::seconds(59 * 60 + 30);
    app.publish_event(&run_event(
        &DEVICE_RUN_STARTED,
        run,
        device,
        &user,
        None,
        started,
        None,
    ));
    app.eventually(std::time::Duration::from_secs(30), || {
        (run_row(&app, run).0 == 0).then_some(())
    })
    .expect("billing recorded the run");
    tick(&app);
    let (minutes, charged, _, settled) = run_row(&app, run);
    assert!((59..=61).contains(&minutes), "{minutes}");
    assert_eq!(charged, (minutes * 120 + 30) / 60);
    assert!(!settled);

    // Every process restarts; the end arrives twice, and the start again
    // after it (late).
    app.stop();
    app.start();
    let ended = started + chrono::Duration::minutes(90);
    let publish = |app: &TestApp,
                   run: i64,
                   started: chrono::DateTime<chrono::Utc>,
                   ended: Option<chrono::DateTime<chrono::Utc>>,
                   times: usize| {
        let kind = if ended.is_some() {
            &DEVICE_RUN_ENDED
        } else {
            &DEVICE_RUN_STARTED
        };
        let event = run_event(kind, run, device, &user, None, started, ended);
        for _ in 0..times {
            app.publish_event(&event);
        }
    };
    publish(&app, run, started, Some(ended), 2);
    publish(&app, run, started, None, 1);
    app.eventually(std::time::Duration::from_secs(30), || {
        run_row(&app, run).2.then_some(())
    })
    .expect("billing recorded the end");
    tick(&app);
    tick(&app);
    assert_eq!(run_row(&app, run), (90, 180, true, true));

    // An end that arrives before its start: charged once, in full.
    let run2 = run + 1;
    let started2 = chrono::Utc::now() - chrono::Duration::minutes(30);
    let ended2 = started2 + chrono::Duration::minutes(10);
    publish(&app, run2, started2, Some(ended2), 1);
    publish(&app, run2, started2, None, 1);
    app.eventually(std::time::Duration::from_secs(30), || {
        run_row(&app, run2).2.then_some(())
    })
    .expect("billing recorded the second run");
    tick(&app);
    tick(&app);
    assert_eq!(run_row(&app, run2), (10, 20, true, true));

    // The usage records say the same, and so does the ledger.
    let usage = expect_json(
        app.get(
            &format!("{B}/usage?device_id={device}&per_page=100"),
            Some(&token),
        ),
        200,
    );
    let items = usage["items"].as_array().unwrap();
    let sum = |f: &str| items.iter().map(|u| u[f].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("minutes"), sum("amount_minor")), (100, 200), "{usage}");
    let ledger = expect_json(
        app.get(
            &format!("{B}/transactions?kind=usage&per_page=100"),
            Some(&token),
        ),
        200,
    );
    let charged: i64 = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["amount_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(charged, -200);
    // 1.50 covered 1.50 of it; 0.50 is owed, and the user was told once.
    let b = expect_json(app.get(&format!("{B}/balance"), Some(&token)), 200);
    assert_eq!(
        (
            b["balances"][0]["available_minor"].as_i64(),
            b["balances"][0]["owed_minor"].as_i64()
        ),
        (Some(0), Some(-50)),
        "{b}"
    );
    let events = |kind: &str| {
        app.count(
            "billing",
            &format!("SELECT count(*) FROM outbox WHERE event_type = '{kind}'"),
        )
    };
    assert_eq!((events("balance.low"), events("balance.exhausted")), (1, 1));
    // Money that arrives pays the debt first.
    expect_json(
        post(
            &app,
            a,
            "top-2",
            json!({"user_id": user, "kind": "recharge", "amount_minor": 100, "currency": "CNY", "reason": "top up"}),
        ),
        201,
    );
    let b = expect_json(app.get(&format!("{B}/balance"), Some(&token)), 200);
    assert_eq!(
        (
            b["balances"][0]["available_minor"].as_i64(),
            b["balances"][0]["owed_minor"].as_i64()
        ),
        (Some(50), Some(0)),
        "{b}"
    );
    let check = expect_json(app.get(&format!("{B}/admin/ledger/check"), Some(a)), 200);
    assert_eq!(check["ok"], true, "{check}");

    // The runs come from `device` itself: a phone its node reports running
    // opens one, announced in the same transaction, and billing records it.
    let (agent, id) = running_device(&app, &admin, &token, "node-m", "metered");
    let sql = format!("SELECT count(*) FROM metered_runs WHERE device_id = '{id}' AND user_id = '{user}' AND ended_at IS NULL");
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.count("billing", &sql) == 1).then_some(())
    })
    .expect("billing recorded the device's run from device's event");
    agent.report(vec![agent.status(&id, DeviceStatus::Stopped, 1)]);
    let sql = format!(
        "SELECT count(*) FROM metered_runs WHERE device_id = '{id}' AND ended_at IS NOT NULL"
    );
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.count("billing", &sql) == 1).then_some(())
    })
    .expect("billing recorded the run's end");
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).unwrap();
    u16::from_le_bytes(b)
}

#[test]
fn rules_price_usage_by_priority_tenant_and_validity_and_explain_every_step() {
    let app = TestApp::spawn();
    let admin = app.platform_admin();
    let a = Some(admin.token.as_str());
    let tenant = app.create_tenant(&admin.token, "priced");
    let member = app.create_user(
        &admin.token,
        json!({"tenant_id": tenant, "role_ids": [roles::USER]}),
    );
    let (_, loner) = app.signed_up_user();
    let rule = |mut body: Value| {
        if body.get("valid_from").is_none() {
            body["valid_from"] = json!("2026-01-01T00:00:00Z");
        }
        expect_json(app.post(&format!("{B}/rules"), &body, a), 201)
    };
    let public = rule(
        json!({"code": "dt", "name": "Device time", "resource": "device_time",
        "pricing": {"kind": "per_use", "unit_price_minor": 120, "per": 60}, "currency": "CNY"}),
    );
    let night = rule(
        json!({"code": "dt-night", "name": "Device time by the hour of day", "resource": "device_time",
        "tenant_id": tenant, "currency": "CNY",
        "pricing": {"kind": "time_of_day", "per": 60, "utc_offset_minutes": 480, "default_unit_price_minor": 120,
                    "windows": [{"from": "08:00", "to": "20:00", "unit_price_minor": 300},
                                {"from": "23:00", "to": "06:00", "unit_price_minor": 60}]}}),
    );
    rule(
        json!({"code": "dt-2020", "name": "Launch price", "resource": "device_time", "priority": 50,
        "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2021-01-01T00:00:00Z", "currency": "CNY",
        "pricing": {"kind": "per_use", "unit_price_minor": 60, "per": 60}}),
    );
    rule(
        json!({"code": "cpu", "name": "Cores", "resource": "cpu_cores", "currency": "CNY",
        "pricing": {"kind": "tiered", "per": 60, "tiers": [{"up_to": 600, "unit_price_minor": 30},
                                                          {"unit_price_minor": 20}]}}),
    );
    rule(
        json!({"code": "mem", "name": "Memory", "resource": "memory", "currency": "CNY",
        "pricing": {"kind": "volume", "per": 60, "tiers": [{"up_to": 1000, "unit_price_minor": 10},
                                                          {"unit_price_minor": 5}]}}),
    );
    // Overlapping windows, a bad tier order and an unknown kind are refused.
    for pricing in [
        json!({"kind": "time_of_day", "per": 60, "utc_offset_minutes": 0, "default_unit_price_minor": 1,
               "windows": [{"from": "08:00", "to": "12:00", "unit_price_minor": 1},
                           {"from": "11:00", "to": "13:00", "unit_price_minor": 1}]}),
        json!({"kind": "tiered", "per": 1, "tiers": [{"unit_price_minor": 1}, {"up_to": 5, "unit_price_minor": 1}]}),
        json!({"kind": "free"}),
    ] {
        let r = app.post(
            &format!("{B}/rules"),
            &json!({"code": "bad", "name": "Bad", "resource": "gpu", "currency": "CNY", "pricing": pricing}),
            a,
        );
        assert_eq!(r.status(), 400);
    }
    // A member neither makes rules nor sees another tenant's.
    let r = app.post(
        &format!("{B}/rules"),
        &json!({"code": "x", "name": "X", "resource": "gpu", "currency": "CNY",
                "pricing": {"kind": "fixed", "amount_minor": 1}}),
        member.t(),
    );
    assert_eq!(r.status(), 403);
    let night_id = night["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("{B}/rules/{night_id}"), Some(&loner))
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("{B}/rules/{night_id}"), member.t())
            .status(),
        200
    );

    let calc =
        |token: Option<&str>, body: Value| app.post(&format!("{B}/rules/calculate"), &body, token);
    // The tenant's own rule wins a tie with the public one: 19:00 to 01:00
    // local is 60 peak minutes, 180 at the default and 120 at night.
    let v = expect_json(
        calc(
            member.t(),
            json!({"lines": [
            {"resource": "device_time", "quantity": 360, "start": "2026-12-01T11:00:00Z"},
            {"resource": "cpu_cores", "quantity": 900},
            {"resource": "memory", "quantity": 1500}]}),
        ),
        200,
    );
    let line = &v["lines"][0];
    assert_eq!(line["rule"]["code"], "dt-night");
    assert_eq!(line["outranked"][0]["id"], public["id"]);
    let steps: Vec<(i64, i64)> = line["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["quantity"].as_i64().unwrap(),
                s["amount_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [(60, 300), (120, 120), (180, 360)]);
    assert_eq!(line["amount_minor"], 780);
    // Tiered: 600 core-minutes at 0.30/h and 300 at 0.20/h; volume: all
    // 1,500 GiB-minutes at 0.05/h.
    assert_eq!(v["lines"][1]["amount_minor"], 300 + 100);
    assert_eq!(v["lines"][2]["amount_minor"], 125);
    assert_eq!(v["totals"][0]["amount_minor"], 780 + 400 + 125);
    assert_eq!(v["totals"][0]["amount"], "13.05");

    // Another user has the public rule; the launch price only in 2020.
    let one = |token: Option<&str>, at: &str| {
        let v = expect_json(
            calc(
                token,
                json!({"at": at, "lines": [{"resource": "device_time", "quantity": 90}]}),
            ),
            200,
        );
        (
            v["lines"][0]["rule"]["code"].as_str().unwrap().to_string(),
            v["lines"][0]["amount_minor"].as_i64().unwrap(),
        )
    };
    assert_eq!(
        one(Some(&loner), "2026-12-01T00:00:00Z"),
        ("dt".into(), 180)
    );
    assert_eq!(
        one(Some(&loner), "2020-06-01T00:00:00Z"),
        ("dt-2020".into(), 90)
    );
    // No rule for GPUs: a clear refusal.
    let (status, code) = error_code(calc(
        Some(&loner),
        json!({"lines": [{"resource": "gpu", "quantity": 5}]}),
    ))
    .unwrap();
    assert_eq!((status, code.as_str()), (422, "no_rule"));
    // Retiring the tenant's rule hands its users back to the public one.
    expect_json(
        app.patch(
            &format!("{B}/rules/{night_id}"),
            &json!({"active": false}),
            a,
        ),
        200,
    );
    assert_eq!(one(member.t(), "2026-12-01T00:00:00Z"), ("dt".into(), 180));
    let listed = expect_json(
        app.get(
            &format!("{B}/rules?resource=device_time&active=true"),
            member.t(),
        ),
        200,
    );
    assert_eq!(listed["total"], 2, "{listed}");

    // Metering charges device time by the rule that applies to the run's
    // tenant when it started: the tenant's own 6.00 an hour beats the
    // public 1.20; and the cores and memory the run's spec draws (2 cores,
    // 4 GiB) by the public rules above: 60 core-minutes in the first tier
    // at 0.30 an hour, 120 GiB-minutes in the first volume at 0.10.
    rule(
        json!({"code": "dt-premium", "name": "Premium device time", "resource": "device_time",
        "tenant_id": tenant, "priority": 10, "currency": "CNY",
        "pricing": {"kind": "per_use", "unit_price_minor": 600, "per": 60}}),
    );
    wait_for_owner(&app, &member.id);
    let started = chrono::Utc::now() - chrono::Duration::minutes(45);
    let ended = started + chrono::Duration::minutes(30);
    // A 30-minute run of the member's, ended, recorded and metered: what
    // it was charged.
    let metered = |run: i64| -> i64 {
        app.publish_event(&run_event(
            &events::catalogue::DEVICE_RUN_ENDED,
            run,
            uuid::Uuid::new_v4(),
            &member.id,
            Some(&tenant),
            started,
            Some(ended),
        ));
        let sql = format!("SELECT count(*) FROM metered_runs WHERE run_id = {run}");
        app.eventually(std::time::Duration::from_secs(30), || {
            (app.count("billing", &sql) == 1).then_some(())
        })
        .expect("billing recorded the run");
        let r = app.post_as("scheduler", &format!("{B}/internal/metering/tick"));
        assert_eq!(r.status(), 200);
        app.count(
            "billing",
            &format!("SELECT charged_minor FROM metered_runs WHERE run_id = {run} AND settled"),
        )
    };
    let run = 8_000_000 + i64::from(rand_u16());
    let charged = metered(run);
    assert_eq!(charged, 300 + 30 + 20);

    // The tenant's own rule for cores (0.10 an hour) beats the public
    // one; a memory rule in another currency than the run's is not used,
    // whatever its priority.
    rule(
        json!({"code": "cores", "name": "Cores", "resource": "cpu_cores", "currency": "CNY",
        "tenant_id": tenant, "priority": 10,
        "pricing": {"kind": "per_use", "unit_price_minor": 10, "per": 60}}),
    );
    rule(
        json!({"code": "mem-usd", "name": "Memory in USD", "resource": "memory", "currency": "USD",
        "priority": 99, "pricing": {"kind": "per_use", "unit_price_minor": 1000, "per": 60}}),
    );
    let run = run + 1;
    let charged = metered(run);
    assert_eq!(charged, 300 + 10 + 20);
    let lines = app.count(
        "billing",
        &format!(
            "SELECT count(*) FROM metered_runs, jsonb_array_elements(resource_lines) l \
              WHERE run_id = {run} AND l->>'resource' IN ('cpu_cores', 'memory')"
        ),
    );
    assert_eq!(lines, 2);
}

#[test]
fn a_balance_exhausted_past_its_grace_stops_the_owners_phones_until_the_debt_is_paid() {
    use agent_protocol::messages::DeviceStatus;
    use e2e::nodes::{running_device, D};
    use events::catalogue::DEVICE_RUN_ENDED;
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SPIN_VARIABLE_EXHAUSTION_GRACE_SECS".into(), "0".into()),
            ("SPIN_VARIABLE_EVENT_RETENTION_DAYS".into(), "0".into()),
        ],
        ..Options::default()
    });
    let admin = app.platform_admin();
    let (user, token) = app.signed_up_user();
    wait_for_owner(&app, &user);
    let (agent, id) = running_device(&app, &admin, &token, "node-x", "unpaid");
    let events = |kind: &str| {
        app.count(
            "billing",
            &format!("SELECT count(*) FROM outbox WHERE event_type = '{kind}'"),
        )
    };

    // 10 minutes of an earlier phone charged on an empty balance: owed.
    let started = chrono::Utc::now() - chrono::Duration::minutes(30);
    app.publish_event(&run_event(
        &DEVICE_RUN_ENDED,
        8_000_000 + i64::from(rand_u16()),
        uuid::Uuid::new_v4(),
        &user,
        None,
        started,
        Some(started + chrono::Duration::minutes(10)),
    ));
    app.eventually(std::time::Duration::from_secs(30), || {
        let r = app.post_as("scheduler", &format!("{B}/internal/metering/tick"));
        assert_eq!(r.status(), 200);
        (events("balance.exhausted") == 1).then_some(())
    })
    .expect("the balance ran out");

    // Past the grace (0 s here): suspended once, and `device` stops the
    // running phone and refuses to start or create one.
    app.eventually(std::time::Duration::from_secs(30), || {
        let r = app.post_as("scheduler", &format!("{B}/internal/balances/enforce"));
        assert_eq!(r.status(), 200);
        (events("balance.suspended") == 1).then_some(())
    })
    .expect("the balance was suspended");
    let sql =
        format!("SELECT count(*) FROM balance_suspensions WHERE user_id = '{user}' AND suspended");
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.count("device", &sql) == 1).then_some(())
    })
    .expect("device learnt of the suspension");
    let r = app.post_as("scheduler", "/api/v1/device/internal/devices/lifecycle");
    assert_eq!(r.status(), 200);
    let d = expect_json(app.get(&format!("{D}/devices/{id}"), Some(&token)), 200);
    assert_eq!(d["desired_status"], "stopped", "{d}");
    agent.report(vec![agent.status(&id, DeviceStatus::Stopped, 1)]);
    let (status, code) =
        error_code(app.post(&format!("{D}/devices/{id}/start"), &json!({}), Some(&token))).unwrap();
    assert_eq!((status, code.as_str()), (402, "balance_exhausted"));
    let (status, code) = error_code(app.post(
        &format!("{D}/devices"),
        &json!({"name": "another"}),
        Some(&token),
    ))
    .unwrap();
    assert_eq!((status, code.as_str()), (402, "balance_exhausted"));
    assert_eq!(events("balance.suspended"), 1);

    // `device` lost its copy while billing's feed was pruned: its catch-up
    // rebuilds the suspension from billing's list.
    app.eventually(std::time::Duration::from_secs(30), || {
        let r: Value = app
            .post_as("scheduler", &format!("{B}/internal/events/prune"))
            .json()
            .unwrap();
        (r["deleted"].as_u64().unwrap_or(0) >= 1).then_some(())
    })
    .expect("billing's feed pruned");
    app.db("device")
        .batch_execute(
            "DELETE FROM balance_suspensions; DELETE FROM event_cursors WHERE source = 'billing'",
        )
        .unwrap();
    let summary: Value = app
        .post_as("scheduler", "/api/v1/device/internal/events/catch-up")
        .json()
        .unwrap();
    assert!(summary["resynced"].as_u64() >= Some(1), "{summary}");
    assert_eq!(app.count("device", &sql), 1);
    let (status, _) =
        error_code(app.post(&format!("{D}/devices/{id}/start"), &json!({}), Some(&token))).unwrap();
    assert_eq!(status, 402);

    // Money pays the debt: restored in the same transaction; the phone may
    // start again.
    expect_json(
        post(
            &app,
            &admin.token,
            "pay-debt",
            json!({"user_id": user, "kind": "recharge", "amount_minor": 500, "currency": "CNY", "reason": "paid"}),
        ),
        201,
    );
    assert_eq!(events("balance.restored"), 1);
    let sql = format!(
        "SELECT count(*) FROM balance_suspensions WHERE user_id = '{user}' AND NOT suspended"
    );
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.count("device", &sql) == 1).then_some(())
    })
    .expect("device learnt the balance was restored");
    let r = app.post(&format!("{D}/devices/{id}/start"), &json!({}), Some(&token));
    assert_eq!(r.status(), 202);
}

#[test]
fn a_tenants_month_is_one_statement_over_its_members_invoices_seen_only_by_its_admins() {
    let app = TestApp::spawn();
    let staff = app.platform_admin();
    let tenant = app.create_tenant(&staff.token, "stated");
    let other = app.create_tenant(&staff.token, "elsewhere");
    let in_tenant = |t: &str, role: &str| {
        app.create_user(&staff.token, json!({"tenant_id": t, "role_ids": [role]}))
    };
    let admin = in_tenant(&tenant, roles::TENANT_ADMIN);
    let (ann, bob) = (
        in_tenant(&tenant, roles::USER),
        in_tenant(&tenant, roles::USER),
    );
    let stranger = in_tenant(&other, roles::TENANT_ADMIN);
    for u in [&admin, &ann, &bob, &stranger] {
        wait_for_owner(&app, &u.id);
    }
    // Half an hour of device time each at the default 1.20 an hour, owed
    // (no balance), charged in October.
    let started = chrono::Utc::now() - chrono::Duration::minutes(40);
    let base = 6_000_000 + i64::from(rand_u16());
    for (i, u) in [&ann, &bob].into_iter().enumerate() {
        app.publish_event(&run_event(
            &events::catalogue::DEVICE_RUN_ENDED,
            base + i as i64,
            uuid::Uuid::new_v4(),
            &u.id,
            Some(&tenant),
            started,
            Some(started + chrono::Duration::minutes(30)),
        ));
    }
    app.eventually(std::time::Duration::from_secs(30), || {
        (app.count("billing", "SELECT count(*) FROM metered_runs") == 2).then_some(())
    })
    .expect("billing recorded both runs");
    let tick = app.post_as("scheduler", &format!("{B}/internal/metering/tick"));
    assert_eq!(tick.status(), 200);
    app.db("billing")
        .batch_execute("UPDATE usage_records SET created_at = '2026-10-15 12:00:00'")
        .unwrap();
    let run = || {
        expect_json(
            app.post_as(
                "scheduler",
                &format!("{B}/internal/invoices/run?month=2026-10"),
            ),
            200,
        )
    };
    assert_eq!(run()["issued"], 2);

    let url = format!("{B}/tenants/{tenant}/statement?month=2026-10");
    let s = expect_json(app.get(&url, admin.t()), 200);
    assert_eq!(
        (s["period"].as_str(), s["currency"].as_str()),
        (Some("2026-10"), Some("CNY"))
    );
    let t = &s["totals"];
    assert_eq!(
        (
            t["invoices"].as_i64(),
            t["total_minor"].as_i64(),
            t["amount_due_minor"].as_i64(),
            t["status"].as_str()
        ),
        (Some(2), Some(120), Some(120), Some("issued")),
        "{s}"
    );
    let emails: Vec<&str> = s["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["buyer_email"].as_str().unwrap())
        .collect();
    assert!(emails.contains(&ann.email.as_str()) && emails.contains(&bob.email.as_str()));
    // Platform staff see it too; a member, another tenant's admin, or an
    // unknown tenant see nothing; the month is required.
    assert_eq!(app.get(&url, Some(&staff.token)).status(), 200);
    assert_eq!(app.get(&url, ann.t()).status(), 404);
    assert_eq!(app.get(&url, stranger.t()).status(), 404);
    let unknown = format!(
        "{B}/tenants/{}/statement?month=2026-10",
        uuid::Uuid::new_v4()
    );
    assert_eq!(app.get(&unknown, Some(&staff.token)).status(), 404);
    let (status, _) =
        error_code(app.get(&format!("{B}/tenants/{tenant}/statement"), admin.t())).unwrap();
    assert_eq!(status, 400);

    // One member's invoice past due: the statement is overdue; its
    // document lists both invoices and the sums.
    app.db("billing")
        .execute(
            "UPDATE invoices SET due_at = now() AT TIME ZONE 'UTC' - interval '1 day' WHERE user_id = $1::text::uuid",
            &[&ann.id],
        )
        .unwrap();
    assert_eq!(run()["overdue"], 1);
    let s = expect_json(app.get(&url, admin.t()), 200);
    assert_eq!(s["totals"]["status"], "overdue");
    let doc = app.get(
        &format!("{B}/tenants/{tenant}/statement/document?month=2026-10"),
        admin.t(),
    );
    assert_eq!(doc.status(), 200);
    let html = doc.text().unwrap();
    for i in s["invoices"].as_array().unwrap() {
        assert!(html.contains(i["number"].as_str().unwrap()), "{html}");
    }
    assert!(
        html.contains("1.20 CNY") && html.contains("overdue"),
        "{html}"
    );
}
