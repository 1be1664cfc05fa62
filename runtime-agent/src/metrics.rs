//! Prometheus metrics in the text exposition format, written by hand to keep
//! the dependency list short, and the small HTTP listener that serves them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Every metric of the agent.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconcile passes finished.
    pub reconcile_passes: AtomicU64,
    /// Total time in reconcile passes, microseconds.
    pub reconcile_micros: AtomicU64,
    /// Device actions taken.
    pub device_actions: AtomicU64,
    /// Device actions that failed.
    pub device_action_failures: AtomicU64,
    /// Commands executed (not counting redeliveries).
    pub commands: AtomicU64,
    /// Redelivered commands answered from the ledger.
    pub commands_deduplicated: AtomicU64,
    /// Messages refused (bad signature, stale, wrong node, malformed).
    pub messages_rejected: AtomicU64,
    /// Heartbeats delivered to the control plane.
    pub heartbeats: AtomicU64,
    /// Report requests the control plane accepted.
    pub reports_sent: AtomicU64,
    /// Report requests that failed (transport error or a non-2xx answer) and are retried.
    pub report_failures: AtomicU64,
    /// Heartbeats and statuses dropped from a full report queue, and messages too large to report.
    pub report_messages_dropped: AtomicU64,
    /// Messages waiting in the report queue (a gauge).
    pub report_queue_messages: AtomicU64,
    /// Desired states pulled, authenticated and merged.
    pub desired_state_pulls: AtomicU64,
    /// Failed desired-state pulls.
    pub desired_state_failures: AtomicU64,
    /// Subscriptions to the command channel established (the first and every resubscription).
    pub command_subscriptions: AtomicU64,
    /// Subscriptions to the command channel that broke.
    pub command_subscriptions_lost: AtomicU64,
    /// Attempts to subscribe to the command channel that failed (Redis unreachable, or refused by its ACL).
    pub command_subscription_failures: AtomicU64,
    /// Operation results removed from the ledger after the retention.
    pub ledger_results_removed: AtomicU64,
    /// Operation results whose payload was dropped after the replay window.
    pub ledger_payloads_expired: AtomicU64,
    /// Containers adopted after a restart.
    pub containers_adopted: AtomicU64,
    /// Devices per status, as of the last pass.
    pub devices_by_status: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            "cloudphone_agent_reconcile_passes_total",
            "Reconcile passes finished.",
            &self.reconcile_passes,
        );
        counter(
            "cloudphone_agent_device_actions_total",
            "Device actions taken.",
            &self.device_actions,
        );
        counter(
            "cloudphone_agent_device_action_failures_total",
            "Device actions that failed.",
            &self.device_action_failures,
        );
        counter(
            "cloudphone_agent_commands_total",
            "Commands executed.",
            &self.commands,
        );
        counter(
            "cloudphone_agent_commands_deduplicated_total",
            "Redelivered commands answered from the ledger.",
            &self.commands_deduplicated,
        );
        counter(
            "cloudphone_agent_messages_rejected_total",
            "Messages refused as forged, stale or malformed.",
            &self.messages_rejected,
        );
        counter(
            "cloudphone_agent_heartbeats_total",
            "Heartbeats delivered to the control plane.",
            &self.heartbeats,
        );
        counter(
            "cloudphone_agent_reports_sent_total",
            "Report requests the control plane accepted.",
            &self.reports_sent,
        );
        counter(
            "cloudphone_agent_report_failures_total",
            "Report requests that failed and are retried.",
            &self.report_failures,
        );
        counter(
            "cloudphone_agent_report_messages_dropped_total",
            "Heartbeats and statuses dropped from a full report queue, and messages too large to report.",
            &self.report_messages_dropped,
        );
        counter(
            "cloudphone_agent_desired_state_pulls_total",
            "Desired states pulled, authenticated and merged.",
            &self.desired_state_pulls,
        );
        counter(
            "cloudphone_agent_desired_state_failures_total",
            "Failed desired-state pulls.",
            &self.desired_state_failures,
        );
        counter(
            "cloudphone_agent_command_subscriptions_total",
            "Subscriptions to the command channel established.",
            &self.command_subscriptions,
        );
        counter(
            "cloudphone_agent_command_subscriptions_lost_total",
            "Subscriptions to the command channel that broke.",
            &self.command_subscriptions_lost,
        );
        counter(
            "cloudphone_agent_command_subscription_failures_total",
            "Attempts to subscribe to the command channel that failed.",
            &self.command_subscription_failures,
        );
        counter(
            "cloudphone_agent_ledger_results_removed_total",
            "Operation results removed after the retention.",
            &self.ledger_results_removed,
        );
        counter(
            "cloudphone_agent_ledger_payloads_expired_total",
            "Operation results whose payload was dropped after the replay window.",
            &self.ledger_payloads_expired,
        );
        counter(
            "cloudphone_agent_containers_adopted_total",
            "Containers adopted after a restart.",
            &self.containers_adopted,
        );
        let micros = self.reconcile_micros.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP cloudphone_agent_reconcile_seconds_total Time spent in reconcile passes.\n# TYPE cloudphone_agent_reconcile_seconds_total counter\ncloudphone_agent_reconcile_seconds_total {:.6}",
            micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP cloudphone_agent_report_queue_messages Messages waiting to be reported.\n# TYPE cloudphone_agent_report_queue_messages gauge\ncloudphone_agent_report_queue_messages {}",
            self.report_queue_messages.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP cloudphone_agent_devices Devices by status.\n# TYPE cloudphone_agent_devices gauge");
        for (status, n) in self.devices_by_status.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "cloudphone_agent_devices{{status=\"{status}\"}} {n}");
        }
        out
    }
}

/// Serves `GET /metrics` (and `/healthz`) until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = shutdown.changed() => break,
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let resp = match req.uri().path() {
                            "/metrics" => Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(metrics.render()))),
                            "/healthz" => {
                                Response::builder().body(Full::new(Bytes::from_static(b"ok\n")))
                            }
                            _ => Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new())),
                        };
                        resp
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_counters_and_gauges() {
        let m = Metrics::default();
        Metrics::inc(&m.messages_rejected);
        m.devices_by_status
            .lock()
            .unwrap()
            .insert("ready".into(), 3);
        let text = m.render();
        assert!(text.contains("cloudphone_agent_messages_rejected_total 1"));
        assert!(text.contains("cloudphone_agent_devices{status=\"ready\"} 3"));
    }
}
