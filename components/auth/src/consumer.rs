//! `auth` follows `user`'s events to keep its copy of each identity (email,
//! status, tenant, department, roles and effective access), so that issuing
//! a token needs no call to `user`. A change is applied only if its
//! aggregate version is newer than the copy's. When a user is locked,
//! deleted, or their tenant suspended, their sessions and API keys end; a
//! deleted user's credentials are dropped so the email can register again.

use crate::repo;
use platform::consumer::{HandlerError, Source};
use platform::db::Db;
use platform::events::{USER_CREATED, USER_DELETED, USER_LOCKED, USER_ROLES_CHANGED, USER_UPDATED};
use platform::outbox::Envelope;
use platform::Problem;
use serde::Deserialize;
use uuid::Uuid;

/// The sources `auth` consumes.
pub const SOURCES: &[Source] = &[Source {
    name: "user",
    feed_url: "http://user.spin.internal/api/v1/user/internal/events",
    handler: apply,
    resync,
}];

/// The identity snapshot of a `user.*` payload (schema version 2).
#[derive(Debug, Deserialize)]
pub struct Identity {
    /// User id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Status.
    pub status: String,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Department.
    #[serde(default)]
    pub department_id: Option<Uuid>,
    /// Whether the tenant is active.
    #[serde(default = "yes")]
    pub tenant_active: bool,
    /// Role codes.
    pub roles: Vec<String>,
    /// Effective access.
    #[serde(default)]
    pub access: access::Access,
}

fn yes() -> bool {
    true
}

const USER_EVENTS: &[&str] = &[
    USER_CREATED.name,
    USER_UPDATED.name,
    USER_DELETED.name,
    USER_ROLES_CHANGED.name,
    USER_LOCKED.name,
];

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    if !USER_EVENTS.contains(&env.event_type.as_str()) {
        return Ok(());
    }
    let identity: Identity = serde_json::from_value(env.payload.clone())
        .map_err(|e| HandlerError::Rejected(format!("{} payload: {e}", env.event_type)))?;
    if identity.id.to_string() != env.aggregate_id {
        return Err(HandlerError::Rejected(
            "payload id differs from aggregate_id".into(),
        ));
    }
    if repo::upsert_identity(db, &identity, env.aggregate_version)? {
        end_access_if_needed(db, &identity)?;
    }
    Ok(())
}

/// Ends sessions and API keys of an identity that may no longer sign in.
fn end_access_if_needed(db: &Db, i: &Identity) -> Result<(), platform::db::DbError> {
    if i.status != "active" || !i.tenant_active {
        repo::revoke_user_tokens(db, i.id)?;
        repo::keys::revoke_all(db, i.id)?;
    }
    if i.status == "deleted" {
        repo::delete_credentials(db, i.id)?;
    }
    Ok(())
}

/// Rebuilds every identity from `user`'s API (after the feed was pruned).
fn resync(
    db: &Db,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Problem>> + '_>> {
    Box::pin(async move {
        let token = platform::var("internal_token")?;
        let mut after = Uuid::nil();
        loop {
            let url = format!(
                "http://user.spin.internal/api/v1/user/internal/identities?after={after}&limit=500"
            );
            let req = spin_sdk::http::Request::get(url)
                .header("x-internal-token", token.clone())
                .build();
            let resp: spin_sdk::http::Response = spin_sdk::http::send(req)
                .await
                .map_err(|e| Problem::unavailable(format!("user identities: {e}")))?;
            if *resp.status() != 200 {
                return Err(Problem::unavailable(format!(
                    "user identities answered {}",
                    resp.status()
                )));
            }
            #[derive(Deserialize)]
            struct Item {
                #[serde(flatten)]
                identity: Identity,
                version: i64,
            }
            #[derive(Deserialize)]
            struct Page {
                items: Vec<Item>,
            }
            let page: Page = serde_json::from_slice(resp.body())
                .map_err(|e| Problem::internal(format!("user identities: bad page: {e}")))?;
            let Some(last) = page.items.last() else {
                return Ok(());
            };
            after = last.identity.id;
            for item in &page.items {
                if repo::upsert_identity(db, &item.identity, item.version)? {
                    end_access_if_needed(db, &item.identity)?;
                }
            }
        }
    })
}
