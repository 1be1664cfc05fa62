//! Devices: create (quota, tenant limit, atomic placement), list and read
//! within the caller's data scope, rename, and the lifecycle actions. Every
//! lifecycle action is an operation: the request answers 202 with it, the
//! desired state (with a new generation) and the command for the agent are
//! committed together, and the command is published only after that commit.

use super::{
    db as open_db, dispatch, one_of, paged, platform_wide, policy, search_query, uuid_query, Call,
};
use crate::domain::lifecycle::Cause;
use crate::domain::placement::{self, Strategy, Toleration};
use crate::domain::spec::{parse_tags, DeviceName, Spec, SpecInput};
use crate::domain::status::{transition, Action, Desired, Observed};
use crate::domain::template::Step;
use crate::error::{Error, Result};
use crate::repo::{self, devices::Device, operations::NewOperation, operations::Operation};
use access::Caller;
use agent_protocol::messages::{Command, DesiredDevice, Operation as AgentOp, RunState};
use agent_protocol::spec::{DeviceId, OperationId};
use events::catalogue::DEVICE_CREATED;
use platform::db::Db;
use platform::http::Ctx;
use serde::Deserialize;
use spin_sdk::http::Response;
use std::collections::BTreeMap;
use uuid::Uuid;

/// How long each kind of operation may take before it fails with `timeout`.
fn timeout_secs(kind: &str) -> i32 {
    match kind {
        "create" => 600,
        "start" | "restart" => 300,
        _ => 180,
    }
}

/// The caller's `Idempotency-Key` header, if any.
pub fn idempotency_key(call: &Call) -> Result<Option<String>> {
    Ok(platform::http::idempotency_key(call.req)?)
}

/// A device the caller may see (404 otherwise, whatever the reason).
pub fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<Device> {
    match repo::devices::find(db, id)? {
        Some(d) if caller.sees("device", d.row_ref()) => Ok(d),
        _ => Err(Error::NotFound("device")),
    }
}

/// A device as the caller may see it: the ADB endpoint only for those who
/// may use the device, the node only for platform staff.
pub fn view(caller: &Caller, d: &Device) -> serde_json::Value {
    let mut v = serde_json::to_value(d).expect("device serializes");
    let may_use = caller.can("device:control") && caller.sees("device", d.row_ref());
    v["adb"] = match (may_use, &d.adb_host, d.adb_port, d.observed()) {
        (true, Some(host), Some(port), Observed::Running | Observed::Booting) => {
            serde_json::json!({"host": host, "port": port, "serial": format!("{host}:{port}")})
        }
        _ => serde_json::Value::Null,
    };
    if caller.can("node:read") {
        v["container_id"] = serde_json::to_value(&d.container_id).expect("string");
    } else {
        v["node_id"] = serde_json::Value::Null;
    }
    policy::view(caller, d, &mut v);
    caller.field_rule("device", Some(d.owner_id)).apply(&mut v);
    v
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PlacementInput {
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    tolerations: Vec<Toleration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateDevice {
    name: String,
    #[serde(default)]
    spec: Option<SpecInput>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    start: Option<bool>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    placement: Option<PlacementInput>,
    #[serde(default)]
    template_id: Option<String>,
    #[serde(default)]
    recover_policy: Option<String>,
    #[serde(default)]
    idle_timeout_secs: Option<i64>,
    #[serde(default)]
    max_session_secs: Option<i64>,
    #[serde(default)]
    expires_at: Option<String>,
}

fn location(what: &str, v: Option<String>) -> Result<Option<String>> {
    match v {
        Some(s)
            if s.is_empty()
                || s.len() > 63
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            Err(Error::Invalid(format!(
                "{what} must be 1-63 of letters, digits, '-', '_', '.'"
            )))
        }
        v => Ok(v),
    }
}

/// The deployment's default placement strategy.
pub fn default_strategy() -> Strategy {
    platform::var("placement_strategy")
        .ok()
        .and_then(|s| Strategy::parse(&s))
        .unwrap_or(Strategy::LeastLoaded)
}

fn error_code(e: &Error) -> (&'static str, String) {
    match e {
        Error::QuotaExceeded(m) => ("quota_exceeded", m.clone()),
        Error::NoCapacity(m) => ("no_capacity", m.clone()),
        Error::Conflict(m) => ("conflict", m.clone()),
        Error::Forbidden(m) => ("forbidden", m.clone()),
        Error::Invalid(m) => ("invalid_input", m.clone()),
        _ => ("internal", "the operation failed".to_string()),
    }
}

/// A device's image must start with one of the operator's prefixes (the
/// `device_images` variable, comma-separated; redroid's own by default):
/// the container runs privileged on the platform's hosts, so no caller
/// chooses an arbitrary image.
pub fn image_allowed(image: &str) -> Result<()> {
    let prefixes = platform::var("device_images").unwrap_or_else(|_| "redroid/redroid:".into());
    if prefixes
        .split(',')
        .map(str::trim)
        .any(|p| !p.is_empty() && image.starts_with(p))
    {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "image {image} is not one this platform runs (allowed: {prefixes})"
        )))
    }
}

/// An operation as JSON.
pub fn op_json(op: &Operation) -> serde_json::Value {
    serde_json::to_value(op).expect("operation serializes")
}

/// A template's lifecycle defaults, where `lifecycle` leaves a field out.
/// Its lifetime is the platform's rule for its devices, not the caller's
/// choice, so it needs no `device:admin`.
pub fn template_defaults(
    t: &crate::domain::template::Template,
    mut lifecycle: repo::lifecycle::PolicyChange,
) -> repo::lifecycle::PolicyChange {
    if lifecycle.idle_timeout_secs.is_none() {
        lifecycle.idle_timeout_secs = t.idle_timeout_secs.map(Some);
    }
    if lifecycle.max_session_secs.is_none() {
        lifecycle.max_session_secs = t.max_session_secs.map(Some);
    }
    if lifecycle.expires_at.is_none() {
        let now = chrono::Utc::now().naive_utc();
        lifecycle.expires_at = t
            .lifetime_secs
            .map(|s| Some(now + chrono::Duration::seconds(i64::from(s))));
    }
    lifecycle
}

/// What a new device is made of, however it was asked for (a spec, a
/// template, a snapshot to clone).
pub struct Making {
    /// Its name.
    pub name: DeviceName,
    /// Its spec.
    pub spec: Spec,
    /// Its tags.
    pub tags: Vec<String>,
    /// Whether it starts once made.
    pub start: bool,
    /// Where it may go.
    pub request: placement::Request,
    /// How a node is chosen.
    pub strategy: Strategy,
    /// The only node it may go to (a clone goes where its snapshot is).
    pub pin_node: Option<String>,
    /// The template it is made from.
    pub template: Option<Uuid>,
    /// What it does at its first boot.
    pub steps: Vec<Step>,
    /// Its lifecycle policy (expiry, idle timeout, session length).
    pub lifecycle: repo::lifecycle::PolicyChange,
    /// The template whose warm pool it waits in (owned by nobody, holding
    /// no quota, until a user takes it).
    pub pool: Option<Uuid>,
    /// What happens when its node is lost: `none` or `fresh`.
    pub recover_policy: &'static str,
    /// Its snapshot policy (a template's; a pooled device gets it when a
    /// user takes it).
    pub snapshot_policy: Option<crate::domain::snapshot_policy::Policy>,
}

/// `POST /devices`: creates a device for the caller and answers 202 with
/// its `create` operation (200 with the earlier one for a repeated
/// `Idempotency-Key`); see [`make`].
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let b: CreateDevice = call.body()?;
    policy::refuse_if_suspended(&open_db()?, caller.user_id)?;
    let name = DeviceName::parse(&b.name)?;
    let template = match b.template_id.as_deref() {
        None => None,
        Some(_) if b.spec.is_some() => {
            return Err(Error::Invalid(
                "give a spec or a template_id, not both: the template holds the spec".into(),
            ))
        }
        Some(raw) => {
            let id = Uuid::parse_str(raw)
                .map_err(|_| Error::Invalid("template_id must be a UUID".into()))?;
            let stored = super::templates::visible(&open_db()?, caller, id)?;
            Some((id, stored.input().parse()?))
        }
    };
    let (spec, mut tags) = match &template {
        Some((_, t)) => (t.spec.clone(), t.tags.clone()),
        None => (b.spec.unwrap_or_default().parse()?, Vec::new()),
    };
    tags.extend(b.tags.iter().cloned());
    let mut lifecycle = policy::parse(
        caller,
        policy::PolicyInput {
            idle_timeout_secs: b.idle_timeout_secs.map(Some),
            max_session_secs: b.max_session_secs.map(Some),
            expires_at: b.expires_at.map(Some),
        },
    )?;
    if let Some((_, t)) = &template {
        lifecycle = template_defaults(t, lifecycle);
    }
    let placement_in = b.placement.unwrap_or_default();
    let overrides = placement_in.strategy.is_some()
        || !placement_in.node_selector.is_empty()
        || !placement_in.tolerations.is_empty();
    if overrides && !caller.can("node:manage") {
        return Err(Error::Forbidden(
            "choosing the placement strategy, node selector or tolerations needs node:manage"
                .into(),
        ));
    }
    let strategy = match &placement_in.strategy {
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            Error::Invalid("strategy must be binpack, spread or least_loaded".into())
        })?,
        None => default_strategy(),
    };
    let making = Making {
        name,
        request: placement::Request {
            needs: spec.resources(),
            zone: location("zone", b.zone)?,
            region: location("region", b.region)?,
            node_selector: placement_in.node_selector,
            tolerations: placement_in.tolerations,
        },
        spec,
        tags: parse_tags(&tags)?,
        start: b.start.unwrap_or(true),
        strategy,
        pin_node: None,
        template: template.as_ref().map(|(id, _)| *id),
        steps: template
            .as_ref()
            .map(|(_, t)| t.provision_plan())
            .unwrap_or_default(),
        lifecycle,
        pool: None,
        recover_policy: b
            .recover_policy
            .as_deref()
            .map(super::failover::policy)
            .transpose()?
            .unwrap_or("none"),
        snapshot_policy: template.as_ref().and_then(|(_, t)| t.snapshot_policy),
    };
    // A warm pool of the template answers at once, with a running device.
    if let Some((template_id, _)) = &template {
        let plain = making.start
            && making.request.zone.is_none()
            && making.request.region.is_none()
            && making.request.node_selector.is_empty()
            && making.request.tolerations.is_empty();
        if plain {
            if let Some(op) = super::pools::take(call, *template_id, &making)? {
                return Ok(platform::http::json(201, &op_json(&op)));
            }
        }
    }
    make(call, making)
}

/// Makes a device for the caller and answers 202 with its `create`
/// operation (200 with the earlier one for a repeated `Idempotency-Key`).
/// Quota is reserved in `user` first; then, under the tenant's
/// device-count lock and the candidate nodes' row locks, the device is
/// placed and committed with its command and first-boot steps; the
/// reservation is committed and the command published after that commit.
pub fn make(call: &Call, m: Making) -> Result<Response> {
    let caller = call.caller()?;
    let owner = Owner {
        user: caller.user_id,
        tenant: caller.tenant_id,
        department: caller.department_id,
    };
    let (op, repeat) = make_for(call.ctx, &owner, m, idempotency_key(call)?.as_deref())?;
    Ok(platform::http::json(
        if repeat { 200 } else { 202 },
        &op_json(&op),
    ))
}

/// Whose a new device is (and who asks for it).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// The user.
    pub user: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Their department.
    pub department: Option<Uuid>,
}

/// [`make`] for an owner (the caller, or a batch's requester): the
/// `create` operation, and whether it is the earlier one of a repeated key.
pub fn make_for(ctx: &Ctx, who: &Owner, m: Making, key: Option<&str>) -> Result<(Operation, bool)> {
    image_allowed(&m.spec.image)?;
    let Making {
        name,
        spec,
        tags,
        start,
        request,
        strategy,
        pin_node,
        template: template_id,
        steps: plan,
        lifecycle,
        pool,
        recover_policy,
        snapshot_policy,
    } = m;
    let (device_id, op_id) = (Uuid::new_v4(), Uuid::new_v4());
    let owner = who.user;

    // Claim the operation first: only the request that inserts it does the work.
    let db = open_db()?;
    if let Err(existing) = repo::operations::insert(
        &db,
        &NewOperation {
            id: op_id,
            kind: "create",
            device: Some(device_id),
            node: None,
            requested_by: Some(who.user),
            owner: Some(owner),
            tenant: who.tenant,
            department: who.department,
            generation: None,
            idempotency_key: key,
            timeout_secs: timeout_secs("create"),
        },
    )? {
        let op = repo::operations::find(&db, existing)?.ok_or(Error::NotFound("operation"))?;
        return Ok((op, true));
    }
    drop(db);
    let fail = |e: Error, claims: &[Uuid]| -> Error {
        let (code, message) = error_code(&e);
        if let Ok(db) = Db::open() {
            let _ = repo::operations::finish(&db, op_id, false, None, Some((code, &message)));
        }
        dispatch::settle_all(ctx, claims, false);
        e
    };

    // The tenant's device limit, from `user`.
    let tenant_max = match who.tenant {
        Some(t) => dispatch::tenant_max_devices(ctx, t).map_err(|e| fail(e, &[]))?,
        None => None,
    };
    // Quota: the device, and running it (a pooled device holds none until
    // a user takes it).
    let mut claims = Vec::new();
    if pool.is_none() {
        let device_claim =
            dispatch::reserve(ctx, owner, &format!("device:{device_id}"), &spec.quota())
                .map_err(|e| fail(e, &claims))?;
        claims.push(device_claim.id);
        repo::claims::reserved(&open_db()?, device_claim.id, device_id, owner, "device")
            .map_err(|e| fail(e.into(), &claims))?;
    }
    if start && pool.is_none() {
        let run_claim = dispatch::reserve(
            ctx,
            owner,
            &format!("device:{device_id}:run:{op_id}"),
            &serde_json::json!({"concurrent_devices": 1}),
        )
        .map_err(|e| fail(e, &claims))?;
        claims.push(run_claim.id);
        repo::claims::reserved(&open_db()?, run_claim.id, device_id, owner, "run")
            .map_err(|e| fail(e.into(), &claims))?;
    }

    let desired = if start {
        Desired::Running
    } else {
        Desired::Stopped
    };
    let db = open_db()?;
    let placed = db.transaction(|tx| {
        if let (Some(t), Some(max)) = (who.tenant, tenant_max) {
            repo::devices::lock_tenant(tx, t)?;
            if repo::devices::count_in_tenant(tx, t)? >= max {
                return Err(Error::QuotaExceeded(format!(
                    "the tenant's device limit {max} is reached"
                )));
            }
        }
        if let Some(t) = template_id {
            // Counts the use, and refuses a template deleted meanwhile.
            repo::templates::take_for_device(tx, t)?.ok_or(Error::NotFound("template"))?;
        }
        let nodes = repo::nodes::lock_candidates(tx)?;
        let views: Vec<_> = nodes
            .iter()
            .filter(|n| pin_node.as_deref().is_none_or(|p| n.id == p))
            .map(|n| n.view())
            .collect();
        let decision = placement::place(&views, &request, strategy).map_err(Error::NoCapacity)?;
        let node = nodes
            .iter()
            .find(|n| n.id == decision.node_id)
            .expect("the decision names a candidate");
        repo::devices::insert(
            tx,
            &repo::devices::NewDevice {
                id: device_id,
                name: name.as_str(),
                owner,
                tenant: who.tenant,
                department: who.department,
                owner_copy: repo::owners::find(tx, owner)?,
                node: &node.id,
                spec: &spec,
                tags: &tags,
                desired,
                placement: serde_json::to_value(&decision).expect("decision serializes"),
                adb_host: &node.address,
                template: template_id,
                pool,
            },
        )?;
        repo::templates::insert_steps(tx, device_id, &plan)?;
        if recover_policy != "none" {
            repo::recoveries::set_policy(tx, device_id, recover_policy)?;
        }
        if let (Some(p), None) = (&snapshot_policy, pool) {
            repo::snapshot_policies::put(tx, device_id, p)?;
        }
        // A GPU slot, under the node's lock that placement holds; placement
        // counted the node's free slots, the primary key guards the rest.
        let gpu = if spec.needs_gpu() {
            let got =
                repo::gpus::allocate(tx, &node.id, &node.gpu_devices, node.gpu_slots, device_id)?;
            Some(got.ok_or_else(|| Error::NoCapacity(format!("no free gpu slot on {}", node.id)))?)
        } else {
            None
        };
        policy::apply(tx, device_id, &lifecycle)?;
        let d = repo::devices::find(tx, device_id)?.ok_or(Error::NotFound("device"))?;
        repo::operations::placed(tx, op_id, &node.id, d.generation)?;
        let command = create_command(op_id, device_id, d.generation, start, &spec, gpu.as_deref())?;
        repo::commands::queue(
            tx,
            &node.id,
            op_id,
            &serde_json::to_value(&command).expect("command serializes"),
        )?;
        platform::outbox::enqueue(
            tx,
            &DEVICE_CREATED,
            &device_id.to_string(),
            d.version,
            &d.event(None),
        )?;
        Ok::<_, Error>(node.id.to_string())
    });
    let node = match placed {
        Ok(node) => node,
        Err(e) => {
            drop(db);
            return Err(fail(e, &claims));
        }
    };
    platform::outbox::publish_after_commit(&db, &ctx.request_id);
    drop(db);
    dispatch::settle_all(ctx, &claims, true);
    dispatch::publish_commands_after_commit(ctx, &node);
    let op = repo::operations::find(&open_db()?, op_id)?.ok_or(Error::NotFound("operation"))?;
    Ok((op, false))
}

/// The agent's `create` command for a device at `generation`.
pub fn create_command(
    op_id: Uuid,
    device_id: Uuid,
    generation: i64,
    start: bool,
    spec: &Spec,
    gpu: Option<&str>,
) -> Result<Command> {
    let internal = |e: agent_protocol::spec::SpecError| platform::Problem::internal(e.to_string());
    Ok(Command {
        operation_id: OperationId::parse(&op_id.to_string()).map_err(internal)?,
        op: AgentOp::Create {
            device: DesiredDevice {
                device_id: DeviceId::parse(&device_id.to_string()).map_err(internal)?,
                generation: generation as u64,
                state: if start {
                    RunState::Running
                } else {
                    RunState::Stopped
                },
                spec: super::agent::agent_spec(spec, gpu)?,
            },
            import: None,
        },
    })
}

/// What a lifecycle action's transaction did.
enum Acted {
    /// The desired state changed: the node to tell, the claims to release.
    Done(Option<String>, Vec<Uuid>),
    /// A repeated `Idempotency-Key`: the earlier operation.
    Repeat(Uuid),
}

/// Who takes a lifecycle action.
#[derive(Clone, Copy)]
pub enum Actor<'a> {
    /// A user, within their data scope, recorded as the requester.
    User(&'a Caller),
    /// Platform staff acting on any device they see (node drains): a start
    /// of a running device is not refused.
    Operator(&'a Caller),
    /// The control plane itself (the lifecycle job): no data scope, no
    /// requester.
    System,
    /// A warm pool's replenish job trimming the pool: only a device still
    /// waiting in that pool (one a user has just taken is not touched).
    Pool(Uuid),
    /// A batch, for the user who made it: the devices were checked against
    /// their data scope when the batch was made; a start of a running
    /// device is not refused (it is already where the batch wants it).
    Batch(Uuid),
}

impl Actor<'_> {
    /// The user recorded as the operation's requester.
    fn user_id(self) -> Option<Uuid> {
        match self {
            Actor::User(c) | Actor::Operator(c) => Some(c.user_id),
            Actor::Batch(u) => Some(u),
            Actor::System | Actor::Pool(_) => None,
        }
    }
}

/// A lifecycle action on a device, as its operation: the one path of every
/// start, stop, restart and delete, whoever asks. `cause` is the lifecycle
/// rule (or the administrator's release) behind it: checked under the row
/// lock and its event written in the same transaction
/// (`policy::check_action`, `policy::acted`).
pub fn act(
    ctx: &Ctx,
    actor: Actor,
    id: Uuid,
    action: Action,
    key: Option<&str>,
    cause: Option<Cause>,
) -> Result<Operation> {
    let db = open_db()?;
    let d = match actor {
        Actor::User(caller) | Actor::Operator(caller) => visible(&db, caller, id)?,
        Actor::System | Actor::Batch(_) | Actor::Pool(_) => {
            repo::devices::find(&db, id)?.ok_or(Error::NotFound("device"))?
        }
    };
    let to = transition(d.desired(), action)?;
    if !matches!(actor, Actor::Operator(_) | Actor::Batch(_))
        && action == Action::Start
        && to == d.desired()
        && d.observed() == Observed::Running
    {
        return Err(Error::Conflict("the device is running".into()));
    }
    drop(db);
    let op_id = Uuid::new_v4();
    // Running it again holds the owner's concurrent-device quota.
    let mut reserved = Vec::new();
    if action == Action::Start && repo::claims::live(&open_db()?, id, "run")?.is_empty() {
        let r = dispatch::reserve(
            ctx,
            d.owner_id,
            &format!("device:{id}:run:{op_id}"),
            &serde_json::json!({"concurrent_devices": 1}),
        )?;
        repo::claims::reserved(&open_db()?, r.id, id, d.owner_id, "run")?;
        reserved.push(r.id);
    }
    let db = open_db()?;
    let outcome = db.transaction(|tx| {
        let d = repo::devices::lock(tx, id)?.ok_or(Error::NotFound("device"))?;
        if let Actor::Pool(t) = actor {
            if d.pool_template_id != Some(t) {
                return Err(Error::Conflict("a user has taken the device".into()));
            }
        }
        let to = transition(d.desired(), action)?;
        policy::check_action(tx, &d, action, cause)?;
        let generation = match action {
            Action::Restart => None,
            _ => Some(repo::devices::set_desired(tx, id, to)?),
        };
        let inserted = repo::operations::insert(
            tx,
            &NewOperation {
                id: op_id,
                kind: action.kind(),
                device: Some(id),
                node: d.node_id.as_deref(),
                requested_by: actor.user_id(),
                owner: Some(d.owner_id),
                tenant: d.tenant_id,
                department: d.department_id,
                generation,
                idempotency_key: key,
                timeout_secs: timeout_secs(action.kind()),
            },
        )?;
        if let Err(existing) = inserted {
            // A repeated Idempotency-Key: the first request did the work.
            return Ok(Acted::Repeat(existing));
        }
        let device_id = DeviceId::parse(&id.to_string())
            .map_err(|e| platform::Problem::internal(e.to_string()))?;
        let op = match (action, generation) {
            (Action::Start, Some(g)) => AgentOp::Start {
                device_id,
                generation: g as u64,
            },
            (Action::Stop, Some(g)) => AgentOp::Stop {
                device_id,
                generation: g as u64,
            },
            (Action::Delete, Some(g)) => AgentOp::Delete {
                device_id,
                generation: g as u64,
            },
            _ => AgentOp::Restart { device_id },
        };
        let mut releases = Vec::new();
        if action == Action::Stop || action == Action::Delete {
            releases.extend(repo::claims::start_release(tx, id, "run")?);
        }
        if action == Action::Delete {
            releases.extend(repo::claims::start_release(tx, id, "device")?);
            // Billing stops when the owner deletes, whatever the node does.
            repo::runs::close(tx, id, "deleted")?;
        }
        match (&d.node_id, d.observed()) {
            // Never made (or its node is gone for good): nothing to ask an agent.
            (None, _) => {
                if action == Action::Delete {
                    if let Some((before, after)) =
                        repo::devices::set_observed(tx, id, Observed::Deleted, None)?
                    {
                        super::lifecycle::observed_changed(tx, &before, &after)?;
                    }
                }
            }
            (Some(node), _) => {
                let command = Command {
                    operation_id: OperationId::parse(&op_id.to_string())
                        .map_err(|e| platform::Problem::internal(e.to_string()))?,
                    op,
                };
                repo::commands::queue(
                    tx,
                    node,
                    op_id,
                    &serde_json::to_value(&command).expect("command serializes"),
                )?;
            }
        }
        policy::acted(tx, id, cause, actor.user_id())?;
        Ok::<_, Error>(Acted::Done(d.node_id.clone(), releases))
    });
    let (node, releases) = match outcome {
        Ok(Acted::Done(node, releases)) => (node, releases),
        Ok(Acted::Repeat(existing)) => {
            drop(db);
            dispatch::settle_all(ctx, &reserved, false);
            return repo::operations::find(&open_db()?, existing)?
                .ok_or(Error::NotFound("operation"));
        }
        Err(e) => {
            drop(db);
            dispatch::settle_all(ctx, &reserved, false);
            return Err(e);
        }
    };
    platform::outbox::publish_after_commit(&db, &ctx.request_id);
    drop(db);
    dispatch::settle_all(ctx, &reserved, true);
    dispatch::settle_all(ctx, &releases, false);
    if let Some(node) = node {
        dispatch::publish_commands_after_commit(ctx, &node);
    }
    repo::operations::find(&open_db()?, op_id)?.ok_or(Error::NotFound("operation"))
}

fn action(call: &Call, a: Action) -> Result<Response> {
    let id = call.id("id", "device")?;
    let key = idempotency_key(call)?;
    let op = act(
        call.ctx,
        Actor::User(call.caller()?),
        id,
        a,
        key.as_deref(),
        None,
    )?;
    Ok(platform::http::json(202, &op_json(&op)))
}

/// `POST /devices/:id/start`.
pub fn start(call: &Call) -> Result<Response> {
    action(call, Action::Start)
}

/// `POST /devices/:id/stop`.
pub fn stop(call: &Call) -> Result<Response> {
    action(call, Action::Stop)
}

/// `POST /devices/:id/restart`.
pub fn restart(call: &Call) -> Result<Response> {
    action(call, Action::Restart)
}

/// `DELETE /devices/:id`: removes the device and its data.
pub fn delete(call: &Call) -> Result<Response> {
    action(call, Action::Delete)
}

/// `GET /devices?status=&desired=&node_id=&owner_id=&tenant_id=&tag=&q=&sort=&order=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let status = one_of(
        call,
        "status",
        &[
            "creating", "booting", "running", "stopped", "failed", "deleted", "unknown",
        ],
    )?;
    let desired = one_of(call, "desired", &["running", "stopped", "deleted"])?;
    let node_id = match call.query("node_id") {
        Some(_) if !caller.can("node:read") => {
            return Err(Error::Forbidden("filtering by node needs node:read".into()))
        }
        Some(n) => Some(
            agent_protocol::spec::NodeId::parse(&n)
                .map_err(|_| Error::Invalid("node_id is not a node id".into()))?
                .to_string(),
        ),
        None => None,
    };
    let tenant_id = uuid_query(call, "tenant_id")?;
    if tenant_id.is_some() && !platform_wide(caller, "device") {
        return Err(Error::Forbidden(
            "filtering by tenant is for platform staff".into(),
        ));
    }
    let tag = match call.query("tag") {
        Some(t) => Some(parse_tags(&[t])?.remove(0)),
        None => None,
    };
    let sort = match one_of(call, "sort", &["created_at", "name", "status"])?.as_deref() {
        Some("name") => "d.name",
        Some("status") => "d.observed_status",
        _ => "d.created_at",
    };
    let desc = one_of(call, "order", &["asc", "desc"])?.as_deref() != Some("asc");
    let filter = repo::devices::Filter {
        status,
        desired,
        node_id,
        owner_id: uuid_query(call, "owner_id")?,
        tenant_id,
        tag,
        q: search_query(call)?,
        include_deleted: false,
        sort: (sort, desc),
    };
    let page = call.page()?;
    let (items, total) = repo::devices::list(&open_db()?, &caller.filter("device"), &filter, page)?;
    let items: Vec<_> = items.iter().map(|d| view(caller, d)).collect();
    Ok(paged(items, page, total))
}

/// `GET /devices/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let d = visible(&open_db()?, caller, call.id("id", "device")?)?;
    Ok(platform::http::json(200, &view(caller, &d)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchDevice {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    recover_policy: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "platform::input::nullable")]
    idle_timeout_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "platform::input::nullable")]
    max_session_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "platform::input::nullable")]
    expires_at: Option<Option<String>>,
}

/// `PATCH /devices/:id`: name, tags and the lifecycle policy (`expires_at`
/// by administrators only).
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "device")?;
    let b: PatchDevice = call.body()?;
    let name = b.name.as_deref().map(DeviceName::parse).transpose()?;
    let tags = b.tags.as_deref().map(parse_tags).transpose()?;
    let recover_policy = b
        .recover_policy
        .as_deref()
        .map(super::failover::policy)
        .transpose()?;
    let lifecycle = policy::parse(
        caller,
        policy::PolicyInput {
            idle_timeout_secs: b.idle_timeout_secs,
            max_session_secs: b.max_session_secs,
            expires_at: b.expires_at,
        },
    )?;
    let db = open_db()?;
    let d = db.transaction(|tx| {
        let d = visible(tx, caller, id)?;
        if d.desired() == Desired::Deleted {
            return Err(Error::Conflict("the device is deleted".into()));
        }
        repo::devices::update(
            tx,
            id,
            name.as_ref().map(DeviceName::as_str),
            tags.as_deref(),
        )?;
        policy::apply(tx, id, &lifecycle)?;
        if let Some(p) = recover_policy {
            repo::recoveries::set_policy(tx, id, p)?;
        }
        repo::devices::find(tx, id)?.ok_or(Error::NotFound("device"))
    })?;
    Ok(platform::http::json(200, &view(caller, &d)))
}

/// `GET /devices/:id/placement` (`node:read`): where the device was placed and why.
pub fn placement(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let d = visible(&open_db()?, caller, call.id("id", "device")?)?;
    Ok(platform::http::json(
        200,
        &serde_json::json!({"device_id": d.id, "node_id": d.node_id, "decision": d.placement}),
    ))
}

/// `GET /devices/:id/runs`: the device's run intervals, newest first.
pub fn runs(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let db = open_db()?;
    let d = visible(&db, caller, call.id("id", "device")?)?;
    let limit = platform::http::int_query(call.req, "limit", 100, 1000)?.max(1);
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": repo::runs::of_device(&db, d.id, limit)?}),
    ))
}
