//! The job table: which internal endpoint runs on which tick. The cron
//! trigger fires every 5 seconds; each job runs when its period divides the
//! tick's timestamp.
//!
//! Spin's cron trigger cannot chain to other components (it refuses an app
//! whose cron component lists a `*.spin.internal` host), so jobs are plain
//! outbound HTTP requests to the app's own address (`app_url`), each with
//! the scheduler's service token; the job endpoints accept that token and
//! no other.

/// A periodic job.
pub struct Job {
    /// Name for logs.
    pub name: &'static str,
    /// Period in seconds (a multiple of the trigger's 5 s).
    pub every_secs: u64,
    /// Internal endpoint that does the work, below `app_url`.
    pub path: &'static str,
}

/// Every job. The outbox relays republish events that a crash between commit
/// and publish left pending; catch-up pulls each consumer's sources from its
/// cursor and retries failed events; prune applies the retention window
/// (docs/events.md); the quota jobs expire unconfirmed reservations and
/// reset daily and monthly usage (idempotent: each resets only quotas whose
/// day or month has passed, so a missed tick is caught up by the next).
pub const JOBS: &[Job] = &[
    Job {
        name: "user.outbox.publish",
        every_secs: 5,
        path: "/api/v1/user/internal/outbox/publish",
    },
    Job {
        name: "auth.outbox.publish",
        every_secs: 5,
        path: "/api/v1/auth/internal/outbox/publish",
    },
    Job {
        name: "user.events.catch-up",
        every_secs: 5,
        path: "/api/v1/user/internal/events/catch-up",
    },
    Job {
        name: "user.quotas.expire",
        every_secs: 30,
        path: "/api/v1/user/internal/quotas/expire",
    },
    Job {
        name: "user.quotas.roll",
        every_secs: 60,
        path: "/api/v1/user/internal/quotas/roll",
    },
    Job {
        name: "auth.events.catch-up",
        every_secs: 5,
        path: "/api/v1/auth/internal/events/catch-up",
    },
    Job {
        name: "notification.events.catch-up",
        every_secs: 5,
        path: "/api/v1/notification/internal/events/catch-up",
    },
    Job {
        name: "user.admin-grants.apply",
        every_secs: 5,
        path: "/api/v1/user/internal/admin-grants/apply",
    },
    Job {
        name: "device.nodes.liveness",
        every_secs: 5,
        path: "/api/v1/device/internal/nodes/liveness",
    },
    Job {
        name: "device.batches.advance",
        every_secs: 5,
        path: "/api/v1/device/internal/batches/advance",
    },
    Job {
        name: "device.pools.replenish",
        every_secs: 5,
        path: "/api/v1/device/internal/pools/replenish",
    },
    Job {
        name: "device.failover",
        every_secs: 5,
        path: "/api/v1/device/internal/devices/failover",
    },
    Job {
        name: "device.snapshots.maintain",
        every_secs: 5,
        path: "/api/v1/device/internal/snapshots/maintain",
    },
    Job {
        name: "device.commands.relay",
        every_secs: 5,
        path: "/api/v1/device/internal/commands/relay",
    },
    Job {
        name: "device.operations.expire",
        every_secs: 5,
        path: "/api/v1/device/internal/operations/expire",
    },
    Job {
        name: "device.devices.reconcile",
        every_secs: 10,
        path: "/api/v1/device/internal/devices/reconcile",
    },
    Job {
        name: "device.devices.lifecycle",
        every_secs: 5,
        path: "/api/v1/device/internal/devices/lifecycle",
    },
    Job {
        name: "device.claims.settle",
        every_secs: 30,
        path: "/api/v1/device/internal/claims/settle",
    },
    Job {
        name: "device.outbox.publish",
        every_secs: 5,
        path: "/api/v1/device/internal/outbox/publish",
    },
    Job {
        name: "device.events.catch-up",
        every_secs: 5,
        path: "/api/v1/device/internal/events/catch-up",
    },
    Job {
        name: "device.events.prune",
        every_secs: 3600,
        path: "/api/v1/device/internal/events/prune",
    },
    Job {
        name: "app.uploads.expire",
        every_secs: 60,
        path: "/api/v1/app/internal/uploads/expire",
    },
    Job {
        name: "app.outbox.publish",
        every_secs: 5,
        path: "/api/v1/app/internal/outbox/publish",
    },
    Job {
        name: "app.events.catch-up",
        every_secs: 5,
        path: "/api/v1/app/internal/events/catch-up",
    },
    Job {
        name: "app.events.prune",
        every_secs: 3600,
        path: "/api/v1/app/internal/events/prune",
    },
    Job {
        name: "billing.metering.tick",
        every_secs: 60,
        path: "/api/v1/billing/internal/metering/tick",
    },
    Job {
        name: "billing.orders.advance",
        every_secs: 10,
        path: "/api/v1/billing/internal/orders/advance",
    },
    Job {
        name: "billing.invoices.run",
        every_secs: 3600,
        path: "/api/v1/billing/internal/invoices/run",
    },
    Job {
        name: "billing.balances.enforce",
        every_secs: 60,
        path: "/api/v1/billing/internal/balances/enforce",
    },
    Job {
        name: "billing.webhooks.prune",
        every_secs: 3600,
        path: "/api/v1/billing/internal/webhooks/prune",
    },
    Job {
        name: "billing.outbox.publish",
        every_secs: 5,
        path: "/api/v1/billing/internal/outbox/publish",
    },
    Job {
        name: "billing.events.catch-up",
        every_secs: 5,
        path: "/api/v1/billing/internal/events/catch-up",
    },
    Job {
        name: "billing.events.prune",
        every_secs: 3600,
        path: "/api/v1/billing/internal/events/prune",
    },
    Job {
        name: "user.tenants.expire",
        every_secs: 300,
        path: "/api/v1/user/internal/tenants/expire",
    },
    Job {
        name: "user.events.prune",
        every_secs: 3600,
        path: "/api/v1/user/internal/events/prune",
    },
    Job {
        name: "auth.events.prune",
        every_secs: 3600,
        path: "/api/v1/auth/internal/events/prune",
    },
    Job {
        name: "notification.events.prune",
        every_secs: 3600,
        path: "/api/v1/notification/internal/events/prune",
    },
];

/// Jobs due at a timestamp.
pub fn due(timestamp: u64) -> impl Iterator<Item = &'static Job> {
    JOBS.iter().filter(move |j| timestamp % j.every_secs < 5)
}

/// Runs the due jobs; one job's failure is logged and does not stop the others.
pub fn run_due(timestamp: u64) -> Result<(), String> {
    let var = |name: &str| spin_sdk::variables::get(name).map_err(|e| format!("{name}: {e}"));
    let base = var("app_url")?;
    let key =
        access::service::ComponentKey::parse(&var("component_key")?).map_err(|e| e.to_string())?;
    let token = key.service_token("scheduler");
    let mut failed = Vec::new();
    for job in due(timestamp) {
        let url = format!("{}{}", base.trim_end_matches('/'), job.path);
        let req = spin_sdk::http::Request::post(url, Vec::<u8>::new())
            .header(access::service::HEADER, token.clone())
            .header("x-request-id", format!("job:{}:{timestamp}", job.name))
            .build();
        let outcome: Result<spin_sdk::http::Response, _> =
            spin_sdk::http::run(spin_sdk::http::send(req));
        match outcome {
            Ok(resp) if (200..300).contains(resp.status()) => {
                println!(
                    "{}",
                    serde_json::json!({"level": "info", "job": job.name, "status": resp.status(), "result": String::from_utf8_lossy(resp.body())})
                );
            }
            Ok(resp) => failed.push(format!("{}: status {}", job.name, resp.status())),
            Err(e) => failed.push(format!("{}: {e}", job.name)),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_is_due_on_ticks_of_its_period() {
        assert_eq!(due(3600).count(), JOBS.len());
        assert_eq!(
            due(5).count(),
            JOBS.iter().filter(|j| j.every_secs == 5).count()
        );
        assert!(JOBS
            .iter()
            .all(|j| j.every_secs % 5 == 0 && j.every_secs > 0));
    }
}
