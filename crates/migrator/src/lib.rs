//! Database migrations for cloudphone. Each database has a folder
//! `migrations/<database>/` of `NNNN_<verb>_<object>.sql` files. [`migrate`]
//! applies the ones not yet applied, each in its own transaction together with
//! its record in `schema_migrations` (version, name, sha256), under an
//! advisory lock so two migrators never interleave. An applied file that was
//! edited or removed stops everything: history is fixed by a new migration.
//!
//! Used by `cargo xtask migrate` (also against production URLs) and by the
//! end-to-end test harness.

pub mod admin;

use postgres::{Client, NoTls};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the migration folder failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file name does not follow `NNNN_name.sql`, or two share a number.
    #[error("bad migration file name {0}: expected NNNN_<verb>_<object>.sql with a unique number")]
    BadName(String),
    /// An applied migration's file changed since it was applied.
    #[error("migration {version} ({name}) was edited after it was applied (checksum {applied} in the database, {on_disk} on disk): add a new migration instead")]
    Edited {
        /// Version number.
        version: i32,
        /// File name.
        name: String,
        /// Checksum recorded.
        applied: String,
        /// Checksum of the file now.
        on_disk: String,
    },
    /// The database has a migration that is not on disk.
    #[error("migration {0} is applied in the database but missing on disk")]
    Missing(i32),
    /// A database error.
    #[error("database: {0}")]
    Db(#[from] postgres::Error),
    /// A migration's SQL failed.
    #[error("migration {name} failed: {source}")]
    Failed {
        /// File name.
        name: String,
        /// The database error.
        source: postgres::Error,
    },
}

/// One migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The number before the first underscore.
    pub version: i32,
    /// The file name.
    pub name: String,
    /// The SQL.
    pub sql: String,
    /// Hex sha256 of the SQL.
    pub checksum: String,
}

/// A migration's state in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Version number.
    pub version: i32,
    /// File name.
    pub name: String,
    /// Whether it is applied.
    pub applied: bool,
}

/// Reads a migration folder in version order.
pub fn load(dir: &Path) -> Result<Vec<Migration>, Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !name.ends_with(".sql") {
            continue;
        }
        let version = name
            .split('_')
            .next()
            .filter(|v| v.len() == 4)
            .and_then(|v| v.parse::<i32>().ok())
            .ok_or_else(|| Error::BadName(name.clone()))?;
        let sql = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        out.push(Migration {
            version,
            name,
            sql,
            checksum,
        });
    }
    out.sort_by_key(|m| m.version);
    for pair in out.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(Error::BadName(pair[1].name.clone()));
        }
    }
    Ok(out)
}

const LOCK_KEY: i64 = 0x636c_6f75_6470;

fn connect(url: &str) -> Result<Client, Error> {
    Ok(Client::connect(url, NoTls)?)
}

fn ensure_table(client: &mut Client) -> Result<(), Error> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
        )",
    )?;
    Ok(())
}

fn applied(client: &mut Client) -> Result<Vec<(i32, String, String)>, Error> {
    Ok(client
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

fn check_history(disk: &[Migration], applied: &[(i32, String, String)]) -> Result<(), Error> {
    for (version, name, checksum) in applied {
        match disk.iter().find(|m| m.version == *version) {
            None => return Err(Error::Missing(*version)),
            Some(m) if &m.checksum != checksum => {
                return Err(Error::Edited {
                    version: *version,
                    name: name.clone(),
                    applied: checksum.clone(),
                    on_disk: m.checksum.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Applies pending migrations from `dir` to the database at `url`; returns
/// the names applied now.
pub fn migrate(url: &str, dir: &Path) -> Result<Vec<String>, Error> {
    let disk = load(dir)?;
    let mut client = connect(url)?;
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])?;
    let result = (|| {
        ensure_table(&mut client)?;
        let done = applied(&mut client)?;
        check_history(&disk, &done)?;
        let mut applied_now = Vec::new();
        for m in disk
            .iter()
            .filter(|m| !done.iter().any(|(v, _, _)| *v == m.version))
        {
            let mut tx = client.transaction()?;
            tx.batch_execute(&m.sql).map_err(|source| Error::Failed {
                name: m.name.clone(),
                source,
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&m.version, &m.name, &m.checksum],
            )?;
            tx.commit()?;
            applied_now.push(m.name.clone());
        }
        Ok(applied_now)
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
    result
}

/// Lists every migration on disk with whether it is applied; fails like
/// [`migrate`] on edited or missing history.
pub fn status(url: &str, dir: &Path) -> Result<Vec<Status>, Error> {
    let disk = load(dir)?;
    let mut client = connect(url)?;
    ensure_table(&mut client)?;
    let done = applied(&mut client)?;
    check_history(&disk, &done)?;
    Ok(disk
        .iter()
        .map(|m| Status {
            version: m.version,
            name: m.name.clone(),
            applied: done.iter().any(|(v, _, _)| *v == m.version),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("migrator-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (n, s) in files {
            std::fs::write(d.join(n), s).unwrap();
        }
        d
    }

    #[test]
    fn files_load_in_version_order_and_bad_names_are_refused() {
        let d = dir(&[
            ("0002_b.sql", "select 2"),
            ("0001_a.sql", "select 1"),
            ("README.md", ""),
        ]);
        let m = load(&d).unwrap();
        assert_eq!(m.iter().map(|m| m.version).collect::<Vec<_>>(), vec![1, 2]);
        let d = dir(&[("1_a.sql", ""), ("0001_a.sql", ""), ("0002_b.sql", "")]);
        assert!(matches!(load(&d), Err(Error::BadName(_))));
    }

    #[test]
    fn edited_and_missing_history_is_detected() {
        let d = dir(&[("0001_a.sql", "select 1")]);
        let disk = load(&d).unwrap();
        let ok = vec![(1, "0001_a.sql".to_string(), disk[0].checksum.clone())];
        assert!(check_history(&disk, &ok).is_ok());
        let edited = vec![(1, "0001_a.sql".to_string(), "x".to_string())];
        assert!(matches!(
            check_history(&disk, &edited),
            Err(Error::Edited { .. })
        ));
        let missing = vec![(2, "0002_b.sql".to_string(), "x".to_string())];
        assert!(matches!(
            check_history(&disk, &missing),
            Err(Error::Missing(2))
        ));
    }
}
