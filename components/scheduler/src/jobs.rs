//! The job table: which internal endpoint runs on which tick. The cron
//! trigger fires every 5 seconds; each job runs when its period divides the
//! tick's timestamp.

/// A periodic job.
pub struct Job {
    /// Name for logs.
    pub name: &'static str,
    /// Period in seconds (a multiple of the trigger's 5 s).
    pub every_secs: u64,
    /// Internal endpoint that does the work.
    pub url: &'static str,
}

/// Every job. The outbox relay republishes events that a crash between commit
/// and publish left pending (see docs/events.md).
pub const JOBS: &[Job] = &[Job {
    name: "user.outbox.publish",
    every_secs: 5,
    url: "http://user.spin.internal/api/v1/user/internal/outbox/publish",
}];

/// Jobs due at a timestamp.
pub fn due(timestamp: u64) -> impl Iterator<Item = &'static Job> {
    JOBS.iter().filter(move |j| timestamp % j.every_secs < 5)
}

/// Runs the due jobs; one job's failure is logged and does not stop the others.
pub async fn run_due(timestamp: u64) -> Result<(), String> {
    let token =
        spin_sdk::variables::get("internal_token").map_err(|e| format!("internal_token: {e}"))?;
    let mut failed = Vec::new();
    for job in due(timestamp) {
        let req = spin_sdk::http::Request::post(job.url, Vec::<u8>::new())
            .header("x-internal-token", token.clone())
            .build();
        let outcome: Result<spin_sdk::http::Response, _> = spin_sdk::http::send(req).await;
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
        assert_eq!(due(10).count(), JOBS.len());
        assert!(JOBS
            .iter()
            .all(|j| j.every_secs % 5 == 0 && j.every_secs > 0));
    }
}
