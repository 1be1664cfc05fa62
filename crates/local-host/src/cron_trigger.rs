//! The cron trigger, as the Spin cron plugin runs it: each `[[trigger.cron]]`
//! fires a fresh instance at every match of its seconds-first expression.

use crate::app::App;
use anyhow::{Context, Result};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::watch;

/// Starts one timer task per cron trigger.
pub fn start(
    app: &Arc<App>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for t in &app.manifest.cron {
        let schedule = cron::Schedule::from_str(&t.cron_expression).with_context(|| {
            format!(
                "invalid cron_expression {:?} for {:?}",
                t.cron_expression, t.component
            )
        })?;
        let app = app.clone();
        let component = t.component.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            for next in schedule.upcoming(chrono::Utc) {
                let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                let started = std::time::Instant::now();
                match app.handle_cron(&component, next.timestamp() as u64).await {
                    Ok(()) => tracing::info!(component = %component, ms = started.elapsed().as_secs_f64() * 1000.0, "cron job ran"),
                    Err(e) => tracing::error!(component = %component, error = format!("{e:#}"), "cron job failed"),
                }
            }
        }));
    }
    Ok(tasks)
}
