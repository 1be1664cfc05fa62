//! Snapshot archives kept in the control plane, so that a device can be
//! made on another node from its snapshot when its own node is lost.
//!
//! [`upload`] tars a snapshot's `/data` copy (GNU tar: numeric owners,
//! modes, links, names sorted so the same copy gives the same archive) and
//! PUTs it in chunks of [`ARCHIVE_CHUNK_BYTES`] while it is produced: at
//! most one chunk is in memory. [`import`] GETs the chunks of an archive
//! in order into `tar -x` over a fresh directory, hashing as they pass, and
//! puts the directory in place of the device's `/data` only when the whole
//! archive has the length and sha256 its signed command names.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::{signed_request, signed_request_of, Shared};
use crate::config::Config;
use crate::error::AgentError;
use crate::protocol::{snapshot_archive_path, ArchiveRef, ARCHIVE_CHUNK_BYTES};
use crate::reconcile;
use crate::spec::{self, DeviceId, SnapshotId};

/// Attempts per chunk before an upload or import gives up.
const ATTEMPTS: u32 = 4;
/// The longest one chunk's request may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);
/// The file in a device's directory naming the snapshot its `/data` came from.
const IMPORTED: &str = "imported.json";

fn client() -> Result<reqwest::Client, AgentError> {
    reqwest::Client::builder()
        .timeout(CHUNK_TIMEOUT)
        .build()
        .map_err(|e| AgentError::Download(format!("http client: {e}")))
}

/// Fills `buf` from `r` until it is full or `r` ends; the bytes read.
async fn fill(r: &mut (impl AsyncReadExt + Unpin), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Waits for `tar` and fails with what it said when it did not succeed.
async fn tar_done(child: tokio::process::Child, what: &str) -> Result<(), AgentError> {
    let out = child.wait_with_output().await?;
    if out.status.success() {
        return Ok(());
    }
    Err(AgentError::Io(std::io::Error::other(format!(
        "tar {what} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))))
}

/// PUTs one chunk, again after a failure (the same chunk twice is one).
async fn put_chunk(
    client: &reqwest::Client,
    cfg: &Config,
    path: &str,
    data: &[u8],
) -> Result<(), AgentError> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let sent = signed_request_of(
            client,
            cfg,
            reqwest::Method::PUT,
            path,
            data.to_vec(),
            "application/octet-stream",
        )
        .send()
        .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            // The snapshot is no longer being taken: trying again cannot help.
            Ok(r) if r.status().is_client_error() => {
                return Err(AgentError::Download(format!(
                    "archive upload: the control plane answered {}",
                    r.status()
                )))
            }
            Ok(r) => last = format!("the control plane answered {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(AgentError::Download(format!("archive upload: {last}")))
}

/// Tars `data` (a snapshot's `/data` copy) and uploads it as the archive of
/// `snap`; its `bytes`, `sha256` and `chunks`.
pub async fn upload(
    cfg: &Config,
    data: &Path,
    snap: &SnapshotId,
) -> Result<serde_json::Value, AgentError> {
    let client = client()?;
    let mut child = tokio::process::Command::new("tar")
        .args(["--create", "--file=-", "--numeric-owner", "--sort=name"])
        .arg("--directory")
        .arg(data)
        .arg(".")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut buf = vec![0u8; ARCHIVE_CHUNK_BYTES];
    let (mut hash, mut bytes, mut seq) = (Sha256::new(), 0u64, 0u32);
    loop {
        let n = fill(&mut out, &mut buf).await?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
        let path = snapshot_archive_path(cfg.node_id.as_str(), snap.as_str(), seq);
        put_chunk(&client, cfg, &path, &buf[..n]).await?;
        seq += 1;
    }
    drop(out);
    tar_done(child, "create").await?;
    Ok(json!({"bytes": bytes, "sha256": hex::encode(hash.finalize()), "chunks": seq}))
}

/// GETs one chunk, again after a failure of the network or the server.
async fn get_chunk(
    client: &reqwest::Client,
    cfg: &Config,
    path: &str,
) -> Result<bytes::Bytes, AgentError> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        match signed_request(client, cfg, reqwest::Method::GET, path, Vec::new())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) if b.len() <= ARCHIVE_CHUNK_BYTES => return Ok(b),
                Ok(b) => {
                    return Err(AgentError::Download(format!(
                        "archive chunk of {} bytes, more than {ARCHIVE_CHUNK_BYTES}",
                        b.len()
                    )))
                }
                Err(e) => last = e.to_string(),
            },
            Ok(r) if r.status().is_client_error() => {
                return Err(AgentError::PayloadExpired(format!(
                    "the control plane no longer serves snapshot archive chunk {path} ({})",
                    r.status()
                )))
            }
            Ok(r) => last = format!("the control plane answered {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(AgentError::Download(format!("archive download: {last}")))
}

async fn remove_any(path: &Path) -> std::io::Result<()> {
    let r = if tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        tokio::fs::remove_dir_all(path).await
    } else {
        tokio::fs::remove_file(path).await
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Downloads `archive` into a new directory and checks it; the directory.
async fn fetch(cfg: &Config, ddir: &Path, archive: &ArchiveRef) -> Result<PathBuf, AgentError> {
    let client = client()?;
    let into = ddir.join("data.import");
    remove_any(&into).await?;
    tokio::fs::create_dir_all(&into).await?;
    let mut child = tokio::process::Command::new("tar")
        .args([
            "--extract",
            "--file=-",
            "--numeric-owner",
            "--same-permissions",
        ])
        .arg("--directory")
        .arg(&into)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let (mut hash, mut bytes) = (Sha256::new(), 0u64);
    let fetched = async {
        for seq in 0..archive.chunks {
            let path =
                snapshot_archive_path(cfg.node_id.as_str(), archive.snapshot_id.as_str(), seq);
            let chunk = get_chunk(&client, cfg, &path).await?;
            bytes += chunk.len() as u64;
            if bytes > archive.bytes {
                return Err(AgentError::LengthMismatch {
                    expected: archive.bytes,
                    actual: bytes,
                });
            }
            hash.update(&chunk);
            stdin.write_all(&chunk).await?;
        }
        Ok(())
    }
    .await;
    drop(stdin);
    let untarred = tar_done(child, "extract").await;
    let checked = fetched.and_then(|()| {
        if bytes != archive.bytes {
            return Err(AgentError::LengthMismatch {
                expected: archive.bytes,
                actual: bytes,
            });
        }
        let actual = hex::encode(hash.finalize());
        if actual != archive.sha256 {
            return Err(AgentError::ChecksumMismatch {
                expected: archive.sha256.clone(),
                actual,
            });
        }
        Ok(())
    });
    // A wrong archive is reported as such, before whatever tar made of it.
    if let Err(e) = checked.and(untarred) {
        let _ = remove_any(&into).await;
        return Err(e);
    }
    Ok(into)
}

/// Makes `archive` the `/data` of device `id` (whose container, if any, is
/// removed first), once: a repeated import of the same snapshot does
/// nothing. Runs under the device's lock, so the reconciler does not make
/// the container from an empty `/data` meanwhile.
pub async fn import(
    shared: &Arc<Shared>,
    id: &DeviceId,
    archive: &ArchiveRef,
) -> Result<(), AgentError> {
    let ddir = spec::device_dir(&shared.cfg.data_root, id);
    let marker = ddir.join(IMPORTED);
    let done = |data: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(data)
            .ok()
            .is_some_and(|v| v["snapshot_id"] == archive.snapshot_id.as_str())
    };
    if tokio::fs::read(&marker).await.is_ok_and(|d| done(&d)) {
        return Ok(());
    }
    let lock = shared.device_lock(id);
    let _g = lock.lock().await;
    tokio::fs::create_dir_all(&ddir).await?;
    let fetched = fetch(&shared.cfg, &ddir, archive).await?;
    reconcile::remove_container(shared, &shared.container_name(id)).await?;
    remove_any(&ddir.join("data")).await?;
    remove_any(&ddir.join("image-override.json")).await?;
    tokio::fs::rename(&fetched, ddir.join("data")).await?;
    let note = json!({"snapshot_id": archive.snapshot_id, "bytes": archive.bytes, "sha256": archive.sha256});
    tokio::fs::write(&marker, serde_json::to_vec(&note).expect("json")).await?;
    tracing::info!(device = %id, snapshot = %archive.snapshot_id, bytes = archive.bytes, "imported a snapshot archive");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::protocol::NodeSecret;
    use crate::spec::NodeId;
    use crate::testkit::ControlPlane;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, data: &[u8], mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[tokio::test]
    async fn an_archive_travels_in_chunks_and_comes_back_whole_while_a_wrong_one_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let secret = NodeSecret::new(b"0123456789abcdef".to_vec()).unwrap();
        let cp = ControlPlane::start(secret.clone()).await;
        let cfg = Config::with_defaults(
            NodeId::parse("node-archive").unwrap(),
            secret,
            "redis://127.0.0.1:1/",
            &cp.url,
            root.path(),
        );
        let shared = Arc::new(Shared::new(cfg, Arc::new(FakeEngine::new())).unwrap());

        // A snapshot's data copy: a file over two chunks long, a private
        // file, a link, an empty directory.
        let copy = root.path().join("copy");
        let big: Vec<u8> = (0..ARCHIVE_CHUNK_BYTES * 2 + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        write(&copy.join("app/big.bin"), &big, 0o644);
        write(&copy.join("misc/secret.txt"), b"only mine", 0o600);
        std::os::unix::fs::symlink("../misc/secret.txt", copy.join("app/link")).unwrap();
        std::fs::create_dir_all(copy.join("empty")).unwrap();
        let snap = SnapshotId::parse("7b0c1a56-0000-4000-8000-000000000001").unwrap();
        let out = upload(&shared.cfg, &copy, &snap).await.unwrap();
        let chunks = cp.state.archives.lock().unwrap().clone();
        assert_eq!(out["chunks"], 3, "{out}");
        assert_eq!(chunks.len(), 3);
        let stored: usize = chunks.values().map(Vec::len).sum();
        assert_eq!(out["bytes"].as_u64(), Some(stored as u64));
        assert!(chunks.values().all(|c| c.len() <= ARCHIVE_CHUNK_BYTES));
        let archive = ArchiveRef {
            snapshot_id: snap,
            bytes: out["bytes"].as_u64().unwrap(),
            sha256: out["sha256"].as_str().unwrap().to_owned(),
            chunks: 3,
        };

        // The device has data of its own; an archive whose digest is not
        // the one named is refused and leaves it as it was.
        let id = DeviceId::parse("d1").unwrap();
        let ddir = spec::device_dir(root.path(), &id);
        write(&ddir.join("data/old.txt"), b"old", 0o644);
        let wrong = ArchiveRef {
            sha256: "0".repeat(64),
            ..archive.clone()
        };
        let err = import(&shared, &id, &wrong).await.unwrap_err();
        assert!(matches!(err, AgentError::ChecksumMismatch { .. }), "{err}");
        assert_eq!(std::fs::read(ddir.join("data/old.txt")).unwrap(), b"old");
        assert!(!ddir.join("data.import").exists());

        // The right one replaces /data with the copy, modes and links kept.
        import(&shared, &id, &archive).await.unwrap();
        let data = ddir.join("data");
        assert!(!data.join("old.txt").exists());
        assert_eq!(std::fs::read(data.join("app/big.bin")).unwrap(), big);
        let private = std::fs::metadata(data.join("misc/secret.txt")).unwrap();
        assert_eq!(private.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_link(data.join("app/link")).unwrap(),
            Path::new("../misc/secret.txt")
        );
        assert!(data.join("empty").is_dir());

        // Once imported, the same snapshot is not imported again, even
        // when the control plane no longer has it.
        std::fs::write(data.join("since.txt"), b"new").unwrap();
        cp.state.archives.lock().unwrap().clear();
        import(&shared, &id, &archive).await.unwrap();
        assert_eq!(std::fs::read(data.join("since.txt")).unwrap(), b"new");
    }
}
