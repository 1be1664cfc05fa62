//! The whole route table of `billing`, below `/api/v1/billing`, as data:
//! one row per route with its guard and handler (`platform::router`).
//! Public: `health`, `health/live`, and the providers' `webhooks/stripe`
//! and `webhooks/alipay` (their signatures are their authentication). Internal routes accept only the
//! service tokens named in their guard. `docs/api.md` lists the same table.

use crate::consumer::Consumer;
use crate::error::Error;
use crate::handlers::{
    balances, invoices, metering, orders, payments, plans, postings, refunds, rules, transactions,
};
use platform::auth::KeyVerifier;
use platform::consumer::endpoints;
use platform::router::{route, Component, Guard, Guard::*, Route};

/// Scheduler jobs.
const SCHEDULER: Guard = Service(&["scheduler"]);

/// The component: its routes, and API keys verified by chaining to `auth`.
pub const COMPONENT: Component<Error> = Component {
    name: "billing",
    routes: ROUTES,
    agent: None,
    keys: KeyVerifier::Chained,
};

/// The route table.
#[rustfmt::skip]
pub const ROUTES: &[Route<Error>] = &[
    route("GET", "health", Public, platform::http::health),
    route("GET", "health/live", Public, platform::http::live),
    route("GET", "balance", Permission("billing:read"), balances::get),
    route("GET", "transactions", Permission("billing:read"), transactions::list),
    route("GET", "transactions/export", Permission("billing:read"), transactions::export),
    route("GET", "transactions/:id", Permission("billing:read"), transactions::get),
    route("GET", "statistics", Permission("billing:read"), transactions::statistics),
    route("GET", "usage", Permission("billing:read"), metering::list),
    route("GET", "plans", Permission("billing:read"), plans::list),
    route("POST", "plans", Permission("billing:manage"), plans::create),
    route("GET", "plans/:id", Permission("billing:read"), plans::get),
    route("PATCH", "plans/:id", Permission("billing:manage"), plans::patch),
    route("POST", "orders", Permission("billing:purchase"), orders::create),
    route("GET", "orders", Permission("billing:read"), orders::list),
    route("GET", "orders/:id", Permission("billing:read"), orders::get),
    route("POST", "orders/:id/cancel", Permission("billing:purchase"), orders::cancel),
    route("POST", "orders/:id/refunds", Permission("billing:manage"), refunds::create),
    route("POST", "refunds/:id/approve", Permission("billing:manage"), refunds::approve),
    route("POST", "recharges", Permission("billing:purchase"), payments::top_up),
    route("GET", "payments", Permission("billing:read"), payments::list),
    route("GET", "payments/:id", Permission("billing:read"), payments::get),
    route("POST", "webhooks/stripe", Public, payments::stripe_webhook),
    route("POST", "webhooks/alipay", Public, payments::alipay_webhook),
    route("GET", "admin/webhooks", Permission("billing:manage"), payments::webhooks),
    route("GET", "rules", Permission("billing:read"), rules::list),
    route("POST", "rules", Permission("billing:manage"), rules::create),
    route("POST", "rules/calculate", Permission("billing:read"), rules::calculate),
    route("GET", "rules/:id", Permission("billing:read"), rules::get),
    route("PATCH", "rules/:id", Permission("billing:manage"), rules::patch),
    route("GET", "invoices", Permission("billing:read"), invoices::list),
    route("GET", "invoices/:id", Permission("billing:read"), invoices::get),
    route("GET", "invoices/:id/document", Permission("billing:read"), invoices::document),
    route("POST", "invoices/:id/void", Permission("billing:manage"), invoices::void),
    route("GET", "tenants/:id/statement", Permission("billing:read"), invoices::tenant_statement),
    route("GET", "tenants/:id/statement/document", Permission("billing:read"), invoices::tenant_statement_document),
    route("GET", "reports/revenue", Permission("billing:manage"), invoices::revenue),
    route("GET", "reports/usage", Permission("billing:manage"), invoices::usage),
    route("POST", "admin/postings", Permission("billing:adjust"), postings::create),
    route("PUT", "admin/credit-limits/:user_id", Permission("billing:adjust"), balances::set_credit_limit),
    route("GET", "admin/ledger/check", Permission("billing:manage"), transactions::check),
    route("POST", "internal/metering/tick", SCHEDULER, metering::tick),
    route("POST", "internal/orders/advance", SCHEDULER, orders::advance_job),
    route("POST", "internal/invoices/run", SCHEDULER, invoices::run),
    route("POST", "internal/balances/enforce", SCHEDULER, balances::enforce),
    route("POST", "internal/webhooks/prune", SCHEDULER, payments::prune),
    route("GET", "internal/suspensions", Service(&["device"]), balances::suspensions),
    route("POST", "internal/outbox/publish", SCHEDULER, endpoints::publish),
    route("GET", "internal/events", Service(&["notification", "device"]), endpoints::feed),
    route("POST", "internal/events/prune", SCHEDULER, endpoints::prune),
    route("POST", "internal/events/catch-up", SCHEDULER, endpoints::catch_up::<Error, Consumer>),
    route("GET", "admin/dead-letters", Permission("event:manage"), endpoints::dead_letters),
    route("POST", "admin/dead-letters/:id/replay", Permission("event:manage"), endpoints::replay::<Error, Consumer>),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_lists_exactly_this_route_table() {
        platform::router::assert_documented(
            include_str!("../../../docs/api.md"),
            "billing",
            ROUTES,
        );
    }
}
