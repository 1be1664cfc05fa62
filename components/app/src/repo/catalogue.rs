//! Applications and their versions (`applications`, `app_versions`).

use platform::db::{col, opt_timestamp, opt_uuid, strings, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// An application as stored and shown.
#[derive(Debug, Clone, Serialize)]
pub struct Application {
    /// Id.
    pub id: Uuid,
    /// Its package.
    pub package_name: String,
    /// The latest version's label.
    pub label: Option<String>,
    /// Who uploaded it first.
    pub owner_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// `private` (its owner) or `tenant` (everyone in the tenant).
    pub visibility: String,
    /// Category.
    pub category: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The newest active version.
    pub latest_version_id: Option<Uuid>,
    /// How many versions.
    pub versions: i32,
    /// Signed links handed out for its versions.
    pub download_count: i64,
    /// Devices its versions were installed on.
    pub install_count: i64,
    /// The newest approved, active version: set when the application is
    /// public (everyone sees it, and its approved versions).
    pub public_version_id: Option<Uuid>,
    /// Created.
    pub created_at: String,
    /// Changed.
    pub updated_at: String,
}

const APP_COLUMNS: &str = "a.id, a.package_name, a.label, a.owner_id, a.tenant_id, \
     a.visibility, a.category, a.tags, a.latest_version_id, a.versions, a.created_at, a.updated_at, \
     a.download_count, a.install_count, a.public_version_id";

fn application(r: &[DbValue]) -> Result<Application, DbError> {
    Ok(Application {
        id: col(r, 0, "applications.id")?,
        package_name: col(r, 1, "applications.package_name")?,
        label: col(r, 2, "applications.label")?,
        owner_id: col(r, 3, "applications.owner_id")?,
        tenant_id: col(r, 4, "applications.tenant_id")?,
        visibility: col(r, 5, "applications.visibility")?,
        category: col(r, 6, "applications.category")?,
        tags: strings(r, 7, "applications.tags")?,
        latest_version_id: col(r, 8, "applications.latest_version_id")?,
        versions: col(r, 9, "applications.versions")?,
        created_at: timestamp(r, 10, "applications.created_at")?,
        updated_at: timestamp(r, 11, "applications.updated_at")?,
        download_count: col(r, 12, "applications.download_count")?,
        install_count: col(r, 13, "applications.install_count")?,
        public_version_id: col(r, 14, "applications.public_version_id")?,
    })
}

/// A version as stored and shown: what the file itself says.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// Id.
    pub id: Uuid,
    /// Its application.
    pub application_id: Uuid,
    /// The upload whose chunks are its file.
    #[serde(skip)]
    pub upload_id: Uuid,
    /// `android:versionCode`.
    pub version_code: i64,
    /// `android:versionName`.
    pub version_name: Option<String>,
    /// sha256 of the file.
    pub sha256: String,
    /// Bytes of the file.
    pub size_bytes: i64,
    /// `minSdkVersion`.
    pub min_sdk: i32,
    /// `targetSdkVersion`.
    pub target_sdk: Option<i32>,
    /// The application's label.
    pub label: Option<String>,
    /// The icon's path in the APK.
    pub icon: Option<String>,
    /// Permissions asked for.
    pub permissions: serde_json::Value,
    /// ABIs with native code.
    pub abis: serde_json::Value,
    /// Signing schemes and signer (`v1`, `v2`, `v3`, `certificate_sha256`).
    pub signing: serde_json::Value,
    /// `active` or `withdrawn`.
    pub status: String,
    /// Its review for the public catalogue: `none`, `pending`, `approved`,
    /// `rejected`, `changes_requested`.
    pub review_status: String,
    /// The reviewer's comment.
    pub review_comment: Option<String>,
    /// Who reviewed it.
    pub reviewed_by: Option<Uuid>,
    /// When.
    pub reviewed_at: Option<String>,
    /// When it was withdrawn.
    pub withdrawn_at: Option<String>,
    /// Who uploaded it.
    pub uploaded_by: Uuid,
    /// Signed links handed out for it.
    pub download_count: i64,
    /// Devices it was installed on.
    pub install_count: i64,
    /// When.
    pub created_at: String,
}

const VERSION_COLUMNS: &str = "v.id, v.application_id, v.version_code, v.version_name, v.sha256, v.size_bytes, \
     v.min_sdk, v.target_sdk, v.label, v.icon, v.permissions, v.abis, v.signing, v.status, v.uploaded_by, v.created_at, v.upload_id, \
     v.download_count, v.install_count, v.review_status, v.review_comment, v.reviewed_by, v.reviewed_at, v.withdrawn_at";

fn version(r: &[DbValue]) -> Result<Version, DbError> {
    Ok(Version {
        id: col(r, 0, "app_versions.id")?,
        application_id: col(r, 1, "app_versions.application_id")?,
        version_code: col(r, 2, "app_versions.version_code")?,
        version_name: col(r, 3, "app_versions.version_name")?,
        sha256: col(r, 4, "app_versions.sha256")?,
        size_bytes: col(r, 5, "app_versions.size_bytes")?,
        min_sdk: col(r, 6, "app_versions.min_sdk")?,
        target_sdk: col(r, 7, "app_versions.target_sdk")?,
        label: col(r, 8, "app_versions.label")?,
        icon: col(r, 9, "app_versions.icon")?,
        permissions: col(r, 10, "app_versions.permissions")?,
        abis: col(r, 11, "app_versions.abis")?,
        signing: col(r, 12, "app_versions.signing")?,
        status: col(r, 13, "app_versions.status")?,
        uploaded_by: col(r, 14, "app_versions.uploaded_by")?,
        created_at: timestamp(r, 15, "app_versions.created_at")?,
        upload_id: col(r, 16, "app_versions.upload_id")?,
        download_count: col(r, 17, "app_versions.download_count")?,
        install_count: col(r, 18, "app_versions.install_count")?,
        review_status: col(r, 19, "app_versions.review_status")?,
        review_comment: col(r, 20, "app_versions.review_comment")?,
        reviewed_by: col(r, 21, "app_versions.reviewed_by")?,
        reviewed_at: opt_timestamp(r, 22, "app_versions.reviewed_at")?,
        withdrawn_at: opt_timestamp(r, 23, "app_versions.withdrawn_at")?,
    })
}

fn json(v: &impl Serialize) -> Result<P, DbError> {
    spin_sdk::pg4::jsonb(&serde_json::to_value(v).map_err(|e| DbError::Other(e.to_string()))?)
        .map_err(|e| DbError::Other(e.to_string()))
}

/// Who is looking: their id and tenant, and whether they see everything.
pub struct Seen {
    /// The caller.
    pub user: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Platform staff.
    pub all: bool,
}

impl Seen {
    /// Whether `a` is theirs to see whole: their own, their tenant's
    /// shared ones, or (platform staff) all.
    pub fn owns(&self, a: &Application) -> bool {
        self.all
            || a.owner_id == self.user
            || (a.visibility == "tenant" && a.tenant_id.is_some() && a.tenant_id == self.tenant)
    }

    /// Whether they see `a`: theirs, or a public one.
    pub fn sees(&self, a: &Application) -> bool {
        self.owns(a) || a.public_version_id.is_some()
    }

    /// Whether they see version `v` of `a`: every version of theirs, the
    /// approved, active versions of a public one.
    pub fn sees_version(&self, a: &Application, v: &Version) -> bool {
        self.owns(a)
            || (a.public_version_id.is_some()
                && v.review_status == "approved"
                && v.status == "active")
    }
}

/// The application of `package` in a scope, locked.
pub fn lock_in_scope(db: &Db, scope: Uuid, package: &str) -> Result<Option<Application>, DbError> {
    db.one(
        &format!(
            "SELECT {APP_COLUMNS} FROM applications a WHERE a.scope_key = $1 AND a.package_name = $2 FOR UPDATE"
        ),
        &[P::Uuid(scope.to_string()), P::Str(package.into())],
        application,
    )
}

/// A new application.
pub struct NewApplication<'a> {
    /// Id.
    pub id: Uuid,
    /// Package.
    pub package: &'a str,
    /// Owner.
    pub owner: Uuid,
    /// Tenant.
    pub tenant: Option<Uuid>,
    /// Department.
    pub department: Option<Uuid>,
    /// `private` or `tenant`.
    pub visibility: &'a str,
    /// Owner (private) or tenant (tenant).
    pub scope: Uuid,
    /// Category.
    pub category: Option<&'a str>,
    /// Tags.
    pub tags: &'a [String],
}

/// Inserts an application (without versions yet).
pub fn insert_application(db: &Db, a: &NewApplication) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO applications (id, package_name, owner_id, tenant_id, department_id, visibility, scope_key, \
           category, tags) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            P::Uuid(a.id.to_string()),
            P::Str(a.package.into()),
            P::Uuid(a.owner.to_string()),
            opt_uuid(a.tenant),
            opt_uuid(a.department),
            P::Str(a.visibility.into()),
            P::Uuid(a.scope.to_string()),
            a.category.map_or(P::DbNull, |c| P::Str(c.into())),
            P::ArrayStr(a.tags.iter().cloned().map(Some).collect()),
        ],
    )?;
    Ok(())
}

/// Whether the application has a version with this code.
pub fn has_version(db: &Db, application: Uuid, code: i64) -> Result<bool, DbError> {
    let r = db.query(
        "SELECT count(*) FROM app_versions WHERE application_id = $1 AND version_code = $2",
        &[P::Uuid(application.to_string()), P::Int64(code)],
    )?;
    Ok(col::<i64>(&r.rows[0], 0, "count")? > 0)
}

/// A version read from an upload's file.
pub struct NewVersion<'a> {
    /// Id.
    pub id: Uuid,
    /// Its application.
    pub application: Uuid,
    /// The upload whose chunks are its file.
    pub upload: Uuid,
    /// The file's sha256.
    pub sha256: &'a str,
    /// The file's bytes.
    pub size: i64,
    /// What the file says.
    pub info: &'a apk::ApkInfo,
    /// Who uploaded it.
    pub by: Uuid,
}

/// Inserts a version and makes it the application's latest when its code
/// is the highest.
pub fn insert_version(db: &Db, v: &NewVersion) -> Result<(), DbError> {
    let info = v.info;
    db.execute(
        "INSERT INTO app_versions (id, application_id, upload_id, version_code, version_name, sha256, size_bytes, \
           min_sdk, target_sdk, label, icon, permissions, abis, signing, signer_sha256, uploaded_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            P::Uuid(v.id.to_string()),
            P::Uuid(v.application.to_string()),
            P::Uuid(v.upload.to_string()),
            P::Int64(info.version_code),
            info.version_name.clone().map_or(P::DbNull, P::Str),
            P::Str(v.sha256.into()),
            P::Int64(v.size),
            P::Int32(info.min_sdk as i32),
            info.target_sdk.map_or(P::DbNull, |n| P::Int32(n as i32)),
            info.label.clone().map_or(P::DbNull, P::Str),
            info.icon.clone().map_or(P::DbNull, P::Str),
            json(&info.permissions)?,
            json(&info.abis)?,
            json(&info.signing)?,
            info.signing
                .certificate_sha256
                .clone()
                .map_or(P::DbNull, P::Str),
            P::Uuid(v.by.to_string()),
        ],
    )?;
    db.execute(
        "UPDATE applications SET versions = versions + 1 WHERE id = $1",
        &[P::Uuid(v.application.to_string())],
    )?;
    super::reviews::refresh_application(db, v.application)
}

/// An application by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Application>, DbError> {
    db.one(
        &format!("SELECT {APP_COLUMNS} FROM applications a WHERE a.id = $1"),
        &[P::Uuid(id.to_string())],
        application,
    )
}

/// List filters.
pub struct Filter {
    /// Search over package name and label.
    pub q: Option<String>,
    /// Exact package name.
    pub package: Option<String>,
    /// Visibility.
    pub visibility: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// A tag it carries.
    pub tag: Option<String>,
}

/// A page of the applications `seen` sees, newest first.
pub fn list(
    db: &Db,
    seen: &Seen,
    f: &Filter,
    page: Page,
) -> Result<(Vec<Application>, i64), DbError> {
    let mut w = Where::new();
    if !seen.all {
        let user = w.bind(P::Uuid(seen.user.to_string()));
        match seen.tenant {
            Some(t) => {
                let tenant = w.bind(P::Uuid(t.to_string()));
                w.and(format!(
                    "(a.owner_id = {user} OR (a.visibility = 'tenant' AND a.tenant_id = {tenant}) \
                     OR a.public_version_id IS NOT NULL)"
                ));
            }
            None => w.and(format!(
                "(a.owner_id = {user} OR a.public_version_id IS NOT NULL)"
            )),
        }
    }
    if let Some(p) = &f.package {
        w.eq("a.package_name", P::Str(p.clone()));
    }
    match f.visibility.as_deref() {
        Some("public") => w.and("a.public_version_id IS NOT NULL"),
        Some(v) => w.eq("a.visibility", P::Str(v.to_string())),
        None => {}
    }
    if let Some(c) = &f.category {
        w.eq("a.category", P::Str(c.clone()));
    }
    if let Some(t) = &f.tag {
        let t = w.bind(P::Str(t.clone()));
        w.and(format!("{t} = ANY(a.tags)"));
    }
    if let Some(q) = &f.q {
        w.search(&["a.package_name", "a.label"], q);
    }
    paged(
        db,
        &format!("SELECT {APP_COLUMNS} FROM applications a"),
        "applications a",
        w,
        "a.updated_at DESC, a.id",
        page,
        application,
    )
}

/// An application's versions, highest code first.
pub fn versions_of(db: &Db, application: Uuid) -> Result<Vec<Version>, DbError> {
    db.all(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM app_versions v WHERE v.application_id = $1 ORDER BY v.version_code DESC"
        ),
        &[P::Uuid(application.to_string())],
        version,
    )
}

/// A version by id.
pub fn version_by_id(db: &Db, id: Uuid) -> Result<Option<Version>, DbError> {
    db.one(
        &format!("SELECT {VERSION_COLUMNS} FROM app_versions v WHERE v.id = $1"),
        &[P::Uuid(id.to_string())],
        version,
    )
}

/// What a version counts.
#[derive(Clone, Copy)]
pub enum Count {
    /// A signed link handed out.
    Download,
    /// A device that installed it.
    Install,
}

/// Counts one more of `what` for a version and its application.
pub fn count(db: &Db, version: Uuid, what: Count) -> Result<(), DbError> {
    let column = match what {
        Count::Download => "download_count",
        Count::Install => "install_count",
    };
    db.execute(
        &format!(
            "WITH v AS (UPDATE app_versions SET {column} = {column} + 1 WHERE id = $1 RETURNING application_id) \
             UPDATE applications SET {column} = {column} + 1 WHERE id = (SELECT application_id FROM v)"
        ),
        &[P::Uuid(version.to_string())],
    )?;
    Ok(())
}
