//! Bad input, systematically: every route that takes a JSON body gets a
//! valid body from the table below, and the test derives the bad ones from
//! it: malformed JSON, the wrong content type, an oversized body, a body that
//! is not an object, each required field missing, each field of the wrong
//! type, each string field oversized, each reference an unknown id, an
//! unknown field, invalid emails. Every route with an id in its path is
//! called with unknown and malformed ids, and every list with bad paging.
//! Device operations get bad values of their own (query parameters, path
//! segments, raw bodies) on a running device.
//! Each answer must be a 4xx in the common error shape, and afterwards every
//! table of every database must be exactly as before. The table of routes is
//! checked against `docs/api.md`, so a new route without a case fails here.

use e2e::{error_code, expect_json, roles, Options, Session, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Who calls a route.
#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    /// Another component (or the scheduler), with its service token.
    Service(&'static str),
    /// The fixture node's runtime agent, with its signature.
    Agent,
    Platform,
    TenantAdmin,
    Member,
}

/// One route with a valid body.
struct Case {
    method: &'static str,
    path: String,
    who: Who,
    body: Value,
    /// Fields whose absence is an error.
    required: &'static [&'static str],
    /// Fields that name existing rows (an unknown id must be refused).
    refs: &'static [&'static str],
    /// Fields holding emails.
    emails: &'static [&'static str],
}

fn case(
    method: &'static str,
    path: String,
    who: Who,
    body: Value,
    required: &'static [&'static str],
) -> Case {
    Case {
        method,
        path,
        who,
        body,
        required,
        refs: &[],
        emails: &[],
    }
}

/// The ids the cases refer to.
struct Fixture {
    platform: Session,
    admin: Session,
    member: Session,
    tenant: String,
    department: String,
    role: String,
    scope: String,
    fields: String,
    ticket: String,
    /// An online node (its id is a UUID, so paths have one shape).
    node: String,
    agent: e2e::agent::ScriptedAgent,
    /// A device of the member's on it.
    device: String,
    /// An open APK upload of the member's (1 byte, no chunk yet).
    upload: String,
}

fn fixture(app: &TestApp) -> Fixture {
    let platform = app.platform_admin();
    let tenant = app.create_tenant(&platform.token, "fixture");
    let admin = app.create_user(
        &platform.token,
        json!({"tenant_id": tenant, "role_ids": [roles::TENANT_ADMIN]}),
    );
    let a = admin.t();
    let id = |v: Value| v["id"].as_str().unwrap().to_string();
    let department = id(expect_json(
        app.post("/api/v1/user/departments", &json!({"name": "D"}), a),
        201,
    ));
    let member = app.create_user(
        &admin.token,
        json!({"department_id": department, "role_ids": [roles::USER]}),
    );
    let role = id(expect_json(
        app.post(
            "/api/v1/user/roles",
            &json!({"code": "r", "name": "R", "permissions": ["user:read"]}),
            a,
        ),
        201,
    ));
    let scope = id(expect_json(
        app.post(
            "/api/v1/user/data-scopes",
            &json!({"role_id": role, "resource": "user", "scope": "tenant"}),
            a,
        ),
        201,
    ));
    let fields = id(expect_json(
        app.post(
            "/api/v1/user/field-permissions",
            &json!({"role_id": role, "resource": "user", "hidden": ["phone"]}),
            a,
        ),
        201,
    ));
    let ticket = id(expect_json(
        app.post(
            "/api/v1/user/tickets",
            &json!({"subject": "S", "body": "B", "category": "other"}),
            member.t(),
        ),
        201,
    ));
    // A pending reservation and an API key, so that their tables are not
    // empty while the test checks that nothing changes.
    id(expect_json(
        app.post_json_as(
            "device",
            "/api/v1/user/internal/quotas/reservations",
            &json!({"user_id": member.id, "idempotency_key": "fixture", "resources": {"devices": 1}}),
        ),
        201,
    ));
    id(expect_json(
        app.post(
            "/api/v1/auth/api-keys",
            &json!({"name": "k", "scopes": ["ticket:read"]}),
            member.t(),
        ),
        201,
    ));
    // An online node and a device of the member's on it.
    let node = uuid::Uuid::new_v4().to_string();
    let enrolled = expect_json(
        app.post("/api/v1/device/nodes", &json!({"id": node}), platform.t()),
        201,
    );
    let agent =
        e2e::agent::ScriptedAgent::new(&app.base, &node, enrolled["secret"].as_str().unwrap());
    assert_eq!(agent.register(), 204);
    assert_eq!(agent.report(vec![agent.heartbeat(vec![])]).0, 200);
    let device = expect_json(
        app.post(
            "/api/v1/device/devices",
            &json!({"name": "fixture", "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}}),
            member.t(),
        ),
        202,
    )["device_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Running, so that only the input can be what refuses a device operation.
    let (status, answer) = agent.report(vec![agent.status(
        &device,
        agent_protocol::messages::DeviceStatus::Ready,
        1,
    )]);
    assert_eq!(
        (status, answer["applied"].as_i64()),
        (200, Some(1)),
        "{answer}"
    );
    let upload = id(expect_json(
        app.post("/api/v1/app/uploads", &json!({"size": 1}), member.t()),
        201,
    ));
    Fixture {
        upload,
        platform,
        admin,
        member,
        tenant,
        department,
        role,
        scope,
        fields,
        ticket,
        node,
        agent,
        device,
    }
}

fn cases(f: &Fixture) -> Vec<Case> {
    use Who::*;
    let u = "/api/v1/user";
    let a = "/api/v1/auth";
    let (m, d, r, t, k) = (&f.member.id, &f.department, &f.role, &f.ticket, &f.tenant);
    let menu = "00000000-0000-0000-0000-00000000c001";
    let with = |mut c: Case, refs: &'static [&'static str], emails: &'static [&'static str]| {
        c.refs = refs;
        c.emails = emails;
        c
    };
    vec![
        with(
            case(
                "POST",
                format!("{a}/register"),
                Nobody,
                json!({"email": "new@example.com", "password": "long enough", "display_name": "N"}),
                &["email", "password", "display_name"],
            ),
            &[],
            &["email"],
        ),
        with(
            case(
                "POST",
                format!("{a}/login"),
                Nobody,
                json!({"email": "nobody@example.com", "password": "long enough"}),
                &["email", "password"],
            ),
            &[],
            &[],
        ),
        case(
            "POST",
            format!("{a}/refresh"),
            Nobody,
            json!({"refresh_token": "x"}),
            &["refresh_token"],
        ),
        case(
            "POST",
            format!("{a}/logout"),
            Nobody,
            json!({"refresh_token": "x"}),
            &["refresh_token"],
        ),
        case(
            "POST",
            format!("{a}/password"),
            Member,
            json!({"current_password": "wrong password", "new_password": "long enough"}),
            &["current_password", "new_password"],
        ),
        with(
            case(
                "POST",
                format!("{a}/password-reset/request"),
                Nobody,
                json!({"email": "nobody@example.com"}),
                &["email"],
            ),
            &[],
            &["email"],
        ),
        case(
            "POST",
            format!("{a}/password-reset/confirm"),
            Nobody,
            json!({"token": "x", "new_password": "long enough"}),
            &["token", "new_password"],
        ),
        case(
            "POST",
            format!("{a}/api-keys"),
            Member,
            json!({"name": "k", "scopes": ["ticket:read"], "expires_in_days": 1}),
            &["name", "scopes"],
        ),
        case(
            "POST",
            format!("{a}/internal/api-keys/verify"),
            Who::Service("user"),
            json!({"key": "cpk_x"}),
            &["key"],
        ),
        with(
            case(
                "PUT",
                format!("{a}/internal/credentials"),
                Who::Service("user"),
                json!({"user_id": m, "email": "other@example.com", "password": "long enough"}),
                &["user_id", "email", "password"],
            ),
            &["user_id"],
            &["email"],
        ),
        case(
            "PATCH",
            format!("{u}/me"),
            Member,
            json!({"display_name": "N", "phone": "+12345678", "metadata": {"a": 1}}),
            &[],
        ),
        with(
            case(
                "POST",
                format!("{u}/users"),
                Platform,
                json!({"email": "new@example.com", "display_name": "N", "password": "long enough", "phone": "+12345678", "tenant_id": k, "department_id": d, "role_ids": [roles::USER]}),
                &["email", "display_name", "password"],
            ),
            &["tenant_id", "department_id"],
            &["email"],
        ),
        with(
            case(
                "PATCH",
                format!("{u}/users/{m}"),
                TenantAdmin,
                json!({"display_name": "N", "phone": "+12345678", "metadata": {}, "department_id": d}),
                &[],
            ),
            &["department_id"],
            &[],
        ),
        case(
            "PUT",
            format!("{u}/users/{m}/roles"),
            TenantAdmin,
            json!({"role_ids": [roles::USER, r]}),
            &["role_ids"],
        ),
        case(
            "PUT",
            format!("{u}/users/{m}/password"),
            TenantAdmin,
            json!({"password": "long enough"}),
            &["password"],
        ),
        case(
            "POST",
            format!("{u}/roles"),
            TenantAdmin,
            json!({"code": "c", "name": "C", "description": "d", "permissions": ["user:read"]}),
            &["code", "name"],
        ),
        case(
            "PATCH",
            format!("{u}/roles/{r}"),
            TenantAdmin,
            json!({"name": "C", "description": "d"}),
            &[],
        ),
        case(
            "PUT",
            format!("{u}/roles/{r}/permissions"),
            TenantAdmin,
            json!({"permissions": ["user:read"]}),
            &["permissions"],
        ),
        case(
            "POST",
            format!("{u}/permissions"),
            Platform,
            json!({"code": "thing:do", "description": "d"}),
            &["code"],
        ),
        with(
            case(
                "POST",
                format!("{u}/data-scopes"),
                TenantAdmin,
                json!({"role_id": r, "resource": "ticket", "scope": "custom", "department_ids": [d]}),
                &["role_id", "resource", "scope"],
            ),
            &["role_id"],
            &[],
        ),
        case(
            "PUT",
            format!("{u}/data-scopes/{}", f.scope),
            TenantAdmin,
            json!({"resource": "user", "scope": "department"}),
            &["resource", "scope"],
        ),
        with(
            case(
                "POST",
                format!("{u}/field-permissions"),
                TenantAdmin,
                json!({"role_id": r, "resource": "ticket", "hidden": ["body"], "masked": []}),
                &["role_id", "resource"],
            ),
            &["role_id"],
            &[],
        ),
        case(
            "PUT",
            format!("{u}/field-permissions/{}", f.fields),
            TenantAdmin,
            json!({"resource": "user", "hidden": ["email"]}),
            &["resource"],
        ),
        with(
            case(
                "POST",
                format!("{u}/tenants"),
                Platform,
                json!({"code": "t2", "name": "T", "contact_email": "a@example.com", "max_users": 1, "max_devices": 1, "expires_at": "2030-01-01T00:00:00Z"}),
                &["code", "name"],
            ),
            &[],
            &["contact_email"],
        ),
        with(
            case(
                "PATCH",
                format!("{u}/tenants/{k}"),
                Platform,
                json!({"name": "T", "status": "active", "contact_email": "a@example.com", "max_users": 5, "max_devices": 5, "expires_at": "2030-01-01T00:00:00Z"}),
                &[],
            ),
            &[],
            &["contact_email"],
        ),
        with(
            case(
                "POST",
                format!("{u}/departments"),
                TenantAdmin,
                json!({"name": "N", "parent_id": d, "code": "n", "manager_id": m, "sort": 1}),
                &["name"],
            ),
            &["parent_id", "manager_id"],
            &[],
        ),
        with(
            case(
                "PATCH",
                format!("{u}/departments/{d}"),
                TenantAdmin,
                json!({"name": "N", "code": "n", "manager_id": m, "sort": 1}),
                &[],
            ),
            &["manager_id"],
            &[],
        ),
        with(
            case(
                "POST",
                format!("{u}/departments/{d}/move"),
                TenantAdmin,
                json!({"parent_id": d}),
                &["parent_id"],
            ),
            &["parent_id"],
            &[],
        ),
        with(
            case(
                "POST",
                format!("{u}/menus"),
                Platform,
                json!({"code": "m2", "name": "M", "path": "/m", "parent_id": menu, "icon": "x", "sort": 1, "permission": "user:read", "visible": true}),
                &["code", "name", "path"],
            ),
            &["parent_id"],
            &[],
        ),
        with(
            case(
                "PUT",
                format!("{u}/menus/{menu}"),
                Platform,
                json!({"code": "devices", "name": "M", "path": "/m", "parent_id": null, "icon": "x", "sort": 1, "permission": "device:read", "visible": true}),
                &["code", "name", "path"],
            ),
            &[],
            &[],
        ),
        case(
            "PATCH",
            format!("{u}/quotas/{m}"),
            TenantAdmin,
            json!({"max_devices": 3, "max_concurrent_devices": 1, "max_cpu_cores": 4, "max_memory_mb": 4096, "max_storage_gb": 10, "max_minutes_per_day": 60, "max_minutes_per_month": 600}),
            &[],
        ),
        case(
            "POST",
            format!("{u}/tickets"),
            Member,
            json!({"subject": "S", "body": "B", "category": "other", "priority": "low"}),
            &["subject", "body", "category"],
        ),
        case(
            "PATCH",
            format!("{u}/tickets/{t}"),
            TenantAdmin,
            json!({"subject": "S", "category": "billing", "priority": "high"}),
            &[],
        ),
        case(
            "POST",
            format!("{u}/tickets/{t}/replies"),
            Member,
            json!({"body": "B", "internal": false}),
            &["body"],
        ),
        case(
            "POST",
            format!("{u}/tickets/{t}/status"),
            TenantAdmin,
            json!({"status": "waiting"}),
            &["status"],
        ),
        with(
            case(
                "POST",
                format!("{u}/tickets/{t}/assign"),
                TenantAdmin,
                json!({"assignee_id": f.admin.id}),
                &["assignee_id"],
            ),
            &["assignee_id"],
            &[],
        ),
        case(
            "POST",
            format!("{u}/tickets/{t}/rating"),
            Member,
            json!({"rating": 5, "feedback": "f"}),
            &["rating"],
        ),
        with(
            case(
                "POST",
                format!("{u}/internal/users"),
                Who::Service("auth"),
                json!({"id": uuid::Uuid::new_v4(), "email": f.member.email, "display_name": "N"}),
                &["id", "email", "display_name"],
            ),
            &[],
            &["email"],
        ),
        with(
            case(
                "POST",
                format!("{u}/internal/quotas/reservations"),
                Who::Service("device"),
                json!({"user_id": m, "idempotency_key": "fixture-2", "resources": {"devices": 1}, "ttl_secs": 60}),
                &["user_id", "idempotency_key", "resources"],
            ),
            &["user_id"],
            &[],
        ),
        case(
            "POST",
            format!("{u}/internal/quotas/reservations"),
            Who::Service("device"),
            json!({"user_id": m, "idempotency_key": "fixture-3", "resources": {"devices": -1}}),
            &[],
        ),
        case(
            "POST",
            format!("{u}/internal/quotas/reservations"),
            Who::Service("device"),
            json!({"user_id": m, "idempotency_key": "fixture-4", "resources": {}}),
            &[],
        ),
        case(
            "POST",
            format!("{u}/internal/quotas/reservations"),
            Who::Service("device"),
            json!({"user_id": m, "idempotency_key": "fixture-5", "resources": {"gpus": 1}}),
            &[],
        ),
        with(
            case(
                "POST",
                format!("{u}/internal/quotas/usage"),
                Who::Service("device"),
                json!({"user_id": m, "minutes": 5, "idempotency_key": "u1"}),
                &["user_id", "minutes", "idempotency_key"],
            ),
            &["user_id"],
            &[],
        ),
        with(
            case(
                "POST",
                format!("{u}/internal/quotas/grants"),
                Who::Service("billing"),
                json!({"user_id": m, "idempotency_key": "grant-1", "resources": {"devices": 1}}),
                &["user_id", "idempotency_key", "resources"],
            ),
            &["user_id"],
            &[],
        ),
        case(
            "POST",
            format!("{u}/internal/quotas/grants"),
            Who::Service("billing"),
            json!({"user_id": m, "idempotency_key": "grant-2", "resources": {}}),
            &[],
        ),
        case(
            "POST",
            "/api/v1/device/internal/orders/devices".to_string(),
            Service("billing"),
            json!({"order_id": uuid::Uuid::new_v4(), "user_id": m, "name": "Pack",
                   "devices": {"count": 1, "cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}}),
            &["order_id", "user_id", "name", "devices"],
        ),
        case(
            "POST",
            "/api/v1/device/internal/orders/devices/release".to_string(),
            Service("billing"),
            json!({"order_id": uuid::Uuid::new_v4(), "user_id": m}),
            &["order_id", "user_id"],
        ),
        case(
            "POST",
            "/api/v1/device/devices".to_string(),
            Member,
            json!({"name": "p", "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4},
                   "tags": ["a"], "start": true, "zone": "sh-1", "region": "cn",
                   "idle_timeout_secs": 600, "max_session_secs": 3600}),
            &["name"],
        ),
        case(
            "PATCH",
            format!("/api/v1/device/devices/{}", f.device),
            Member,
            json!({"name": "q", "tags": ["b"], "idle_timeout_secs": 600, "max_session_secs": 3600}),
            &[],
        ),
        case(
            "PATCH",
            format!("/api/v1/device/devices/{}", f.device),
            Platform,
            json!({"expires_at": "2030-01-01T00:00:00Z"}),
            &[],
        ),
        case(
            "POST",
            format!("/api/v1/device/devices/{}/shell", f.device),
            TenantAdmin,
            json!({"command": "echo hi", "timeout_ms": 1000}),
            &["command"],
        ),
        case(
            "POST",
            format!("/api/v1/device/devices/{}/apps", f.device),
            Member,
            json!({"url": "http://cp.example/apks/a.apk", "sha256": "0123456789abcdef".repeat(4)}),
            &["url", "sha256"],
        ),
        case(
            "POST",
            format!("/api/v1/device/devices/{}/snapshots", f.device),
            Member,
            json!({"name": "s1", "description": "before"}),
            &[],
        ),
        case(
            "PUT",
            format!("/api/v1/device/devices/{}/snapshot-policy", f.device),
            Member,
            json!({"every_secs": 86400, "keep_last": 3, "max_age_secs": 604800, "applies_to": "all"}),
            &[],
        ),
        case(
            "PUT",
            format!("/api/v1/device/devices/{}/identity", f.device),
            Member,
            json!({"brand": "google", "model": "Pixel 8", "serial": "ABC123"}),
            &[],
        ),
        case(
            "PUT",
            format!("/api/v1/device/devices/{}/network", f.device),
            Member,
            json!({"proxy": {"type": "http", "host": "proxy.example", "port": 3128}, "dns": ["1.1.1.1"]}),
            &[],
        ),
        case(
            "POST",
            format!("/api/v1/device/devices/{}/renew", f.device),
            Member,
            json!({"identity": {"model": "Pixel 8"}}),
            &[],
        ),
        case(
            "POST",
            format!("/api/v1/device/devices/{}/restore", f.device),
            Member,
            json!({"snapshot_id": "00000000-0000-0000-0000-000000000000"}),
            &["snapshot_id"],
        ),
        case(
            "POST",
            "/api/v1/device/snapshots/00000000-0000-0000-0000-000000000000/clone".to_string(),
            Member,
            json!({"name": "c", "start": false, "tags": ["a"]}),
            &["name"],
        ),
        case(
            "POST",
            "/api/v1/device/batches".to_string(),
            Member,
            json!({"action": "stop", "device_ids": [f.device], "concurrency": 2}),
            &["action"],
        ),
        case(
            "PUT",
            "/api/v1/device/templates/00000000-0000-0000-0000-000000000000/pool".to_string(),
            Platform,
            json!({"size": 2}),
            &["size"],
        ),
        case(
            "POST",
            "/api/v1/device/templates".to_string(),
            TenantAdmin,
            json!({"name": "t", "description": "d", "category": "qa", "spec": {"cpu_cores": 1},
                   "tags": ["a"], "preinstalled_apps": [], "properties": {"debug.x": "1"},
                   "init_commands": ["true"], "default_lifetime_secs": 3600,
                   "default_idle_timeout_secs": 600, "default_max_session_secs": 7200}),
            &["name"],
        ),
        case(
            "PATCH",
            "/api/v1/device/templates/00000000-0000-0000-0000-000000000000".to_string(),
            TenantAdmin,
            json!({"description": "d2", "category": "qa2"}),
            &[],
        ),
        case(
            "POST",
            "/api/v1/device/nodes".to_string(),
            Platform,
            json!({"id": "bad-input-node", "name": "n", "address": "10.0.0.9", "region": "cn", "zone": "sh-2",
                   "labels": {"a": "b"}, "taints": [], "priority": 1, "cpu_overcommit_pct": 400, "memory_overcommit_pct": 200}),
            &["id"],
        ),
        case(
            "PATCH",
            format!("/api/v1/device/nodes/{}", f.node),
            Platform,
            json!({"name": "n2", "priority": 2, "zone": "sh-3"}),
            &[],
        ),
        case(
            "POST",
            "/api/v1/app/uploads".to_string(),
            Member,
            json!({"size": 1000}),
            &["size"],
        ),
        case(
            "POST",
            format!("/api/v1/app/uploads/{}/complete", f.upload),
            Member,
            json!({"visibility": "private", "category": "tools", "tags": ["a"]}),
            &[],
        ),
        case(
            "POST",
            "/api/v1/app/versions/00000000-0000-0000-0000-000000000000/submit".to_string(),
            Member,
            json!({"comment": "c"}),
            &[],
        ),
        case(
            "POST",
            "/api/v1/app/versions/00000000-0000-0000-0000-000000000000/review".to_string(),
            Platform,
            json!({"decision": "approve", "comment": "c"}),
            &["decision"],
        ),
        case(
            "POST",
            "/api/v1/app/versions/00000000-0000-0000-0000-000000000000/withdraw".to_string(),
            Member,
            json!({"reason": "r"}),
            &[],
        ),
        case(
            "POST",
            "/api/v1/app/installs".to_string(),
            Member,
            json!({"version_id": "00000000-0000-0000-0000-000000000000", "device_ids": [f.device], "concurrency": 2}),
            &["version_id"],
        ),
        with(
            case(
                "POST",
                "/api/v1/billing/admin/postings".to_string(),
                Platform,
                json!({"user_id": f.member.id, "kind": "reward", "amount_minor": 100, "currency": "CNY", "reason": "r", "reference": "x"}),
                &["user_id", "kind", "amount_minor", "currency", "reason"],
            ),
            &["user_id"],
            &[],
        ),
        case(
            "PUT",
            format!("/api/v1/billing/admin/credit-limits/{}", f.member.id),
            Platform,
            json!({"currency": "CNY", "credit_limit_minor": 100, "reason": "r"}),
            &["currency", "credit_limit_minor", "reason"],
        ),
        case(
            "POST",
            "/api/v1/billing/plans".to_string(),
            Platform,
            json!({"code": "basic", "name": "Basic", "description": "d", "cycle": "monthly", "price_minor": 9900,
                   "currency": "CNY", "quota": {"devices": 1}, "device_limits": {"max_cpu_cores": 2}}),
            &["code", "name", "cycle", "price_minor", "currency", "quota"],
        ),
        case(
            "PATCH",
            "/api/v1/billing/plans/00000000-0000-0000-0000-000000000000".to_string(),
            Platform,
            json!({"name": "N", "description": "d", "price_minor": 1, "active": false}),
            &[],
        ),
        with(
            case(
                "POST",
                "/api/v1/billing/orders".to_string(),
                Member,
                json!({"plan_id": "00000000-0000-0000-0000-000000000000", "cycles": 1, "pay_with": "balance"}),
                &["plan_id"],
            ),
            &["plan_id"],
            &[],
        ),
        case(
            "POST",
            "/api/v1/billing/recharges".to_string(),
            Member,
            json!({"amount_minor": 5000, "currency": "CNY", "provider": "stripe"}),
            &["amount_minor", "currency", "provider"],
        ),
        case(
            "POST",
            "/api/v1/billing/rules".to_string(),
            Platform,
            json!({"code": "dt", "name": "Device time", "resource": "device_time",
                   "pricing": {"kind": "per_use", "unit_price_minor": 120, "per": 60}, "currency": "CNY",
                   "priority": 1, "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}),
            &["code", "name", "resource", "pricing", "currency"],
        ),
        case(
            "PATCH",
            "/api/v1/billing/rules/00000000-0000-0000-0000-000000000000".to_string(),
            Platform,
            json!({"name": "N", "priority": 2, "valid_from": "2026-01-01T00:00:00Z", "valid_until": null, "active": false}),
            &[],
        ),
        case(
            "POST",
            "/api/v1/billing/rules/calculate".to_string(),
            Member,
            json!({"lines": [{"resource": "device_time", "quantity": 90, "start": "2026-12-01T00:00:00Z"}],
                   "at": "2026-12-01T00:00:00Z"}),
            &["lines"],
        ),
        case(
            "POST",
            "/api/v1/billing/invoices/00000000-0000-0000-0000-000000000000/void".to_string(),
            Platform,
            json!({"reason": "r"}),
            &["reason"],
        ),
        case(
            "POST",
            "/api/v1/billing/orders/00000000-0000-0000-0000-000000000000/refunds".to_string(),
            Platform,
            json!({"amount_minor": 100, "reason": "r"}),
            &["reason"],
        ),
        case(
            "POST",
            format!("/api/v1/device/agent/nodes/{}/register", f.node),
            Agent,
            serde_json::to_value(f.agent.registration()).unwrap(),
            &["node_id", "address", "capacity", "labels", "agent_version"],
        ),
        case(
            "POST",
            format!("/api/v1/device/agent/nodes/{}/reports", f.node),
            Agent,
            json!({"messages": []}),
            &["messages"],
        ),
        with(
            case(
                "POST",
                "/api/v1/notification/internal/password-resets".to_string(),
                Who::Service("auth"),
                json!({"user_id": m, "email": "a@example.com", "token": "t", "expires_at": "2030-01-01T00:00:00Z"}),
                &["user_id", "email", "token", "expires_at"],
            ),
            &[],
            &["email"],
        ),
    ]
}

/// Routes without a body: their only input is the path.
const NO_BODY: &[&str] = &[
    "POST /api/v1/auth/logout-all",
    "POST /api/v1/auth/api-keys/:id/revoke",
    "DELETE /api/v1/auth/api-keys/:id",
    "POST /api/v1/auth/internal/events/catch-up",
    "POST /api/v1/auth/internal/events/prune",
    "POST /api/v1/auth/internal/outbox/publish",
    "POST /api/v1/auth/admin/dead-letters/:id/replay",
    "DELETE /api/v1/user/users/:id",
    "POST /api/v1/user/users/:id/lock",
    "POST /api/v1/user/users/:id/unlock",
    "DELETE /api/v1/user/roles/:id",
    "DELETE /api/v1/user/permissions/:code",
    "DELETE /api/v1/user/data-scopes/:id",
    "DELETE /api/v1/user/field-permissions/:id",
    "DELETE /api/v1/user/tenants/:id",
    "DELETE /api/v1/user/departments/:id",
    "DELETE /api/v1/user/menus/:id",
    "POST /api/v1/user/internal/outbox/publish",
    "POST /api/v1/user/internal/events/prune",
    "POST /api/v1/user/internal/events/catch-up",
    "POST /api/v1/user/admin/dead-letters/:id/replay",
    "POST /api/v1/user/internal/quotas/reservations/:id/commit",
    "POST /api/v1/user/internal/quotas/reservations/:id/release",
    "POST /api/v1/user/internal/quotas/expire",
    "POST /api/v1/user/internal/tenants/expire",
    "POST /api/v1/user/internal/quotas/roll",
    "POST /api/v1/user/internal/admin-grants/apply",
    "POST /api/v1/notification/notifications/read-all",
    "POST /api/v1/notification/notifications/:id/read",
    "DELETE /api/v1/notification/notifications/:id",
    "POST /api/v1/notification/internal/events/catch-up",
    "POST /api/v1/notification/internal/events/prune",
    "POST /api/v1/notification/admin/dead-letters/:id/replay",
    "DELETE /api/v1/device/devices/:id",
    "DELETE /api/v1/device/devices/:id/apps/:package",
    "POST /api/v1/device/devices/:id/start",
    "POST /api/v1/device/devices/:id/stop",
    "POST /api/v1/device/devices/:id/restart",
    "POST /api/v1/device/nodes/:id/cordon",
    "POST /api/v1/device/nodes/:id/uncordon",
    "POST /api/v1/device/nodes/:id/maintenance",
    "POST /api/v1/device/nodes/:id/activate",
    "POST /api/v1/device/nodes/:id/drain",
    "POST /api/v1/device/nodes/:id/secret",
    "POST /api/v1/device/nodes/:id/revoke",
    "POST /api/v1/device/internal/nodes/liveness",
    "POST /api/v1/device/internal/operations/expire",
    "POST /api/v1/device/internal/commands/relay",
    "POST /api/v1/device/internal/claims/settle",
    "POST /api/v1/device/internal/devices/reconcile",
    "POST /api/v1/device/internal/outbox/publish",
    "POST /api/v1/device/internal/events/prune",
    "POST /api/v1/device/internal/events/catch-up",
    "POST /api/v1/device/admin/dead-letters/:id/replay",
    "POST /api/v1/device/devices/:id/heartbeat",
    "POST /api/v1/device/devices/:id/release",
    "POST /api/v1/device/internal/devices/lifecycle",
    "DELETE /api/v1/device/snapshots/:id",
    "POST /api/v1/device/internal/batches/advance",
    "POST /api/v1/device/internal/pools/replenish",
    "POST /api/v1/device/internal/devices/failover",
    "POST /api/v1/device/internal/snapshots/maintain",
    "POST /api/v1/device/devices/:id/recover",
    "DELETE /api/v1/device/templates/:id",
    "DELETE /api/v1/app/uploads/:id",
    "POST /api/v1/app/installs/:id/uninstall",
    "POST /api/v1/app/devices/:id/reconcile",
    "POST /api/v1/app/internal/uploads/expire",
    "POST /api/v1/app/internal/outbox/publish",
    "POST /api/v1/app/internal/events/prune",
    "POST /api/v1/app/internal/events/catch-up",
    "POST /api/v1/app/admin/dead-letters/:id/replay",
    "POST /api/v1/billing/internal/metering/tick",
    "POST /api/v1/billing/internal/orders/advance",
    "POST /api/v1/billing/internal/invoices/run",
    "POST /api/v1/billing/internal/balances/enforce",
    "POST /api/v1/billing/internal/webhooks/prune",
    "POST /api/v1/billing/orders/:id/cancel",
    "POST /api/v1/billing/refunds/:id/approve",
    "POST /api/v1/user/internal/quotas/grants/:id/activate",
    "POST /api/v1/user/internal/quotas/grants/:id/revoke",
    "POST /api/v1/billing/internal/outbox/publish",
    "POST /api/v1/billing/internal/events/prune",
    "POST /api/v1/billing/internal/events/catch-up",
    "POST /api/v1/billing/admin/dead-letters/:id/replay",
];

/// Routes whose body is not JSON: their bad input is in [`raw_attempts`].
const RAW_BODY: &[&str] = &[
    "PUT /api/v1/device/devices/:id/files",
    "PUT /api/v1/device/agent/nodes/:node_id/snapshots/:snapshot_id/archive/:seq",
    "PUT /api/v1/app/uploads/:id/chunks/:seq",
    "POST /api/v1/billing/webhooks/stripe",
    "POST /api/v1/billing/webhooks/alipay",
];

/// One request with a bad value of its own (a query parameter, a path
/// segment, a raw body, a JSON value breaking a rule), and the status it
/// must get.
struct Raw {
    method: &'static str,
    path: String,
    who: Who,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    want: u16,
}

/// A content type (none: no header) and a body.
type Body = (Option<&'static str>, Vec<u8>);

/// The device operations' bad values: every operation route has some, and
/// so does every route in [`RAW_BODY`]. The fixture's device is running,
/// so only the input refuses them.
fn raw_attempts(f: &Fixture) -> Vec<Raw> {
    use Who::*;
    let dev = format!("/api/v1/device/devices/{}", f.device);
    let json_body =
        |v: Value| -> Body { (Some("application/json"), serde_json::to_vec(&v).unwrap()) };
    let none = || -> Body { (None, Vec::new()) };
    let octets = |n: usize| -> Body { (Some("application/octet-stream"), vec![7u8; n]) };
    let digest = "0123456789abcdef".repeat(4);
    let mut out = Vec::new();
    let mut add =
        |method: &'static str, path: String, who: Who, (content_type, body): Body, want: u16| {
            out.push(Raw {
                method,
                path,
                who,
                content_type,
                body,
                want,
            })
        };
    // No provider is enabled in this app: a delivery is refused before it
    // is read or recorded (signed, forged and stale ones are in
    // `orders.rs`).
    let stripe = "/api/v1/billing/webhooks/stripe".to_string();
    add(
        "POST",
        stripe.clone(),
        Nobody,
        json_body(json!({"id": "evt_1", "type": "payment_intent.succeeded"})),
        404,
    );
    add("POST", stripe, Nobody, octets(300 * 1024), 413);
    let alipay = "/api/v1/billing/webhooks/alipay".to_string();
    add(
        "POST",
        alipay.clone(),
        Nobody,
        (
            Some("application/x-www-form-urlencoded"),
            b"notify_id=1&trade_status=TRADE_SUCCESS&sign=x".to_vec(),
        ),
        404,
    );
    add("POST", alipay, Nobody, octets(300 * 1024), 413);
    for bad in [
        json!({"command": ""}),
        json!({"command": "   "}),
        json!({"command": "x".repeat(4097)}),
        json!({"command": "a\u{0}b"}),
        json!({"command": "id", "timeout_ms": 0}),
        json!({"command": "id", "timeout_ms": 300_001}),
        json!({"command": "id", "timeout_ms": -1}),
    ] {
        add(
            "POST",
            format!("{dev}/shell"),
            TenantAdmin,
            json_body(bad),
            400,
        );
    }
    for bad in [
        json!({"every_secs": 59}),
        json!({"every_secs": 86400.5}),
        json!({"keep_last": 100}),
        json!({"max_age_secs": 0}),
        json!({"applies_to": "manual"}),
        json!({"every_secs": 86400, "retain": 3}),
    ] {
        add(
            "PUT",
            format!("{dev}/snapshot-policy"),
            Member,
            json_body(bad),
            400,
        );
    }
    for bad in [
        json!({"model": ""}),
        json!({"model": "say \"hi\""}),
        json!({"model": "x".repeat(93)}),
        json!({"fingerprint": "has spaces"}),
        json!({"serial": "not-alnum"}),
        json!({"imei": "490154203237518"}),
    ] {
        add(
            "PUT",
            format!("{dev}/identity"),
            Member,
            json_body(bad.clone()),
            400,
        );
        add(
            "POST",
            format!("{dev}/renew"),
            Member,
            json_body(json!({"identity": bad})),
            400,
        );
    }
    for bad in [
        json!({"proxy": {"type": "socks5", "host": "h", "port": 1080}}),
        json!({"proxy": {"type": "http", "host": "h", "port": 0}}),
        json!({"proxy": {"type": "http", "host": "a b", "port": 80}}),
        json!({"proxy": {"type": "http", "host": "h", "port": 80, "exclude": ["a b"]}}),
        json!({"proxy": {"type": "pac", "url": "file:///etc/passwd"}}),
        json!({"dns": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"]}),
        json!({"dns": ["resolver.example"]}),
    ] {
        add("PUT", format!("{dev}/network"), Member, json_body(bad), 400);
    }
    add(
        "POST",
        format!("{dev}/renew"),
        Member,
        json_body(json!({"wipe": false})),
        400,
    );
    add(
        "POST",
        format!("{dev}/shell?wait=31"),
        TenantAdmin,
        json_body(json!({"command": "id"})),
        400,
    );
    for q in [
        "lines=0",
        "lines=5001",
        "lines=-3",
        "lines=ten",
        "lines=",
        "wait=31",
        "wait=-1",
    ] {
        add("GET", format!("{dev}/logcat?{q}"), Member, none(), 400);
    }
    for q in [
        "screenshot?wait=99",
        "screenshot?wait=soon",
        "packages?wait=x",
        "properties?wait=31",
    ] {
        add("GET", format!("{dev}/{q}"), Member, none(), 400);
    }
    let long_path = format!("/{}", "a".repeat(1100));
    for q in [
        "",
        "?path=relative/x",
        "?path=/data/../etc/passwd",
        "?path=/",
        "?path=/data/",
        "?path=/a%0Ab",
        &format!("?path={long_path}"),
        "?path=/data/x&wait=31",
    ] {
        add("GET", format!("{dev}/files{q}"), TenantAdmin, none(), 400);
    }
    for q in [
        "",
        "?path=data/x",
        "?path=/data/./x",
        "?path=/data/x/..",
        "?path=/data/x&wait=31",
    ] {
        add(
            "PUT",
            format!("{dev}/files{q}"),
            TenantAdmin,
            octets(10),
            400,
        );
    }
    let push = format!("{dev}/files?path=/data/x");
    add(
        "PUT",
        push.clone(),
        TenantAdmin,
        (Some("application/json"), b"{}".to_vec()),
        415,
    );
    add(
        "PUT",
        push.clone(),
        TenantAdmin,
        (Some("text/plain"), b"hi".to_vec()),
        415,
    );
    add(
        "PUT",
        push.clone(),
        TenantAdmin,
        (None, b"hi".to_vec()),
        415,
    );
    add("PUT", push, TenantAdmin, octets((8 << 20) + 1), 413);
    // An APK chunk of the member's 1-byte upload: another length, a seq
    // outside it, too large, not raw bytes.
    let chunks = format!("/api/v1/app/uploads/{}/chunks", f.upload);
    add("PUT", format!("{chunks}/0"), Member, octets(2), 400);
    add("PUT", format!("{chunks}/0"), Member, octets(0), 400);
    add("PUT", format!("{chunks}/1"), Member, octets(1), 400);
    add("PUT", format!("{chunks}/-1"), Member, octets(1), 400);
    add("PUT", format!("{chunks}/x"), Member, octets(1), 400);
    add(
        "PUT",
        format!("{chunks}/0"),
        Member,
        octets((8 << 20) + 1),
        413,
    );
    add(
        "PUT",
        format!("{chunks}/0"),
        Member,
        (Some("application/json"), b"{}".to_vec()),
        415,
    );
    // A snapshot archive chunk, signed by the node: empty, too large, not raw bytes.
    let chunk = agent_protocol::messages::snapshot_archive_path(
        f.agent.node.as_str(),
        &uuid::Uuid::new_v4().to_string(),
        0,
    );
    add("PUT", chunk.clone(), Agent, octets(0), 400);
    add("PUT", chunk.clone(), Agent, octets((4 << 20) + 1), 413);
    add(
        "PUT",
        chunk,
        Agent,
        (Some("application/json"), b"{}".to_vec()),
        415,
    );
    for (url, sha) in [
        ("ftp://cp.example/a.apk", digest.clone()),
        ("http://user:pw@cp.example/a.apk", digest.clone()),
        ("not a url", digest.clone()),
        ("http:///a.apk", digest.clone()),
        ("http://cp.example/a.apk", digest.to_uppercase()),
        ("http://cp.example/a.apk", digest[1..].to_string()),
        ("http://cp.example/a.apk", digest.replace('a', "g")),
    ] {
        add(
            "POST",
            format!("{dev}/apps"),
            Member,
            json_body(json!({"url": url, "sha256": sha})),
            400,
        );
    }
    let good = json!({"url": "http://cp.example/a.apk", "sha256": digest});
    add(
        "POST",
        format!("{dev}/apps?wait=31"),
        Member,
        json_body(good),
        400,
    );
    for p in ["Bad-Name", "com..x", "1com.x", "com.x?wait=31"] {
        add("DELETE", format!("{dev}/apps/{p}"), Member, none(), 400);
    }
    out
}

/// The device operation routes, each of which must have bad values in
/// [`raw_attempts`].
const DEVICE_OPS: &[&str] = &[
    "POST /api/v1/device/devices/:id/shell",
    "GET /api/v1/device/devices/:id/logcat",
    "GET /api/v1/device/devices/:id/screenshot",
    "PUT /api/v1/device/devices/:id/files",
    "GET /api/v1/device/devices/:id/files",
    "POST /api/v1/device/devices/:id/apps",
    "DELETE /api/v1/device/devices/:id/apps/:package",
    "GET /api/v1/device/devices/:id/packages",
    "GET /api/v1/device/devices/:id/properties",
];

/// Whether a concrete path (query ignored) fits a documented pattern
/// (`:name` segments match any one segment).
fn fits(pattern: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap();
    let (p, c): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == c.len() && p.iter().zip(&c).all(|(p, c)| p.starts_with(':') || p == c)
}

fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if uuid::Uuid::parse_str(s).is_ok() {
                ":"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A fingerprint of every table of every database (settled system, cron off).
fn fingerprint(app: &TestApp) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (component, _) in &app.db_urls {
        let mut db = app.db(component);
        let tables: Vec<String> = db
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in tables {
            let sum: String = db
                .query_one(&format!("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM \"{t}\" x"), &[])
                .unwrap()
                .get(0);
            out.push((format!("{component}.{t}"), sum));
        }
    }
    out
}

fn settle(app: &TestApp) {
    app.eventually(std::time::Duration::from_secs(30), || {
        let pending = app.count(
            "user",
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        ) + app.count(
            "auth",
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        );
        let produced = app.count("user", "SELECT count(*) FROM outbox")
            + app.count("auth", "SELECT count(*) FROM outbox");
        let consumed = app.count(
            "auth",
            "SELECT count(*) FROM processed_events WHERE source = 'user'",
        ) + app.count("user", "SELECT count(*) FROM processed_events");
        let notified = app.count(
            "notification",
            "SELECT count(*) FROM processed_events WHERE source IN ('user', 'auth')",
        );
        (pending == 0 && produced == consumed && notified == produced).then_some(())
    })
    .expect("the system settles");
}

/// Wrong-typed stand-ins for a JSON value.
fn wrong_types(v: &Value) -> Vec<Value> {
    match v {
        Value::String(_) => vec![json!(12345), json!(["x"]), json!({"x": 1})],
        Value::Number(_) => vec![json!("12"), json!(1.5e300), json!([1])],
        Value::Bool(_) => vec![json!("yes"), json!(1)],
        Value::Array(_) => vec![json!("x"), json!({"x": 1}), json!([{"x": 1}])],
        Value::Object(_) => vec![json!("x"), json!([1])],
        Value::Null => vec![json!(12345), json!({"x": 1})],
    }
}

struct Attempt {
    what: String,
    body: Vec<u8>,
    content_type: &'static str,
    /// The exact status, where the kind of mistake fixes it.
    want: Option<u16>,
}

fn attempts(c: &Case) -> Vec<Attempt> {
    let json_of = |v: &Value| serde_json::to_vec(v).unwrap();
    let mut out = vec![
        Attempt {
            what: "malformed json".into(),
            body: b"{\"a\":".to_vec(),
            content_type: "application/json",
            want: Some(400),
        },
        Attempt {
            what: "wrong content type".into(),
            body: json_of(&c.body),
            content_type: "text/plain",
            want: Some(415),
        },
        Attempt {
            what: "oversized body".into(),
            body: json_of(&json!({"pad": "x".repeat(300 * 1024)})),
            content_type: "application/json",
            want: Some(413),
        },
        Attempt {
            what: "array body".into(),
            body: b"[1,2]".to_vec(),
            content_type: "application/json",
            want: Some(400),
        },
        Attempt {
            what: "null body".into(),
            body: b"null".to_vec(),
            content_type: "application/json",
            want: Some(400),
        },
    ];
    let obj = c.body.as_object().unwrap();
    if matches!(c.who, Who::Agent) {
        // Agent protocol messages ignore fields they do not know (a newer
        // agent may add optional ones without a new protocol version), and
        // reports may be large: 300 KiB is not too large for them.
        out.retain(|a| a.what != "oversized body");
    } else {
        let mut unknown = c.body.clone();
        unknown["surprise"] = json!(true);
        out.push(Attempt {
            what: "unknown field".into(),
            body: json_of(&unknown),
            content_type: "application/json",
            want: Some(400),
        });
    }
    for field in c.required {
        let mut b = c.body.clone();
        b.as_object_mut().unwrap().remove(*field);
        out.push(Attempt {
            what: format!("{field} missing"),
            body: json_of(&b),
            content_type: "application/json",
            want: Some(400),
        });
    }
    for (field, value) in obj {
        for wrong in wrong_types(value) {
            let mut b = c.body.clone();
            b[field] = wrong.clone();
            out.push(Attempt {
                what: format!("{field} = {wrong}"),
                body: json_of(&b),
                content_type: "application/json",
                want: None,
            });
        }
        if value.is_string() {
            let mut b = c.body.clone();
            b[field] = json!("y".repeat(100_000));
            out.push(Attempt {
                what: format!("{field} oversized"),
                body: json_of(&b),
                content_type: "application/json",
                want: None,
            });
        }
    }
    for field in c.refs {
        for unknown in [json!(uuid::Uuid::new_v4()), json!("not-a-uuid")] {
            let mut b = c.body.clone();
            b[*field] = unknown.clone();
            out.push(Attempt {
                what: format!("{field} = {unknown}"),
                body: json_of(&b),
                content_type: "application/json",
                want: None,
            });
        }
    }
    for field in c.emails {
        for bad in ["not-an-email", "a@b", "two@@example.com", " @example.com"] {
            let mut b = c.body.clone();
            b[*field] = json!(bad);
            out.push(Attempt {
                what: format!("{field} = {bad:?}"),
                body: json_of(&b),
                content_type: "application/json",
                want: None,
            });
        }
    }
    out
}

#[test]
fn bad_input_on_every_route_gets_a_4xx_in_the_common_shape_and_changes_nothing() {
    let app = TestApp::spawn_with(Options {
        disable_triggers: vec!["cron"],
        ..Options::default()
    });
    let f = fixture(&app);
    let cases = cases(&f);

    // Every documented route that takes a body has a case; the others are
    // listed as taking none.
    let covered: BTreeSet<String> = cases
        .iter()
        .map(|c| format!("{} {}", c.method, shape(&c.path)))
        .collect();
    for (method, path, _) in e2e::documented_routes() {
        if method == "GET" {
            continue;
        }
        let key = format!(
            "{method} {}",
            shape(
                &path
                    .split('/')
                    .map(|s| if s.starts_with(':') {
                        "00000000-0000-0000-0000-000000000000"
                    } else {
                        s
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            )
        );
        let listed = NO_BODY.contains(&format!("{method} {path}").as_str())
            || RAW_BODY.contains(&format!("{method} {path}").as_str());
        assert!(
            covered.contains(&key) || listed,
            "no bad-input case for {method} {path}"
        );
    }

    settle(&app);
    let token = |who: Who| match who {
        Who::Nobody | Who::Service(_) | Who::Agent => None,
        Who::Platform => Some(f.platform.token.clone()),
        Who::TenantAdmin => Some(f.admin.token.clone()),
        Who::Member => Some(f.member.token.clone()),
    };
    let before = fingerprint(&app);
    let mut tried = 0;
    for c in &cases {
        for a in attempts(c) {
            if matches!(c.who, Who::Agent) {
                let resp = f
                    .agent
                    .request_typed(c.method, &c.path, a.body.clone(), a.content_type);
                let (status, code) = error_code(resp)
                    .unwrap_or_else(|e| panic!("{} {} with {}: {e}", c.method, c.path, a.what));
                match a.want {
                    Some(w) => assert_eq!(
                        status, w,
                        "{} {} with {} ({code})",
                        c.method, c.path, a.what
                    ),
                    None => assert!(
                        (400..500).contains(&status),
                        "{} {} with {}: {status} {code}",
                        c.method,
                        c.path,
                        a.what
                    ),
                }
                tried += 1;
                continue;
            }
            let mut req = reqwest::blocking::Client::new()
                .request(
                    reqwest::Method::from_bytes(c.method.as_bytes()).unwrap(),
                    format!("{}{}", app.base, c.path),
                )
                .header("content-type", a.content_type)
                .body(a.body.clone());
            if let Some(t) = token(c.who) {
                req = req.bearer_auth(t);
            }
            if let Who::Service(svc) = c.who {
                req = req.header("x-service-token", app.service_token(svc));
            }
            let resp = req.send().unwrap();
            let (status, code) = error_code(resp)
                .unwrap_or_else(|e| panic!("{} {} with {}: {e}", c.method, c.path, a.what));
            match a.want {
                Some(w) => assert_eq!(
                    status, w,
                    "{} {} with {} ({code})",
                    c.method, c.path, a.what
                ),
                None => assert!(
                    (400..500).contains(&status),
                    "{} {} with {}: {status} {code}",
                    c.method,
                    c.path,
                    a.what
                ),
            }
            tried += 1;
        }
        assert_eq!(
            fingerprint(&app),
            before,
            "{} {} changed something",
            c.method,
            c.path
        );
    }

    // Device operations: bad values of their own (query, path segment, raw
    // body, a JSON value breaking a rule) on a running device; each route
    // has some.
    let raws = raw_attempts(&f);
    for route in DEVICE_OPS.iter().chain(RAW_BODY) {
        let (method, pattern) = route.split_once(' ').unwrap();
        assert!(
            e2e::documented_routes()
                .iter()
                .any(|(m, p, _)| m == method && p == pattern),
            "{route} is not in docs/api.md"
        );
        assert!(
            raws.iter()
                .any(|r| r.method == method && fits(pattern, &r.path)),
            "no bad-value case for {route}"
        );
    }
    for r in &raws {
        if matches!(r.who, Who::Agent) {
            let resp = f.agent.request_typed(
                r.method,
                &r.path,
                r.body.clone(),
                r.content_type.unwrap_or_default(),
            );
            let (status, code) =
                error_code(resp).unwrap_or_else(|e| panic!("{} {}: {e}", r.method, r.path));
            assert_eq!(status, r.want, "{} {:.200} ({code})", r.method, r.path);
            tried += 1;
            continue;
        }
        let mut req = reqwest::blocking::Client::new()
            .request(
                reqwest::Method::from_bytes(r.method.as_bytes()).unwrap(),
                format!("{}{}", app.base, r.path),
            )
            .body(r.body.clone());
        if let Some(ct) = r.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = token(r.who) {
            req = req.bearer_auth(t);
        }
        let (status, code) = error_code(req.send().unwrap())
            .unwrap_or_else(|e| panic!("{} {}: {e}", r.method, r.path));
        assert_eq!(status, r.want, "{} {:.200} ({code})", r.method, r.path);
        tried += 1;
    }
    assert_eq!(
        fingerprint(&app),
        before,
        "a device operation with bad input changed something"
    );

    // Unknown and malformed ids in paths: 404, nothing changes.
    let privileged = |access: &str| match access {
        "public" | "agent" => None,
        a if a.starts_with("service: ") => None,
        a if [
            "tenant:",
            "permission:",
            "menu:",
            "event:",
            "node:",
            "app:manage",
            "billing:adjust",
            "billing:manage",
        ]
        .iter()
        .any(|p| a.starts_with(p)) =>
        {
            Some(f.platform.token.clone())
        }
        _ => Some(f.admin.token.clone()),
    };
    for (method, path, access) in e2e::documented_routes()
        .into_iter()
        .filter(|(_, p, _)| p.contains("/:"))
    {
        for id in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_string()] {
            let concrete: String = path
                .split('/')
                .map(|s| if s.starts_with(':') { id.as_str() } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let mut req = reqwest::blocking::Client::new().request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{concrete}", app.base),
            );
            if let Some(callers) = access.strip_prefix("service: ") {
                let caller = callers.split(", ").next().unwrap();
                req = req.header("x-service-token", app.service_token(caller));
            }
            if let Some(t) = privileged(&access) {
                req = req.bearer_auth(t);
            }
            if method != "GET" && method != "DELETE" {
                req = req.json(&json!({}));
            }
            let (status, code) = error_code(req.send().unwrap()).unwrap();
            if access == "agent" {
                // Nobody signs for an unknown node.
                assert_eq!(status, 401, "{method} {concrete}: {status} {code}");
            } else {
                assert!(
                    status == 404 || (status == 400 && method != "GET" && method != "DELETE"),
                    "{method} {concrete}: {status} {code}"
                );
            }
            tried += 1;
        }
    }
    assert_eq!(fingerprint(&app), before, "an unknown id changed something");

    // Bad paging and filters on every list.
    for (path, who) in [
        ("/api/v1/user/users", &f.admin),
        ("/api/v1/user/roles", &f.admin),
        ("/api/v1/user/permissions", &f.admin),
        ("/api/v1/user/tenants", &f.platform),
        ("/api/v1/user/departments", &f.admin),
        ("/api/v1/user/quotas", &f.admin),
        ("/api/v1/user/tickets", &f.admin),
        ("/api/v1/user/audit-logs", &f.admin),
        ("/api/v1/auth/api-keys", &f.member),
        ("/api/v1/notification/notifications", &f.member),
    ] {
        for q in [
            "page=0",
            "page=-1",
            "page=x",
            "per_page=0",
            "per_page=101",
            "per_page=1e3",
        ] {
            let (status, _) = error_code(app.get(&format!("{path}?{q}"), who.t())).unwrap();
            assert_eq!(status, 400, "{path}?{q}");
            tried += 1;
        }
    }
    for q in [
        "users?status=gone",
        "users?sort=password",
        "users?tenant_id=x",
        "users?q=",
        "tickets?status=lost",
        "tickets?category=x",
        "tickets?assignee_id=1",
        "audit-logs?from=yesterday",
        "audit-logs?actor_id=me",
        "departments?parent_id=up",
        "data-scopes",
        "field-permissions?role_id=x",
    ] {
        let r = app.get(&format!("/api/v1/user/{q}"), f.admin.t());
        if q == "users?q=" {
            assert_eq!(r.status(), 200, "an empty search is no filter");
            continue;
        }
        assert_eq!(error_code(r).unwrap().0, 400, "{q}");
        tried += 1;
    }
    assert_eq!(fingerprint(&app), before, "a bad query changed something");
    eprintln!("{tried} bad requests, all refused, nothing changed");
}
