//! Reporting to the control plane (protocol version 2): everything the agent
//! tells the control plane — heartbeats, device status changes and command
//! results — waits in one bounded queue and goes out in signed batches as
//! `POST {AGENT_API}/{node}/reports`, retried until the control plane takes
//! them.
//!
//! The queue keeps command results until they are delivered, however long
//! that takes, and never drops one. Device statuses are kept too, unless the
//! queue is full. Heartbeats are replaceable: each one carries the node's
//! whole state, so only the newest queued heartbeat is kept.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{
    self, CommandResult, DeviceStatusChange, Envelope, Heartbeat, NodeSecret, MAX_REPORT_BYTES,
    MAX_REPORT_MESSAGES,
};
use crate::spec::NodeId;

/// Most messages the queue holds before it drops heartbeats and statuses.
pub const QUEUE_MAX_MESSAGES: usize = 4096;
/// Most bytes (of signed JSON) the queue holds before it drops heartbeats
/// and statuses. Command results are never dropped; a command whose result
/// finds the queue full of results waits for room, still holding its
/// command slot, so no more than 32 results (the slots) are ever held beyond
/// the bound, and commands stop running once the slots are taken.
pub const QUEUE_MAX_BYTES: usize = 64 << 20;
/// How long shutdown waits for the queue to drain.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
/// First wait after a failed report; it doubles with every further failure.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Bytes of `{"messages":[` and `]}` around the messages of a report body.
const BODY_FRAME: usize = r#"{"messages":[]}"#.len();

/// A message waiting to be reported.
#[derive(Debug)]
pub enum Outgoing {
    /// A device status change.
    Status(DeviceStatusChange),
    /// A command result.
    Result(CommandResult),
    /// A heartbeat.
    Heartbeat(Box<Heartbeat>),
}

impl Outgoing {
    fn class(&self) -> Class {
        match self {
            Self::Status(_) => Class::Status,
            Self::Result(_) => Class::Result,
            Self::Heartbeat(_) => Class::Heartbeat,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Status(_) => "device_status",
            Self::Result(_) => "command_result",
            Self::Heartbeat(_) => "heartbeat",
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Self::Status(s) => serde_json::to_value(s),
            Self::Result(r) => serde_json::to_value(r),
            Self::Heartbeat(h) => serde_json::to_value(h),
        }
        .expect("messages serialize")
    }
}

/// What the queue may drop, in the order it drops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Heartbeat,
    Status,
    Result,
}

/// One signed message, serialized once when queued so that a retry sends
/// the very same bytes (and the same envelope id) again.
#[derive(Debug)]
struct Entry {
    seq: u64,
    class: Class,
    json: String,
}

/// The limits of a queue; [`Limits::default`] is the agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most messages held.
    pub max_messages: usize,
    /// Most bytes held.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_messages: QUEUE_MAX_MESSAGES,
            max_bytes: QUEUE_MAX_BYTES,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Entry>,
    bytes: usize,
    results: usize,
    result_bytes: usize,
    next_seq: u64,
}

impl Inner {
    fn push(&mut self, class: Class, json: String) {
        self.next_seq += 1;
        self.bytes += json.len();
        if class == Class::Result {
            self.results += 1;
            self.result_bytes += json.len();
        }
        self.entries.push_back(Entry {
            seq: self.next_seq,
            class,
            json,
        });
    }

    fn remove(&mut self, index: usize) -> Entry {
        let e = self.entries.remove(index).expect("index in range");
        self.bytes -= e.json.len();
        if e.class == Class::Result {
            self.results -= 1;
            self.result_bytes -= e.json.len();
        }
        e
    }

    fn over(&self, limits: Limits) -> bool {
        self.entries.len() > limits.max_messages || self.bytes > limits.max_bytes
    }

    /// Drops the oldest heartbeats, then the oldest statuses, until the
    /// queue is within its limits or holds nothing but results. Returns how
    /// many messages were dropped.
    fn shed(&mut self, limits: Limits) -> usize {
        let mut dropped = 0;
        for class in [Class::Heartbeat, Class::Status] {
            while self.over(limits) {
                let Some(i) = self.entries.iter().position(|e| e.class == class) else {
                    break;
                };
                self.remove(i);
                dropped += 1;
            }
        }
        dropped
    }
}

/// One report request: a prefix of the queue.
#[derive(Debug)]
pub struct Batch {
    /// The request body, a serialized [`protocol::Reports`].
    pub body: Vec<u8>,
    /// How many messages it carries.
    pub messages: usize,
    /// How many of them are heartbeats.
    pub heartbeats: usize,
    last_seq: u64,
}

/// The queue of messages waiting to be reported. Cheap to push to from any
/// task; one reporter task drains it.
pub struct ReportQueue {
    node: NodeId,
    secret: NodeSecret,
    limits: Limits,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    /// Wakes the reporter when something is queued.
    queued: Notify,
    /// Wakes results waiting for room when something was delivered.
    room: Notify,
    /// Results waiting for room.
    waiting: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for ReportQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportQueue")
            .field("node", &self.node)
            .field("limits", &self.limits)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl ReportQueue {
    /// An empty queue whose messages are signed for `node` with `secret`.
    pub fn new(node: NodeId, secret: NodeSecret, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            node,
            secret,
            limits,
            metrics,
            inner: Mutex::default(),
            queued: Notify::new(),
            room: Notify::new(),
            waiting: Default::default(),
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Command results waiting for room in a full queue.
    pub fn results_waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The kinds of the waiting messages, oldest first; for tests.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.lock()
            .entries
            .iter()
            .map(|e| match e.class {
                Class::Heartbeat => "heartbeat",
                Class::Status => "device_status",
                Class::Result => "command_result",
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("report queue lock")
    }

    /// Signs and serializes a message. A message that could never fit in one
    /// report is not queued as it is: a command result becomes a failed
    /// result of the same operation (`result_too_large`), so the control
    /// plane still learns how the operation ended; anything else is dropped.
    fn seal(&self, msg: Outgoing) -> Option<(Class, String)> {
        let class = msg.class();
        let json = self.sign(msg.kind(), msg.body());
        if json.len() + BODY_FRAME <= MAX_REPORT_BYTES {
            return Some((class, json));
        }
        Metrics::inc(&self.metrics.report_messages_dropped);
        match msg {
            Outgoing::Result(r) => {
                tracing::warn!(operation = %r.operation_id, bytes = json.len(), "command result too large to report; reporting a failure instead");
                let failed = CommandResult {
                    operation_id: r.operation_id,
                    ok: false,
                    output: serde_json::Value::Null,
                    error_code: Some("result_too_large".into()),
                    error: Some(format!(
                        "result of {} bytes does not fit in one report of at most {MAX_REPORT_BYTES} bytes",
                        json.len()
                    )),
                    payload_expired: false,
                };
                let body = serde_json::to_value(failed).expect("results serialize");
                Some((class, self.sign("command_result", body)))
            }
            other => {
                tracing::warn!(
                    kind = other.kind(),
                    bytes = json.len(),
                    "message too large to report; dropped"
                );
                None
            }
        }
    }

    fn sign(&self, kind: &str, body: serde_json::Value) -> String {
        let env = Envelope::signed(&self.secret, &self.node, kind, body, Utc::now());
        serde_json::to_string(&env).expect("envelopes serialize")
    }

    /// Queues a message without waiting. A heartbeat replaces the heartbeat
    /// still queued; when the queue is over its limits the oldest heartbeats
    /// and then the oldest statuses are dropped. A result is always queued:
    /// use [`ReportQueue::push_result`] where waiting for room is possible.
    pub fn push(&self, msg: Outgoing) {
        let Some((class, json)) = self.seal(msg) else {
            return;
        };
        self.insert(class, json);
    }

    fn insert(&self, class: Class, json: String) {
        let dropped = {
            let mut inner = self.lock();
            if class == Class::Heartbeat {
                // Only the newest heartbeat matters; the old one may be in a
                // batch on the wire, which is harmless: a heartbeat
                // delivered twice is applied once, and this one follows it.
                while let Some(i) = inner
                    .entries
                    .iter()
                    .position(|e| e.class == Class::Heartbeat)
                {
                    inner.remove(i);
                }
            }
            inner.push(class, json);
            let dropped = inner.shed(self.limits);
            self.metrics
                .report_queue_messages
                .store(inner.entries.len() as u64, Ordering::Relaxed);
            dropped
        };
        if dropped > 0 {
            self.metrics
                .report_messages_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::warn!(
                dropped,
                "report queue full; dropped the oldest heartbeats and statuses"
            );
        }
        self.queued.notify_one();
    }

    /// Queues a command result, first waiting while the results already
    /// queued fill the queue's limits; results are never dropped, so this
    /// wait is what bounds them while the control plane is unreachable.
    pub async fn push_result(&self, result: CommandResult) {
        let Some((class, json)) = self.seal(Outgoing::Result(result)) else {
            return;
        };
        let mut counted = false;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a delivery between the check
            // and the wait still wakes this task.
            room.as_mut().enable();
            {
                let inner = self.lock();
                let fits = inner.results == 0
                    || (inner.results < self.limits.max_messages
                        && inner.result_bytes + json.len() <= self.limits.max_bytes);
                if fits {
                    drop(inner);
                    if counted {
                        self.waiting.fetch_sub(1, Ordering::SeqCst);
                    }
                    self.insert(class, json);
                    return;
                }
            }
            if !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::SeqCst);
            }
            room.await;
        }
    }

    /// Waits until something is queued.
    pub async fn wait_queued(&self) {
        loop {
            let queued = self.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            if !self.is_empty() {
                return;
            }
            queued.await;
        }
    }

    /// The oldest messages that fit in one report: at most
    /// [`MAX_REPORT_MESSAGES`] and [`MAX_REPORT_BYTES`]. They stay queued
    /// until [`ReportQueue::delivered`] is called for the batch.
    pub fn batch(&self) -> Option<Batch> {
        let inner = self.lock();
        let mut body = Vec::with_capacity(BODY_FRAME);
        body.extend_from_slice(br#"{"messages":["#);
        let (mut messages, mut heartbeats, mut last_seq) = (0, 0, 0);
        for e in inner.entries.iter().take(MAX_REPORT_MESSAGES) {
            let comma = usize::from(messages > 0);
            // Every message fits alone (see `seal`), so a batch is never empty.
            if messages > 0 && body.len() + comma + e.json.len() + 2 > MAX_REPORT_BYTES {
                break;
            }
            if comma == 1 {
                body.push(b',');
            }
            body.extend_from_slice(e.json.as_bytes());
            messages += 1;
            heartbeats += usize::from(e.class == Class::Heartbeat);
            last_seq = e.seq;
        }
        if messages == 0 {
            return None;
        }
        body.extend_from_slice(b"]}");
        Some(Batch {
            body,
            messages,
            heartbeats,
            last_seq,
        })
    }

    /// Removes a delivered batch. Messages are only ever appended, so what
    /// is left of the batch (a heartbeat may have been replaced meanwhile)
    /// is exactly the entries up to its last sequence number.
    pub fn delivered(&self, batch: &Batch) {
        {
            let mut inner = self.lock();
            while inner
                .entries
                .front()
                .is_some_and(|e| e.seq <= batch.last_seq)
            {
                inner.remove(0);
            }
            self.metrics
                .report_queue_messages
                .store(inner.entries.len() as u64, Ordering::Relaxed);
        }
        self.room.notify_waiters();
    }
}

/// Sends one report; `Ok` only on a 2xx answer.
async fn send(
    client: &reqwest::Client,
    cfg: &Config,
    path: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let resp = crate::agent::signed_request(client, cfg, reqwest::Method::POST, path, body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("control plane answered {status}"))
    }
}

/// Drains `queue` into `POST reports_path(node)` until `shutdown`, retrying
/// a refused batch with capped exponential backoff; then flushes what is
/// left for at most [`FLUSH_DEADLINE`].
pub async fn reporter(
    queue: Arc<ReportQueue>,
    cfg: Config,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = crate::agent::http_client();
    let path = protocol::reports_path(cfg.node_id.as_str());
    let mut backoff = BACKOFF_FIRST;
    'run: loop {
        tokio::select! {
            _ = queue.wait_queued() => {}
            _ = shutdown.changed() => break 'run,
        }
        while let Some(batch) = queue.batch() {
            let sent = tokio::select! {
                r = send(&client, &cfg, &path, batch.body.clone()) => r,
                _ = shutdown.changed() => break 'run,
            };
            match sent {
                Ok(()) => {
                    record_delivery(&metrics, &batch);
                    queue.delivered(&batch);
                    backoff = BACKOFF_FIRST;
                }
                Err(e) => {
                    Metrics::inc(&metrics.report_failures);
                    tracing::warn!(error = %e, messages = batch.messages, retry_in = ?backoff, "report failed; will retry");
                    let wait = tokio::time::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    tokio::select! {
                        _ = wait => {}
                        _ = shutdown.changed() => break 'run,
                    }
                }
            }
        }
    }
    flush(&queue, &client, &cfg, &path, &metrics).await;
}

fn record_delivery(metrics: &Metrics, batch: &Batch) {
    Metrics::inc(&metrics.reports_sent);
    metrics
        .heartbeats
        .fetch_add(batch.heartbeats as u64, Ordering::Relaxed);
}

/// Delivers what is queued at shutdown (the last results and statuses),
/// giving up at the deadline so a dead control plane cannot hold the stop.
async fn flush(
    queue: &ReportQueue,
    client: &reqwest::Client,
    cfg: &Config,
    path: &str,
    metrics: &Metrics,
) {
    let deadline = Instant::now() + FLUSH_DEADLINE;
    let mut backoff = BACKOFF_FIRST;
    while let Some(batch) = queue.batch() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, send(client, cfg, path, batch.body.clone())).await {
            Ok(Ok(())) => {
                record_delivery(metrics, &batch);
                queue.delivered(&batch);
            }
            Ok(Err(e)) => {
                Metrics::inc(&metrics.report_failures);
                if Instant::now() + backoff >= deadline {
                    tracing::warn!(error = %e, "report failed at shutdown");
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(_) => break,
        }
    }
    let left = queue.len();
    if left > 0 {
        tracing::warn!(
            messages = left,
            "reports not delivered before shutdown; results are kept in the operation ledger"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DeviceStatus, ObservedDevice, Registration, Usage};

    fn queue(limits: Limits) -> ReportQueue {
        ReportQueue::new(
            NodeId::parse("n1").unwrap(),
            NodeSecret::new(b"0123456789abcdef".to_vec()).unwrap(),
            Arc::new(Metrics::default()),
            limits,
        )
    }

    fn result(op: &str) -> Outgoing {
        Outgoing::Result(CommandResult {
            operation_id: op.into(),
            ok: true,
            output: serde_json::json!({"n": op}),
            error_code: None,
            error: None,
            payload_expired: false,
        })
    }

    fn status(device: &str) -> Outgoing {
        Outgoing::Status(DeviceStatusChange {
            device: ObservedDevice {
                device_id: device.into(),
                status: DeviceStatus::Ready,
                container_id: None,
                adb_port: None,
                spec_hash: None,
                generation: Some(1),
                reason: None,
            },
            previous: None,
        })
    }

    fn heartbeat(uptime_s: u64) -> Outgoing {
        Outgoing::Heartbeat(Box::new(Heartbeat {
            node: Registration {
                node_id: NodeId::parse("n1").unwrap(),
                address: "127.0.0.1".into(),
                capacity: crate::protocol::Capacity {
                    cpus: 1,
                    memory_mb: 1,
                    disk_mb: 1,
                    max_devices: 1,
                    gpus: vec![],
                },
                labels: Default::default(),
                agent_version: "0".into(),
            },
            usage: Usage {
                devices: 0,
                ready: 0,
                memory_used_mb: 0,
                disk_free_mb: 0,
                load1: 0.0,
            },
            devices: vec![],
            uptime_s,
        }))
    }

    fn bodies(q: &ReportQueue) -> Vec<serde_json::Value> {
        let batch = q.batch().unwrap();
        let reports: protocol::Reports = serde_json::from_slice(&batch.body).unwrap();
        reports.messages.into_iter().map(|e| e.body).collect()
    }

    #[test]
    fn queued_heartbeats_are_coalesced_to_the_newest() {
        let q = queue(Limits::default());
        q.push(heartbeat(1));
        q.push(status("d1"));
        q.push(heartbeat(2));
        q.push(result("op-1"));
        q.push(heartbeat(3));
        assert_eq!(q.kinds(), ["device_status", "command_result", "heartbeat"]);
        assert_eq!(bodies(&q)[2]["uptime_s"], 3);
    }

    #[test]
    fn a_full_queue_drops_heartbeats_then_the_oldest_statuses_and_never_results() {
        let q = queue(Limits {
            max_messages: 4,
            max_bytes: usize::MAX,
        });
        q.push(status("s1"));
        q.push(heartbeat(1));
        q.push(status("s2"));
        q.push(result("op-1"));
        q.push(status("s3"));
        // Five messages for four places: the heartbeat goes first.
        assert_eq!(
            q.kinds(),
            [
                "device_status",
                "device_status",
                "command_result",
                "device_status"
            ]
        );
        q.push(result("op-2"));
        q.push(result("op-3"));
        // Then the oldest statuses.
        let b = bodies(&q);
        assert_eq!(b.len(), 4);
        assert_eq!(b[0]["operation_id"], "op-1");
        assert_eq!(b[1]["device"]["device_id"], "s3");
        q.push(result("op-4"));
        q.push(result("op-5"));
        // Results are never dropped, even over the bound.
        let ops: Vec<_> = bodies(&q)
            .iter()
            .map(|b| b["operation_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ops, ["op-1", "op-2", "op-3", "op-4", "op-5"]);
        assert_eq!(q.metrics.report_messages_dropped.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_result_waits_for_room_while_results_fill_the_queue() {
        let q = Arc::new(queue(Limits {
            max_messages: 2,
            max_bytes: usize::MAX,
        }));
        q.push(result("op-1"));
        q.push(result("op-2"));
        let q2 = q.clone();
        let waiting = tokio::spawn(async move {
            let Outgoing::Result(r) = result("op-3") else {
                unreachable!()
            };
            q2.push_result(r).await;
        });
        // Once the result has found the queue full and waits, it is not queued.
        while q.results_waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.len(), 2, "a result was queued beyond the bound");
        assert!(!waiting.is_finished());
        let batch = q.batch().unwrap();
        q.delivered(&batch);
        waiting.await.unwrap();
        assert_eq!(q.kinds(), ["command_result"]);
    }

    #[test]
    fn batches_stop_at_the_message_limit_and_a_delivered_batch_leaves_the_rest() {
        let q = queue(Limits::default());
        for i in 0..MAX_REPORT_MESSAGES + 3 {
            q.push(result(&format!("op-{i}")));
        }
        let first = q.batch().unwrap();
        assert_eq!(first.messages, MAX_REPORT_MESSAGES);
        // Something queued while the batch is on the wire stays.
        q.push(heartbeat(1));
        q.delivered(&first);
        assert_eq!(q.len(), 4);
        let second = q.batch().unwrap();
        assert_eq!(second.messages, 4);
        assert_eq!(second.heartbeats, 1);
    }

    #[test]
    fn batches_stay_under_the_byte_limit_and_an_oversized_result_is_reported_as_a_failure() {
        let q = queue(Limits::default());
        let big = |op: &str| {
            Outgoing::Result(CommandResult {
                operation_id: op.into(),
                ok: true,
                output: serde_json::json!({"content_base64": "A".repeat(MAX_REPORT_BYTES / 3)}),
                error_code: None,
                error: None,
                payload_expired: false,
            })
        };
        for op in ["op-1", "op-2", "op-3", "op-4"] {
            q.push(big(op));
        }
        let batch = q.batch().unwrap();
        assert_eq!(batch.messages, 2);
        assert!(batch.body.len() <= MAX_REPORT_BYTES);

        let q = queue(Limits::default());
        q.push(Outgoing::Result(CommandResult {
            operation_id: "op-huge".into(),
            ok: true,
            output: serde_json::json!({"content_base64": "A".repeat(MAX_REPORT_BYTES)}),
            error_code: None,
            error: None,
            payload_expired: false,
        }));
        let b = bodies(&q);
        assert_eq!(b[0]["operation_id"], "op-huge");
        assert_eq!(b[0]["ok"], false);
        assert_eq!(b[0]["error_code"], "result_too_large");
    }

    /// A reporter for node `n1` against a fresh control-plane double.
    struct Rig {
        cp: crate::testkit::ControlPlane,
        queue: Arc<ReportQueue>,
        metrics: Arc<Metrics>,
        shutdown: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn rig() -> Rig {
        let secret = NodeSecret::new(b"0123456789abcdef".to_vec()).unwrap();
        let cp = crate::testkit::ControlPlane::start(secret.clone()).await;
        let node = NodeId::parse("n1").unwrap();
        let cfg = Config::with_defaults(
            node.clone(),
            secret.clone(),
            "redis://127.0.0.1:1/",
            &cp.url,
            std::path::Path::new("/nonexistent"),
        );
        let metrics = Arc::new(Metrics::default());
        let queue = Arc::new(ReportQueue::new(
            node,
            secret,
            metrics.clone(),
            Limits::default(),
        ));
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(reporter(queue.clone(), cfg, metrics.clone(), rx));
        Rig {
            cp,
            queue,
            metrics,
            shutdown,
            task,
        }
    }

    impl Rig {
        fn recorded(&self, kind: &str) -> Vec<serde_json::Value> {
            self.cp
                .state
                .messages
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.body.clone())
                .collect()
        }

        fn recorded_ops(&self) -> Vec<String> {
            self.recorded("command_result")
                .iter()
                .map(|b| b["operation_id"].as_str().unwrap().to_owned())
                .collect()
        }

        fn failures(&self) -> u64 {
            self.metrics.report_failures.load(Ordering::SeqCst)
        }

        async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done(self) {
                assert!(Instant::now() < deadline, "timed out waiting until {what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        fn set_down(&self, down: bool) {
            self.cp.state.down.store(down, Ordering::SeqCst);
        }
    }

    fn ops(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("op-{i}")).collect()
    }

    #[tokio::test]
    async fn the_reporter_retries_a_refused_batch_until_it_is_accepted_and_loses_nothing() {
        let mut rig = rig().await;
        rig.cp.state.refuse_reports.store(3, Ordering::SeqCst);
        for op in ops(0..10) {
            rig.queue.push(result(&op));
        }
        rig.queue.push(status("d1"));
        rig.until("everything is recorded", |r| r.queue.is_empty())
            .await;
        assert_eq!(rig.failures(), 3, "three refusals, then accepted");
        // Everything was queued before the first attempt: one batch, resent.
        assert_eq!(*rig.cp.state.report_sizes.lock().unwrap(), [11]);
        assert_eq!(
            rig.recorded_ops(),
            ops(0..10),
            "all results, in order, once"
        );
        assert_eq!(rig.recorded("device_status").len(), 1);
        assert_eq!(rig.cp.state.duplicates.load(Ordering::SeqCst), 0);
        assert_eq!(rig.cp.state.rejected_messages.load(Ordering::SeqCst), 0);
        rig.shutdown.send(true).unwrap();
        (&mut rig.task).await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_whose_answer_was_lost_is_resent_with_the_same_ids_and_applied_once() {
        let mut rig = rig().await;
        rig.cp.state.lose_report_answers.store(2, Ordering::SeqCst);
        for op in ops(0..5) {
            rig.queue.push(result(&op));
        }
        rig.until("everything is delivered", |r| r.queue.is_empty())
            .await;
        assert_eq!(rig.failures(), 2);
        // The control plane saw the batch three times under the same
        // envelope ids, so it applied each message once.
        let resent = rig.cp.state.duplicates.load(Ordering::SeqCst);
        assert!(resent >= 5, "the lost batch was resent: {resent}");
        assert_eq!(rig.recorded_ops(), ops(0..5));
        rig.shutdown.send(true).unwrap();
        (&mut rig.task).await.unwrap();
    }

    #[tokio::test]
    async fn results_survive_a_control_plane_that_is_down_for_a_while() {
        let mut rig = rig().await;
        rig.set_down(true);
        for op in ops(0..3) {
            rig.queue.push(result(&op));
        }
        rig.until("two reports failed", |r| r.failures() >= 2).await;
        for op in ops(3..6) {
            rig.queue.push(result(&op));
        }
        rig.queue.push(status("d1"));
        rig.until("four reports failed", |r| r.failures() >= 4)
            .await;
        assert!(rig.recorded_ops().is_empty());
        assert_eq!(rig.queue.len(), 7, "nothing was dropped while down");
        rig.set_down(false);
        rig.until("everything is delivered", |r| r.queue.is_empty())
            .await;
        assert_eq!(rig.recorded_ops(), ops(0..6));
        assert_eq!(rig.recorded("device_status").len(), 1);
        assert_eq!(rig.cp.state.duplicates.load(Ordering::SeqCst), 0);
        rig.shutdown.send(true).unwrap();
        (&mut rig.task).await.unwrap();
    }

    #[tokio::test]
    async fn heartbeats_queued_while_the_control_plane_is_down_arrive_as_the_newest_one() {
        let mut rig = rig().await;
        rig.set_down(true);
        rig.queue.push(heartbeat(1));
        rig.until("a report failed", |r| r.failures() >= 1).await;
        for uptime in 2..=5 {
            rig.queue.push(status(&format!("d{uptime}")));
            rig.queue.push(heartbeat(uptime));
        }
        assert_eq!(rig.queue.len(), 5, "four statuses and one heartbeat");
        rig.set_down(false);
        rig.until("everything is delivered", |r| r.queue.is_empty())
            .await;
        let heartbeats = rig.recorded("heartbeat");
        assert_eq!(heartbeats.len(), 1, "{heartbeats:?}");
        assert_eq!(heartbeats[0]["uptime_s"], 5);
        assert_eq!(rig.recorded("device_status").len(), 4);
        assert_eq!(rig.metrics.heartbeats.load(Ordering::SeqCst), 1);
        rig.shutdown.send(true).unwrap();
        (&mut rig.task).await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_flushes_the_queue_and_gives_up_at_the_deadline() {
        let mut rig = rig().await;
        rig.set_down(true);
        rig.queue.push(result("op-early"));
        rig.until("a report failed", |r| r.failures() >= 1).await;
        // The control plane comes back just as the agent stops: the flush
        // delivers what is queued without waiting for the next retry.
        rig.set_down(false);
        rig.queue.push(result("op-last"));
        rig.shutdown.send(true).unwrap();
        (&mut rig.task).await.unwrap();
        assert_eq!(rig.recorded_ops(), ["op-early", "op-last"]);

        let mut rig = super::tests::rig().await;
        rig.set_down(true);
        rig.queue.push(result("op-never"));
        rig.until("a report failed", |r| r.failures() >= 1).await;
        let started = Instant::now();
        rig.shutdown.send(true).unwrap();
        (&mut rig.task).await.unwrap();
        assert!(started.elapsed() < FLUSH_DEADLINE + Duration::from_secs(2));
        assert_eq!(rig.queue.len(), 1, "kept, not delivered");
    }
}
