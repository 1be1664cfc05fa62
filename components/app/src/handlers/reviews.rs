//! What goes public goes through review: the owner of a version submits
//! it, a reviewer (`app:manage`: platform staff) approves it, rejects it or
//! asks for changes, with a comment; the application is then public (its
//! approved versions only) until they are withdrawn. Every step is in the
//! version's trail and is an `app.*` event.

use super::{db, Call};
use crate::error::{Error, Result};
use crate::repo::{self, catalogue::Version};
use platform::db::Db;
use platform::events::catalogue::{
    EventType, APP_APPROVED, APP_CHANGES_REQUESTED, APP_REJECTED, APP_REVIEW_REQUESTED,
    APP_WITHDRAWN,
};
use platform::events::payload::AppReview;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

/// The longest comment.
const MAX_COMMENT: usize = 2000;

fn comment(c: Option<String>, required: bool) -> Result<Option<String>> {
    match c {
        None if required => Err(Error::Invalid(
            "comment is required: say what must change".into(),
        )),
        Some(c) if c.trim().is_empty() || c.chars().count() > MAX_COMMENT => Err(Error::Invalid(
            format!("comment must be 1 to {MAX_COMMENT} characters"),
        )),
        c => Ok(c),
    }
}

/// A version whose application the caller owns (or, with an `all` scope,
/// any): 404 for one they do not see, 403 for one they see but do not own.
fn owned(call: &Call, db: &Db) -> Result<(Version, repo::catalogue::Application)> {
    let caller = call.caller()?;
    let v = super::catalogue::visible_version(call, db, call.id("id", "version")?)?;
    let a = repo::catalogue::find(db, v.application_id)?.ok_or(Error::NotFound("version"))?;
    let mine =
        a.owner_id == caller.user_id || v.uploaded_by == caller.user_id || super::seen(caller).all;
    if !mine {
        return Err(Error::Problem(platform::Problem::new(
            403,
            "forbidden",
            "only the application's owner may do this",
        )));
    }
    Ok((v, a))
}

/// Reviews decide what every tenant sees: only platform staff (`app:manage`
/// with an `all` data scope) take them, whatever a tenant's role grants.
fn platform_reviewer(call: &Call) -> Result<Uuid> {
    let caller = call.caller()?;
    if !super::seen(caller).all {
        return Err(Error::Problem(platform::Problem::new(
            403,
            "forbidden",
            "the public catalogue is reviewed by platform staff",
        )));
    }
    Ok(caller.user_id)
}

/// Records a step of the trail and its event, in `tx`.
fn step(
    tx: &Db,
    event: &EventType,
    v: &Version,
    a: &repo::catalogue::Application,
    actor: Uuid,
    comment: Option<&str>,
) -> Result<()> {
    let action = match event.name {
        n if n == APP_REVIEW_REQUESTED.name => "submitted",
        n if n == APP_APPROVED.name => "approved",
        n if n == APP_REJECTED.name => "rejected",
        n if n == APP_CHANGES_REQUESTED.name => "changes_requested",
        _ => "withdrawn",
    };
    repo::reviews::record(tx, v.id, action, actor, comment)?;
    let after = repo::catalogue::version_by_id(tx, v.id)?.ok_or(Error::NotFound("version"))?;
    let steps = repo::reviews::trail(tx, v.id)?.len() as i64;
    let payload = AppReview {
        version_id: v.id,
        application_id: a.id,
        package: a.package_name.clone(),
        version_code: v.version_code,
        label: v.label.clone(),
        owner_id: v.uploaded_by,
        tenant_id: a.tenant_id,
        review_status: after.review_status,
        status: after.status,
        actor_id: actor,
        comment: comment.map(str::to_owned),
    };
    platform::outbox::enqueue(tx, event, &v.id.to_string(), steps, &payload)?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentInput {
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /versions/:id/submit` (`app:upload`): the owner asks for the
/// version to be public: `{comment?}`; `200` with the version, `pending`;
/// `409` unless it is active and not submitted or approved already.
pub fn submit(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: CommentInput = call.body()?;
    let note = comment(input.comment, false)?;
    let db = db()?;
    let (v, a) = owned(call, &db)?;
    db.transaction(|tx| {
        if !repo::reviews::transition(
            tx,
            v.id,
            &["none", "rejected", "changes_requested"],
            "pending",
            None,
        )? {
            return Err(Error::Conflict(format!(
                "the version is {} and its review {}",
                v.status, v.review_status
            )));
        }
        step(
            tx,
            &APP_REVIEW_REQUESTED,
            &v,
            &a,
            caller.user_id,
            note.as_deref(),
        )
    })?;
    done(call, &db, v.id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewInput {
    decision: String,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /versions/:id/review` (`app:manage`, platform staff): `{decision: approve |
/// reject | request_changes, comment}` (a comment is required unless it
/// approves); `200` with the version; `409` unless it is `pending`.
pub fn review(call: &Call) -> Result<Response> {
    let input: ReviewInput = call.body()?;
    let reviewer = platform_reviewer(call)?;
    let (event, to) = match input.decision.as_str() {
        "approve" => (&APP_APPROVED, "approved"),
        "reject" => (&APP_REJECTED, "rejected"),
        "request_changes" => (&APP_CHANGES_REQUESTED, "changes_requested"),
        _ => {
            return Err(Error::Invalid(
                "decision must be approve, reject or request_changes".into(),
            ))
        }
    };
    let note = comment(input.comment, to != "approved")?;
    let db = db()?;
    let v = repo::catalogue::version_by_id(&db, call.id("id", "version")?)?
        .ok_or(Error::NotFound("version"))?;
    let a = repo::catalogue::find(&db, v.application_id)?.ok_or(Error::NotFound("version"))?;
    db.transaction(|tx| {
        let decided = Some((reviewer, note.as_deref()));
        if !repo::reviews::transition(tx, v.id, &["pending"], to, decided)? {
            return Err(Error::Conflict(format!(
                "the version is {} and its review {}: only a pending one is reviewed",
                v.status, v.review_status
            )));
        }
        repo::reviews::refresh_application(tx, a.id)?;
        step(tx, event, &v, &a, reviewer, note.as_deref())
    })?;
    done(call, &db, v.id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawInput {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /versions/:id/withdraw` (`app:upload`; the owner, or a reviewer):
/// `{reason?}`: the version can no longer be downloaded or installed
/// (what is installed stays); `200` with it; `409` when it is already.
pub fn withdraw(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let input: WithdrawInput = call.body()?;
    let reason = comment(input.reason, false)?;
    let db = db()?;
    let (v, a) = if caller.can("app:manage") {
        let v = super::catalogue::visible_version(call, &db, call.id("id", "version")?)?;
        let a = repo::catalogue::find(&db, v.application_id)?.ok_or(Error::NotFound("version"))?;
        (v, a)
    } else {
        owned(call, &db)?
    };
    db.transaction(|tx| {
        if !repo::reviews::withdraw(tx, v.id)? {
            return Err(Error::Conflict("the version is withdrawn already".into()));
        }
        repo::reviews::refresh_application(tx, a.id)?;
        step(
            tx,
            &APP_WITHDRAWN,
            &v,
            &a,
            caller.user_id,
            reason.as_deref(),
        )
    })?;
    done(call, &db, v.id)
}

/// Publishes the step's event and answers the version after it.
fn done(call: &Call, db: &Db, id: Uuid) -> Result<Response> {
    platform::outbox::publish_after_commit(db, &call.ctx.request_id);
    let v = repo::catalogue::version_by_id(db, id)?.ok_or(Error::NotFound("version"))?;
    Ok(platform::http::json(200, &v))
}

/// `GET /reviews` (`app:manage`, platform staff): the versions waiting for review, oldest
/// first, with what a reviewer weighs (permissions, signing).
pub fn queue(call: &Call) -> Result<Response> {
    platform_reviewer(call)?;
    let page = call.page()?;
    Ok(platform::http::page_of(
        page,
        repo::reviews::queue(&db()?, page)?,
    ))
}

/// `GET /versions/:id/reviews` (`app:read`): a version's trail, oldest
/// first: `action`, `actor_id`, `comment`, `created_at`.
pub fn trail(call: &Call) -> Result<Response> {
    let db = db()?;
    let v = super::catalogue::visible_version(call, &db, call.id("id", "version")?)?;
    let items = repo::reviews::trail(&db, v.id)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}
