//! The whole route table of `device`, below `/api/v1/device`, as data: one
//! row per route with its guard and handler (`platform::router`). Public:
//! `health` and `health/live`. Agent routes (`agent/nodes/:node_id/...`)
//! need the node's signature. Internal routes accept only the service tokens
//! named in their guard. `docs/api.md` lists the same table.

use crate::consumer::Consumer;
use crate::error::Error;
use crate::handlers::{
    agent, backups, batches, device_ops, devices, failover, identity, internal, nodes, operations,
    plan_devices, policy, pools, snapshots, templates,
};
use platform::auth::KeyVerifier;
use platform::consumer::endpoints;
use platform::router::{route, Component, Guard, Guard::*, Route};

/// Scheduler jobs.
const SCHEDULER: Guard = Service(&["scheduler"]);

/// The component: API keys verified by chaining to `auth`, agents by their
/// node's signature.
pub const COMPONENT: Component<Error> = Component {
    name: "device",
    routes: ROUTES,
    keys: KeyVerifier::Chained,
    agent: Some(agent::verify),
};

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Error>] = &[
    route("GET", "health", Public, platform::http::health),
    route("GET", "health/live", Public, platform::http::live),
    route("GET", "devices", Permission("device:read"), devices::list),
    route("POST", "devices", Permission("device:create"), devices::create),
    route("GET", "devices/:id", Permission("device:read"), devices::get),
    route("PATCH", "devices/:id", Permission("device:update"), devices::patch),
    route("DELETE", "devices/:id", Permission("device:delete"), devices::delete),
    route("POST", "devices/:id/start", Permission("device:control"), devices::start),
    route("POST", "devices/:id/stop", Permission("device:control"), devices::stop),
    route("POST", "devices/:id/restart", Permission("device:control"), devices::restart),
    route("PUT", "devices/:id/identity", Permission("device:update"), identity::put_identity),
    route("PUT", "devices/:id/network", Permission("device:update"), identity::put_network),
    route("POST", "devices/:id/renew", Permission("device:update"), identity::renew),
    route("GET", "devices/:id/placement", Permission("node:read"), devices::placement),
    route("GET", "devices/:id/runs", Permission("device:read"), devices::runs),
    route("POST", "devices/:id/shell", Permission("device:shell"), device_ops::shell),
    route("GET", "devices/:id/logcat", Permission("device:control"), device_ops::logcat),
    route("GET", "devices/:id/screenshot", Permission("device:control"), device_ops::screenshot),
    route("PUT", "devices/:id/files", Permission("device:shell"), device_ops::push_file),
    route("GET", "devices/:id/files", Permission("device:shell"), device_ops::pull_file),
    route("POST", "devices/:id/apps", Permission("device:control"), device_ops::install_app),
    route("DELETE", "devices/:id/apps/:package", Permission("device:control"), device_ops::uninstall_app),
    route("GET", "devices/:id/packages", Permission("device:control"), device_ops::packages),
    route("GET", "devices/:id/properties", Permission("device:control"), device_ops::properties),
    route("GET", "devices/:id/provisioning", Permission("device:read"), templates::provisioning),
    route("POST", "devices/:id/recover", Permission("node:manage"), failover::recover_now),
    route("GET", "devices/:id/recoveries", Permission("device:read"), failover::recoveries),
    route("POST", "devices/:id/snapshots", Permission("device:control"), snapshots::take),
    route("GET", "devices/:id/snapshots", Permission("device:read"), snapshots::of_device),
    route("GET", "devices/:id/snapshot-policy", Permission("device:read"), backups::get_policy),
    route("PUT", "devices/:id/snapshot-policy", Permission("device:control"), backups::put_policy),
    route("POST", "devices/:id/restore", Permission("device:control"), snapshots::restore),
    route("GET", "snapshots", Permission("device:read"), snapshots::list),
    route("GET", "snapshots/:id", Permission("device:read"), snapshots::get),
    route("DELETE", "snapshots/:id", Permission("device:control"), snapshots::delete),
    route("POST", "snapshots/:id/clone", Permission("device:create"), snapshots::clone),
    route("POST", "batches", Permission("device:read"), batches::create),
    route("GET", "batches", Permission("device:read"), batches::list),
    route("GET", "batches/:id", Permission("device:read"), batches::get),
    route("GET", "templates", Permission("device:read"), templates::list),
    route("POST", "templates", Permission("device:template"), templates::create),
    route("GET", "templates/:id", Permission("device:read"), templates::get),
    route("PATCH", "templates/:id", Permission("device:template"), templates::patch),
    route("DELETE", "templates/:id", Permission("device:template"), templates::delete),
    route("GET", "templates/:id/pool", Permission("node:read"), pools::get),
    route("PUT", "templates/:id/pool", Permission("node:manage"), pools::set),
    route("GET", "operations", Permission("device:read"), operations::list),
    route("GET", "operations/:id", Permission("device:read"), operations::get),
    route("GET", "nodes", Permission("node:read"), nodes::list),
    route("POST", "nodes", Permission("node:manage"), nodes::enroll),
    route("GET", "nodes/stats", Permission("node:read"), nodes::stats),
    route("GET", "nodes/:id", Permission("node:read"), nodes::get),
    route("GET", "nodes/:id/gpus", Permission("node:read"), nodes::gpus),
    route("PATCH", "nodes/:id", Permission("node:manage"), nodes::patch),
    route("POST", "nodes/:id/cordon", Permission("node:manage"), nodes::cordon),
    route("POST", "nodes/:id/uncordon", Permission("node:manage"), nodes::uncordon),
    route("POST", "nodes/:id/maintenance", Permission("node:manage"), nodes::maintenance),
    route("POST", "nodes/:id/activate", Permission("node:manage"), nodes::activate),
    route("POST", "nodes/:id/drain", Permission("node:manage"), nodes::drain),
    route("POST", "nodes/:id/secret", Permission("node:manage"), nodes::rotate),
    route("POST", "nodes/:id/revoke", Permission("node:manage"), nodes::revoke),
    route("GET", "agent/nodes/:node_id/desired-state", Agent, agent::desired_state),
    route("POST", "agent/nodes/:node_id/register", Agent, agent::register),
    route("POST", "agent/nodes/:node_id/reports", Agent, agent::reports),
    route("GET", "agent/nodes/:node_id/operations/:operation_id/content", Agent, agent::operation_content),
    route("PUT", "agent/nodes/:node_id/snapshots/:snapshot_id/archive/:seq", Agent, agent::put_archive_chunk),
    route("GET", "agent/nodes/:node_id/snapshots/:snapshot_id/archive/:seq", Agent, agent::get_archive_chunk),
    route("POST", "internal/nodes/liveness", SCHEDULER, internal::liveness),
    route("POST", "internal/operations/expire", SCHEDULER, internal::expire_operations),
    route("POST", "internal/commands/relay", SCHEDULER, internal::relay),
    route("POST", "internal/claims/settle", SCHEDULER, internal::settle_claims),
    route("POST", "internal/devices/reconcile", SCHEDULER, internal::reconcile),
    route("GET", "internal/runs", Service(&["billing"]), internal::runs),
    route("POST", "internal/orders/devices", Service(&["billing"]), plan_devices::make),
    route("POST", "internal/orders/devices/release", Service(&["billing"]), plan_devices::release),
    route("POST", "internal/batches/advance", SCHEDULER, batches::advance_job),
    route("POST", "internal/pools/replenish", SCHEDULER, pools::replenish),
    route("POST", "internal/devices/failover", SCHEDULER, failover::job),
    route("POST", "internal/snapshots/maintain", SCHEDULER, backups::job),
    route("POST", "internal/outbox/publish", SCHEDULER, endpoints::publish),
    route("GET", "internal/events", Service(&["notification", "billing", "app"]), endpoints::feed),
    route("POST", "internal/events/prune", SCHEDULER, endpoints::prune),
    route("POST", "internal/events/catch-up", SCHEDULER, endpoints::catch_up::<Error, Consumer>),
    route("GET", "admin/dead-letters", Permission("event:manage"), endpoints::dead_letters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), endpoints::replay::<Error, Consumer>),
    route("POST", "devices/:id/heartbeat", Permission("device:control"), policy::heartbeat),
    route("POST", "devices/:id/release", Permission("device:admin"), policy::release),
    route("POST", "internal/devices/lifecycle", SCHEDULER, policy::job),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        platform::router::assert_documented(include_str!("../../../docs/api.md"), "device", ROUTES);
    }
}
