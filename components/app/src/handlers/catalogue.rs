//! The catalogue as callers see it: their own applications, those shared
//! with their tenant, or (platform staff) all, with every version; and the
//! public ones, with their approved versions only.

use super::{db, seen, short_text, Call};
use crate::error::{Error, Result};
use crate::repo::{self, catalogue::Application};
use spin_sdk::http::Response;

/// An application the caller sees (404 otherwise).
fn visible(call: &Call, db: &platform::db::Db, id: uuid::Uuid) -> Result<Application> {
    let caller = call.caller()?;
    match repo::catalogue::find(db, id)? {
        Some(a) if seen(caller).sees(&a) => Ok(a),
        _ => Err(Error::NotFound("application")),
    }
}

/// `GET /applications?q=&package=&visibility=&category=&tag=&page=&per_page=`
/// (`app:read`): newest change first.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let q = short_text(call.query("q"), "q", 100)?;
    let package = short_text(call.query("package"), "package", 255)?;
    let category = short_text(call.query("category"), "category", 50)?;
    let tag = short_text(call.query("tag"), "tag", 50)?;
    let visibility = platform::input::one_of(
        call.query("visibility"),
        "visibility",
        &["private", "tenant", "public"],
    )?;
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        repo::catalogue::list(
            &db()?,
            &seen(caller),
            &repo::catalogue::Filter {
                q,
                package,
                visibility,
                category,
                tag,
            },
            page,
        )?,
    ))
}

/// `GET /applications/:id` (`app:read`): the application and its
/// versions, highest version code first.
pub fn get(call: &Call) -> Result<Response> {
    let db = db()?;
    let a = visible(call, &db, call.id("id", "application")?)?;
    let seen = seen(call.caller()?);
    let versions: Vec<_> = repo::catalogue::versions_of(&db, a.id)?
        .into_iter()
        .filter(|v| seen.sees_version(&a, v))
        .collect();
    let mut v = serde_json::to_value(&a).expect("json");
    v["items"] = serde_json::to_value(versions).expect("json");
    Ok(platform::http::json(200, &v))
}

/// A version of an application the caller sees (404 otherwise).
pub(super) fn visible_version(
    call: &Call,
    db: &platform::db::Db,
    id: uuid::Uuid,
) -> Result<repo::catalogue::Version> {
    let v = repo::catalogue::version_by_id(db, id)?.ok_or(Error::NotFound("version"))?;
    let a = visible(call, db, v.application_id).map_err(|_| Error::NotFound("version"))?;
    if !seen(call.caller()?).sees_version(&a, &v) {
        return Err(Error::NotFound("version"));
    }
    Ok(v)
}

/// `GET /versions/:id` (`app:read`): one version of an application the
/// caller sees.
pub fn version(call: &Call) -> Result<Response> {
    let v = visible_version(call, &db()?, call.id("id", "version")?)?;
    Ok(platform::http::json(200, &v))
}
