//! The Redis trigger, as Spin runs it (`spin-trigger-redis`): plain
//! SUBSCRIBE, one subscriber per server address. Each message goes to a
//! fresh instance of every component subscribed to its channel, those
//! concurrently; the next message of that server is taken only when every
//! one of them has finished, so messages of one subscriber are handled one
//! at a time. A failed handler is logged and not retried; messages published
//! while nobody listens are gone (the outbox feed, not pub/sub, is what
//! guarantees delivery). Like Spin, the trigger does not reconnect: when its
//! connection to a server ends, the trigger ends and the host stops ("A
//! trigger exited unexpectedly"), for a supervisor to restart.

use crate::app::App;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// channel -> components subscribed to it.
type Channels = BTreeMap<String, Vec<String>>;

/// Subscribes to every `[[trigger.redis]]` channel, grouped by address, and
/// returns once every address has subscribed, so that nothing published
/// after start-up is missed. A server that cannot be reached fails the
/// start, as in Spin. Each returned task ends when its connection ends.
pub async fn start(
    app: &Arc<App>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut plan: BTreeMap<String, Channels> = BTreeMap::new();
    for t in &app.manifest.redis {
        let template = t
            .address
            .clone()
            .or_else(|| app.manifest.redis_address.clone())
            .expect("checked by manifest");
        let address = app.variables.render(&template)?;
        plan.entry(address)
            .or_default()
            .entry(t.channel.clone())
            .or_default()
            .push(t.component.clone());
    }
    let mut tasks = Vec::new();
    for (address, channels) in plan {
        let client = redis::Client::open(address.as_str())?;
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .map_err(|e| anyhow::anyhow!("Redis trigger failed to connect to {address}: {e}"))?;
        for channel in channels.keys() {
            pubsub.subscribe(channel).await?;
        }
        tracing::info!(address = %address, channels = ?channels.keys().collect::<Vec<_>>(), "redis trigger subscribed");
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    m = stream.next() => m,
                    _ = shutdown.changed() => return Ok(()),
                };
                let Some(msg) = msg else {
                    anyhow::bail!("disconnected from {address}");
                };
                let channel = msg.get_channel_name().to_string();
                let payload = msg.get_payload_bytes().to_vec();
                let components = channels.get(&channel).cloned().unwrap_or_default();
                // Every subscribed component concurrently, then the next message.
                futures::future::join_all(
                    components
                        .iter()
                        .map(|component| handle(&app, component, &channel, payload.clone())),
                )
                .await;
            }
        }));
    }
    Ok(tasks)
}

async fn handle(app: &Arc<App>, component: &str, channel: &str, payload: Vec<u8>) {
    let started = std::time::Instant::now();
    match app.handle_redis(component, payload).await {
        Ok(()) => {
            tracing::info!(component = %component, channel = %channel, ms = started.elapsed().as_secs_f64() * 1000.0, "redis message handled")
        }
        Err(e) => {
            tracing::error!(component = %component, channel = %channel, error = format!("{e:#}"), "redis handler failed")
        }
    }
}
