//! The whole route table of `user`, below `/api/v1/user`, as data: one row
//! per route with its guard and handler (`platform::router`). Public routes:
//! `health` and `health/live`. Internal routes (`internal/...`) accept only
//! the service tokens of the components (or the scheduler) named in their
//! guard. Every other route needs an access token or API key, and most a
//! permission. `docs/api.md` lists the same table (a unit test keeps them
//! equal).

use crate::consumer::Consumer;
use crate::error::Error;
use crate::handlers::{
    audit, departments, internal, me, menus, quotas, roles, scopes, tenants, tickets, users,
};
use platform::auth::KeyVerifier;
use platform::consumer::endpoints;
use platform::router::{route, Component, Guard, Guard::*, Route};

/// Scheduler jobs.
const SCHEDULER: Guard = Service(&["scheduler"]);
/// The components that reserve and report quota.
const QUOTA_USERS: Guard = Service(&["device", "billing"]);

/// The component: its routes, and API keys verified by chaining to `auth`.
pub const COMPONENT: Component<Error> = Component {
    name: "user",
    routes: ROUTES,
    agent: None,
    keys: KeyVerifier::Chained,
};

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Error>] = &[
    route("GET", "health", Public, platform::http::health),
    route("GET", "health/live", Public, platform::http::live),
    route("GET", "me", Authenticated, me::get),
    route("PATCH", "me", Session, me::patch),
    route("GET", "me/menus", Authenticated, menus::mine),
    route("GET", "me/quota", Authenticated, quotas::mine),
    route("GET", "users", Permission("user:read"), users::list),
    route("POST", "users", Permission("user:create"), users::create),
    route("GET", "users/:id", Permission("user:read"), users::get),
    route("PATCH", "users/:id", Permission("user:update"), users::patch),
    route("DELETE", "users/:id", Permission("user:delete"), users::delete),
    route("POST", "users/:id/lock", Permission("user:lock"), users::lock),
    route("POST", "users/:id/unlock", Permission("user:lock"), users::unlock),
    route("PUT", "users/:id/roles", Permission("role:assign"), users::set_roles),
    route("PUT", "users/:id/password", Permission("user:update"), users::set_password),
    route("GET", "roles", Permission("role:read"), roles::list),
    route("POST", "roles", Permission("role:create"), roles::create),
    route("GET", "roles/:id", Permission("role:read"), roles::get),
    route("PATCH", "roles/:id", Permission("role:update"), roles::patch),
    route("DELETE", "roles/:id", Permission("role:delete"), roles::delete),
    route("PUT", "roles/:id/permissions", Permission("role:update"), roles::set_permissions),
    route("GET", "permissions", Permission("permission:read"), roles::list_permissions),
    route("POST", "permissions", Permission("permission:create"), roles::create_permission),
    route("DELETE", "permissions/:code", Permission("permission:delete"), roles::delete_permission),
    route("GET", "data-scopes/types", Authenticated, scopes::types),
    route("GET", "data-scopes", Permission("role:read"), scopes::list_scopes),
    route("POST", "data-scopes", Permission("role:update"), scopes::create_scope),
    route("GET", "data-scopes/:id", Permission("role:read"), scopes::get_scope),
    route("PUT", "data-scopes/:id", Permission("role:update"), scopes::replace_scope),
    route("DELETE", "data-scopes/:id", Permission("role:update"), scopes::delete_scope),
    route("GET", "field-permissions", Permission("role:read"), scopes::list_fields),
    route("POST", "field-permissions", Permission("role:update"), scopes::create_fields),
    route("GET", "field-permissions/:id", Permission("role:read"), scopes::get_fields),
    route("PUT", "field-permissions/:id", Permission("role:update"), scopes::replace_fields),
    route("DELETE", "field-permissions/:id", Permission("role:update"), scopes::delete_fields),
    route("GET", "tenants", Permission("tenant:read"), tenants::list),
    route("POST", "tenants", Permission("tenant:create"), tenants::create),
    route("GET", "tenants/:id", Permission("tenant:read"), tenants::get),
    route("PATCH", "tenants/:id", Permission("tenant:update"), tenants::patch),
    route("DELETE", "tenants/:id", Permission("tenant:delete"), tenants::delete),
    route("GET", "departments", Permission("department:read"), departments::list),
    route("POST", "departments", Permission("department:create"), departments::create),
    route("GET", "departments/tree", Permission("department:read"), departments::tree),
    route("GET", "departments/:id", Permission("department:read"), departments::get),
    route("PATCH", "departments/:id", Permission("department:update"), departments::patch),
    route("DELETE", "departments/:id", Permission("department:delete"), departments::delete),
    route("POST", "departments/:id/move", Permission("department:update"), departments::move_to),
    route("GET", "departments/:id/subtree", Permission("department:read"), departments::subtree),
    route("GET", "menus", Permission("menu:read"), menus::list),
    route("POST", "menus", Permission("menu:create"), menus::create),
    route("PUT", "menus/:id", Permission("menu:update"), menus::replace),
    route("DELETE", "menus/:id", Permission("menu:delete"), menus::delete),
    route("GET", "quotas", Permission("quota:read"), quotas::list),
    route("GET", "quotas/:user_id", Permission("quota:read"), quotas::get),
    route("PATCH", "quotas/:user_id", Permission("quota:update"), quotas::patch),
    route("GET", "tickets", Permission("ticket:read"), tickets::list),
    route("POST", "tickets", Permission("ticket:create"), tickets::create),
    route("GET", "tickets/:id", Permission("ticket:read"), tickets::get),
    route("PATCH", "tickets/:id", Permission("ticket:update"), tickets::patch),
    route("GET", "tickets/:id/replies", Permission("ticket:read"), tickets::replies),
    route("POST", "tickets/:id/replies", Permission("ticket:update"), tickets::reply),
    route("POST", "tickets/:id/status", Permission("ticket:update"), tickets::status_change),
    route("POST", "tickets/:id/assign", Permission("ticket:manage"), tickets::assign),
    route("POST", "tickets/:id/rating", Permission("ticket:update"), tickets::rate),
    route("GET", "audit-logs", Permission("audit_log:read"), audit::list),
    route("GET", "audit-logs/:id", Permission("audit_log:read"), audit::get),
    route("POST", "internal/users", Service(&["auth"]), internal::create_user),
    route("POST", "internal/admin-grants/apply", SCHEDULER, internal::apply_admin_grants),
    route("POST", "internal/outbox/publish", SCHEDULER, endpoints::publish),
    route("GET", "internal/events", Service(&["auth", "notification", "device", "billing"]), endpoints::feed),
    route("POST", "internal/events/prune", SCHEDULER, endpoints::prune),
    route("GET", "internal/identities", Service(&["auth", "device", "billing"]), internal::identities),
    route("GET", "internal/tenants/:id/limits", Service(&["device"]), tenants::limits),
    route("POST", "internal/events/catch-up", SCHEDULER, endpoints::catch_up::<Error, Consumer>),
    route("GET", "admin/dead-letters", Permission("event:manage"), endpoints::dead_letters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), endpoints::replay::<Error, Consumer>),
    route("POST", "internal/tenants/expire", SCHEDULER, tenants::expire),
    route("POST", "internal/quotas/reservations", QUOTA_USERS, quotas::reserve),
    route("POST", "internal/quotas/reservations/:id/commit", QUOTA_USERS, quotas::commit),
    route("POST", "internal/quotas/reservations/:id/release", QUOTA_USERS, quotas::release),
    route("POST", "internal/quotas/expire", SCHEDULER, quotas::expire),
    route("POST", "internal/quotas/usage", QUOTA_USERS, quotas::report_usage),
    route("POST", "internal/quotas/grants", Service(&["billing"]), quotas::grant),
    route("POST", "internal/quotas/grants/:id/activate", Service(&["billing"]), quotas::activate_grant),
    route("POST", "internal/quotas/grants/:id/revoke", Service(&["billing"]), quotas::revoke_grant),
    route("POST", "internal/quotas/roll", SCHEDULER, quotas::roll),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        platform::router::assert_documented(include_str!("../../../docs/api.md"), "user", ROUTES);
    }
}
