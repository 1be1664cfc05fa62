//! The review of what goes public (`app_versions.review_status`, and the
//! append-only trail in `version_reviews`), and withdrawals.

use platform::db::{col, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// One step of a version's review trail.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Id.
    pub id: Uuid,
    /// The version.
    pub version_id: Uuid,
    /// `submitted`, `approved`, `rejected`, `changes_requested`, `withdrawn`.
    pub action: String,
    /// Who.
    pub actor_id: Uuid,
    /// What they said.
    pub comment: Option<String>,
    /// When.
    pub created_at: String,
}

fn step(r: &[DbValue]) -> Result<Step, DbError> {
    Ok(Step {
        id: col(r, 0, "version_reviews.id")?,
        version_id: col(r, 1, "version_reviews.version_id")?,
        action: col(r, 2, "version_reviews.action")?,
        actor_id: col(r, 3, "version_reviews.actor_id")?,
        comment: col(r, 4, "version_reviews.comment")?,
        created_at: timestamp(r, 5, "version_reviews.created_at")?,
    })
}

/// Appends a step to a version's trail.
pub fn record(
    db: &Db,
    version: Uuid,
    action: &str,
    actor: Uuid,
    comment: Option<&str>,
) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO version_reviews (id, version_id, action, actor_id, comment) VALUES ($1, $2, $3, $4, $5)",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(version.to_string()),
            P::Str(action.into()),
            P::Uuid(actor.to_string()),
            comment.map_or(P::DbNull, |c| P::Str(c.into())),
        ],
    )?;
    Ok(())
}

/// A version's trail, oldest first.
pub fn trail(db: &Db, version: Uuid) -> Result<Vec<Step>, DbError> {
    db.all(
        "SELECT id, version_id, action, actor_id, comment, created_at FROM version_reviews \
         WHERE version_id = $1 ORDER BY created_at, id",
        &[P::Uuid(version.to_string())],
        step,
    )
}

/// Moves a locked version's review from one of `from` to `to`; whether it
/// moved.
pub fn transition(
    db: &Db,
    version: Uuid,
    from: &[&str],
    to: &str,
    reviewer: Option<(Uuid, Option<&str>)>,
) -> Result<bool, DbError> {
    let from = from
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let n = db.execute(
        &format!(
            "UPDATE app_versions SET review_status = $2, \
               reviewed_by = CASE WHEN $3::uuid IS NULL THEN reviewed_by ELSE $3::uuid END, \
               review_comment = CASE WHEN $3::uuid IS NULL THEN review_comment ELSE $4 END, \
               reviewed_at = CASE WHEN $3::uuid IS NULL THEN reviewed_at ELSE now() AT TIME ZONE 'UTC' END \
             WHERE id = $1 AND status = 'active' AND review_status IN ({from})"
        ),
        &[
            P::Uuid(version.to_string()),
            P::Str(to.into()),
            reviewer.map_or(P::DbNull, |(r, _)| P::Uuid(r.to_string())),
            reviewer
                .and_then(|(_, c)| c)
                .map_or(P::DbNull, |c| P::Str(c.into())),
        ],
    )?;
    Ok(n > 0)
}

/// Withdraws an active version; whether it was active.
pub fn withdraw(db: &Db, version: Uuid) -> Result<bool, DbError> {
    let n = db.execute(
        "UPDATE app_versions SET status = 'withdrawn', withdrawn_at = now() AT TIME ZONE 'UTC' \
         WHERE id = $1 AND status = 'active'",
        &[P::Uuid(version.to_string())],
    )?;
    Ok(n > 0)
}

/// Recomputes an application's latest active version, its label and its
/// public version (the newest approved, active one).
pub fn refresh_application(db: &Db, application: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE applications a SET updated_at = now() AT TIME ZONE 'UTC', \
           latest_version_id = (SELECT v.id FROM app_versions v WHERE v.application_id = a.id AND v.status = 'active' \
                                ORDER BY v.version_code DESC LIMIT 1), \
           label = COALESCE((SELECT v.label FROM app_versions v WHERE v.application_id = a.id AND v.status = 'active' \
                             ORDER BY v.version_code DESC LIMIT 1), a.label), \
           public_version_id = (SELECT v.id FROM app_versions v WHERE v.application_id = a.id AND v.status = 'active' \
                                AND v.review_status = 'approved' ORDER BY v.version_code DESC LIMIT 1) \
         WHERE a.id = $1",
        &[P::Uuid(application.to_string())],
    )?;
    Ok(())
}

/// A version waiting for review, with what a reviewer needs.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// The version.
    pub version_id: Uuid,
    /// Its application.
    pub application_id: Uuid,
    /// Package.
    pub package_name: String,
    /// Label.
    pub label: Option<String>,
    /// Version code.
    pub version_code: i64,
    /// Who uploaded it.
    pub uploaded_by: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Permissions it asks for.
    pub permissions: serde_json::Value,
    /// Signing.
    pub signing: serde_json::Value,
    /// Uploaded.
    pub created_at: String,
}

fn pending(r: &[DbValue]) -> Result<Pending, DbError> {
    Ok(Pending {
        version_id: col(r, 0, "app_versions.id")?,
        application_id: col(r, 1, "app_versions.application_id")?,
        package_name: col(r, 2, "applications.package_name")?,
        label: col(r, 3, "app_versions.label")?,
        version_code: col(r, 4, "app_versions.version_code")?,
        uploaded_by: col(r, 5, "app_versions.uploaded_by")?,
        tenant_id: col(r, 6, "applications.tenant_id")?,
        permissions: col(r, 7, "app_versions.permissions")?,
        signing: col(r, 8, "app_versions.signing")?,
        created_at: timestamp(r, 9, "app_versions.created_at")?,
    })
}

/// A page of the versions waiting for review, oldest first.
pub fn queue(db: &Db, page: Page) -> Result<(Vec<Pending>, i64), DbError> {
    let mut w = Where::new();
    w.and("v.review_status = 'pending' AND v.status = 'active'");
    paged(
        db,
        "SELECT v.id, v.application_id, a.package_name, v.label, v.version_code, v.uploaded_by, a.tenant_id, \
           v.permissions, v.signing, v.created_at FROM app_versions v JOIN applications a ON a.id = v.application_id",
        "app_versions v JOIN applications a ON a.id = v.application_id",
        w,
        "v.created_at, v.id",
        page,
        pending,
    )
}
