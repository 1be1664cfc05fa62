//! Device templates: list and read the ones the caller sees (every public
//! one, their tenant's, their own), and for holders of `device:template`
//! create, change and delete them. Public templates are platform staff's;
//! a tenant's are changed by its administrators. A device is made from a
//! template with `POST /devices {"template_id": ...}`.

use super::{db as open_db, one_of, paged, platform_wide, search_query, Call};
use crate::domain::template::{category, TemplateInput, Visibility};
use crate::error::{Error, Result};
use crate::repo::{self, templates::Stored};
use access::Caller;
use platform::db::Db;
use spin_sdk::http::Response;
use uuid::Uuid;

/// Who sees which templates.
fn seen(caller: &Caller) -> repo::templates::Seen {
    repo::templates::Seen {
        all: platform_wide(caller, "device"),
        user: caller.user_id,
        tenant: caller.tenant_id,
    }
}

/// Whether the caller sees a template.
fn sees(caller: &Caller, t: &Stored) -> bool {
    let s = seen(caller);
    s.all
        || t.visibility() == Visibility::Public
        || (t.tenant_id.is_some() && t.tenant_id == s.tenant)
        || t.owner_id == s.user
}

/// A template the caller sees (404 otherwise).
pub fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<Stored> {
    match repo::templates::find(db, id)? {
        Some(t) if sees(caller, &t) => Ok(t),
        _ => Err(Error::NotFound("template")),
    }
}

/// A template the caller may change: public ones only platform staff,
/// a tenant's its administrators (and staff), a private one its owner.
fn changeable(db: &Db, caller: &Caller, id: Uuid) -> Result<Stored> {
    let t = visible(db, caller, id)?;
    let staff = platform_wide(caller, "device");
    let ok = staff
        || match t.visibility() {
            Visibility::Public => false,
            Visibility::Tenant => t.tenant_id.is_some() && t.tenant_id == caller.tenant_id,
            Visibility::Private => t.owner_id == caller.user_id,
        };
    if ok {
        Ok(t)
    } else {
        Err(Error::Forbidden(
            "only platform staff change public templates".into(),
        ))
    }
}

/// A template as JSON, with how many live devices were made from it.
fn view(db: &Db, t: &Stored) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(t).expect("template serializes");
    v["active_devices"] = repo::templates::active_devices(db, t.id)?.into();
    Ok(v)
}

fn taken() -> Error {
    Error::Conflict("a template of that name exists where this one is visible".into())
}

/// `GET /templates?category=&visibility=&q=&sort=&order=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let category = call
        .query("category")
        .as_deref()
        .map(category)
        .transpose()?;
    let sort = match one_of(call, "sort", &["created_at", "name", "usage_count"])?.as_deref() {
        Some("name") => "t.name",
        Some("usage_count") => "t.usage_count",
        _ => "t.created_at",
    };
    let desc = one_of(call, "order", &["asc", "desc"])?.as_deref() != Some("asc");
    let filter = repo::templates::Filter {
        category,
        visibility: one_of(call, "visibility", &["public", "tenant", "private"])?,
        q: search_query(call)?,
        sort: (sort, desc),
    };
    let page = call.page()?;
    let (items, total) = repo::templates::list(&open_db()?, &seen(caller), &filter, page)?;
    Ok(paged(items, page, total))
}

/// `POST /templates` (`device:template`): 201 with the template.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: TemplateInput = call.body()?;
    let visibility = Visibility::for_caller(
        input.visibility,
        caller.tenant_id.is_some(),
        platform_wide(caller, "device"),
    )?;
    let t = input.parse()?;
    super::devices::image_allowed(&t.spec.image)?;
    t.snapshot_policy
        .map_or(Ok(()), super::backups::check_min)?;
    let id = Uuid::new_v4();
    let db = open_db()?;
    let maker = repo::templates::Maker {
        owner: caller.user_id,
        tenant: caller.tenant_id,
        department: caller.department_id,
    };
    repo::templates::insert(&db, id, &t, visibility, &maker)?.ok_or_else(taken)?;
    let stored = repo::templates::find(&db, id)?.ok_or(Error::NotFound("template"))?;
    Ok(platform::http::json(201, &view(&db, &stored)?))
}

/// `GET /templates/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = open_db()?;
    let t = visible(&db, caller, call.id("id", "template")?)?;
    Ok(platform::http::json(200, &view(&db, &t)?))
}

/// `PATCH /templates/:id` (`device:template`): any field but `visibility`;
/// the merged template is checked whole. Devices made before keep what
/// they were made with.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "template")?;
    let change: TemplateInput = call.body()?;
    if change.visibility.is_some() {
        return Err(Error::Invalid(
            "visibility cannot change: make a new template".into(),
        ));
    }
    let db = open_db()?;
    let stored = db.transaction(|tx| {
        let current = changeable(tx, caller, id)?;
        let t = current.input().merged(change).parse()?;
        super::devices::image_allowed(&t.spec.image)?;
        t.snapshot_policy
            .map_or(Ok(()), super::backups::check_min)?;
        repo::templates::update(tx, id, &t)?.ok_or_else(taken)?;
        repo::templates::find(tx, id)?.ok_or(Error::NotFound("template"))
    })?;
    Ok(platform::http::json(200, &view(&db, &stored)?))
}

/// `DELETE /templates/:id` (`device:template`): 204; devices made from it
/// keep their spec.
pub fn delete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "template")?;
    let db = open_db()?;
    db.transaction(|tx| {
        changeable(tx, caller, id)?;
        repo::templates::delete(tx, id)?;
        Ok::<_, Error>(())
    })?;
    Ok(platform::http::no_content())
}

/// `GET /devices/:id/provisioning`: the device's first-boot steps (from
/// its template) with their status and operations.
pub fn provisioning(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = open_db()?;
    let d = super::devices::visible(&db, caller, call.id("id", "device")?)?;
    let steps = repo::templates::steps(&db, d.id)?;
    let status = if steps.is_empty() {
        "none"
    } else if steps.iter().any(|s| s.status == "failed") {
        "failed"
    } else if steps.iter().all(|s| s.status == "succeeded") {
        "done"
    } else {
        "pending"
    };
    Ok(platform::http::json(
        200,
        &serde_json::json!({"device_id": d.id, "status": status, "steps": steps}),
    ))
}
