//! `device` follows `user`'s events to keep the owner copies on devices
//! (name, email, tenant), applying only newer versions, and an `owners`
//! table for devices created later.

use crate::repo;
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    USER_CREATED, USER_DELETED, USER_LOCKED, USER_ROLES_CHANGED, USER_UPDATED,
};
use platform::events::payload::Identity;
use platform::outbox::Envelope;
use platform::Problem;

/// What `device` consumes: `user`'s events.
pub struct Consumer;

impl Sources for Consumer {
    const SOURCES: &'static [Source] = &[Source {
        name: "user",
        feed_url: "http://user.spin.internal/api/v1/user/internal/events",
        handler: apply,
        resync,
    }];
}

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    let user_events = [
        &USER_CREATED,
        &USER_UPDATED,
        &USER_DELETED,
        &USER_ROLES_CHANGED,
        &USER_LOCKED,
    ];
    if !user_events.iter().any(|t| env.is(t)) {
        return Ok(());
    }
    let i: Identity = env.payload().map_err(HandlerError::Rejected)?;
    if repo::owners::upsert(db, &i, env.aggregate_version)? {
        repo::devices::update_owner(
            db,
            i.id,
            &i.display_name,
            &i.email,
            i.tenant_id,
            env.aggregate_version,
        )?;
    }
    Ok(())
}

/// Rebuilds every owner copy from `user`'s API (after the feed was pruned
/// past the cursor), one page at a time, no connection held while asking.
fn resync(ctx: &platform::http::Ctx) -> Result<(), Problem> {
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(flatten)]
        identity: Identity,
        version: i64,
    }
    #[derive(serde::Deserialize)]
    struct Page {
        items: Vec<Item>,
    }
    let mut after = uuid::Uuid::nil();
    loop {
        let url = format!(
            "http://user.spin.internal/api/v1/user/internal/identities?after={after}&limit=500"
        );
        let resp = platform::http::chain(ctx, spin_sdk::http::Method::Get, &url, None)?;
        if *resp.status() != 200 {
            return Err(Problem::unavailable(format!(
                "user identities answered {}",
                resp.status()
            )));
        }
        let page: Page = serde_json::from_slice(resp.body())
            .map_err(|e| Problem::internal(format!("user identities: bad page: {e}")))?;
        let Some(last) = page.items.last() else {
            return Ok(());
        };
        after = last.identity.id;
        let db = Db::open()?;
        for item in &page.items {
            let i = &item.identity;
            if repo::owners::upsert(&db, i, item.version)? {
                repo::devices::update_owner(
                    &db,
                    i.id,
                    &i.display_name,
                    &i.email,
                    i.tenant_id,
                    item.version,
                )?;
            }
        }
    }
}
