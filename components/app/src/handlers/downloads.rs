//! Stored APK files for whoever holds a signed, expiring link: the link is
//! the credential, so a host's agent downloads an APK without an account
//! and without credentials to any store. `GET /versions/:id/download`
//! gives a caller who sees the version a link valid for `url_ttl_secs`
//! (default an hour); `GET /files/:id?expires=&sig=` serves the file,
//! by `Range` (at most 8 MiB an answer, so no answer holds more than one
//! chunk's worth), checked against the link's HMAC-SHA256 under a key
//! derived from the component key.

use super::{catalogue::visible_version, db, Call};
use crate::error::{Error, Result};
use crate::repo;
use apk::Source;
use hmac::{Hmac, Mac};
use platform::Problem;
use sha2::Sha256;
use spin_sdk::http::Response;
use uuid::Uuid;

/// The most bytes one answer carries.
pub const MAX_RANGE: u64 = 8 << 20;
/// What the link key is derived for.
const PURPOSE: &str = "apk-download";

fn mac(id: Uuid, expires: i64) -> Result<Hmac<Sha256>> {
    let key = access::service::ComponentKey::parse(&platform::var("component_key")?)
        .map_err(|e| Problem::internal(e.to_string()))?
        .seal_key(PURPOSE);
    let mut m = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    m.update(format!("{id}.{expires}").as_bytes());
    Ok(m)
}

fn ttl_secs() -> i64 {
    platform::var("url_ttl_secs")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &i64| *n > 0)
        .unwrap_or(3600)
}

/// A signed path to a version's file, valid for `ttl` seconds, and when
/// it expires (Unix seconds).
pub fn signed_path(version: Uuid, ttl: i64) -> Result<(String, i64)> {
    let expires = unix_now() + ttl;
    let sig = hex::encode(mac(version, expires)?.finalize().into_bytes());
    Ok((
        format!("/api/v1/app/files/{version}?expires={expires}&sig={sig}"),
        expires,
    ))
}

/// `GET /versions/:id/download` (`app:read`): a signed link to the
/// version's file: `path` (below the API's own address), `expires_at`,
/// `sha256`, `size_bytes`; counted as a download.
pub fn link(call: &Call) -> Result<Response> {
    let db = db()?;
    let v = visible_version(call, &db, call.id("id", "version")?)?;
    if v.status != "active" {
        return Err(Error::Conflict(format!("the version is {}", v.status)));
    }
    let (path, expires) = signed_path(v.id, ttl_secs())?;
    repo::catalogue::count(&db, v.id, repo::catalogue::Count::Download)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({
            "path": path,
            "expires_at": expires,
            "sha256": v.sha256,
            "size_bytes": v.size_bytes,
        }),
    ))
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A `Range` header's one range, as `(first, last)` within `size`;
/// `None` when it cannot be served (several ranges, beyond the end).
fn range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (first, last) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (first <= last && first < size).then_some((first, last.min(first + MAX_RANGE - 1)))
}

/// `GET /files/:id?expires=&sig=` (public; the link is the credential):
/// the version's file, `206` for a `Range` (`bytes=a-b`, `a-`, `-n`; at
/// most 8 MiB an answer), `200` for a whole file of at most 8 MiB; `403`
/// for a link that is not valid, `410` once expired, `413` for a larger
/// file asked for whole, `416` for a range outside the file.
pub fn file(call: &Call) -> Result<Response> {
    let id = call.id("id", "file")?;
    let db = db()?;
    let v = repo::catalogue::version_by_id(&db, id)?.ok_or(Error::NotFound("file"))?;
    let forbidden = || Error::Problem(Problem::new(403, "forbidden", "the link is not valid"));
    let expires: i64 = call
        .query("expires")
        .and_then(|e| e.parse().ok())
        .ok_or_else(forbidden)?;
    let sig = call
        .query("sig")
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(forbidden)?;
    mac(id, expires)?
        .verify_slice(&sig)
        .map_err(|_| forbidden())?;
    if unix_now() > expires {
        return Err(Error::Problem(Problem::new(
            410,
            "gone",
            "the link has expired",
        )));
    }
    if v.status != "active" {
        return Err(Error::NotFound("file"));
    }
    let upload = repo::uploads::by_id(&db, v.upload_id)?.ok_or(Error::NotFound("file"))?;
    let size = upload.size as u64;
    let asked = call
        .req
        .header("range")
        .and_then(|h| h.as_str())
        .map(str::to_owned);
    let (first, last, status) = match asked {
        Some(h) => match range(&h, size) {
            Some((a, b)) => (a, b, 206),
            None => {
                return Ok(Response::builder()
                    .status(416)
                    .header("content-range", format!("bytes */{size}"))
                    .header("content-type", "application/json")
                    .body(
                        serde_json::to_vec(&serde_json::json!({"error": {
                            "code": "range_not_satisfiable",
                            "message": format!("one range within the file's {size} bytes"),
                            "request_id": call.ctx.request_id}}))
                        .expect("json"),
                    )
                    .build())
            }
        },
        None if size <= MAX_RANGE => (0, size - 1, 200),
        None => {
            return Err(Error::Problem(Problem::new(
                413,
                "payload_too_large",
                format!("the file is {size} bytes: ask for it by Range, at most {MAX_RANGE} bytes a request"),
            )))
        }
    };
    let bytes = repo::uploads::Stored {
        db: &db,
        upload: &upload,
    }
    .read_at(first, (last - first + 1) as usize)
    .map_err(|e| Problem::internal(e.to_string()))?;
    let mut r = Response::builder();
    r.status(status)
        .header("content-type", "application/vnd.android.package-archive")
        .header("accept-ranges", "bytes")
        .header("etag", format!("\"{}\"", v.sha256));
    if status == 206 {
        r.header("content-range", format!("bytes {first}-{last}/{size}"));
    }
    super::log_memory(call, "file");
    Ok(r.body(bytes).build())
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges_are_clamped_to_the_file_and_to_one_answer() {
        assert_eq!(range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(range("bytes=990-", 1000), Some((990, 999)));
        assert_eq!(range("bytes=-10", 1000), Some((990, 999)));
        assert_eq!(range("bytes=900-5000", 1000), Some((900, 999)));
        assert_eq!(range("bytes=0-", 100 << 20), Some((0, (8 << 20) - 1)));
        for bad in [
            "bytes=1000-",
            "bytes=5-4",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=-0",
            "bytes=x-",
        ] {
            assert_eq!(range(bad, 1000), None, "{bad}");
        }
    }
}
