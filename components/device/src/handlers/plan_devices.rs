//! The phones a plan includes, made for its buyer when billing fulfils an
//! order of it, and deleted when the order is compensated or refunded in
//! full (`service: billing`).
//!
//! Each phone is an ordinary `create` operation for the buyer (placement,
//! quota claims in `user`, agent command), keyed `order <id> device <n>`:
//! a key with spaces, which no client's `Idempotency-Key` can spell, so a
//! repeated call makes nothing twice and nobody can pre-empt it.

use super::devices::{act, default_strategy, make_for, Actor, Making, Owner};
use super::{db as open_db, Call};
use crate::domain::lifecycle::{Cause, Expiry};
use crate::domain::placement::Request;
use crate::domain::spec::{DeviceName, SpecInput};
use crate::domain::status::Action;
use crate::error::{Error, Result};
use crate::repo;
use serde::Deserialize;
use spin_sdk::http::Response;
use uuid::Uuid;

/// The most phones one order makes (billing refuses plans with more).
const MAX_DEVICES: i32 = 20;

fn uuid(raw: &str, field: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| Error::Invalid(format!("{field} must be a UUID")))
}

/// The key of an order's `n`th phone (from 1).
fn key(order: Uuid, n: i32) -> String {
    format!("order {order} device {n}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Included {
    count: i32,
    cpu_cores: i32,
    memory_mb: i32,
    storage_gb: i32,
    #[serde(default)]
    image: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderDevices {
    order_id: String,
    user_id: String,
    #[serde(default)]
    tenant_id: Option<String>,
    name: String,
    #[serde(deserialize_with = "platform::input::object")]
    devices: Included,
    #[serde(default)]
    expires_at: Option<String>,
}

/// `POST /internal/orders/devices` (billing): makes an order's phones for
/// its buyer: `{order_id, user_id, tenant_id?, name, devices: {count,
/// cpu_cores, memory_mb, storage_gb, image?}, expires_at?}`; `200` with
/// `{devices: [{device_id, operation_id, status}]}` (the same for a
/// repeated call); `409 no_capacity` when no node has room for one of them
/// (those made before stay until billing releases them), `409
/// quota_exceeded` when the buyer's quota does not cover them, `409
/// conflict` when an earlier call's attempt at one failed.
pub fn make(call: &Call) -> Result<Response> {
    let b: OrderDevices = call.body()?;
    let order = uuid(&b.order_id, "order_id")?;
    let owner = Owner {
        user: uuid(&b.user_id, "user_id")?,
        tenant: b
            .tenant_id
            .as_deref()
            .map(|t| uuid(t, "tenant_id"))
            .transpose()?,
        department: None,
    };
    let n = b.devices.count;
    if !(1..=MAX_DEVICES).contains(&n) {
        return Err(Error::Invalid(format!(
            "devices.count must be from 1 to {MAX_DEVICES}"
        )));
    }
    let spec: SpecInput = serde_json::from_value(serde_json::json!({
        "cpu_cores": b.devices.cpu_cores,
        "memory_mb": b.devices.memory_mb,
        "storage_gb": b.devices.storage_gb,
        "image": b.devices.image,
    }))
    .map_err(|e| Error::Invalid(format!("devices: {e}")))?;
    let spec = spec.parse()?;
    let now = chrono::Utc::now().naive_utc();
    let expires_at = b
        .expires_at
        .as_deref()
        .map(|raw| Expiry::parse(raw, now).map(Expiry::at))
        .transpose()?;
    if b.name.trim().is_empty() || b.name.chars().count() > 100 {
        return Err(Error::Invalid("name must be 1-100 characters".into()));
    }
    let base: String = b.name.trim().chars().take(56).collect();
    let mut made = Vec::new();
    for i in 1..=n {
        let making = Making {
            name: DeviceName::parse(&format!("{} {i}", base.trim()))
                .or_else(|_| DeviceName::parse(&format!("plan device {i}")))?,
            request: Request::anywhere(spec.resources()),
            spec: spec.clone(),
            tags: vec!["plan".into()],
            start: true,
            strategy: default_strategy(),
            pin_node: None,
            template: None,
            steps: Vec::new(),
            lifecycle: repo::lifecycle::PolicyChange {
                expires_at: expires_at.map(Some),
                ..Default::default()
            },
            pool: None,
            recover_policy: "none",
            snapshot_policy: None,
        };
        let (op, repeat) = make_for(call.ctx, &owner, making, Some(&key(order, i)))?;
        if repeat && op.status == "failed" {
            // An earlier call's attempt failed: the order is compensated,
            // not half fulfilled.
            return Err(Error::Conflict(format!(
                "device {i} of the order could not be made: {}",
                op.error.unwrap_or_default()
            )));
        }
        made.push(serde_json::json!({
            "device_id": op.device_id, "operation_id": op.id, "status": op.status,
        }));
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"devices": made}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    order_id: String,
    user_id: String,
}

/// `POST /internal/orders/devices/release` (billing): deletes the phones an
/// order made (`device.released`, their quota given back); `200` with
/// `{released}`, how many were still there (0 again for a repeated call).
pub fn release(call: &Call) -> Result<Response> {
    let b: Release = call.body()?;
    let order = uuid(&b.order_id, "order_id")?;
    let user = uuid(&b.user_id, "user_id")?;
    let devices =
        repo::operations::made_with_keys(&open_db()?, user, &format!("order {order} device "))?;
    let mut released = 0;
    for d in devices {
        match act(
            call.ctx,
            Actor::System,
            d,
            Action::Delete,
            None,
            Some(Cause::Released),
        ) {
            Ok(_) => released += 1,
            // Deleted already (a repeated call, or its owner did).
            Err(Error::Conflict(_) | Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(platform::http::json(
        200,
        &serde_json::json!({"released": released}),
    ))
}
