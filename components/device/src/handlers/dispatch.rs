//! What happens after a commit, with no database connection held while
//! another party is asked (platform::http::chain refuses otherwise):
//! commands published to a node's Redis channel, signed with the node's
//! secret; quota reserved, committed and released in `user`; a tenant's
//! device limit read from `user`. Every step that can fail after the commit
//! leaves a record (an unsent command, an unsettled claim) that a scheduler
//! job finishes.

use crate::error::{Error, Result};
use crate::repo;
use agent_protocol::messages::{commands_channel, Envelope, NodeSecret};
use agent_protocol::spec::NodeId;
use platform::db::Db;
use platform::http::Ctx;
use spin_sdk::http::Method;
use uuid::Uuid;

/// The purpose bound into sealed node secrets.
pub const NODE_SECRET_PURPOSE: &str = "node-secret";

/// The key node secrets are sealed with (derived from the component key).
pub fn seal_key() -> Result<[u8; 32]> {
    let key = access::service::ComponentKey::parse(&platform::var("component_key")?)
        .map_err(|e| platform::Problem::internal(e.to_string()))?;
    Ok(key.seal_key(NODE_SECRET_PURPOSE))
}

/// Opens a node's sealed secret.
pub fn open_secret(sealed: &[u8]) -> Result<NodeSecret> {
    let plain = access::seal::open(&seal_key()?, NODE_SECRET_PURPOSE, sealed)
        .map_err(|e| platform::Problem::internal(format!("node secret: {e}")))?;
    NodeSecret::new(plain).map_err(|e| Error::Problem(platform::Problem::internal(e.to_string())))
}

/// A node's secret, if it has one and is not disabled.
pub fn node_secret(db: &Db, node: &str) -> Result<Option<NodeSecret>> {
    match repo::nodes::secret(db, node)? {
        Some((Some(sealed), status)) if status != "disabled" => Ok(Some(open_secret(&sealed)?)),
        _ => Ok(None),
    }
}

/// Publishes queued commands (of one node, or every node), signed with each
/// node's secret, and marks them sent. Commands whose operation still runs
/// and got no answer are sent again after `resend_after_secs` (the agent
/// answers a repeat from its ledger). A failure leaves them for the relay.
pub fn publish_commands(node: Option<&str>, resend_after_secs: i32) -> Result<usize> {
    let redis_url = platform::var("redis_url")?;
    let db = Db::open()?;
    db.transaction(|tx| {
        let pending = repo::commands::claim(tx, node, 200, resend_after_secs, 5)?;
        if pending.is_empty() {
            return Ok(0);
        }
        let redis = spin_sdk::redis::Connection::open(&redis_url)
            .map_err(|e| platform::Problem::unavailable(format!("redis: {e}")))?;
        let mut sent = 0;
        for p in &pending {
            let Some(secret) = node_secret(tx, &p.node)? else {
                continue;
            };
            let node_id = NodeId::parse(&p.node)
                .map_err(|e| platform::Problem::internal(format!("node id: {e}")))?;
            let env = Envelope::signed(
                &secret,
                &node_id,
                "command",
                p.body.clone(),
                chrono::Utc::now(),
            );
            let bytes = serde_json::to_vec(&env).expect("envelope serializes");
            redis
                .publish(&commands_channel(&node_id), &bytes)
                .map_err(|e| platform::Problem::unavailable(format!("redis publish: {e}")))?;
            repo::commands::sent(tx, p.id)?;
            sent += 1;
        }
        Ok::<_, Error>(sent)
    })
}

/// [`publish_commands`] right after a commit; a failure is logged, the relay
/// sends them.
pub fn publish_commands_after_commit(ctx: &Ctx, node: &str) {
    if let Err(e) = publish_commands(Some(node), i32::MAX) {
        let p: platform::Problem = e.into();
        eprintln!(
            "{}",
            serde_json::json!({"level": "warn", "request_id": ctx.request_id, "msg": "command publish deferred", "cause": p.internal})
        );
    }
}

/// A reservation made in `user`.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    /// Its id.
    pub id: Uuid,
}

/// Reserves quota in `user` for an owner: the `device` claim (devices,
/// cores, memory, storage) or the `run` claim (concurrent devices). The
/// idempotency key makes a retry return the same reservation.
pub fn reserve(
    ctx: &Ctx,
    owner: Uuid,
    key: &str,
    resources: &serde_json::Value,
) -> Result<Reservation> {
    let body = serde_json::json!({
        "user_id": owner, "idempotency_key": key, "resources": resources, "ttl_secs": 600,
    });
    let resp = platform::http::chain(
        ctx,
        Method::Post,
        "http://user.spin.internal/api/v1/user/internal/quotas/reservations",
        Some(&body),
    )?;
    match *resp.status() {
        200 | 201 => {
            #[derive(serde::Deserialize)]
            struct R {
                id: Uuid,
            }
            let r: R = serde_json::from_slice(resp.body())
                .map_err(|e| Error::Upstream(format!("user reservation: {e}")))?;
            Ok(Reservation { id: r.id })
        }
        409 => {
            let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap_or_default();
            let message = v["error"]["message"]
                .as_str()
                .unwrap_or("quota exceeded")
                .to_string();
            match v["error"]["code"].as_str() {
                Some("quota_exceeded") => Err(Error::QuotaExceeded(message)),
                _ => Err(Error::Conflict(message)),
            }
        }
        404 => Err(Error::Conflict(
            "the owner has no quota (unknown user)".into(),
        )),
        s => Err(Error::Upstream(format!("user reservations answered {s}"))),
    }
}

/// Commits or releases a reservation in `user`.
pub fn settle_reservation(ctx: &Ctx, reservation: Uuid, commit: bool) -> Result<()> {
    let url = format!(
        "http://user.spin.internal/api/v1/user/internal/quotas/reservations/{reservation}/{}",
        if commit { "commit" } else { "release" }
    );
    let resp = platform::http::chain(ctx, Method::Post, &url, None)?;
    match *resp.status() {
        200 => Ok(()),
        // An expired or unknown reservation holds nothing any more.
        404 | 409 if !commit => Ok(()),
        s => Err(Error::Upstream(format!("user {url} answered {s}"))),
    }
}

/// Commits or releases a device's reservation in `user` and records the
/// outcome; errors leave the claim for the settle job.
pub fn settle(ctx: &Ctx, reservation: Uuid, commit: bool) -> Result<()> {
    settle_reservation(ctx, reservation, commit)?;
    repo::claims::set_state(
        &Db::open()?,
        reservation,
        if commit { "committed" } else { "released" },
    )?;
    Ok(())
}

/// Settles every claim in `list`, logging (not failing on) errors.
pub fn settle_all(ctx: &Ctx, list: &[Uuid], commit: bool) {
    for r in list {
        if let Err(e) = settle(ctx, *r, commit) {
            let p: platform::Problem = e.into();
            eprintln!(
                "{}",
                serde_json::json!({"level": "warn", "request_id": ctx.request_id, "msg": "quota settle deferred", "reservation": r, "cause": p.internal})
            );
        }
    }
}

/// A tenant's device limit from `user` (`None`: no limit).
pub fn tenant_max_devices(ctx: &Ctx, tenant: Uuid) -> Result<Option<i64>> {
    let resp = platform::http::chain(
        ctx,
        Method::Get,
        &format!("http://user.spin.internal/api/v1/user/internal/tenants/{tenant}/limits"),
        None,
    )?;
    match *resp.status() {
        200 => {
            let v: serde_json::Value = serde_json::from_slice(resp.body())
                .map_err(|e| Error::Upstream(format!("user tenant limits: {e}")))?;
            if v["active"] == serde_json::Value::Bool(false) {
                return Err(Error::Forbidden("the tenant is suspended".into()));
            }
            Ok(v["max_devices"].as_i64())
        }
        404 => Err(Error::Forbidden(
            "the caller's tenant does not exist".into(),
        )),
        s => Err(Error::Upstream(format!("user tenant limits answered {s}"))),
    }
}
