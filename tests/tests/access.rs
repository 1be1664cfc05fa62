//! Access control end to end: tenant isolation on every resource, data
//! scopes and field permissions shaping lists, 403 for missing permissions,
//! no privilege escalation, menus by permission, and the identity copy in
//! `auth` following the source in order.

use e2e::{error_code, expect_json, ids, roles, Session, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const U: &str = "/api/v1/user";

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Two tenants, each with an administrator.
struct Tenants {
    platform: Session,
    a: Session,
    b: Session,
    tenant_b: String,
}

fn two_tenants(app: &TestApp) -> Tenants {
    let platform = app.platform_admin();
    let ta = app.create_tenant(&platform.token, "acme");
    let tb = app.create_tenant(&platform.token, "bravo");
    let a = app.create_user(
        &platform.token,
        json!({"tenant_id": ta, "role_ids": [roles::TENANT_ADMIN]}),
    );
    let b = app.create_user(
        &platform.token,
        json!({"tenant_id": tb, "role_ids": [roles::TENANT_ADMIN]}),
    );
    Tenants {
        platform,
        a,
        b,
        tenant_b: tb,
    }
}

#[test]
fn a_member_of_tenant_a_can_neither_read_nor_change_anything_of_tenant_b() {
    // The scripted agent beats once: a long interval keeps the liveness job
    // from turning B's phone `unknown` while A tries everything.
    let app = TestApp::spawn_with(e2e::Options {
        env: vec![("SPIN_VARIABLE_NODE_HEARTBEAT_SECS".into(), "3600".into())],
        ..Default::default()
    });
    let t = two_tenants(&app);
    let b = t.b.t();
    // Tenant B's things, made by B's administrator.
    let dept = id_of(&expect_json(
        app.post(&format!("{U}/departments"), &json!({"name": "Ops"}), b),
        201,
    ));
    let role = id_of(&expect_json(
        app.post(
            &format!("{U}/roles"),
            &json!({"code": "ops", "name": "Ops", "permissions": ["user:read"]}),
            b,
        ),
        201,
    ));
    let scope = id_of(&expect_json(
        app.post(
            &format!("{U}/data-scopes"),
            &json!({"role_id": role, "resource": "user", "scope": "department_tree"}),
            b,
        ),
        201,
    ));
    let fields = id_of(&expect_json(
        app.post(
            &format!("{U}/field-permissions"),
            &json!({"role_id": role, "resource": "user", "hidden": ["phone"]}),
            b,
        ),
        201,
    ));
    let ub = app.create_user(
        &t.b.token,
        json!({"department_id": dept, "role_ids": [roles::USER, role]}),
    );
    let ticket = id_of(&expect_json(
        app.post(
            &format!("{U}/tickets"),
            &json!({"subject": "Broken", "body": "It broke", "category": "technical"}),
            ub.t(),
        ),
        201,
    ));
    expect_json(
        app.post(
            &format!("{U}/tickets/{ticket}/replies"),
            &json!({"body": "On it"}),
            b,
        ),
        201,
    );
    let key = id_of(&expect_json(
        app.post(
            "/api/v1/auth/api-keys",
            &json!({"name": "b", "scopes": ["ticket:read"]}),
            ub.t(),
        ),
        201,
    ));
    // A phone of B's user, on a node the platform runs.
    let enrolled = expect_json(
        app.post(
            "/api/v1/device/nodes",
            &json!({"id": "iso-node"}),
            t.platform.t(),
        ),
        201,
    );
    let agent =
        e2e::agent::ScriptedAgent::new(&app.base, "iso-node", enrolled["secret"].as_str().unwrap());
    assert_eq!(agent.register(), 204);
    agent.report(vec![agent.heartbeat(vec![])]);
    let op = expect_json(
        app.post(
            "/api/v1/device/devices",
            &json!({"name": "b-phone", "spec": {"cpu_cores": 1, "memory_mb": 1024, "storage_gb": 4}}),
            ub.t(),
        ),
        202,
    );
    let (device, operation) = (
        op["device_id"].as_str().unwrap().to_string(),
        op["id"].as_str().unwrap().to_string(),
    );
    // Running, so that A's device operations would reach it if they could.
    agent.report(vec![agent.status(
        &device,
        agent_protocol::messages::DeviceStatus::Ready,
        1,
    )]);
    // Settled: the operation done and the quota's claim turned into use.
    app.eventually(Duration::from_secs(30), || {
        let op = expect_json(
            app.get(&format!("/api/v1/device/operations/{operation}"), b),
            200,
        );
        let quota = expect_json(app.get(&format!("{U}/quotas/{}", ub.id), b), 200);
        (op["status"] == "succeeded"
            && quota["used"]["devices"] == 1
            && quota["reserved"]["devices"] == 0)
            .then_some(())
    })
    .expect("B's phone running and its quota settled");
    let audit = expect_json(app.get(&format!("{U}/audit-logs"), b), 200);
    let entry = audit["items"][0]["id"]
        .as_str()
        .expect("an audit entry of B")
        .to_string();

    // An app of B's tenant, installed on B's phone (its operation goes to
    // the scripted agent, which leaves it running).
    let tools = e2e::apks::ApkTools::new();
    let file = std::fs::read(tools.installable("b-app", e2e::apks::MANIFEST, "com.example.hello"))
        .unwrap();
    let stored = expect_json(
        e2e::apks::upload(&app, &ub.token, &file, json!({"visibility": "tenant"})),
        201,
    );
    let application = id_of(&stored["application"]);
    let version = id_of(&stored["version"]);
    let installed = expect_json(
        app.post(
            "/api/v1/app/installs",
            &json!({"version_id": version, "device_ids": [device]}),
            ub.t(),
        ),
        202,
    );
    let install = id_of(&installed["items"][0]);

    // What B sees, to compare after A has tried everything.
    let b_views = [
        format!("{U}/users/{}", ub.id),
        format!("{U}/roles/{role}"),
        format!("{U}/data-scopes/{scope}"),
        format!("{U}/field-permissions/{fields}"),
        format!("{U}/tenants/{}", t.tenant_b),
        format!("{U}/departments/{dept}"),
        format!("{U}/quotas/{}", ub.id),
        format!("{U}/tickets/{ticket}"),
        format!("{U}/tickets/{ticket}/replies"),
        format!("{U}/audit-logs/{entry}"),
        format!("/api/v1/device/devices/{device}"),
        format!("/api/v1/device/operations/{operation}"),
        format!("/api/v1/app/applications/{application}"),
        format!("/api/v1/app/versions/{version}"),
    ];
    let before: Vec<Value> = b_views
        .iter()
        .map(|p| expect_json(app.get(p, b), 200))
        .collect();

    let a = t.a.t();
    // By id: every resource of B is a 404 for A, read or change alike.
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("{U}/users/{}", ub.id), None),
        ("GET", format!("{U}/users/{}", t.b.id), None),
        (
            "PATCH",
            format!("{U}/users/{}", ub.id),
            Some(json!({"display_name": "Mallory"})),
        ),
        ("DELETE", format!("{U}/users/{}", ub.id), None),
        ("POST", format!("{U}/users/{}/lock", ub.id), None),
        ("POST", format!("{U}/users/{}/unlock", ub.id), None),
        (
            "PUT",
            format!("{U}/users/{}/roles", ub.id),
            Some(json!({"role_ids": [roles::USER]})),
        ),
        (
            "PUT",
            format!("{U}/users/{}/password", ub.id),
            Some(json!({"password": "stolen password"})),
        ),
        ("GET", format!("{U}/roles/{role}"), None),
        (
            "PATCH",
            format!("{U}/roles/{role}"),
            Some(json!({"name": "Mine"})),
        ),
        ("DELETE", format!("{U}/roles/{role}"), None),
        (
            "PUT",
            format!("{U}/roles/{role}/permissions"),
            Some(json!({"permissions": []})),
        ),
        ("GET", format!("{U}/data-scopes?role_id={role}"), None),
        ("GET", format!("{U}/data-scopes/{scope}"), None),
        (
            "PUT",
            format!("{U}/data-scopes/{scope}"),
            Some(json!({"resource": "user", "scope": "self"})),
        ),
        ("DELETE", format!("{U}/data-scopes/{scope}"), None),
        (
            "POST",
            format!("{U}/data-scopes"),
            Some(json!({"role_id": role, "resource": "ticket", "scope": "self"})),
        ),
        ("GET", format!("{U}/field-permissions?role_id={role}"), None),
        ("GET", format!("{U}/field-permissions/{fields}"), None),
        (
            "PUT",
            format!("{U}/field-permissions/{fields}"),
            Some(json!({"resource": "user", "hidden": ["email"]})),
        ),
        ("DELETE", format!("{U}/field-permissions/{fields}"), None),
        ("GET", format!("{U}/tenants/{}", t.tenant_b), None),
        (
            "PATCH",
            format!("{U}/tenants/{}", t.tenant_b),
            Some(json!({"name": "Mine"})),
        ),
        ("GET", format!("{U}/departments/{dept}"), None),
        ("GET", format!("{U}/departments/{dept}/subtree"), None),
        (
            "PATCH",
            format!("{U}/departments/{dept}"),
            Some(json!({"name": "Mine"})),
        ),
        (
            "POST",
            format!("{U}/departments/{dept}/move"),
            Some(json!({"parent_id": null})),
        ),
        ("DELETE", format!("{U}/departments/{dept}"), None),
        ("GET", format!("{U}/quotas/{}", ub.id), None),
        (
            "PATCH",
            format!("{U}/quotas/{}", ub.id),
            Some(json!({"max_devices": 100})),
        ),
        ("GET", format!("{U}/tickets/{ticket}"), None),
        (
            "PATCH",
            format!("{U}/tickets/{ticket}"),
            Some(json!({"priority": "urgent"})),
        ),
        ("GET", format!("{U}/tickets/{ticket}/replies"), None),
        (
            "POST",
            format!("{U}/tickets/{ticket}/replies"),
            Some(json!({"body": "hi"})),
        ),
        (
            "POST",
            format!("{U}/tickets/{ticket}/status"),
            Some(json!({"status": "closed"})),
        ),
        (
            "POST",
            format!("{U}/tickets/{ticket}/assign"),
            Some(json!({"assignee_id": t.a.id})),
        ),
        (
            "POST",
            format!("{U}/tickets/{ticket}/rating"),
            Some(json!({"rating": 1})),
        ),
        ("GET", format!("{U}/audit-logs/{entry}"), None),
        ("GET", format!("/api/v1/auth/api-keys/{key}"), None),
        ("POST", format!("/api/v1/auth/api-keys/{key}/revoke"), None),
        ("DELETE", format!("/api/v1/auth/api-keys/{key}"), None),
        (
            "GET",
            format!("/api/v1/app/applications/{application}"),
            None,
        ),
        ("GET", format!("/api/v1/app/versions/{version}"), None),
        (
            "GET",
            format!("/api/v1/app/versions/{version}/download"),
            None,
        ),
        ("GET", format!("/api/v1/app/installs/{install}"), None),
        (
            "POST",
            format!("/api/v1/app/installs/{install}/uninstall"),
            None,
        ),
        (
            "POST",
            "/api/v1/app/installs".to_string(),
            Some(json!({"version_id": version, "device_ids": [device]})),
        ),
        ("GET", format!("/api/v1/device/devices/{device}"), None),
        (
            "PATCH",
            format!("/api/v1/device/devices/{device}"),
            Some(json!({"name": "mine"})),
        ),
        ("DELETE", format!("/api/v1/device/devices/{device}"), None),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/heartbeat"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/release"),
            None,
        ),
        (
            "PATCH",
            format!("/api/v1/device/devices/{device}"),
            Some(json!({"expires_at": "2030-01-01T00:00:00Z"})),
        ),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/start"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/stop"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/restart"),
            None,
        ),
        (
            "PUT",
            format!("/api/v1/device/devices/{device}/identity"),
            Some(json!({"model": "Pixel 8"})),
        ),
        (
            "GET",
            format!("/api/v1/device/devices/{device}/snapshot-policy"),
            None,
        ),
        (
            "PUT",
            format!("/api/v1/device/devices/{device}/snapshot-policy"),
            Some(json!({"every_secs": 86400})),
        ),
        (
            "PUT",
            format!("/api/v1/device/devices/{device}/network"),
            Some(json!({"dns": ["1.1.1.1"]})),
        ),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/renew"),
            Some(json!({})),
        ),
        ("GET", format!("/api/v1/device/devices/{device}/runs"), None),
        (
            "GET",
            format!("/api/v1/device/devices/{device}/placement"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/device/operations/{operation}"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/shell"),
            Some(json!({"command": "id"})),
        ),
        (
            "GET",
            format!("/api/v1/device/devices/{device}/logcat"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/device/devices/{device}/screenshot"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/device/devices/{device}/files?path=/data/x"),
            None,
        ),
        (
            "POST",
            format!("/api/v1/device/devices/{device}/apps"),
            Some(json!({"url": "http://cp.example/a.apk", "sha256": "0123456789abcdef".repeat(4)})),
        ),
        (
            "DELETE",
            format!("/api/v1/device/devices/{device}/apps/com.example.app"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/device/devices/{device}/packages"),
            None,
        ),
        (
            "GET",
            format!("/api/v1/device/devices/{device}/properties"),
            None,
        ),
        ("GET", "/api/v1/device/nodes/iso-node".to_string(), None),
        (
            "PATCH",
            "/api/v1/device/nodes/iso-node".to_string(),
            Some(json!({"name": "mine"})),
        ),
        (
            "POST",
            "/api/v1/device/nodes/iso-node/cordon".to_string(),
            None,
        ),
        (
            "POST",
            "/api/v1/device/nodes/iso-node/drain".to_string(),
            None,
        ),
        (
            "POST",
            "/api/v1/device/nodes/iso-node/secret".to_string(),
            None,
        ),
        (
            "POST",
            "/api/v1/device/nodes/iso-node/revoke".to_string(),
            None,
        ),
    ];
    let operations_before = app.count("device", "SELECT count(*) FROM operations");
    // A file pushed to B's phone: the body is a file, not JSON.
    let (status, code) = error_code(app.call_raw(
        "PUT",
        &format!("/api/v1/device/devices/{device}/files?path=/data/x"),
        "application/octet-stream",
        b"mine".to_vec(),
        a,
    ))
    .unwrap();
    assert_eq!((status, code.as_str()), (404, "not_found"), "PUT files");
    for (method, path, body) in &attempts {
        let (status, code) = error_code(app.call(method, path, body.as_ref(), a)).unwrap();
        // A tenant administrator may not change tenants at all, nor see
        // nodes or placements (403 before any lookup); everything else of
        // B simply does not exist for A.
        let want = if (*method == "PATCH" && path.contains("/tenants/"))
            || path.contains("/nodes/")
            || path.ends_with("/placement")
        {
            (403, "forbidden")
        } else {
            (404, "not_found")
        };
        assert_eq!((status, code.as_str()), want, "{method} {path}");
    }
    // A's own app, aimed at B's phone: `device` refuses the phone.
    let mine = expect_json(e2e::apks::upload(&app, &t.a.token, &file, json!({})), 201);
    let aimed = expect_json(
        app.post(
            "/api/v1/app/installs",
            &json!({"version_id": id_of(&mine["version"]), "device_ids": [device]}),
            a,
        ),
        202,
    );
    assert_eq!(aimed["items"], json!([]), "{aimed}");
    assert_eq!(aimed["refused"][0]["device_id"], device.as_str(), "{aimed}");
    let listed = expect_json(app.get("/api/v1/app/installs", a), 200);
    assert_eq!(listed["total"], 0, "A sees none of B's installs: {listed}");
    assert_eq!(
        app.count("device", "SELECT count(*) FROM operations"),
        operations_before,
        "no operation was recorded on B's phone"
    );
    // Creating things inside B is refused.
    let a_member = app.create_user(&t.a.token, json!({}));
    let creations: Vec<(&str, String, Value, u16)> = vec![
        (
            "POST",
            format!("{U}/users"),
            json!({"email": "x@example.com", "display_name": "X", "password": "long enough", "tenant_id": t.tenant_b}),
            403,
        ),
        (
            "POST",
            format!("{U}/roles"),
            json!({"code": "x", "name": "X", "tenant_id": t.tenant_b}),
            403,
        ),
        (
            "POST",
            format!("{U}/departments"),
            json!({"name": "X", "tenant_id": t.tenant_b}),
            403,
        ),
        (
            "POST",
            format!("{U}/departments"),
            json!({"name": "X", "parent_id": dept}),
            400,
        ),
        (
            "PUT",
            format!("{U}/users/{}/roles", a_member.id),
            json!({"role_ids": [roles::TENANT_ADMIN, role]}),
            400,
        ),
    ];
    for (method, path, body, want) in &creations {
        let (status, _) = error_code(app.call(method, path, Some(body), a)).unwrap();
        assert_eq!(status, *want, "{method} {path} {body}");
    }
    // Lists never show B's rows, whatever the filter.
    let b_ids: BTreeSet<String> = [
        &ub.id,
        &t.b.id,
        &role,
        &dept,
        &ticket,
        &t.tenant_b,
        &entry,
        &key,
        &scope,
        &fields,
        &device,
        &operation,
    ]
    .into_iter()
    .cloned()
    .collect();
    for path in [
        format!("{U}/users?per_page=100"),
        format!("{U}/users?tenant_id={}", t.tenant_b),
        format!("{U}/roles?per_page=100"),
        format!("{U}/tenants"),
        format!("{U}/departments?per_page=100"),
        format!("{U}/departments?tenant_id={}", t.tenant_b),
        format!("{U}/quotas?per_page=100"),
        format!("{U}/tickets?per_page=100"),
        format!("{U}/audit-logs?per_page=100"),
        format!("{U}/audit-logs?tenant_id={}", t.tenant_b),
        "/api/v1/auth/api-keys".to_string(),
        "/api/v1/device/devices?per_page=100".to_string(),
        format!("/api/v1/device/devices?owner_id={}", ub.id),
        "/api/v1/device/operations?per_page=100".to_string(),
        format!("/api/v1/device/operations?device_id={device}"),
    ] {
        let r = app.get(&path, a);
        if path.starts_with(&format!("{U}/departments?tenant_id=")) {
            // Naming another tenant is refused outright.
            assert_eq!(error_code(r).unwrap().0, 403, "{path}");
            continue;
        }
        let page = expect_json(r, 200);
        let seen: BTreeSet<String> = ids(&page).into_iter().collect();
        assert!(
            seen.is_disjoint(&b_ids),
            "{path} shows tenant B's rows: {page}"
        );
        let owners: Vec<&Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["tenant_id"])
            .collect();
        assert!(
            owners.iter().all(|o| o.as_str() != Some(&t.tenant_b)),
            "{path}: {page}"
        );
    }
    let tree = expect_json(app.get(&format!("{U}/departments/tree"), a), 200);
    assert!(!tree.to_string().contains(&dept));
    let quotas = expect_json(app.get(&format!("{U}/quotas?per_page=100"), a), 200);
    assert!(!quotas.to_string().contains(&ub.id));
    // Nothing of B changed.
    let after: Vec<Value> = b_views
        .iter()
        .map(|p| expect_json(app.get(p, b), 200))
        .collect();
    assert_eq!(before, after);
    // And the platform administrator sees both tenants.
    let all = expect_json(app.get(&format!("{U}/tenants"), t.platform.t()), 200);
    assert_eq!(all["total"], 2);
}

/// A tenant with departments R > C and O, users in each, and a manager in R
/// holding a custom role `lead` (user:read) whose data scope the test changes.
struct Org {
    admin: Session,
    manager: Session,
    in_r: String,
    in_c: String,
    in_o: String,
    lead: String,
    dept_o: String,
}

fn org(app: &TestApp) -> Org {
    let platform = app.platform_admin();
    let tenant = app.create_tenant(&platform.token, "org");
    let admin = app.create_user(
        &platform.token,
        json!({"tenant_id": tenant, "role_ids": [roles::TENANT_ADMIN]}),
    );
    let t = admin.t();
    let r = id_of(&expect_json(
        app.post(&format!("{U}/departments"), &json!({"name": "R"}), t),
        201,
    ));
    let c = id_of(&expect_json(
        app.post(
            &format!("{U}/departments"),
            &json!({"name": "C", "parent_id": r}),
            t,
        ),
        201,
    ));
    let o = id_of(&expect_json(
        app.post(&format!("{U}/departments"), &json!({"name": "O"}), t),
        201,
    ));
    let member = |d: &str, phone: &str| {
        app.create_user(
            &admin.token,
            json!({"department_id": d, "phone": phone, "role_ids": [roles::USER]}),
        )
        .id
    };
    let (in_r, in_c, in_o) = (
        member(&r, "+8613800000001"),
        member(&c, "+8613800000002"),
        member(&o, "+8613800000003"),
    );
    let lead = id_of(&expect_json(
        app.post(
            &format!("{U}/roles"),
            &json!({"code": "lead", "name": "Lead", "permissions": ["user:read"]}),
            t,
        ),
        201,
    ));
    let manager = app.create_user(
        &admin.token,
        json!({"department_id": r, "phone": "+8613800000009", "role_ids": [roles::USER, lead]}),
    );
    Org {
        admin,
        manager,
        in_r,
        in_c,
        in_o,
        lead,
        dept_o: o,
    }
}

fn visible_users(app: &TestApp, token: &str) -> BTreeSet<String> {
    ids(&expect_json(
        app.get(&format!("{U}/users?per_page=100"), Some(token)),
        200,
    ))
    .into_iter()
    .collect()
}

fn relogin_after(app: &TestApp, who: &Session, level: &str, departments: usize) -> String {
    app.wait_for_identity(&who.id, |_, access| {
        access["scopes"]["user"]["level"] == level
            && access["scopes"]["user"]["departments"]
                .as_array()
                .map_or(0, Vec::len)
                == departments
    });
    app.token(&who.email, e2e::PASSWORD)
}

#[test]
fn data_scopes_and_field_permissions_change_what_lists_return() {
    let app = TestApp::spawn();
    let o = org(&app);
    let admin = o.admin.t();
    let set = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // department_tree: R and C below it, and oneself.
    let scope = id_of(&expect_json(
        app.post(
            &format!("{U}/data-scopes"),
            &json!({"role_id": o.lead, "resource": "user", "scope": "department_tree"}),
            admin,
        ),
        201,
    ));
    let token = relogin_after(&app, &o.manager, "departments", 2);
    assert_eq!(
        visible_users(&app, &token),
        set(&[&o.manager.id, &o.in_r, &o.in_c])
    );
    // A user outside the scope is a 404, not a 403.
    assert_eq!(
        error_code(app.get(&format!("{U}/users/{}", o.in_o), Some(&token)))
            .unwrap()
            .0,
        404
    );

    // department: R only.
    let put = |body: Value| {
        expect_json(
            app.put(&format!("{U}/data-scopes/{scope}"), &body, admin),
            200,
        )
    };
    put(json!({"resource": "user", "scope": "department"}));
    let token = relogin_after(&app, &o.manager, "departments", 1);
    assert_eq!(visible_users(&app, &token), set(&[&o.manager.id, &o.in_r]));

    // custom: O only.
    put(json!({"resource": "user", "scope": "custom", "department_ids": [o.dept_o]}));
    let token = relogin_after(&app, &o.manager, "departments", 1);
    assert_eq!(visible_users(&app, &token), set(&[&o.manager.id, &o.in_o]));

    // tenant: everyone in the tenant.
    put(json!({"resource": "user", "scope": "tenant"}));
    let token = relogin_after(&app, &o.manager, "tenant", 0);
    assert_eq!(
        visible_users(&app, &token),
        set(&[&o.manager.id, &o.in_r, &o.in_c, &o.in_o, &o.admin.id])
    );

    // Field permissions: phone hidden, email masked, except on one's own row.
    expect_json(
        app.post(
            &format!("{U}/field-permissions"),
            &json!({"role_id": o.lead, "resource": "user", "hidden": ["phone"], "masked": ["email"]}),
            admin,
        ),
        201,
    );
    app.wait_for_identity(&o.manager.id, |_, access| {
        access["fields"]["user"]["hidden"] == json!(["phone"])
    });
    let token = app.token(&o.manager.email, e2e::PASSWORD);
    let page = expect_json(
        app.get(&format!("{U}/users?per_page=100"), Some(&token)),
        200,
    );
    for u in page["items"].as_array().unwrap() {
        if u["id"] == o.manager.id.as_str() {
            assert_eq!(u["phone"], "+8613800000009");
            assert_eq!(u["email"], o.manager.email.as_str());
        } else {
            assert!(u.get("phone").is_none(), "phone shown: {u}");
            let email = u["email"].as_str().unwrap();
            assert!(
                email.starts_with("u***@") || email.starts_with("u***"),
                "email not masked: {email}"
            );
        }
    }
    let one = expect_json(app.get(&format!("{U}/users/{}", o.in_r), Some(&token)), 200);
    assert!(one.get("phone").is_none() && one["email"].as_str().unwrap().contains("***"));
    // The administrator, whose roles restrict nothing, sees everything.
    let full = expect_json(app.get(&format!("{U}/users/{}", o.in_r), admin), 200);
    assert_eq!(full["phone"], "+8613800000001");
}

#[test]
fn a_missing_permission_gives_403_with_the_error_shape() {
    let app = TestApp::spawn();
    let (_, token) = app.signed_up_user();
    let t = Some(token.as_str());
    let some = uuid::Uuid::new_v4();
    let denied: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("{U}/users"), None),
        ("POST", format!("{U}/users"), Some(json!({}))),
        ("GET", format!("{U}/users/{some}"), None),
        ("DELETE", format!("{U}/users/{some}"), None),
        ("POST", format!("{U}/users/{some}/lock"), None),
        (
            "PUT",
            format!("{U}/users/{some}/roles"),
            Some(json!({"role_ids": []})),
        ),
        ("GET", format!("{U}/roles"), None),
        ("POST", format!("{U}/roles"), Some(json!({}))),
        ("GET", format!("{U}/permissions"), None),
        ("POST", format!("{U}/data-scopes"), Some(json!({}))),
        ("GET", format!("{U}/field-permissions?role_id={some}"), None),
        ("GET", format!("{U}/tenants"), None),
        ("POST", format!("{U}/tenants"), Some(json!({}))),
        ("GET", format!("{U}/departments"), None),
        ("POST", format!("{U}/departments"), Some(json!({}))),
        ("GET", format!("{U}/menus"), None),
        ("POST", format!("{U}/menus"), Some(json!({}))),
        ("PATCH", format!("{U}/quotas/{some}"), Some(json!({}))),
        (
            "POST",
            format!("{U}/tickets/{some}/assign"),
            Some(json!({})),
        ),
        ("GET", format!("{U}/audit-logs"), None),
        ("GET", format!("{U}/admin/dead-letters"), None),
        ("GET", "/api/v1/auth/admin/dead-letters".to_string(), None),
        (
            "GET",
            "/api/v1/notification/admin/dead-letters".to_string(),
            None,
        ),
    ];
    for (method, path, body) in &denied {
        let (status, code) = error_code(app.call(method, path, body.as_ref(), t)).unwrap();
        assert_eq!(
            (status, code.as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    // What the user role does allow still works.
    for path in [
        format!("{U}/me"),
        format!("{U}/me/quota"),
        format!("{U}/tickets"),
        format!("{U}/me/menus"),
    ] {
        assert_eq!(app.get(&path, t).status(), 200, "{path}");
    }
}

#[test]
fn nobody_can_grant_a_permission_they_do_not_hold() {
    let app = TestApp::spawn();
    let t = two_tenants(&app);
    let a = t.a.t();
    let member = app.create_user(&t.a.token, json!({"role_ids": [roles::USER]}));
    for perms in [
        json!(["tenant:create"]),
        json!(["*"]),
        json!(["user:read", "permission:*"]),
    ] {
        let r = app.post(
            &format!("{U}/roles"),
            &json!({"code": "esc", "name": "E", "permissions": perms}),
            a,
        );
        assert_eq!(error_code(r).unwrap().0, 403, "{perms}");
    }
    let r = app.put(
        &format!("{U}/users/{}/roles", member.id),
        &json!({"role_ids": [roles::SUPER_ADMIN]}),
        a,
    );
    assert_eq!(error_code(r).unwrap().0, 403);
    let r = app.put(
        &format!("{U}/roles/{}/permissions", roles::USER),
        &json!({"permissions": ["*"]}),
        a,
    );
    assert_eq!(
        error_code(r).unwrap().0,
        403,
        "system roles belong to platform staff"
    );
    let r = app.patch(
        &format!("{U}/tenants/{}", app_tenant(&app, &t.a)),
        &json!({"max_users": 100000}),
        a,
    );
    assert_eq!(
        error_code(r).unwrap().0,
        403,
        "limits belong to platform staff"
    );
    // A scope "all" on a tenant's role does not cross tenants.
    let role = id_of(&expect_json(
        app.post(
            &format!("{U}/roles"),
            &json!({"code": "wide", "name": "W", "permissions": ["user:read"]}),
            a,
        ),
        201,
    ));
    expect_json(
        app.post(
            &format!("{U}/data-scopes"),
            &json!({"role_id": role, "resource": "*", "scope": "all"}),
            a,
        ),
        201,
    );
    expect_json(
        app.put(
            &format!("{U}/users/{}/roles", member.id),
            &json!({"role_ids": [roles::USER, role]}),
            a,
        ),
        200,
    );
    app.wait_for_identity(&member.id, |roles, _| roles.iter().any(|r| r == "wide"));
    let token = app.token(&member.email, e2e::PASSWORD);
    let seen = visible_users(&app, &token);
    assert!(!seen.contains(&t.b.id) && seen.contains(&t.a.id));
    // The member's roles did change, and it is in the audit log.
    let log = expect_json(
        app.get(
            &format!("{U}/audit-logs?action=user.roles&resource_id={}", member.id),
            a,
        ),
        200,
    );
    assert_eq!(log["total"], 1);
}

fn app_tenant(app: &TestApp, s: &Session) -> String {
    expect_json(app.get(&format!("{U}/me"), s.t()), 200)["tenant_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn menus_show_what_the_callers_permissions_allow() {
    let app = TestApp::spawn();
    let (_, user) = app.signed_up_user();
    let codes = |token: &str| -> Vec<String> {
        let tree = expect_json(app.get(&format!("{U}/me/menus"), Some(token)), 200);
        let mut out = Vec::new();
        for m in tree["items"].as_array().unwrap() {
            out.push(m["code"].as_str().unwrap().to_string());
            for c in m["children"].as_array().unwrap_or(&vec![]) {
                out.push(c["code"].as_str().unwrap().to_string());
            }
        }
        out
    };
    assert_eq!(codes(&user), ["devices", "apps", "billing", "tickets"]);
    let t = two_tenants(&app);
    let admin = codes(&t.a.token);
    assert!(
        admin.contains(&"admin.users".to_string()) && admin.contains(&"admin.audit".to_string())
    );
    assert!(
        !admin.contains(&"admin.tenants".to_string()),
        "tenants are for platform staff"
    );
    assert!(codes(&t.platform.token).contains(&"admin.tenants".to_string()));
}

#[test]
fn a_profile_change_reaches_auth_and_an_older_event_does_not_overwrite_it() {
    let app = TestApp::spawn();
    let (id, token) = app.signed_up_user();
    for name in ["Second", "Third"] {
        expect_json(
            app.patch(
                &format!("{U}/me"),
                &json!({"display_name": name}),
                Some(&token),
            ),
            200,
        );
    }
    let uid = uuid::Uuid::parse_str(&id).unwrap();
    let mut auth = app.db("auth");
    let version = |auth: &mut postgres::Client| -> i64 {
        auth.query_one("SELECT version FROM identities WHERE user_id = $1", &[&uid])
            .unwrap()
            .get(0)
    };
    app.eventually(std::time::Duration::from_secs(30), || {
        (version(&mut auth) == 3).then_some(())
    })
    .expect("the copy reaches version 3");
    // Deliver the version-2 event again under a new id, as a late copy from
    // another path would arrive: it is applied once and changes nothing.
    let mut user_db = app.db("user");
    let row = user_db
        .query_one(
            "SELECT payload FROM outbox WHERE aggregate_id = $1 AND aggregate_version = 2",
            &[&id],
        )
        .unwrap();
    let mut payload: Value = row.get(0);
    payload["email"] = json!("stale@example.com");
    let late = events::Envelope::new(
        &events::catalogue::USER_UPDATED,
        id.clone(),
        2,
        "2026-01-01T00:00:00.000000Z",
        &payload,
    );
    // A forged event (signed with another component's key) with a far
    // higher version, published first, is dropped unread.
    let mut forged = late.clone();
    forged.id = uuid::Uuid::new_v4();
    forged.aggregate_version = 1_000_000;
    forged.payload["access"] = json!({"permissions": ["*"], "scopes": {"*": {"level": "all"}}});
    let wrong_key =
        events::EventSigner::from_seed("user", app.key("notification").event_signing_seed());
    app.publish(
        "cloudphone.events.user",
        &String::from_utf8(wrong_key.sign(&forged)).unwrap(),
    );
    app.publish_event(&late);
    // Messages of one subscription are handled in order: once the late
    // event is processed, the forged one (published before it) was too.
    let applied = app.eventually(std::time::Duration::from_secs(10), || {
        let n = app.count(
            "auth",
            &format!(
                "SELECT count(*) FROM processed_events WHERE event_id = '{}'",
                late.id
            ),
        );
        (n == 1).then_some(())
    });
    assert!(applied.is_ok(), "the late event was processed");
    let forged_seen = app.count(
        "auth",
        &format!(
            "SELECT count(*) FROM processed_events WHERE event_id = '{}'",
            forged.id
        ),
    );
    assert_eq!(forged_seen, 0, "the forged event was dropped");
    assert_eq!(version(&mut auth), 3);
    let email: String = auth
        .query_one("SELECT email FROM identities WHERE user_id = $1", &[&uid])
        .unwrap()
        .get(0);
    assert_ne!(email, "stale@example.com");
    let report = e2e::consistency::check(app.db_url("user"), app.db_url("auth")).unwrap();
    assert_eq!(report.differences, Vec::<String>::new());
}

#[test]
fn escalation_through_scopes_ranks_keys_and_registration_is_refused() {
    let app = TestApp::spawn();
    let t = two_tenants(&app);
    let a = t.a.t();
    let role = |code: &str, perms: Value| {
        id_of(&expect_json(
            app.post(
                &format!("{U}/roles"),
                &json!({"code": code, "name": code, "permissions": perms}),
                a,
            ),
            201,
        ))
    };
    // A role manager whose own view of users is only themselves.
    let manager_role = role(
        "rolemgr",
        json!([
            "role:read",
            "role:update",
            "role:assign",
            "user:read",
            "user:update",
            "user:lock"
        ]),
    );
    let other_role = role("viewer", json!(["user:read"]));
    let manager = app.create_user(&t.a.token, json!({"role_ids": [roles::USER, manager_role]}));
    let m = manager.t();
    let scope_on = |role: &str, scope: &str| {
        app.post(
            &format!("{U}/data-scopes"),
            &json!({"role_id": role, "resource": "user", "scope": scope}),
            m,
        )
    };
    // Nobody hands out a wider scope than their own ...
    assert_eq!(error_code(scope_on(&other_role, "tenant")).unwrap().0, 403);
    expect_json(scope_on(&other_role, "self"), 201);
    // ... nor touches the rules of a role they hold ...
    assert_eq!(error_code(scope_on(&manager_role, "self")).unwrap().0, 403);
    // ... nor changes their own roles.
    let r = app.put(
        &format!("{U}/users/{}/roles", manager.id),
        &json!({"role_ids": [roles::USER]}),
        m,
    );
    assert_eq!(error_code(r).unwrap().0, 403);

    // Administering a user needs every permission that user holds.
    let helpdesk = role("helpdesk", json!(["user:read", "user:update", "user:lock"]));
    expect_json(
        app.post(
            &format!("{U}/data-scopes"),
            &json!({"role_id": helpdesk, "resource": "user", "scope": "tenant"}),
            a,
        ),
        201,
    );
    let desk = app.create_user(&t.a.token, json!({"role_ids": [roles::USER, helpdesk]}));
    for (method, path, body) in [
        (
            "PUT",
            format!("{U}/users/{}/password", t.a.id),
            json!({"password": "taken over!"}),
        ),
        ("POST", format!("{U}/users/{}/lock", t.a.id), json!({})),
        (
            "PATCH",
            format!("{U}/users/{}", t.a.id),
            json!({"display_name": "Mallory"}),
        ),
    ] {
        let (status, _) = error_code(app.call(method, &path, Some(&body), desk.t())).unwrap();
        assert_eq!(status, 403, "{method} {path}");
    }
    // ... and helpdesk may still administer a plain user.
    let plain = app.create_user(&t.a.token, json!({}));
    expect_json(
        app.post(
            &format!("{U}/users/{}/lock", plain.id),
            &json!({}),
            desk.t(),
        ),
        200,
    );
    let r = app.put(
        &format!("{U}/users/{}/password", desk.id),
        &json!({"password": "via admin route"}),
        desk.t(),
    );
    assert_eq!(
        error_code(r).unwrap().0,
        409,
        "one's own password goes through auth"
    );

    // An API key grants nothing beyond its scopes, even where the user could.
    let key = expect_json(
        app.post(
            "/api/v1/auth/api-keys",
            &json!({"name": "k", "scopes": ["role:create", "role:read"]}),
            a,
        ),
        201,
    );
    let k = key["key"].as_str();
    let r = app.post(
        &format!("{U}/roles"),
        &json!({"code": "via-key", "name": "K", "permissions": ["user:read"]}),
        k,
    );
    assert_eq!(error_code(r).unwrap().0, 403);
    expect_json(
        app.post(
            &format!("{U}/roles"),
            &json!({"code": "empty", "name": "E", "permissions": ["role:read"]}),
            k,
        ),
        201,
    );
    // Account changes need a signed-in session.
    for (method, path, body) in [
        ("PATCH", format!("{U}/me"), json!({"display_name": "K"})),
        (
            "POST",
            "/api/v1/auth/password".to_string(),
            json!({"current_password": e2e::PASSWORD, "new_password": "long enough"}),
        ),
        ("POST", "/api/v1/auth/logout-all".to_string(), json!({})),
    ] {
        let (status, _) = error_code(app.call(method, &path, Some(&body), k)).unwrap();
        assert_eq!(status, 403, "{method} {path}");
    }

    // Registering the email of a user an administrator made is a conflict,
    // never a takeover (even a tenantless one with only the user role).
    let made = app.create_user(&t.platform.token, json!({}));
    let r = app.register(&made.email, "attacker password", "Mallory");
    assert_eq!(error_code(r).unwrap().0, 409);
    assert_eq!(app.login(&made.email, "attacker password").status(), 401);

    // Dead letters hold every tenant's events: platform staff only.
    let tenant_staff = app.mint_token_in(
        uuid::Uuid::new_v4(),
        Some(uuid::Uuid::new_v4()),
        &["event:manage"],
    );
    for c in ["auth", "user", "notification"] {
        let (status, _) = error_code(app.get(
            &format!("/api/v1/{c}/admin/dead-letters"),
            Some(&tenant_staff),
        ))
        .unwrap();
        assert_eq!(status, 403, "{c}");
    }
}
