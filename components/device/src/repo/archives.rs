//! Snapshot archives kept in the control plane (`snapshot_archive_chunks`):
//! uploaded chunk by chunk by the snapshot's node while it is taken, sealed
//! when the snapshot operation's result names the whole archive, and served
//! to the node a device is recovered on.

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Where a chunk upload may go.
pub enum Upload {
    /// Stored (or stored again: the same chunk twice is one chunk).
    Stored,
    /// No such snapshot being taken on that node.
    NotTaking,
}

/// Stores chunk `seq` of the archive of `snapshot`, taken on `node`, while
/// the snapshot is being taken and an archive was asked for.
pub fn store_chunk(
    db: &Db,
    snapshot: Uuid,
    node: &str,
    seq: i32,
    data: Vec<u8>,
) -> Result<Upload, DbError> {
    let n = db.execute(
        "INSERT INTO snapshot_archive_chunks (snapshot_id, seq, data) \
         SELECT s.id, $3, $4 FROM snapshots s \
          WHERE s.id = $1 AND s.node_id = $2 AND s.status = 'creating' \
         ON CONFLICT (snapshot_id, seq) DO UPDATE SET data = EXCLUDED.data, created_at = EXCLUDED.created_at",
        &[
            P::Uuid(snapshot.to_string()),
            P::Str(node.into()),
            P::Int32(seq),
            P::Binary(data),
        ],
    )?;
    Ok(if n == 1 {
        Upload::Stored
    } else {
        Upload::NotTaking
    })
}

/// Chunk `seq` of the sealed archive of `snapshot`, for `node` when the
/// snapshot's device is placed on it; `None` otherwise.
pub fn chunk_for_node(
    db: &Db,
    snapshot: Uuid,
    node: &str,
    seq: i32,
) -> Result<Option<Vec<u8>>, DbError> {
    db.one(
        "SELECT c.data FROM snapshot_archive_chunks c \
           JOIN snapshots s ON s.id = c.snapshot_id \
           JOIN devices d ON d.id = s.device_id \
          WHERE c.snapshot_id = $1 AND c.seq = $3 AND d.node_id = $2 \
            AND s.archived_at IS NOT NULL AND s.status = 'ready' AND c.seq < s.archive_chunks",
        &[
            P::Uuid(snapshot.to_string()),
            P::Str(node.into()),
            P::Int32(seq),
        ],
        |r| col(r, 0, "snapshot_archive_chunks.data"),
    )
}

/// What an agent said it uploaded.
pub struct Claimed<'a> {
    /// Bytes of the whole archive.
    pub bytes: i64,
    /// Its sha256 (lower-case hex).
    pub sha256: &'a str,
    /// How many chunks.
    pub chunks: i32,
}

/// Seals the archive of a snapshot that just became ready when the chunks
/// stored are exactly the ones claimed (numbered `0..chunks`, adding up to
/// `bytes`); otherwise drops them and records why. Returns that reason.
pub fn seal(db: &Db, snapshot: Uuid, claimed: &Claimed) -> Result<Option<String>, DbError> {
    let r = db.query(
        "SELECT count(*), coalesce(sum(length(data)), 0)::bigint, coalesce(max(seq), -1) \
           FROM snapshot_archive_chunks WHERE snapshot_id = $1",
        &[P::Uuid(snapshot.to_string())],
    )?;
    let row = &r.rows[0];
    let count: i64 = col(row, 0, "count")?;
    let bytes: i64 = col(row, 1, "bytes")?;
    let max: i32 = col(row, 2, "max")?;
    let why = if count != i64::from(claimed.chunks) || max != claimed.chunks - 1 {
        Some(format!(
            "archive: {count} chunks stored, {} claimed",
            claimed.chunks
        ))
    } else if bytes != claimed.bytes {
        Some(format!(
            "archive: {bytes} bytes stored, {} claimed",
            claimed.bytes
        ))
    } else {
        None
    };
    match &why {
        None => {
            db.execute(
                "UPDATE snapshots SET archive_bytes = $2, archive_sha256 = $3, archive_chunks = $4, \
                   archived_at = now() AT TIME ZONE 'UTC', archive_error = NULL WHERE id = $1",
                &[
                    P::Uuid(snapshot.to_string()),
                    P::Int64(claimed.bytes),
                    P::Str(claimed.sha256.into()),
                    P::Int32(claimed.chunks),
                ],
            )?;
        }
        Some(why) => fail(db, snapshot, why)?,
    }
    Ok(why)
}

/// Drops whatever was uploaded of a snapshot's archive and records why it
/// is not kept.
pub fn fail(db: &Db, snapshot: Uuid, why: &str) -> Result<(), DbError> {
    drop_chunks(db, snapshot)?;
    db.execute(
        "UPDATE snapshots SET archive_error = $2, archived_at = NULL WHERE id = $1",
        &[
            P::Uuid(snapshot.to_string()),
            P::Str(why.chars().take(500).collect()),
        ],
    )?;
    Ok(())
}

/// Deletes a snapshot's archive chunks (a failed or deleted snapshot keeps
/// none).
pub fn drop_chunks(db: &Db, snapshot: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM snapshot_archive_chunks WHERE snapshot_id = $1",
        &[P::Uuid(snapshot.to_string())],
    )?;
    Ok(())
}

/// The newest ready, archived snapshot of a device: id, bytes, sha256,
/// chunks and when it was taken.
pub struct Archived {
    /// The snapshot.
    pub snapshot: Uuid,
    /// Bytes of the archive.
    pub bytes: i64,
    /// Its sha256.
    pub sha256: String,
    /// Its chunks.
    pub chunks: i32,
    /// When the snapshot was taken (RFC 3339).
    pub taken_at: String,
}

/// The newest archived snapshot of `device`, if any.
pub fn newest(db: &Db, device: Uuid) -> Result<Option<Archived>, DbError> {
    db.one(
        "SELECT id, archive_bytes, archive_sha256, archive_chunks, created_at FROM snapshots \
          WHERE device_id = $1 AND archived_at IS NOT NULL AND status = 'ready' \
          ORDER BY created_at DESC LIMIT 1",
        &[P::Uuid(device.to_string())],
        |r| {
            Ok(Archived {
                snapshot: col(r, 0, "snapshots.id")?,
                bytes: col(r, 1, "snapshots.archive_bytes")?,
                sha256: col(r, 2, "snapshots.archive_sha256")?,
                chunks: col(r, 3, "snapshots.archive_chunks")?,
                taken_at: platform::db::timestamp(r, 4, "snapshots.created_at")?,
            })
        },
    )
}
