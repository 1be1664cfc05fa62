//! Install records (`installs`): one per device and application version,
//! moved on by `device`'s `apk.*` events. Every change bumps `version`,
//! the aggregate version of the `app.*` event it implies.

use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to installs: those of the requester.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "i.tenant_id",
    department: Some("i.department_id"),
    owner: Some("i.requested_by"),
};

/// An install record as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct Install {
    /// Id.
    pub id: Uuid,
    /// The device.
    pub device_id: Uuid,
    /// The version.
    pub version_id: Uuid,
    /// Its application.
    pub application_id: Uuid,
    /// Package name.
    pub package_name: String,
    /// The file's sha256.
    pub sha256: String,
    /// Who asked.
    pub requested_by: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Their department.
    #[serde(skip)]
    pub department_id: Option<Uuid>,
    /// `pending`, `installing`, `installed`, `failed`, `uninstalling`, `uninstalled`.
    pub status: String,
    /// The `device` batch of the latest install request.
    pub batch_id: Option<Uuid>,
    /// The `device` operation of the latest step (follow it there).
    pub operation_id: Option<Uuid>,
    /// Why it failed (or was found gone).
    pub error: Option<String>,
    /// Changes so far.
    pub version: i64,
    /// Created.
    pub created_at: String,
    /// Changed.
    pub updated_at: String,
    /// Installed (the latest time).
    pub installed_at: Option<String>,
}

impl Install {
    /// Its `row_ref` for a caller's data scope.
    pub fn row_ref(&self) -> access::RowRef {
        access::RowRef {
            tenant: self.tenant_id,
            department: self.department_id,
            owner: Some(self.requested_by),
        }
    }
}

const COLUMNS: &str = "i.id, i.device_id, i.version_id, i.application_id, i.package_name, i.sha256, \
     i.requested_by, i.tenant_id, i.department_id, i.status, i.batch_id, i.operation_id, i.error, i.version, \
     i.created_at, i.updated_at, i.installed_at";

fn install(r: &[DbValue]) -> Result<Install, DbError> {
    Ok(Install {
        id: col(r, 0, "installs.id")?,
        device_id: col(r, 1, "installs.device_id")?,
        version_id: col(r, 2, "installs.version_id")?,
        application_id: col(r, 3, "installs.application_id")?,
        package_name: col(r, 4, "installs.package_name")?,
        sha256: col(r, 5, "installs.sha256")?,
        requested_by: col(r, 6, "installs.requested_by")?,
        tenant_id: col(r, 7, "installs.tenant_id")?,
        department_id: col(r, 8, "installs.department_id")?,
        status: col(r, 9, "installs.status")?,
        batch_id: col(r, 10, "installs.batch_id")?,
        operation_id: col(r, 11, "installs.operation_id")?,
        error: col(r, 12, "installs.error")?,
        version: col(r, 13, "installs.version")?,
        created_at: timestamp(r, 14, "installs.created_at")?,
        updated_at: timestamp(r, 15, "installs.updated_at")?,
        installed_at: opt_timestamp(r, 16, "installs.installed_at")?,
    })
}

/// A request to install a version on a device.
pub struct Requested<'a> {
    /// The device.
    pub device: Uuid,
    /// The version.
    pub version: &'a crate::repo::catalogue::Version,
    /// Its package.
    pub package: &'a str,
    /// Who asked.
    pub by: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Their department.
    pub department: Option<Uuid>,
    /// The `device` batch.
    pub batch: Uuid,
    /// Its operation, when it started at once.
    pub operation: Option<Uuid>,
}

/// Records (or renews) the install of a version on a device: `installing`
/// when its operation started, `pending` otherwise; the record after.
pub fn request(db: &Db, r: &Requested) -> Result<Install, DbError> {
    let status = if r.operation.is_some() {
        "installing"
    } else {
        "pending"
    };
    db.one(
        &format!(
            "INSERT INTO installs AS i (id, device_id, version_id, application_id, package_name, sha256, requested_by, \
               tenant_id, department_id, status, batch_id, operation_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (device_id, version_id) DO UPDATE SET requested_by = EXCLUDED.requested_by, \
               tenant_id = EXCLUDED.tenant_id, department_id = EXCLUDED.department_id, status = EXCLUDED.status, \
               batch_id = EXCLUDED.batch_id, operation_id = EXCLUDED.operation_id, error = NULL, \
               version = i.version + 1, updated_at = now() AT TIME ZONE 'UTC' \
             RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(r.device.to_string()),
            P::Uuid(r.version.id.to_string()),
            P::Uuid(r.version.application_id.to_string()),
            P::Str(r.package.into()),
            P::Str(r.version.sha256.clone()),
            P::Uuid(r.by.to_string()),
            opt_uuid(r.tenant),
            opt_uuid(r.department),
            P::Str(status.into()),
            P::Uuid(r.batch.to_string()),
            opt_uuid(r.operation),
        ],
        install,
    )?
    .ok_or_else(|| DbError::Other("insert returned no row".into()))
}

/// What an `apk.*` event says happened.
pub enum Outcome<'a> {
    /// The install's operation started.
    Started(Uuid),
    /// The device installed the file.
    Installed(Option<Uuid>),
    /// Installing failed.
    InstallFailed(Option<Uuid>, &'a str),
    /// The device uninstalled the package.
    Uninstalled(Option<Uuid>),
    /// Uninstalling failed: the package stays installed.
    UninstallFailed(Option<Uuid>, &'a str),
}

/// Applies what `device` reports to the records of a device it concerns
/// (by file for installs, by package for uninstalls), each only from the
/// statuses it can follow; the records it changed, after.
pub fn apply(db: &Db, device: Uuid, key: &str, outcome: &Outcome) -> Result<Vec<Install>, DbError> {
    let (set, from, by_package, op, error) = match outcome {
        Outcome::Started(op) => ("status = 'installing'", "'pending'", false, Some(*op), None),
        Outcome::Installed(op) => (
            "status = 'installed', installed_at = now() AT TIME ZONE 'UTC'",
            "'pending', 'installing'",
            false,
            *op,
            None,
        ),
        Outcome::InstallFailed(op, e) => (
            "status = 'failed'",
            "'pending', 'installing'",
            false,
            *op,
            Some(*e),
        ),
        Outcome::Uninstalled(op) => (
            "status = 'uninstalled'",
            "'uninstalling', 'installed'",
            true,
            *op,
            None,
        ),
        Outcome::UninstallFailed(op, e) => (
            "status = 'installed'",
            "'uninstalling'",
            true,
            *op,
            Some(*e),
        ),
    };
    let matched = if by_package {
        "i.package_name = $2"
    } else {
        "i.sha256 = $2"
    };
    db.all(
        &format!(
            "UPDATE installs i SET {set}, error = $3, operation_id = COALESCE($4, i.operation_id), \
               version = i.version + 1, updated_at = now() AT TIME ZONE 'UTC' \
             WHERE i.device_id = $1 AND {matched} AND i.status IN ({from}) RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(device.to_string()),
            P::Str(key.into()),
            error.map_or(P::DbNull, |e| P::Str(e.chars().take(2000).collect())),
            opt_uuid(op),
        ],
        install,
    )
}

/// Marks a record `uninstalling` under the uninstall's operation (from
/// `installed` or `failed` only); the record after, or `None` when it was
/// in another status.
pub fn uninstalling(db: &Db, id: Uuid, op: Uuid) -> Result<Option<Install>, DbError> {
    db.one(
        &format!(
            "UPDATE installs i SET status = 'uninstalling', operation_id = $2, error = NULL, version = i.version + 1, \
               updated_at = now() AT TIME ZONE 'UTC' \
             WHERE i.id = $1 AND i.status IN ('installed', 'failed') RETURNING {COLUMNS}"
        ),
        &[P::Uuid(id.to_string()), P::Uuid(op.to_string())],
        install,
    )
}

/// Ends every record of a deleted device that still counts as on it.
pub fn device_gone(db: &Db, device: Uuid) -> Result<Vec<Install>, DbError> {
    db.all(
        &format!(
            "UPDATE installs i SET status = CASE WHEN i.status IN ('pending', 'installing') THEN 'failed' ELSE 'uninstalled' END, \
               error = 'the device was deleted', version = i.version + 1, updated_at = now() AT TIME ZONE 'UTC' \
             WHERE i.device_id = $1 AND i.status NOT IN ('failed', 'uninstalled') RETURNING {COLUMNS}"
        ),
        &[P::Uuid(device.to_string())],
        install,
    )
}

/// Fails every record still on its way whose outcome can no longer come
/// (the device feed was pruned past the consumer's cursor).
pub fn outcome_lost(db: &Db) -> Result<Vec<Install>, DbError> {
    db.all(
        &format!(
            "UPDATE installs i SET status = CASE WHEN i.status = 'uninstalling' THEN 'installed' ELSE 'failed' END, \
               error = 'the outcome was not received from device; ask again', version = i.version + 1, \
               updated_at = now() AT TIME ZONE 'UTC' \
             WHERE i.status IN ('pending', 'installing', 'uninstalling') RETURNING {COLUMNS}"
        ),
        &[],
        install,
    )
}

/// An install by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Install>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM installs i WHERE i.id = $1"),
        &[P::Uuid(id.to_string())],
        install,
    )
}

/// List filters.
#[derive(Default)]
pub struct Filter {
    /// A device.
    pub device: Option<Uuid>,
    /// A version.
    pub version: Option<Uuid>,
    /// An application.
    pub application: Option<Uuid>,
    /// A status.
    pub status: Option<String>,
    /// A batch.
    pub batch: Option<Uuid>,
}

/// A page of the records in a data scope, most recently changed first.
pub fn list(
    db: &Db,
    scope: &access::RowFilter,
    f: &Filter,
    page: Page,
) -> Result<(Vec<Install>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    for (column, id) in [
        ("i.device_id", f.device),
        ("i.version_id", f.version),
        ("i.application_id", f.application),
        ("i.batch_id", f.batch),
    ] {
        if let Some(id) = id {
            w.eq(column, P::Uuid(id.to_string()));
        }
    }
    if let Some(s) = &f.status {
        w.eq("i.status", P::Str(s.clone()));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM installs i"),
        "installs i",
        w,
        "i.updated_at DESC, i.id",
        page,
        install,
    )
}

/// Marks an install request as being asked of `device`; its id.
pub fn asking(db: &Db, by: Uuid, sha256: &str) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    db.execute(
        "INSERT INTO install_requests (id, requested_by, sha256) VALUES ($1, $2, $3)",
        &[
            P::Uuid(id.to_string()),
            P::Uuid(by.to_string()),
            P::Str(sha256.into()),
        ],
    )?;
    Ok(id)
}

/// Ends the mark of [`asking`] (and any left by a crash long ago).
pub fn asked(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM install_requests WHERE id = $1 OR created_at < (now() AT TIME ZONE 'UTC') - interval '1 hour'",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// Whether a request of `by` for this file is being recorded now (within
/// two minutes: a crashed request does not hold events back longer).
pub fn being_asked(db: &Db, by: Uuid, sha256: &str) -> Result<bool, DbError> {
    let r = db.query(
        "SELECT count(*) FROM install_requests WHERE requested_by = $1 AND sha256 = $2 \
           AND created_at > (now() AT TIME ZONE 'UTC') - interval '2 minutes'",
        &[P::Uuid(by.to_string()), P::Str(sha256.into())],
    )?;
    Ok(col::<i64>(&r.rows[0], 0, "count")? > 0)
}

/// Reconciles a device's records with the packages it reports: an
/// `installed` (or `uninstalling`) record whose package is not there is
/// `uninstalled`, saying so. (A package there without an `installed`
/// record is left alone: which version is there, the list does not say.)
/// The records it changed.
pub fn reconcile(db: &Db, device: Uuid, packages: &[String]) -> Result<Vec<Install>, DbError> {
    db.all(
        &format!(
            "UPDATE installs i SET status = 'uninstalled', \
               error = 'not on the device when it listed its packages', version = i.version + 1, \
               updated_at = now() AT TIME ZONE 'UTC' \
             WHERE i.device_id = $1 AND i.status IN ('installed', 'uninstalling') \
               AND NOT (i.package_name = ANY($2)) RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(device.to_string()),
            P::ArrayStr(packages.iter().cloned().map(Some).collect()),
        ],
        install,
    )
}
