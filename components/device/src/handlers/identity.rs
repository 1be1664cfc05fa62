//! A device's identity and network, and "a new phone". Both are part of the
//! device's spec (`spec.identity`, `spec.network`), which the agent turns
//! into redroid's boot arguments (`domain::identity`): changing one is a
//! desired-state change (the generation grows) carried out by the agent as
//! a `create` of the device with its new spec, which makes its container
//! again and keeps `/data`. Renewing wipes `/data` too (the agent's
//! `reset`), so the device comes up as a new phone: a new serial number,
//! the identity given (or the one it had), and a new Android id, which
//! Android makes on an empty `/data`.
//!
//! Each answers 202 with the operation (`GET /operations/:id` follows it);
//! a running device is down while its container is made again.

use super::devices::{idempotency_key, visible};
use super::snapshots::{answer, Recorded};
use super::{agent::agent_spec, db as open_db, followups, Call};
use crate::domain::identity::{parse_identity, parse_network, Identity};
use crate::domain::spec::Spec;
use crate::domain::status::Desired;
use crate::error::{Error, Result};
use crate::repo;
use agent_protocol::messages::{DesiredDevice, Operation as AgentOp, RunState};
use spin_sdk::http::Response;
use uuid::Uuid;

/// How long making the container again (and booting it) may take.
const TIMEOUT_SECS: i32 = 600;

/// `PUT /devices/:id/identity` (`device:update`): the properties the device
/// reports (`{}` for the image's own); 202 with the operation.
pub fn put_identity(call: &Call) -> Result<Response> {
    let identity = parse_identity(body_json(call)?)?;
    let identity = (identity != Identity::default()).then_some(identity);
    remake(call, "reconfigure", false, move |spec| {
        spec.identity = identity
    })
}

/// `PUT /devices/:id/network` (`device:update`): its proxy and DNS servers
/// (`{}` for the host's network); 202 with the operation.
pub fn put_network(call: &Call) -> Result<Response> {
    let network = parse_network(body_json(call)?)?;
    let network = (network != Default::default()).then_some(network);
    remake(call, "reconfigure", false, move |spec| {
        spec.network = network
    })
}

/// `POST /devices/:id/renew` (`device:update`): a new phone. `/data` is
/// wiped (apps and their data, accounts, the Android id) and the device
/// gets a new serial number, with the identity in the body (optional;
/// absent: the one it had); 202 with the operation.
pub fn renew(call: &Call) -> Result<Response> {
    let given = if call.req.body().is_empty() {
        None
    } else {
        let v = body_json(call)?;
        match v.as_object() {
            Some(o) if o.keys().all(|k| k == "identity") => {
                o.get("identity").cloned().map(parse_identity).transpose()?
            }
            _ => {
                return Err(Error::Invalid(
                    "the body takes only identity (optional)".into(),
                ))
            }
        }
    };
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| platform::Problem::internal(e.to_string()))?;
    let serial = Identity::fresh_serial(random);
    remake(call, "renew", true, move |spec| {
        let mut identity = given.or_else(|| spec.identity.clone()).unwrap_or_default();
        identity.serial = Some(serial);
        spec.identity = Some(identity);
    })
}

fn body_json(call: &Call) -> Result<serde_json::Value> {
    Ok(call.body::<serde_json::Value>()?)
}

/// Changes the device's spec with `change`, as a new generation, and queues
/// the agent's `create` (or, with `wipe`, `reset`) of the device as it is
/// now wanted.
fn remake(
    call: &Call,
    kind: &'static str,
    wipe: bool,
    change: impl FnOnce(&mut Spec),
) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    visible(&open_db()?, caller, id)?;
    let key = idempotency_key(call)?;
    let op_id = Uuid::new_v4();
    let db = open_db()?;
    let recorded = db.transaction(|tx| {
        let d = repo::devices::lock(tx, id)?.ok_or(Error::NotFound("device"))?;
        let state = match d.desired() {
            Desired::Running => RunState::Running,
            Desired::Stopped => RunState::Stopped,
            Desired::Deleted => return Err(Error::Conflict("the device is deleted".into())),
        };
        if d.pool_template_id.is_some() {
            return Err(Error::Conflict(
                "the device waits in a warm pool: change its template instead".into(),
            ));
        }
        let node = d
            .node_id
            .clone()
            .ok_or_else(|| Error::Conflict("the device has no node yet".into()))?;
        let mut spec: Spec = serde_json::from_value(d.spec.clone())
            .map_err(|e| platform::Problem::internal(format!("stored spec: {e}")))?;
        change(&mut spec);
        // The row is locked: the change below makes exactly this generation.
        let generation = d.generation + 1;
        let device = DesiredDevice {
            device_id: followups::agent_device_id(id)?,
            generation: generation as u64,
            state,
            spec: agent_spec(&spec, repo::devices::gpu_of(tx, id)?.as_deref())?,
        };
        let q = followups::Queued {
            id: op_id,
            kind,
            requested_by: Some(caller.user_id),
            key: key.as_deref(),
            timeout_secs: TIMEOUT_SECS,
            op: if wipe {
                AgentOp::Reset { device }
            } else {
                AgentOp::Create {
                    device,
                    import: None,
                }
            },
        };
        if let Err(existing) = followups::queue(tx, &d, &node, q)? {
            return Ok(Recorded::Repeat(existing));
        }
        let made = repo::devices::set_spec(tx, id, &spec)?;
        if made != generation {
            return Err(platform::Problem::internal(
                "the device's generation moved under its lock",
            )
            .into());
        }
        Ok(Recorded::New(op_id, node))
    });
    drop(db);
    answer(call, recorded, None)
}
