//! Uploads: an APK is sent in chunks (`POST /uploads` with its size, then
//! `PUT /uploads/:id/chunks/:seq`, then `POST /uploads/:id/complete`), so
//! no request carries more than one chunk (8 MiB) and the component never
//! holds the whole file: on completion it reads the stored file through
//! the `apk` crate, which fetches only the central directory and the few
//! entries it needs, each bounded, and hashes the file chunk by chunk. A
//! file that is not an APK the platform takes, or a package version
//! already there, is refused and nothing of the upload is kept.

use super::{db, short_text, Call};
use crate::error::{Error, Result};
use crate::repo::{self, catalogue::NewApplication, catalogue::NewVersion};
use platform::events::{catalogue::APP_UPLOADED, payload::AppVersion};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spin_sdk::http::Response;
use uuid::Uuid;

/// Bytes of every chunk but the last.
pub const CHUNK_BYTES: i32 = 8 << 20;
/// The largest APK taken.
pub const MAX_APK_BYTES: i64 = 1 << 30;
/// How long an upload may stay open.
const TTL_SECS: i32 = 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Begin {
    size: i64,
}

/// `POST /uploads` (`app:upload`): `{size}` in bytes (1 to 1 GiB); 201
/// with the upload: its id, `chunk_bytes`, `chunks` and `expires_at`.
pub fn begin(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let b: Begin = call.body()?;
    if !(1..=MAX_APK_BYTES).contains(&b.size) {
        return Err(Error::Invalid(format!(
            "size must be 1 to {MAX_APK_BYTES} bytes"
        )));
    }
    let u = repo::uploads::insert(
        &db()?,
        &repo::uploads::NewUpload {
            id: Uuid::new_v4(),
            owner: caller.user_id,
            tenant: caller.tenant_id,
            department: caller.department_id,
            size: b.size,
            chunk_bytes: CHUNK_BYTES,
            ttl_secs: TTL_SECS,
        },
    )?;
    Ok(platform::http::json(201, &u))
}

/// The caller's open upload named in the path (404 otherwise).
fn open(call: &Call, db: &platform::db::Db) -> Result<repo::uploads::Upload> {
    let caller = call.caller()?;
    let id = call.id("id", "upload")?;
    repo::uploads::open_of(db, id, caller.user_id)?.ok_or(Error::NotFound("upload"))
}

/// `PUT /uploads/:id/chunks/:seq` (`app:upload`): chunk `seq` (from 0),
/// raw bytes: exactly `chunk_bytes`, the last one the rest; 204. The same
/// chunk again replaces it.
pub fn put_chunk(call: &Call) -> Result<Response> {
    let db = db()?;
    let u = open(call, &db)?;
    let seq: i32 = call
        .params
        .get("seq")
        .parse()
        .ok()
        .filter(|n| (0..u.chunks).contains(n))
        .ok_or_else(|| Error::Invalid(format!("seq must be 0 to {}", u.chunks - 1)))?;
    let body = platform::http::raw_body_within(
        call.req,
        CHUNK_BYTES as usize,
        "application/octet-stream",
    )?;
    let want = if seq == u.chunks - 1 {
        u.size - i64::from(u.chunk_bytes) * i64::from(u.chunks - 1)
    } else {
        i64::from(u.chunk_bytes)
    };
    if body.len() as i64 != want {
        return Err(Error::Invalid(format!(
            "chunk {seq} must be {want} bytes, not {}",
            body.len()
        )));
    }
    repo::uploads::put_chunk(&db, u.id, seq, body.to_vec())?;
    super::log_memory(call, "chunk");
    Ok(platform::http::no_content())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Complete {
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// sha256 of the stored file, one chunk in memory at a time.
fn digest(db: &platform::db::Db, u: &repo::uploads::Upload) -> Result<String> {
    let mut h = Sha256::new();
    for seq in 0..u.chunks {
        h.update(repo::uploads::chunk_part(db, u.id, seq, 0, u.chunk_bytes)?);
    }
    Ok(hex::encode(h.finalize()))
}

/// `POST /uploads/:id/complete` (`app:upload`): `{visibility?, category?,
/// tags?}`; every chunk must be there. The file is read: 201 with the
/// `application` and the new `version`; 422 `invalid_apk` with the reason
/// (not a zip, truncated, corrupt, no manifest, a zip bomb), 409 when that
/// package version is already there; either way nothing of it is kept.
pub fn complete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let b: Complete = if call.req.body().is_empty() {
        Complete::default()
    } else {
        call.body()?
    };
    let visibility = match b.visibility.as_deref() {
        None | Some("private") => "private",
        Some("tenant") if caller.tenant_id.is_some() => "tenant",
        Some("tenant") => {
            return Err(Error::Invalid(
                "visibility tenant needs a caller in a tenant".into(),
            ))
        }
        Some(_) => {
            return Err(Error::Invalid(
                "visibility must be private or tenant".into(),
            ))
        }
    };
    let category = short_text(b.category, "category", 50)?;
    let tags = b.tags.unwrap_or_default();
    if tags.len() > 20 {
        return Err(Error::Invalid("at most 20 tags".into()));
    }
    for t in &tags {
        short_text(Some(t.clone()), "a tag", 50)?;
    }
    let db = db()?;
    let u = open(call, &db)?;
    let (count, bytes) = repo::uploads::received(&db, u.id)?;
    if count != i64::from(u.chunks) || bytes != u.size {
        return Err(Error::Conflict(format!(
            "{count} of {} chunks received ({bytes} of {} bytes)",
            u.chunks, u.size
        )));
    }
    let refuse = |e: Error| -> Result<Response> {
        repo::uploads::delete_open(&db, u.id)?;
        Err(e)
    };
    let info = match apk::inspect(&repo::uploads::Stored {
        db: &db,
        upload: &u,
    }) {
        Ok(info) => info,
        Err(apk::ApkError::Read(e)) => return Err(platform::Problem::internal(e).into()),
        Err(e) => return refuse(Error::InvalidApk(e.to_string())),
    };
    let sha256 = digest(&db, &u)?;
    let scope = if visibility == "tenant" {
        caller.tenant_id.expect("checked above")
    } else {
        caller.user_id
    };
    let version_id = Uuid::new_v4();
    let done = db.transaction(|tx| {
        let app = match repo::catalogue::lock_in_scope(tx, scope, &info.package)? {
            Some(a) => a.id,
            None => {
                let id = Uuid::new_v4();
                repo::catalogue::insert_application(
                    tx,
                    &NewApplication {
                        id,
                        package: &info.package,
                        owner: caller.user_id,
                        tenant: caller.tenant_id,
                        department: caller.department_id,
                        visibility,
                        scope,
                        category: category.as_deref(),
                        tags: &tags,
                    },
                )?;
                id
            }
        };
        if repo::catalogue::has_version(tx, app, info.version_code)? {
            return Err(Error::Conflict(format!(
                "{} version {} is already there",
                info.package, info.version_code
            )));
        }
        repo::catalogue::insert_version(
            tx,
            &NewVersion {
                id: version_id,
                application: app,
                upload: u.id,
                sha256: &sha256,
                size: u.size,
                info: &info,
                by: caller.user_id,
            },
        )?;
        repo::uploads::stored(tx, u.id, &sha256)?;
        let uploaded = AppVersion {
            version_id,
            application_id: app,
            package: info.package.clone(),
            version_code: info.version_code,
            version_name: info.version_name.clone(),
            label: info.label.clone(),
            owner_id: caller.user_id,
            tenant_id: caller.tenant_id,
            visibility: visibility.to_string(),
            sha256: sha256.clone(),
        };
        platform::outbox::enqueue(tx, &APP_UPLOADED, &version_id.to_string(), 1, &uploaded)?;
        Ok(app)
    });
    let app = match done {
        Ok(app) => app,
        Err(e @ Error::Conflict(_)) => return refuse(e),
        Err(e) => return Err(e),
    };
    platform::outbox::publish_after_commit(&db, &call.ctx.request_id);
    let application = repo::catalogue::find(&db, app)?.ok_or(Error::NotFound("application"))?;
    let version =
        repo::catalogue::version_by_id(&db, version_id)?.ok_or(Error::NotFound("version"))?;
    super::log_memory(call, "complete");
    Ok(platform::http::json(
        201,
        &serde_json::json!({"application": application, "version": version}),
    ))
}

/// `DELETE /uploads/:id` (`app:upload`): drops an open upload and its
/// chunks; 204.
pub fn abort(call: &Call) -> Result<Response> {
    let db = db()?;
    let u = open(call, &db)?;
    repo::uploads::delete_open(&db, u.id)?;
    Ok(platform::http::no_content())
}

/// `POST /internal/uploads/expire` (scheduler, every minute): drops open
/// uploads left past their 24 hours, chunks and all (500 a run); answers
/// `{expired}`.
pub fn expire_job(_call: &Call) -> Result<Response> {
    let n = repo::uploads::expire(&db()?, 500)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"expired": n}),
    ))
}
