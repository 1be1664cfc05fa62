//! Installs of catalogue versions on devices. `app` asks `device` on
//! behalf of the caller (their own credentials travel, so `device` decides
//! which devices they may install on, and runs the installs as one batch
//! with bounded concurrency); the agent fetches the file by a signed link
//! from `app` and checks its sha256. `device`'s `apk.*` events move the
//! records on (`crate::consumer`).

use super::{db, downloads, Call};
use crate::error::{Error, Result};
use crate::repo::{self, installs::Requested};
use platform::db::Db;
use platform::events;
use platform::events::catalogue::{EventType, APP_INSTALL_REQUESTED};
use platform::events::payload::AppInstall;
use platform::Problem;
use serde::Deserialize;
use spin_sdk::http::{Method, Response};
use uuid::Uuid;

/// How long an install's link stays valid: a batch's later items start
/// after its earlier ones end, and a node may be busy.
pub const INSTALL_LINK_SECS: i64 = 24 * 3600;
const DEVICE: &str = "http://device.spin.internal/api/v1/device";

/// Which devices, as `device`'s batch filter takes them.
#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct DeviceFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallInput {
    version_id: String,
    #[serde(default)]
    device_ids: Option<Vec<String>>,
    #[serde(default)]
    filter: Option<DeviceFilter>,
    #[serde(default)]
    concurrency: Option<i32>,
}

/// What `device` answered about one device of the batch.
#[derive(Deserialize)]
struct BatchItem {
    device_id: Option<Uuid>,
    operation_id: Option<Uuid>,
    status: String,
    error_code: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Batch {
    id: Uuid,
    items: Vec<BatchItem>,
}

/// `device`'s refusal, as this component's error: its status and message.
fn device_refused(resp: &spin_sdk::http::Response) -> Error {
    let status = *resp.status();
    let message = serde_json::from_slice::<serde_json::Value>(resp.body())
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("device answered {status}"));
    let message = format!("device: {message}");
    Error::Problem(match status {
        400 | 422 => Problem::invalid(message),
        401 => Problem::unauthenticated(message),
        403 => Problem::new(403, "forbidden", message),
        404 => Problem::new(404, "not_found", message),
        409 => Problem::conflict(message),
        429 => Problem::new(429, "too_many_requests", message),
        _ => Problem::upstream(message),
    })
}

/// The event of a record's change.
pub fn enqueue(
    tx: &Db,
    event: &EventType,
    i: &repo::installs::Install,
    label: Option<&str>,
) -> Result<(), platform::db::DbError> {
    let payload = AppInstall {
        install_id: i.id,
        device_id: i.device_id,
        version_id: i.version_id,
        application_id: i.application_id,
        package: i.package_name.clone(),
        label: label.map(str::to_owned),
        requested_by: i.requested_by,
        tenant_id: i.tenant_id,
        status: i.status.clone(),
        error: i.error.clone(),
    };
    platform::outbox::enqueue(tx, event, &i.id.to_string(), i.version, &payload)?;
    Ok(())
}

/// `POST /installs` (`app:read`): installs a version the caller sees on
/// their devices: `{version_id, device_ids | filter, concurrency?}`. `202`
/// with the `device` batch's id, one record per device (`items`), and the
/// devices `device` refused (`refused`: not theirs, or none such).
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: InstallInput = call.body()?;
    let version_id = Uuid::parse_str(&input.version_id)
        .map_err(|_| Error::Invalid("version_id must be a version's UUID".into()))?;
    let key = platform::http::idempotency_key(call.req)?.map(|k| format!("app-install:{k}"));
    let (version, application) = {
        let db = db()?;
        let v = super::catalogue::visible_version(call, &db, version_id)?;
        if v.status != "active" {
            return Err(Error::Conflict(format!("the version is {}", v.status)));
        }
        let a = repo::catalogue::find(&db, v.application_id)?.ok_or(Error::NotFound("version"))?;
        (v, a)
    };
    let mut body = serde_json::json!({
        "action": "install_apk",
        "url": downloads::signed_path(version.id, INSTALL_LINK_SECS)?.0,
        "sha256": version.sha256,
    });
    match (input.device_ids, input.filter) {
        (Some(ids), None) => body["device_ids"] = ids.into(),
        (None, Some(f)) => body["filter"] = serde_json::to_value(f).expect("json"),
        _ => return Err(Error::Invalid("give either device_ids or a filter".into())),
    }
    if let Some(c) = input.concurrency {
        body["concurrency"] = c.into();
    }
    let asking = repo::installs::asking(&db()?, caller.user_id, &version.sha256)?;
    let asked = || -> Result<()> { Ok(repo::installs::asked(&db()?, asking)?) };
    let resp = platform::http::chain_on_behalf(
        call.ctx,
        call.req,
        Method::Post,
        &format!("{DEVICE}/batches"),
        Some(&body),
        key.as_deref(),
    );
    let resp = match resp {
        Ok(r) if matches!(*r.status(), 200 | 202) => r,
        Ok(r) => {
            asked()?;
            return Err(device_refused(&r));
        }
        Err(p) => {
            asked()?;
            return Err(p.into());
        }
    };
    let status = *resp.status();
    let batch: Batch = match serde_json::from_slice(resp.body()) {
        Ok(b) => b,
        Err(e) => {
            asked()?;
            return Err(Problem::upstream(format!("device batch: {e}")).into());
        }
    };
    let db = db()?;
    if status == 200 {
        repo::installs::asked(&db, asking)?;
        // A repeated request: the batch was recorded the first time.
        let (items, _) = repo::installs::list(
            &db,
            &caller.filter("app"),
            &repo::installs::Filter {
                batch: Some(batch.id),
                ..Default::default()
            },
            platform::http::Page {
                page: 1,
                per_page: 1000,
            },
        )?;
        return Ok(answer(200, batch.id, &items, &[]));
    }
    let mut refused = Vec::new();
    let mut wanted = Vec::new();
    for item in batch.items {
        let Some(device) = item.device_id else {
            continue;
        };
        if item.status == "failed"
            && item.operation_id.is_none()
            && item.error_code.as_deref() == Some("not_found")
        {
            refused.push(serde_json::json!({"device_id": device, "error": item.error}));
        } else {
            wanted.push((device, item.operation_id));
        }
    }
    let items = db.transaction(|tx| {
        let mut out = Vec::with_capacity(wanted.len());
        for (device, operation) in &wanted {
            let i = repo::installs::request(
                tx,
                &Requested {
                    device: *device,
                    version: &version,
                    package: &application.package_name,
                    by: caller.user_id,
                    tenant: caller.tenant_id,
                    department: caller.department_id,
                    batch: batch.id,
                    operation: *operation,
                },
            )?;
            enqueue(tx, &APP_INSTALL_REQUESTED, &i, version.label.as_deref())?;
            out.push(i);
        }
        repo::installs::asked(tx, asking)?;
        Ok::<_, Error>(out)
    })?;
    platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    Ok(answer(202, batch.id, &items, &refused))
}

fn answer(
    status: u16,
    batch: Uuid,
    items: &[repo::installs::Install],
    refused: &[serde_json::Value],
) -> Response {
    platform::http::json(
        status,
        &serde_json::json!({"batch_id": batch, "items": items, "refused": refused}),
    )
}

/// An install record the caller sees (404 otherwise).
fn visible(call: &Call, db: &Db) -> Result<repo::installs::Install> {
    let caller = call.caller()?;
    match repo::installs::find(db, call.id("id", "install")?)? {
        Some(i) if caller.sees("app", i.row_ref()) => Ok(i),
        _ => Err(Error::NotFound("install")),
    }
}

fn uuid_query(call: &Call, name: &str) -> Result<Option<Uuid>> {
    call.query(name)
        .map(|v| Uuid::parse_str(&v).map_err(|_| Error::Invalid(format!("{name} must be a UUID"))))
        .transpose()
}

/// `GET /installs?device_id=&version_id=&application_id=&batch_id=&status=`
/// (`app:read`): the records in the caller's data scope, most recently
/// changed first.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let status = platform::input::one_of(
        call.query("status"),
        "status",
        &[
            "pending",
            "installing",
            "installed",
            "failed",
            "uninstalling",
            "uninstalled",
        ],
    )?;
    let filter = repo::installs::Filter {
        device: uuid_query(call, "device_id")?,
        version: uuid_query(call, "version_id")?,
        application: uuid_query(call, "application_id")?,
        batch: uuid_query(call, "batch_id")?,
        status,
    };
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        repo::installs::list(&db()?, &caller.filter("app"), &filter, page)?,
    ))
}

/// `GET /installs/:id` (`app:read`).
pub fn get(call: &Call) -> Result<Response> {
    Ok(platform::http::json(200, &visible(call, &db()?)?))
}

/// `POST /installs/:id/uninstall` (`app:read`): uninstalls the record's
/// package from its device, through `device` on the caller's behalf;
/// `202` with the record (`uninstalling`, and the operation to follow);
/// `409` unless it is `installed` or `failed`.
pub fn uninstall(call: &Call) -> Result<Response> {
    let i = visible(call, &db()?)?;
    if !matches!(i.status.as_str(), "installed" | "failed") {
        return Err(Error::Conflict(format!("the install is {}", i.status)));
    }
    let resp = platform::http::chain_on_behalf(
        call.ctx,
        call.req,
        Method::Delete,
        &format!(
            "{DEVICE}/devices/{}/apps/{}?wait=0",
            i.device_id, i.package_name
        ),
        None,
        None,
    )?;
    if !matches!(*resp.status(), 200 | 202) {
        return Err(device_refused(&resp));
    }
    let op: Uuid = serde_json::from_slice::<serde_json::Value>(resp.body())
        .ok()
        .and_then(|v| v["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .ok_or_else(|| Problem::upstream("device: an operation without an id"))?;
    let db = db()?;
    let after = db.transaction(|tx| Ok::<_, Error>(repo::installs::uninstalling(tx, i.id, op)?))?;
    // Already moved on by the operation's own event: the record as it is.
    let now = match after {
        Some(now) => now,
        None => repo::installs::find(&db, i.id)?.ok_or(Error::NotFound("install"))?,
    };
    Ok(platform::http::json(202, &now))
}

/// `POST /devices/:id/reconcile` (`app:read`): asks the device (through
/// `device`, on the caller's behalf, waiting up to 20 s) which packages it
/// has, and ends the records of packages that are gone (`uninstalled`,
/// with `app.uninstalled`); `200` with the device's records and
/// `packages`; `503` when the device did not answer in time.
pub fn reconcile(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let device = call.id("id", "device")?;
    let resp = platform::http::chain_on_behalf(
        call.ctx,
        call.req,
        Method::Get,
        &format!("{DEVICE}/devices/{device}/packages?wait=20"),
        None,
        None,
    )?;
    match *resp.status() {
        200 => {}
        202 => {
            return Err(
                Problem::unavailable("the device did not list its packages in time")
                    .retry_after(5)
                    .into(),
            )
        }
        _ => return Err(device_refused(&resp)),
    }
    let op: serde_json::Value = serde_json::from_slice(resp.body())
        .map_err(|e| Problem::upstream(format!("device packages: {e}")))?;
    if op["status"] != "succeeded" {
        return Err(Error::Conflict(format!(
            "device: listing the packages failed: {}",
            op["error"].as_str().unwrap_or("no reason given")
        )));
    }
    let packages: Vec<String> = op["result"]["packages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if op["result"]["truncated"] == true {
        // A cut list cannot say what is missing.
        return Err(Error::Conflict(
            "device: the package list was cut short; nothing was reconciled".into(),
        ));
    }
    let db = db()?;
    db.transaction(|tx| {
        for i in repo::installs::reconcile(tx, device, &packages)? {
            enqueue(tx, &events::catalogue::APP_UNINSTALLED, &i, None)?;
        }
        Ok::<_, Error>(())
    })?;
    platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    let (items, _) = repo::installs::list(
        &db,
        &caller.filter("app"),
        &repo::installs::Filter {
            device: Some(device),
            ..Default::default()
        },
        platform::http::Page {
            page: 1,
            per_page: 1000,
        },
    )?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items, "packages": packages}),
    ))
}
