//! The Redis trigger: plain SUBSCRIBE, as in Spin. Each message goes to a fresh
//! instance of every component subscribed to its channel; a failed handler is
//! logged and not retried; messages published while the host is away are gone
//! (the outbox feed, not pub/sub, is what guarantees delivery).

use crate::app::App;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// channel -> components subscribed to it.
type Channels = BTreeMap<String, Vec<String>>;

/// Subscribes to every `[[trigger.redis]]` channel, grouped by address, and
/// reconnects with backoff when Redis goes away. Returns once every address
/// has subscribed (or failed a first time, which is logged and retried), so
/// that nothing published after start-up is missed.
pub async fn start(
    app: &Arc<App>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
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
    let mut ready = Vec::new();
    for (address, channels) in plan {
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        ready.push(ready_rx);
        tasks.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut ready_tx = Some(ready_tx);
            loop {
                tokio::select! {
                    r = subscribe_loop(&app, &address, &channels, &mut ready_tx) => {
                        if let Err(e) = r {
                            tracing::warn!(address = %address, error = format!("{e:#}"), "redis trigger disconnected; reconnecting");
                        }
                    }
                    _ = shutdown.changed() => return,
                }
                // A first failure still lets start-up finish; retries go on.
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }));
    }
    for r in ready {
        let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
    }
    Ok(tasks)
}

async fn subscribe_loop(
    app: &Arc<App>,
    address: &str,
    channels: &Channels,
    ready: &mut Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(address)?;
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in channels.keys() {
        pubsub.subscribe(channel).await?;
    }
    tracing::info!(address = %address, channels = ?channels.keys().collect::<Vec<_>>(), "redis trigger subscribed");
    if let Some(tx) = ready.take() {
        let _ = tx.send(());
    }
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let channel = msg.get_channel_name().to_string();
        let payload = msg.get_payload_bytes().to_vec();
        for component in channels.get(&channel).into_iter().flatten() {
            let app = app.clone();
            let component = component.clone();
            let payload = payload.clone();
            let channel = channel.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                match app.handle_redis(&component, payload).await {
                    Ok(()) => {
                        tracing::info!(component = %component, channel = %channel, ms = started.elapsed().as_secs_f64() * 1000.0, "redis message handled")
                    }
                    Err(e) => {
                        tracing::error!(component = %component, channel = %channel, error = format!("{e:#}"), "redis handler failed")
                    }
                }
            });
        }
    }
    anyhow::bail!("subscription stream ended")
}
