//! Tickets end to end: the status flow with its illegal moves, internal
//! notes hidden from the opener, assignment, rating; and the audit log that
//! records privileged actions, searchable and append-only.

use e2e::{error_code, expect_json, roles, TestApp};
use serde_json::json;

const T: &str = "/api/v1/user/tickets";

#[test]
fn a_ticket_goes_through_its_status_flow_with_replies_notes_and_a_rating() {
    let app = TestApp::spawn();
    let platform = app.platform_admin();
    let tenant = app.create_tenant(&platform.token, "help");
    let staff = app.create_user(
        &platform.token,
        json!({"tenant_id": tenant, "role_ids": [roles::SUPPORT]}),
    );
    let opener = app.create_user(
        &platform.token,
        json!({"tenant_id": tenant, "role_ids": [roles::USER]}),
    );
    let other = app.create_user(
        &platform.token,
        json!({"tenant_id": tenant, "role_ids": [roles::USER]}),
    );

    let t = expect_json(
        app.post(T, &json!({"subject": "Phone frozen", "body": "The screen is black", "category": "technical", "priority": "high"}), opener.t()),
        201,
    );
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(
        (t["status"].as_str(), t["number"].as_i64().is_some()),
        (Some("open"), true)
    );
    // Another plain user of the tenant does not see it; staff does.
    assert_eq!(
        error_code(app.get(&format!("{T}/{id}"), other.t()))
            .unwrap()
            .0,
        404
    );
    assert_eq!(expect_json(app.get(T, other.t()), 200)["total"], 0);
    assert_eq!(
        expect_json(app.get(&format!("{T}?status=open"), staff.t()), 200)["total"],
        1
    );
    // The opener cannot move it to in_progress or resolve it.
    for to in ["in_progress", "resolved", "waiting"] {
        let r = app.post(
            &format!("{T}/{id}/status"),
            &json!({"status": to}),
            opener.t(),
        );
        assert_eq!(error_code(r).unwrap().0, 409, "{to}");
    }
    // Staff: an internal note, then a reply (which takes the ticket).
    expect_json(
        app.post(
            &format!("{T}/{id}/replies"),
            &json!({"body": "probably the GPU node", "internal": true}),
            staff.t(),
        ),
        201,
    );
    let r = app.post(
        &format!("{T}/{id}/replies"),
        &json!({"body": "sneaky", "internal": true}),
        opener.t(),
    );
    assert_eq!(error_code(r).unwrap().0, 403);
    expect_json(
        app.post(
            &format!("{T}/{id}/replies"),
            &json!({"body": "Looking into it"}),
            staff.t(),
        ),
        201,
    );
    let t = expect_json(app.get(&format!("{T}/{id}"), opener.t()), 200);
    assert_eq!(t["status"], "in_progress");
    assert!(t["first_response_at"].is_string());
    let seen_by_opener = expect_json(app.get(&format!("{T}/{id}/replies"), opener.t()), 200);
    let seen_by_staff = expect_json(app.get(&format!("{T}/{id}/replies"), staff.t()), 200);
    assert_eq!(
        (
            seen_by_opener["total"].as_i64(),
            seen_by_staff["total"].as_i64()
        ),
        (Some(1), Some(2))
    );
    // Waiting for the opener; their reply puts it back in progress.
    expect_json(
        app.post(
            &format!("{T}/{id}/status"),
            &json!({"status": "waiting"}),
            staff.t(),
        ),
        200,
    );
    expect_json(
        app.post(
            &format!("{T}/{id}/replies"),
            &json!({"body": "Still black"}),
            opener.t(),
        ),
        201,
    );
    assert_eq!(
        expect_json(app.get(&format!("{T}/{id}"), staff.t()), 200)["status"],
        "in_progress"
    );
    // Assign to staff; a user of no tenant of this ticket cannot be assigned.
    let t = expect_json(
        app.post(
            &format!("{T}/{id}/assign"),
            &json!({"assignee_id": staff.id}),
            staff.t(),
        ),
        200,
    );
    assert_eq!(t["assignee_id"], staff.id.as_str());
    let r = app.post(
        &format!("{T}/{id}/assign"),
        &json!({"assignee_id": uuid::Uuid::new_v4()}),
        staff.t(),
    );
    assert_eq!(error_code(r).unwrap().0, 400);
    // Rating before resolution is refused; resolve, rate, close.
    let r = app.post(
        &format!("{T}/{id}/rating"),
        &json!({"rating": 5}),
        opener.t(),
    );
    assert_eq!(error_code(r).unwrap().0, 409);
    expect_json(
        app.post(
            &format!("{T}/{id}/status"),
            &json!({"status": "resolved"}),
            staff.t(),
        ),
        200,
    );
    let r = app.post(
        &format!("{T}/{id}/rating"),
        &json!({"rating": 4, "feedback": "quick"}),
        staff.t(),
    );
    assert_eq!(error_code(r).unwrap().0, 403, "only the opener rates");
    let t = expect_json(
        app.post(
            &format!("{T}/{id}/rating"),
            &json!({"rating": 4, "feedback": "quick"}),
            opener.t(),
        ),
        200,
    );
    assert_eq!(t["rating"], 4);
    let t = expect_json(
        app.post(
            &format!("{T}/{id}/status"),
            &json!({"status": "closed"}),
            opener.t(),
        ),
        200,
    );
    assert!(t["closed_at"].is_string());
    // Closed is final.
    let r = app.post(
        &format!("{T}/{id}/replies"),
        &json!({"body": "one more thing"}),
        opener.t(),
    );
    assert_eq!(error_code(r).unwrap().0, 409);
    let r = app.post(
        &format!("{T}/{id}/status"),
        &json!({"status": "open"}),
        opener.t(),
    );
    assert_eq!(error_code(r).unwrap().0, 409);

    // The audit log has the privileged moves, searchable by action prefix and
    // resource, and the support agent sees their tenant's log.
    let log = expect_json(
        app.get(
            &format!("/api/v1/user/audit-logs?action=ticket.&resource_id={id}"),
            staff.t(),
        ),
        200,
    );
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "ticket.status",
            "ticket.status",
            "ticket.assign",
            "ticket.status",
            "ticket.create"
        ]
    );
    assert!(log["items"][0]["request_id"].is_string());
    let from_future = expect_json(
        app.get(
            "/api/v1/user/audit-logs?from=2099-01-01T00:00:00Z",
            staff.t(),
        ),
        200,
    );
    assert_eq!(from_future["total"], 0);
}

#[test]
fn the_audit_log_is_append_only_even_for_its_owner() {
    let app = TestApp::spawn();
    let platform = app.platform_admin();
    app.create_tenant(&platform.token, "audited");
    let mut db = app.db("user");
    let before: i64 = db
        .query_one("SELECT count(*) FROM audit_logs", &[])
        .unwrap()
        .get(0);
    assert!(before >= 2, "bootstrap and tenant creation are audited");
    for sql in [
        "UPDATE audit_logs SET action = 'x'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ] {
        let err = db.batch_execute(sql).unwrap_err();
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(message.contains("append-only"), "{sql}: {err:?}");
    }
    let after: i64 = db
        .query_one("SELECT count(*) FROM audit_logs", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    let log = expect_json(
        app.get("/api/v1/user/audit-logs?action=tenant.create", platform.t()),
        200,
    );
    assert_eq!(log["total"], 1);
    assert_eq!(log["items"][0]["actor_id"], platform.id.as_str());
    assert_eq!(log["items"][0]["after"]["code"], "audited");
}
