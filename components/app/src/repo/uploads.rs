//! Uploads and their chunks (`uploads`, `upload_chunks`), and reading a
//! stored file back chunk by chunk.

use platform::db::{col, opt_uuid, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// An upload as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    /// Id.
    pub id: Uuid,
    /// Who uploads.
    pub owner_id: Uuid,
    /// Bytes of the whole file.
    pub size: i64,
    /// Bytes of every chunk but the last.
    pub chunk_bytes: i32,
    /// How many chunks.
    pub chunks: i32,
    /// `open` or `stored`.
    pub status: String,
    /// When an open upload is dropped.
    pub expires_at: String,
    /// When it began.
    pub created_at: String,
}

const COLUMNS: &str = "id, owner_id, size, chunk_bytes, chunks, status, expires_at, created_at";

fn upload(r: &[DbValue]) -> Result<Upload, DbError> {
    Ok(Upload {
        id: col(r, 0, "uploads.id")?,
        owner_id: col(r, 1, "uploads.owner_id")?,
        size: col(r, 2, "uploads.size")?,
        chunk_bytes: col(r, 3, "uploads.chunk_bytes")?,
        chunks: col(r, 4, "uploads.chunks")?,
        status: col(r, 5, "uploads.status")?,
        expires_at: timestamp(r, 6, "uploads.expires_at")?,
        created_at: timestamp(r, 7, "uploads.created_at")?,
    })
}

/// A new upload.
pub struct NewUpload {
    /// Id.
    pub id: Uuid,
    /// Who.
    pub owner: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Their department.
    pub department: Option<Uuid>,
    /// Bytes.
    pub size: i64,
    /// Chunk size.
    pub chunk_bytes: i32,
    /// Seconds until an open upload is dropped.
    pub ttl_secs: i32,
}

/// Records a new upload.
pub fn insert(db: &Db, u: &NewUpload) -> Result<Upload, DbError> {
    let chunks = (u.size + i64::from(u.chunk_bytes) - 1) / i64::from(u.chunk_bytes);
    db.one(
        &format!(
            "INSERT INTO uploads (id, owner_id, tenant_id, department_id, size, chunk_bytes, chunks, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, (now() AT TIME ZONE 'UTC') + make_interval(secs => $8::int)) \
             RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(u.id.to_string()),
            P::Uuid(u.owner.to_string()),
            opt_uuid(u.tenant),
            opt_uuid(u.department),
            P::Int64(u.size),
            P::Int32(u.chunk_bytes),
            P::Int32(chunks as i32),
            P::Int32(u.ttl_secs),
        ],
        upload,
    )?
    .ok_or_else(|| DbError::Other("insert returned nothing".into()))
}

/// An open, unexpired upload of `owner`.
pub fn open_of(db: &Db, id: Uuid, owner: Uuid) -> Result<Option<Upload>, DbError> {
    db.one(
        &format!(
            "SELECT {COLUMNS} FROM uploads WHERE id = $1 AND owner_id = $2 AND status = 'open' \
               AND expires_at > now() AT TIME ZONE 'UTC'"
        ),
        &[P::Uuid(id.to_string()), P::Uuid(owner.to_string())],
        upload,
    )
}

/// An upload by id, whatever its state and owner.
pub fn by_id(db: &Db, id: Uuid) -> Result<Option<Upload>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        upload,
    )
}

/// Stores chunk `seq` (again: replaces it).
pub fn put_chunk(db: &Db, id: Uuid, seq: i32, data: Vec<u8>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO upload_chunks (upload_id, seq, data) VALUES ($1, $2, $3) \
         ON CONFLICT (upload_id, seq) DO UPDATE SET data = EXCLUDED.data",
        &[P::Uuid(id.to_string()), P::Int32(seq), P::Binary(data)],
    )?;
    Ok(())
}

/// How many chunks are stored and their bytes in all.
pub fn received(db: &Db, id: Uuid) -> Result<(i64, i64), DbError> {
    let r = db.query(
        "SELECT count(*), coalesce(sum(length(data)), 0)::bigint FROM upload_chunks WHERE upload_id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok((col(&r.rows[0], 0, "count")?, col(&r.rows[0], 1, "bytes")?))
}

/// `len` bytes of chunk `seq` from `offset` within it.
pub fn chunk_part(db: &Db, id: Uuid, seq: i32, offset: i32, len: i32) -> Result<Vec<u8>, DbError> {
    db.one(
        "SELECT substring(data FROM $3 FOR $4) FROM upload_chunks WHERE upload_id = $1 AND seq = $2",
        &[
            P::Uuid(id.to_string()),
            P::Int32(seq),
            P::Int32(offset + 1),
            P::Int32(len),
        ],
        |r| col(r, 0, "upload_chunks.data"),
    )?
    .ok_or_else(|| DbError::Other(format!("chunk {seq} of upload {id} is missing")))
}

/// Marks an upload stored, with its file's digest.
pub fn stored(db: &Db, id: Uuid, sha256: &str) -> Result<(), DbError> {
    db.execute(
        "UPDATE uploads SET status = 'stored', sha256 = $2 WHERE id = $1",
        &[P::Uuid(id.to_string()), P::Str(sha256.into())],
    )?;
    Ok(())
}

/// Deletes an open upload and its chunks (nothing of it is kept).
pub fn delete_open(db: &Db, id: Uuid) -> Result<bool, DbError> {
    Ok(db.execute(
        "DELETE FROM uploads WHERE id = $1 AND status = 'open'",
        &[P::Uuid(id.to_string())],
    )? == 1)
}

/// An upload's file as an `apk::Source`: each read fetches only the
/// bytes it asks for, chunk by chunk.
pub struct Stored<'a> {
    /// The database.
    pub db: &'a Db,
    /// The upload.
    pub upload: &'a Upload,
}

impl apk::Source for Stored<'_> {
    fn len(&self) -> u64 {
        self.upload.size as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, apk::ApkError> {
        let chunk = self.upload.chunk_bytes as u64;
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        let end = offset + len as u64;
        while at < end {
            let seq = (at / chunk) as i32;
            let within = at % chunk;
            let take = (chunk - within).min(end - at);
            let part = chunk_part(self.db, self.upload.id, seq, within as i32, take as i32)
                .map_err(|e| apk::ApkError::Read(format!("{e:?}")))?;
            if part.is_empty() {
                break;
            }
            at += part.len() as u64;
            out.extend_from_slice(&part);
        }
        Ok(out)
    }
}

/// Drops up to `limit` open uploads past their expiry, with their chunks;
/// how many.
pub fn expire(db: &Db, limit: i64) -> Result<u64, DbError> {
    db.execute(
        "DELETE FROM uploads WHERE id IN (SELECT id FROM uploads WHERE status = 'open' \
           AND expires_at < now() AT TIME ZONE 'UTC' ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
        &[P::Int64(limit)],
    )
}
