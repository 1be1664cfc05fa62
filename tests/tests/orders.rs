//! Plans, orders and the purchase saga end to end on the compiled
//! components: buying a plan from the balance raises the buyer's quota in
//! `user` and fulfils the order once per idempotency key; a declined
//! payment holds nothing; `user` failing mid-saga leaves the order waiting,
//! a crash of every process loses nothing, and the scheduler's job carries
//! it on; a deadline, a cancellation or a failure after payment compensate
//! (hold released or payment refunded, grant revoked); refunds, partial and
//! full, the large one approved by a second operator; and the month's
//! invoices made from all of it: lines, tax, numbers, due, overdue, paid,
//! void, the document and the reports. Orders and top-ups paid with
//! Stripe, against a local simulator that signs as Stripe does: webhooks
//! delivered twice, out of order, forged and stale; a provider down; an
//! unpaid order expired and its payment cancelled, a late payment kept.
//! A plan that includes phones: no node with room fails the order with
//! everything given back; with a node, `device` makes them for the buyer,
//! expiring with the period, and a full refund deletes them.

use e2e::alipay;
use e2e::billing::{run_event, wait_for_owner, B};
use e2e::nodes::{bring_online, enroll, D};
use e2e::stripe::{self, Simulator};
use e2e::{error_code, expect_json, roles, Options, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

/// A platform operator's session and a signed-up buyer with their token.
struct Shop {
    app: TestApp,
    staff: String,
    buyer: String,
    token: String,
}

fn shop() -> Shop {
    shop_with(Options::default())
}

fn shop_with(options: Options) -> Shop {
    let app = TestApp::spawn_with(options);
    let staff = app.platform_admin().token;
    let (buyer, token) = app.signed_up_user();
    wait_for_owner(&app, &buyer);
    Shop {
        app,
        staff,
        buyer,
        token,
    }
}

impl Shop {
    fn plan(&self, code: &str, cycle: &str, price: i64, devices: i64) -> String {
        let p = expect_json(
            self.app.post(
                &format!("{B}/plans"),
                &json!({"code": code, "name": format!("Plan {code}"), "cycle": cycle, "price_minor": price,
                        "currency": "CNY", "quota": {"devices": devices, "cpu_cores": 2 * devices},
                        "device_limits": {"max_cpu_cores": 4}}),
                Some(&self.staff),
            ),
            201,
        );
        p["id"].as_str().unwrap().to_string()
    }

    fn recharge(&self, key: &str, amount: i64) {
        expect_json(
            self.app.post_idempotent(
                &format!("{B}/admin/postings"),
                &json!({"user_id": self.buyer, "kind": "recharge", "amount_minor": amount,
                        "currency": "CNY", "reason": "top up"}),
                Some(&self.staff),
                key,
            ),
            201,
        );
    }

    fn order(&self, plan: &str, key: &str) -> reqwest::blocking::Response {
        self.app.post_idempotent(
            &format!("{B}/orders"),
            &json!({"plan_id": plan}),
            Some(&self.token),
            key,
        )
    }

    fn get_order(&self, id: &str) -> Value {
        expect_json(
            self.app.get(&format!("{B}/orders/{id}"), Some(&self.token)),
            200,
        )
    }

    /// (available, frozen) in CNY.
    fn balance(&self) -> (i64, i64) {
        let v = expect_json(
            self.app.get(&format!("{B}/balance"), Some(&self.token)),
            200,
        );
        let b = &v["balances"][0];
        assert_eq!(b["currency"], "CNY");
        (
            b["available_minor"].as_i64().unwrap(),
            b["frozen_minor"].as_i64().unwrap(),
        )
    }

    fn max_devices(&self) -> i64 {
        let q = expect_json(
            self.app.get("/api/v1/user/me/quota", Some(&self.token)),
            200,
        );
        q["limits"]["max_devices"].as_i64().unwrap()
    }

    fn grants(&self, status: &str) -> i64 {
        self.app.count(
            "user",
            &format!(
                "SELECT count(*) FROM quota_grants WHERE user_id = '{}' AND status = '{status}'",
                self.buyer
            ),
        )
    }

    fn events(&self, order: &str, kind: &str) -> i64 {
        self.app.count(
            "billing",
            &format!("SELECT count(*) FROM outbox WHERE aggregate_id = '{order}' AND event_type = '{kind}'"),
        )
    }

    /// Runs the scheduler's saga job until the order's saga is done.
    fn advance_until_done(&self, id: &str) -> Value {
        self.advance_until(id, "done")
    }

    /// Runs the scheduler's saga job until the order's saga is at `step`.
    fn advance_until(&self, id: &str, step: &str) -> Value {
        self.app
            .eventually(Duration::from_secs(60), || {
                let r = self
                    .app
                    .post_as("scheduler", &format!("{B}/internal/orders/advance"));
                assert_eq!(r.status(), 200);
                let o = self.get_order(id);
                (o["step"] == step).then_some(o)
            })
            .unwrap_or_else(|_| panic!("the saga never reached {step}"))
    }

    /// How many webhooks the log holds of each verdict.
    fn webhooks_logged(&self, want: &[(&str, i64)]) {
        for (verdict, n) in want {
            let page = expect_json(
                self.app.get(
                    &format!("{B}/admin/webhooks?verdict={verdict}"),
                    Some(&self.staff),
                ),
                200,
            );
            assert_eq!(page["total"], *n, "{verdict}: {page}");
        }
    }

    fn ledger_ok(&self) {
        let check = expect_json(
            self.app
                .get(&format!("{B}/admin/ledger/check"), Some(&self.staff)),
            200,
        );
        assert_eq!(check["ok"], true, "{check}");
    }

    /// Makes `user` fail (500) on every insert or update of a quota grant:
    /// `user` down as far as the saga can tell.
    fn break_user(&self, on: &str) {
        let mut db = self.app.db("user");
        db.batch_execute(&format!(
            "CREATE OR REPLACE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN RAISE EXCEPTION 'user is down (test)'; END $$; \
             DROP TRIGGER IF EXISTS test_refuse ON quota_grants; \
             CREATE TRIGGER test_refuse BEFORE {on} ON quota_grants FOR EACH ROW EXECUTE FUNCTION test_refuse();"
        ))
        .unwrap();
    }

    fn mend_user(&self) {
        self.app
            .db("user")
            .batch_execute("DROP TRIGGER IF EXISTS test_refuse ON quota_grants")
            .unwrap();
    }
}

#[test]
fn a_plan_bought_from_the_balance_raises_quota_once_and_refunds_take_it_back() {
    let s = shop();
    let app = &s.app;
    let basic = s.plan("basic", "monthly", 9_900, 2);
    let pro = s.plan("pro", "yearly", 150_000, 1);
    let before = s.max_devices();

    // The buyer sees the plans, cheapest first.
    let plans = expect_json(
        app.get(&format!("{B}/plans?active=true"), Some(&s.token)),
        200,
    );
    let codes: Vec<&str> = plans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["basic", "pro"]);
    // A buyer does not make plans.
    let r = app.post(
        &format!("{B}/plans"),
        &json!({"code": "x", "name": "X", "cycle": "daily", "price_minor": 1, "currency": "CNY", "quota": {"devices": 1}}),
        Some(&s.token),
    );
    assert_eq!(r.status(), 403);

    // An empty balance: declined, recorded, nothing held or granted.
    let (status, code) = error_code(s.order(&basic, "buy-0")).unwrap();
    assert_eq!((status, code.as_str()), (402, "payment_declined"));
    assert_eq!(s.balance(), (0, 0));
    assert_eq!(s.max_devices(), before);
    let failed = expect_json(
        app.get(&format!("{B}/orders?status=failed"), Some(&s.token)),
        200,
    );
    assert_eq!(failed["total"], 1);
    assert_eq!(s.grants("pending") + s.grants("active"), 0);

    // 300.00 on the balance; the plan costs 99.00.
    s.recharge("top-1", 30_000);
    let o = expect_json(s.order(&basic, "buy-1"), 201);
    let id = o["id"].as_str().unwrap().to_string();
    assert_eq!(
        (o["status"].as_str(), o["step"].as_str()),
        (Some("fulfilled"), Some("done"))
    );
    assert_eq!(o["amount_minor"], 9_900);
    assert!(o["period_end"].is_string());
    assert_eq!(s.balance(), (20_100, 0));
    assert_eq!(s.max_devices(), before + 2);
    for e in ["order.paid", "payment.succeeded", "order.fulfilled"] {
        assert_eq!(s.events(&id, e), 1, "{e}");
    }
    // The same key: the same order, nothing moves twice.
    let again = expect_json(s.order(&basic, "buy-1"), 200);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(s.balance(), (20_100, 0));
    assert_eq!(s.max_devices(), before + 2);
    // Its history shows every step.
    let steps: Vec<String> = s.get_order(&id)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        steps,
        ["created", "funds_held", "quota_reserved", "paid", "done"]
    );
    // Another user does not see it.
    let (_, other) = app.signed_up_user();
    assert_eq!(
        app.get(&format!("{B}/orders/{id}"), Some(&other)).status(),
        404
    );
    // A paid order is not cancelled.
    let r = app.post(
        &format!("{B}/orders/{id}/cancel"),
        &json!({}),
        Some(&s.token),
    );
    assert_eq!(r.status(), 409);

    // A partial refund: 30.00 back, the order stays fulfilled.
    let refund = |order: &str, key: &str, body: Value, token: &str| {
        app.post_idempotent(
            &format!("{B}/orders/{order}/refunds"),
            &body,
            Some(token),
            key,
        )
    };
    let r = expect_json(
        refund(
            &id,
            "ref-1",
            json!({"amount_minor": 3_000, "reason": "outage credit"}),
            &s.staff,
        ),
        201,
    );
    assert_eq!(r["status"], "completed");
    assert_eq!(s.balance(), (23_100, 0));
    let o = s.get_order(&id);
    assert_eq!(
        (o["status"].as_str(), o["refunded_minor"].as_i64()),
        (Some("fulfilled"), Some(3_000))
    );
    assert_eq!(s.max_devices(), before + 2);
    // More than is left: refused, nothing moves.
    let (status, _) = error_code(refund(
        &id,
        "ref-2",
        json!({"amount_minor": 7_000, "reason": "r"}),
        &s.staff,
    ))
    .unwrap();
    assert_eq!(status, 409);
    // A buyer does not refund themselves.
    assert_eq!(
        refund(&id, "ref-3", json!({"reason": "r"}), &s.token).status(),
        403
    );
    // The rest: the order is refunded and its grant taken back.
    expect_json(
        refund(
            &id,
            "ref-4",
            json!({"reason": "cancelled contract"}),
            &s.staff,
        ),
        201,
    );
    assert_eq!(s.balance(), (30_000, 0));
    assert_eq!(s.get_order(&id)["status"], "refunded");
    assert_eq!(s.max_devices(), before);
    assert_eq!(s.events(&id, "order.refunded"), 2);

    // A large refund waits for a second operator.
    s.recharge("top-2", 200_000);
    let big = expect_json(s.order(&pro, "buy-2"), 201);
    let big_id = big["id"].as_str().unwrap();
    assert_eq!(s.max_devices(), before + 1);
    assert_eq!(s.balance(), (80_000, 0));
    let pending = expect_json(
        refund(big_id, "ref-5", json!({"reason": "not used"}), &s.staff),
        202,
    );
    assert_eq!(pending["status"], "pending_approval");
    assert_eq!(s.balance(), (80_000, 0));
    let approve = format!("{B}/refunds/{}/approve", pending["id"].as_str().unwrap());
    assert_eq!(app.post(&approve, &json!({}), Some(&s.staff)).status(), 403);
    let second = app.create_user(&s.staff, json!({"role_ids": [roles::SUPER_ADMIN]}));
    let done = expect_json(app.post(&approve, &json!({}), second.t()), 200);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["approved_by"], second.id.as_str());
    assert_eq!(s.balance(), (230_000, 0));
    assert_eq!(s.max_devices(), before);
    assert_eq!(app.post(&approve, &json!({}), second.t()).status(), 409);

    // A retired plan is not sold.
    expect_json(
        app.patch(
            &format!("{B}/plans/{basic}"),
            &json!({"active": false}),
            Some(&s.staff),
        ),
        200,
    );
    assert_eq!(s.order(&basic, "buy-3").status(), 409);
    s.ledger_ok();
}

#[test]
fn a_plan_with_phones_is_compensated_when_none_can_be_placed_and_makes_them_when_a_node_has_room() {
    let s = shop();
    let app = &s.app;
    let spec = json!({"count": 2, "cpu_cores": 2, "memory_mb": 2048, "storage_gb": 8});
    let plan_body = |code: &str, quota: Value| {
        json!({"code": code, "name": "Phone pack", "cycle": "monthly", "price_minor": 5_000,
               "currency": "CNY", "quota": quota, "devices": spec, "device_limits": {"max_cpu_cores": 4}})
    };
    // The plan's quota must cover its phones.
    let short = app.post(
        &format!("{B}/plans"),
        &plan_body("short", json!({"devices": 2, "concurrent_devices": 2, "cpu_cores": 3, "memory_mb": 4096, "storage_gb": 16})),
        Some(&s.staff),
    );
    let (status, _) = error_code(short).unwrap();
    assert_eq!(status, 400);
    let p = expect_json(
        app.post(
            &format!("{B}/plans"),
            &plan_body("pack", json!({"devices": 2, "concurrent_devices": 2, "cpu_cores": 4, "memory_mb": 4096, "storage_gb": 16})),
            Some(&s.staff),
        ),
        201,
    );
    assert_eq!(p["devices"], spec);
    let plan = p["id"].as_str().unwrap().to_string();
    s.recharge("top-1", 20_000);
    let before = s.max_devices();
    let phones = |desired: &str| {
        app.count(
            "device",
            &format!(
                "SELECT count(*) FROM devices WHERE owner_id = '{}' AND desired_status = '{desired}'",
                s.buyer
            ),
        )
    };

    // No node at all: device cannot place them; the order fails and
    // everything is given back (the payment refunded, the grant revoked).
    let (status, code) = error_code(s.order(&plan, "buy-1")).unwrap();
    assert_eq!((status, code.as_str()), (409, "order_failed"));
    let failed = expect_json(
        app.get(&format!("{B}/orders?status=failed"), Some(&s.token)),
        200,
    );
    let o = &failed["items"][0];
    assert!(
        o["failure"].as_str().unwrap().contains("no_capacity"),
        "{o}"
    );
    let failed_order = s.get_order(o["id"].as_str().unwrap());
    let steps: Vec<&str> = failed_order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["step"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"granted"), "{steps:?}");
    assert_eq!(s.balance(), (20_000, 0));
    assert_eq!(s.max_devices(), before);
    assert_eq!(s.grants("active") + s.grants("pending"), 0);
    assert_eq!(phones("running") + phones("stopped"), 0);
    s.ledger_ok();

    // A node with room: both phones made for the buyer, expiring with
    // the order's period.
    let admin = e2e::Session {
        id: String::new(),
        email: String::new(),
        token: s.staff.clone(),
    };
    let agent = enroll(app, &admin, "plan-node", json!({}));
    bring_online(app, &admin, &agent);
    let o = expect_json(s.order(&plan, "buy-2"), 201);
    assert_eq!(o["status"], "fulfilled");
    let made = o["devices"].as_array().unwrap();
    assert_eq!(made.len(), 2, "{o}");
    assert_eq!(s.balance(), (15_000, 0));
    assert_eq!(s.max_devices(), before + 2);
    assert_eq!(phones("running"), 2);
    let device = expect_json(
        app.get(
            &format!("{D}/devices/{}", made[0]["device_id"].as_str().unwrap()),
            Some(&s.token),
        ),
        200,
    );
    assert_eq!(device["owner_id"], s.buyer.as_str());
    assert_eq!(
        app.count(
            "device",
            &format!(
                "SELECT count(*) FROM devices WHERE owner_id = '{}' AND date_trunc('second', expires_at) = \
                   date_trunc('second', '{}'::timestamptz AT TIME ZONE 'UTC')",
                s.buyer,
                o["period_end"].as_str().unwrap()
            ),
        ),
        2
    );
    // The same key: the same order, no more phones.
    let again = expect_json(s.order(&plan, "buy-2"), 200);
    assert_eq!(again["devices"], o["devices"]);
    assert_eq!(phones("running"), 2);

    // A full refund deletes them and takes the quota back.
    let id = o["id"].as_str().unwrap();
    let r = expect_json(
        app.post_idempotent(
            &format!("{B}/orders/{id}/refunds"),
            &json!({"reason": "no longer needed"}),
            Some(&s.staff),
            "ref-1",
        ),
        201,
    );
    assert_eq!(r["status"], "completed");
    assert_eq!(phones("running"), 0);
    assert_eq!(phones("deleted"), 2);
    assert_eq!(s.max_devices(), before);
    assert_eq!(s.balance(), (20_000, 0));
    s.ledger_ok();
}

#[test]
fn a_saga_that_user_fails_or_a_crash_interrupts_ends_fulfilled_or_compensated_with_nothing_held() {
    let mut s = shop();
    let plan = s.plan("basic", "daily", 5_000, 1);
    let before = s.max_devices();
    s.recharge("top-1", 100_000);

    // `user` fails when asked for the grant: the order waits, money held.
    s.break_user("INSERT");
    let o = expect_json(s.order(&plan, "buy-1"), 202);
    let id = o["id"].as_str().unwrap().to_string();
    assert_eq!(
        (o["status"].as_str(), o["step"].as_str()),
        (Some("pending"), Some("funds_held"))
    );
    assert_eq!(s.balance(), (95_000, 5_000));
    // Every process is killed; `user` comes back; the job carries it on.
    s.app.kill();
    s.mend_user();
    s.app.start();
    let o = s.advance_until_done(&id);
    assert_eq!(o["status"], "fulfilled");
    assert!(o["attempts"].as_i64().unwrap() >= 1, "{o}");
    assert_eq!(s.balance(), (95_000, 0));
    assert_eq!(s.max_devices(), before + 1);

    // `user` fails at activation, after the payment: the order is paid,
    // and a crash there loses nothing either.
    s.break_user("UPDATE");
    let o = expect_json(s.order(&plan, "buy-2"), 202);
    let id2 = o["id"].as_str().unwrap().to_string();
    assert_eq!(
        (o["status"].as_str(), o["step"].as_str()),
        (Some("paid"), Some("paid"))
    );
    assert_eq!(s.balance(), (90_000, 0));
    s.app.kill();
    s.mend_user();
    s.app.start();
    assert_eq!(s.advance_until_done(&id2)["status"], "fulfilled");
    assert_eq!(s.max_devices(), before + 2);
    assert_eq!(s.events(&id2, "order.fulfilled"), 1);
    assert_eq!(s.events(&id2, "order.paid"), 1);

    // Not reserved by its deadline: expired, the hold released.
    s.break_user("INSERT");
    let o = expect_json(s.order(&plan, "buy-3"), 202);
    let id3 = o["id"].as_str().unwrap().to_string();
    assert_eq!(s.balance(), (85_000, 5_000));
    s.app
        .db("billing")
        .execute(
            "UPDATE orders SET deadline = now() AT TIME ZONE 'UTC' - interval '1 second' WHERE id = $1::text::uuid",
            &[&id3],
        )
        .unwrap();
    let o = s.advance_until_done(&id3);
    assert_eq!(o["status"], "expired", "{o}");
    assert_eq!(s.balance(), (90_000, 0));
    assert_eq!(s.events(&id3, "order.failed"), 1);

    // Cancelled by the buyer while it waits: the hold released.
    let o = expect_json(s.order(&plan, "buy-4"), 202);
    let id4 = o["id"].as_str().unwrap().to_string();
    assert_eq!(s.balance(), (85_000, 5_000));
    let c = expect_json(
        s.app.post(
            &format!("{B}/orders/{id4}/cancel"),
            &json!({}),
            Some(&s.token),
        ),
        200,
    );
    assert_eq!(
        (c["status"].as_str(), c["step"].as_str()),
        (Some("cancelled"), Some("done"))
    );
    assert_eq!(s.balance(), (90_000, 0));
    s.mend_user();

    // Paid but not granted by its deadline: the payment refunded, the
    // pending grant revoked.
    s.break_user("UPDATE");
    let o = expect_json(s.order(&plan, "buy-5"), 202);
    let id5 = o["id"].as_str().unwrap().to_string();
    assert_eq!(o["status"], "paid");
    assert_eq!(s.balance(), (85_000, 0));
    s.mend_user();
    s.app
        .db("billing")
        .execute(
            "UPDATE orders SET deadline = now() AT TIME ZONE 'UTC' - interval '1 second' WHERE id = $1::text::uuid",
            &[&id5],
        )
        .unwrap();
    let o = s.advance_until_done(&id5);
    assert_eq!(o["status"], "failed", "{o}");
    assert_eq!(s.balance(), (90_000, 0));
    assert_eq!(s.max_devices(), before + 2);

    // Nothing is left held or half granted.
    assert_eq!(s.grants("pending"), 0);
    assert_eq!(s.grants("active"), 2);
    assert_eq!(
        s.app.count(
            "billing",
            "SELECT count(*) FROM orders WHERE step <> 'done'"
        ),
        0
    );
    s.ledger_ok();
}

#[test]
fn a_months_usage_orders_and_refunds_become_numbered_invoices_with_tax_that_get_paid() {
    let s = shop();
    let app = &s.app;
    let basic = s.plan("basic", "monthly", 9_900, 1);
    let (debtor, debtor_token) = app.signed_up_user();
    wait_for_owner(app, &debtor);
    s.recharge("top-1", 30_000);
    let o = expect_json(s.order(&basic, "buy-1"), 201);
    let order = o["id"].as_str().unwrap().to_string();
    expect_json(
        app.post_idempotent(
            &format!("{B}/orders/{order}/refunds"),
            &json!({"amount_minor": 3_000, "reason": "outage <credit>"}),
            Some(&s.staff),
            "ref-1",
        ),
        201,
    );
    // 30 minutes of device time each: the buyer pays from the balance, the
    // debtor (no balance) owes it.
    let started = chrono::Utc::now() - chrono::Duration::minutes(40);
    let ended = started + chrono::Duration::minutes(30);
    let base = 7_000_000 + i64::from(std::process::id() % 100_000);
    for (i, user) in [s.buyer.as_str(), debtor.as_str()].into_iter().enumerate() {
        app.publish_event(&run_event(
            &events::catalogue::DEVICE_RUN_ENDED,
            base + i as i64,
            uuid::Uuid::new_v4(),
            user,
            None,
            started,
            Some(ended),
        ));
    }
    app.eventually(Duration::from_secs(30), || {
        (app.count("billing", "SELECT count(*) FROM metered_runs") == 2).then_some(())
    })
    .expect("billing recorded both runs");
    assert_eq!(
        app.post_as("scheduler", &format!("{B}/internal/metering/tick"))
            .status(),
        200
    );
    assert_eq!(
        app.count("billing", "SELECT count(*) FROM usage_records"),
        2
    );

    // All of it happened in October.
    app.db("billing")
        .batch_execute(
            "UPDATE usage_records SET created_at = '2026-10-15 12:00:00'; \
             UPDATE orders SET paid_at = '2026-10-10 10:00:00'; \
             UPDATE refunds SET decided_at = '2026-10-20 10:00:00';",
        )
        .unwrap();
    let run = |month: &str| {
        app.post_as(
            "scheduler",
            &format!("{B}/internal/invoices/run?month={month}"),
        )
    };
    assert_eq!(run("2999-01").status(), 409);
    assert_eq!(run("2026-1").status(), 400);
    let first = expect_json(run("2026-10"), 200);
    assert_eq!(first["issued"], 2, "{first}");
    let again = expect_json(run("2026-10"), 200);
    assert_eq!(again["issued"], 0);

    // The buyer's: usage 0.60, the plan 99.00, the refund -30.00 = 69.60,
    // of which 6% tax included (3.94); paid at issue.
    let mine = expect_json(app.get(&format!("{B}/invoices"), Some(&s.token)), 200);
    assert_eq!(mine["total"], 1, "{mine}");
    let inv = &mine["items"][0];
    let id = inv["id"].as_str().unwrap();
    assert_eq!(
        (
            inv["period"].as_str(),
            inv["status"].as_str(),
            inv["total_minor"].as_i64()
        ),
        (Some("2026-10"), Some("paid"), Some(6_960))
    );
    assert_eq!(
        (inv["tax_minor"].as_i64(), inv["subtotal_minor"].as_i64()),
        (Some(394), Some(6_566))
    );
    assert_eq!(inv["amount_due_minor"], 0);
    let full = expect_json(app.get(&format!("{B}/invoices/{id}"), Some(&s.token)), 200);
    let mut amounts: Vec<(String, i64)> = full["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                l["amount_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    amounts.sort();
    assert_eq!(
        amounts,
        [
            ("order".into(), 9_900),
            ("refund".into(), -3_000),
            ("usage".into(), 60)
        ]
    );
    let doc = app.get(&format!("{B}/invoices/{id}/document"), Some(&s.token));
    assert_eq!(doc.status(), 200);
    assert!(doc.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = doc.text().unwrap();
    assert!(
        html.contains(inv["number"].as_str().unwrap()) && html.contains("69.60 CNY"),
        "{html}"
    );
    assert!(html.contains("outage &lt;credit&gt;") && !html.contains("<credit>"));
    // Numbers run without gaps.
    let mut numbers: Vec<String> = {
        let mut db = app.db("billing");
        db.query("SELECT number FROM invoices", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    numbers.sort();
    assert_eq!(numbers, ["INV-202610-000001", "INV-202610-000002"]);
    // Another user sees neither it nor its document.
    assert_eq!(
        app.get(&format!("{B}/invoices/{id}"), Some(&debtor_token))
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("{B}/invoices/{id}/document"), Some(&debtor_token))
            .status(),
        404
    );
    // A paid invoice is not voided.
    let void = |id: &str| {
        app.post(
            &format!("{B}/invoices/{id}/void"),
            &json!({"reason": "wrong"}),
            Some(&s.staff),
        )
    };
    assert_eq!(void(id).status(), 409);

    // The debtor's: 0.60 owed, due in 15 days; past due, it is overdue;
    // money that arrives pays the debt and the invoice.
    let theirs = expect_json(app.get(&format!("{B}/invoices"), Some(&debtor_token)), 200);
    let d = &theirs["items"][0];
    let did = d["id"].as_str().unwrap().to_string();
    assert_eq!(
        (d["status"].as_str(), d["amount_due_minor"].as_i64()),
        (Some("issued"), Some(60))
    );
    app.db("billing")
        .execute(
            "UPDATE invoices SET due_at = now() AT TIME ZONE 'UTC' - interval '1 day' WHERE id = $1::text::uuid",
            &[&did],
        )
        .unwrap();
    let later = expect_json(run("2026-10"), 200);
    assert_eq!(
        (later["overdue"].as_i64(), later["paid"].as_i64()),
        (Some(1), Some(0))
    );
    expect_json(
        app.post_idempotent(
            &format!("{B}/admin/postings"),
            &json!({"user_id": debtor, "kind": "recharge", "amount_minor": 1_000, "currency": "CNY", "reason": "paid"}),
            Some(&s.staff),
            "debtor-top",
        ),
        201,
    );
    let settled = expect_json(run("2026-10"), 200);
    assert_eq!(settled["paid"], 1);
    let d = expect_json(
        app.get(&format!("{B}/invoices/{did}"), Some(&debtor_token)),
        200,
    );
    assert_eq!(d["status"], "paid");
    for e in ["invoice.issued", "invoice.overdue", "invoice.paid"] {
        assert_eq!(s.events(&did, e), 1, "{e}");
    }

    // Reports, for platform staff only: October's device time, and this
    // month's revenue (the ledger is never backdated): 99.00 - 30.00 +
    // 2 x 0.60.
    let usage = expect_json(
        app.get(
            &format!("{B}/reports/usage?from=2026-10&to=2026-10"),
            Some(&s.staff),
        ),
        200,
    );
    assert_eq!(usage["items"][0]["minutes"], 60);
    assert_eq!(usage["items"][0]["users"], 2);
    let revenue = expect_json(
        app.get(&format!("{B}/reports/revenue"), Some(&s.staff)),
        200,
    );
    let net: i64 = revenue["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["currency"] == "CNY")
        .map(|r| r["revenue_minor"].as_i64().unwrap())
        .sum();
    assert_eq!(net, 9_900 - 3_000 + 120);
    assert_eq!(
        app.get(&format!("{B}/reports/revenue"), Some(&s.token))
            .status(),
        403
    );
    s.ledger_ok();
}

/// Delivers a webhook to billing with a `Stripe-Signature` header (none
/// when `None`): (status, body).
fn deliver(app: &TestApp, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut r = reqwest::blocking::Client::new()
        .post(format!("{}{B}/webhooks/stripe", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        r = r.header("stripe-signature", sig);
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Signs as Stripe does, now.
fn signed(body: &[u8]) -> Option<String> {
    Some(stripe::signature_header(
        stripe::WEBHOOK_SECRET,
        stripe::now(),
        body,
    ))
}

#[test]
fn orders_and_top_ups_paid_with_stripe_apply_each_webhook_once_in_the_providers_order() {
    let sim = Simulator::start();
    let s = shop_with(Options {
        env: sim.env(),
        ..Options::default()
    });
    let app = &s.app;
    let basic = s.plan("basic", "monthly", 9_900, 2);
    let before = s.max_devices();
    let count = |sql: &str| app.count("billing", sql);

    // The order waits for its payment: the intent was made once, with the
    // order's amount, and the buyer is shown how to pay it.
    let buy = |key: &str| {
        app.post_idempotent(
            &format!("{B}/orders"),
            &json!({"plan_id": basic, "pay_with": "stripe"}),
            Some(&s.token),
            key,
        )
    };
    let o = expect_json(buy("card-1"), 202);
    let id = o["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            o["status"].as_str(),
            o["step"].as_str(),
            o["pay_with"].as_str()
        ),
        (Some("pending"), Some("awaiting_payment"), Some("stripe"))
    );
    let pi = o["payment"]["provider_ref"].as_str().unwrap().to_string();
    assert_eq!(o["payment"]["client_secret"], format!("{pi}_secret_sim"));
    let intent = sim.intent(&pi).unwrap();
    assert_eq!((intent.amount, intent.currency.as_str()), (9_900, "cny"));
    assert_eq!(intent.metadata["order_id"], id);
    assert_eq!(expect_json(buy("card-1"), 200)["id"], id.as_str());
    assert_eq!(sim.intents(), 1);
    assert_eq!(s.balance(), (0, 0));
    // Nobody else is shown the client secret.
    let staff_view = expect_json(app.get(&format!("{B}/orders/{id}"), Some(&s.staff)), 200);
    assert!(staff_view["payment"].get("client_secret").is_none());

    // Forged (another secret; no signature) and stale (signed 10 minutes
    // ago) deliveries are refused, recorded, and change nothing.
    let paid = stripe::event(
        "evt_paid",
        "payment_intent.succeeded",
        &intent,
        stripe::now(),
    );
    let forged = stripe::signature_header("whsec_someone_else", stripe::now(), &paid);
    let (status, body) = deliver(app, &paid, Some(forged));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("webhook_forged"))
    );
    assert_eq!(deliver(app, &paid, None).0, 400);
    let stale = stripe::signature_header(stripe::WEBHOOK_SECRET, stripe::now() - 600, &paid);
    let (status, body) = deliver(app, &paid, Some(stale));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("webhook_stale"))
    );
    assert_eq!(s.get_order(&id)["step"], "awaiting_payment");
    assert_eq!(s.balance(), (0, 0));

    // Signed as Stripe does: the payment is recharged and the saga runs to
    // the end in the same request.
    let (status, body) = deliver(app, &paid, signed(&paid));
    assert_eq!(
        (status, body["verdict"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    let o = s.get_order(&id);
    assert_eq!(o["status"], "fulfilled", "{o}");
    assert_eq!(o["payment"]["status"], "succeeded");
    assert_eq!(s.max_devices(), before + 2);
    assert_eq!(s.balance(), (0, 0));

    // Delivered again (Stripe retries with a new signature time): nothing
    // changes. A failure created before the success, arriving after it,
    // changes nothing either.
    let (status, body) = deliver(app, &paid, signed(&paid));
    assert_eq!((status, body["verdict"].as_str()), (200, Some("duplicate")));
    let late_failure = stripe::event(
        "evt_failed_earlier",
        "payment_intent.payment_failed",
        &intent,
        stripe::now() - 30,
    );
    let (status, body) = deliver(app, &late_failure, signed(&late_failure));
    assert_eq!(
        (status, body["verdict"].as_str()),
        (200, Some("ignored")),
        "{body}"
    );
    let o = s.get_order(&id);
    assert_eq!(
        (o["status"].as_str(), o["payment"]["status"].as_str()),
        (Some("fulfilled"), Some("succeeded"))
    );
    assert_eq!(s.max_devices(), before + 2);
    assert_eq!(
        count(&format!("SELECT count(*) FROM ledger_transactions WHERE kind = 'recharge' AND reference = 'payment:{}'",
            o["payment"]["id"].as_str().unwrap())),
        1
    );
    assert_eq!(s.events(&id, "order.fulfilled"), 1);
    assert_eq!(
        count("SELECT count(*) FROM outbox WHERE event_type = 'payment.received'"),
        1
    );

    // Every delivery is in the log, with its verdict.
    s.webhooks_logged(&[
        ("forged", 2),
        ("stale", 1),
        ("applied", 1),
        ("duplicate", 1),
        ("ignored", 1),
    ]);
    assert_eq!(
        app.get(&format!("{B}/admin/webhooks"), Some(&s.token))
            .status(),
        403
    );

    // Refunds go back to the card by default, Stripe asked once per refund
    // (the refund's id its idempotency key); the balance only passes the
    // money on (`refund` then `payout`). Stripe refusing fails the refund
    // and moves nothing; Stripe down answers 503, and the same request
    // again carries the refund out.
    let refund = |key: &str, amount: i64| {
        app.post_idempotent(
            &format!("{B}/orders/{id}/refunds"),
            &json!({"amount_minor": amount, "reason": "a week unused"}),
            Some(&s.staff),
            key,
        )
    };
    let (status, code) = error_code(refund("card-ref-0", 2_000)).unwrap();
    assert_eq!((status, code.as_str()), (409, "refund_refused"));
    let refused = &s.get_order(&id)["refunds"][0];
    assert_eq!(
        (refused["status"].as_str(), refused["destination"].as_str()),
        (Some("failed"), Some("provider")),
        "{refused}"
    );
    assert!(refused["failure"]
        .as_str()
        .unwrap()
        .contains("has not succeeded"));
    sim.pay(&pi);
    let part = expect_json(refund("card-ref-1", 2_000), 201);
    assert_eq!(
        (part["status"].as_str(), part["provider_ref"].as_str()),
        (Some("completed"), Some("re_sim1"))
    );
    assert_eq!(
        expect_json(refund("card-ref-1", 2_000), 200)["id"],
        part["id"]
    );
    assert_eq!(sim.refunded(&pi), 2_000);
    sim.set_down(true);
    let (status, _) = error_code(refund("card-ref-2", 1_000)).unwrap();
    assert_eq!(status, 503);
    assert_eq!(sim.refunded(&pi), 2_000);
    sim.set_down(false);
    let second = expect_json(refund("card-ref-2", 1_000), 200);
    assert_eq!(second["status"], "completed");
    assert_eq!(sim.refunded(&pi), 3_000);
    assert_eq!(s.balance(), (0, 0));
    assert_eq!(s.get_order(&id)["refunded_minor"], 3_000);
    assert_eq!(
        count("SELECT count(*) FROM ledger_transactions WHERE kind = 'payout'"),
        2
    );
    assert_eq!(s.max_devices(), before + 2);
    s.ledger_ok();

    // A top-up: a declined attempt, then the same intent paid.
    let top_up = |key: &str| {
        app.post_idempotent(
            &format!("{B}/recharges"),
            &json!({"amount_minor": 5_000, "currency": "CNY", "provider": "stripe"}),
            Some(&s.token),
            key,
        )
    };
    let p = expect_json(top_up("top-1"), 201);
    assert_eq!(expect_json(top_up("top-1"), 200)["id"], p["id"]);
    let intent = sim.intent(p["provider_ref"].as_str().unwrap()).unwrap();
    let declined = stripe::event(
        "evt_declined",
        "payment_intent.payment_failed",
        &intent,
        stripe::now() - 5,
    );
    assert_eq!(
        deliver(app, &declined, signed(&declined)).1["verdict"],
        "applied"
    );
    let pid = p["id"].as_str().unwrap();
    let got = expect_json(app.get(&format!("{B}/payments/{pid}"), Some(&s.token)), 200);
    assert_eq!(
        (got["status"].as_str(), got["last_error"].as_str()),
        (Some("failed"), Some("Your card was declined."))
    );
    // A second card declined too: its own event, at the next version.
    let again = stripe::event(
        "evt_declined_again",
        "payment_intent.payment_failed",
        &intent,
        stripe::now() - 3,
    );
    assert_eq!(deliver(app, &again, signed(&again)).1["verdict"], "applied");
    let ok = stripe::event(
        "evt_top_up",
        "payment_intent.succeeded",
        &intent,
        stripe::now(),
    );
    assert_eq!(deliver(app, &ok, signed(&ok)).1["verdict"], "applied");
    assert_eq!(s.balance(), (5_000, 0));
    let versions = |kind: &str| -> String {
        app.db("billing")
            .query_one(
                &format!(
            "SELECT coalesce(string_agg(aggregate_version::text, ',' ORDER BY aggregate_version), '') FROM outbox \
               WHERE aggregate_id = '{pid}' AND event_type = '{kind}'"
                ),
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(versions("payment.failed"), "2,3");
    assert_eq!(versions("payment.received"), "4");
    let mine = expect_json(
        app.get(&format!("{B}/payments?status=succeeded"), Some(&s.token)),
        200,
    );
    assert_eq!(mine["total"], 2);

    // The provider down when an order is placed: the order waits, and the
    // scheduler's job asks again once it is back.
    sim.set_down(true);
    let o = expect_json(buy("card-2"), 202);
    let second = o["id"].as_str().unwrap().to_string();
    assert_eq!(o["step"], "created");
    sim.set_down(false);
    let o = s.advance_until(&second, "awaiting_payment");
    let intent = sim
        .intent(o["payment"]["provider_ref"].as_str().unwrap())
        .unwrap();

    // Unpaid at its deadline: expired, its intent cancelled at Stripe,
    // nothing held. Paid anyway later: the money stays on the balance.
    app.db("billing")
        .execute(
            "UPDATE orders SET deadline = now() AT TIME ZONE 'UTC' - interval '1 second' WHERE id = $1",
            &[&uuid::Uuid::parse_str(&second).unwrap()],
        )
        .unwrap();
    let o = s.advance_until_done(&second);
    assert_eq!(o["status"], "expired", "{o}");
    assert_eq!(sim.intent(&intent.id).unwrap().status, "canceled");
    assert_eq!(s.balance(), (5_000, 0));
    let late = stripe::event(
        "evt_late",
        "payment_intent.succeeded",
        &intent,
        stripe::now(),
    );
    let (status, body) = deliver(app, &late, signed(&late));
    assert_eq!(
        (status, body["verdict"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert_eq!(s.balance(), (5_000 + 9_900, 0));
    assert_eq!(s.get_order(&second)["status"], "expired");
    s.ledger_ok();

    // The log keeps refused deliveries 30 days, accepted ones 90.
    app.db("billing")
        .batch_execute(
            "UPDATE webhook_events SET received_at = received_at - interval '40 days' \
              WHERE verdict IN ('forged', 'applied')",
        )
        .unwrap();
    let pruned = expect_json(
        app.post_as("scheduler", &format!("{B}/internal/webhooks/prune")),
        200,
    );
    assert_eq!(pruned["deleted"], 2);
    s.webhooks_logged(&[("forged", 0), ("stale", 1), ("applied", 5)]);
}

/// Delivers an Alipay notification: (status, body text).
fn notify_alipay(app: &TestApp, form: Vec<u8>) -> (u16, String) {
    let resp = app.call_raw(
        "POST",
        &format!("{B}/webhooks/alipay"),
        "application/x-www-form-urlencoded",
        form,
        None,
    );
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

#[test]
fn an_order_paid_with_alipay_is_fulfilled_once_by_its_rsa2_signed_notification() {
    let keys = alipay::Keys::generate();
    let s = shop_with(Options {
        env: keys.env(),
        ..Options::default()
    });
    let app = &s.app;
    let basic = s.plan("basic", "monthly", 9_900, 2);
    let before = s.max_devices();

    // The buyer is sent to Alipay with a request signed by the merchant's
    // key (checked here with OpenSSL, as Alipay checks it).
    let o = expect_json(
        app.post_idempotent(
            &format!("{B}/orders"),
            &json!({"plan_id": basic, "pay_with": "alipay"}),
            Some(&s.token),
            "ali-1",
        ),
        202,
    );
    let id = o["id"].as_str().unwrap().to_string();
    assert_eq!(o["step"], "awaiting_payment", "{o}");
    let payment = o["payment"]["id"].as_str().unwrap().to_string();
    let params = keys.verify_request(o["payment"]["checkout_url"].as_str().unwrap());
    assert_eq!(params["method"], "alipay.trade.page.pay");
    assert_eq!(params["app_id"], alipay::APP_ID);
    assert_eq!(params["sign_type"], "RSA2");
    let biz: Value = serde_json::from_str(&params["biz_content"]).unwrap();
    assert_eq!(biz["out_trade_no"], payment.as_str());
    assert_eq!(biz["total_amount"], "99.00");

    // Forged (signed with the merchant's key, not Alipay's), tampered and
    // stale notifications are refused and change nothing.
    let now = stripe::now();
    let paid = alipay::notify("n-1", &payment, "TRADE_SUCCESS", "99.00", now);
    let (status, body) = notify_alipay(app, keys.notification(&paid, true));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("webhook_forged"), "{body}");
    let tampered = String::from_utf8(keys.notification(&paid, false))
        .unwrap()
        .replace("total_amount=99.00", "total_amount=990.00");
    assert_eq!(notify_alipay(app, tampered.into_bytes()).0, 400);
    let old = alipay::notify("n-0", &payment, "TRADE_SUCCESS", "99.00", now - 3_600);
    let (status, body) = notify_alipay(app, keys.notification(&old, false));
    assert!(
        status == 400 && body.contains("webhook_stale"),
        "{status} {body}"
    );
    assert_eq!(s.get_order(&id)["step"], "awaiting_payment");
    assert_eq!(s.balance(), (0, 0));

    // Alipay's own: fulfilled, answered `success`; again: nothing changes.
    assert_eq!(
        notify_alipay(app, keys.notification(&paid, false)),
        (200, "success".to_string())
    );
    let o = s.get_order(&id);
    assert_eq!(o["status"], "fulfilled", "{o}");
    assert_eq!(s.max_devices(), before + 2);
    assert_eq!(
        notify_alipay(app, keys.notification(&paid, false)),
        (200, "success".to_string())
    );
    // A close sent before the payment, arriving after it, changes nothing.
    let closed = alipay::notify("n-closed", &payment, "TRADE_CLOSED", "99.00", now - 60);
    assert_eq!(notify_alipay(app, keys.notification(&closed, false)).0, 200);
    assert_eq!(s.get_order(&id)["status"], "fulfilled");
    assert_eq!(s.max_devices(), before + 2);
    assert_eq!(s.balance(), (0, 0));
    // Every delivery is in the log, with its verdict.
    s.webhooks_logged(&[
        ("forged", 2),
        ("stale", 1),
        ("applied", 1),
        ("duplicate", 1),
        ("ignored", 1),
    ]);
    s.ledger_ok();
}
