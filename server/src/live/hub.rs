//! The hub: one Redis pub/sub connection per process, fanned out to every watcher inside it.
//!
//! Why one `PSUBSCRIBE {prefix}batch:*` rather than a reference-counted `SUBSCRIBE` per batch:
//! a change event is one item's worth of JSON, and an event for a batch nobody here watches
//! costs one channel-name parse and one map lookup before it is dropped. In exchange there is
//! no subscribe round trip before a watcher's first snapshot, no race between the last
//! watcher leaving and a new one arriving, and a reconnect re-issues exactly one command. Per
//! batch subscriptions start paying off only when many servers each watch a small share of
//! very many busy batches.
//!
//! Per watched batch the hub keeps a bounded `broadcast` ring of framed events: each event is
//! parsed and framed once and its bytes are shared by every watcher. A watcher that falls more
//! than the ring behind is told so and jumps to a fresh snapshot (see `stream.rs`); nothing here
//! grows with a slow reader. After Redis comes back, every watcher is told to re-read the
//! database, since events published while the connection was down are gone.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use batchwatch_core::{BatchId, BatchProgress, keys};
use bytes::Bytes;
use futures::StreamExt;
use redis::{AsyncCommands, aio::ConnectionManager};
use tokio::sync::broadcast;

use crate::live::frame::frame;

/// Events kept per watched batch for watchers that are briefly behind.
pub const RING: usize = 64;
/// How often the subscriber checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(5);

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum HubMsg {
    Event(Arc<Framed>),
    /// Events may have been lost (Redis reconnected): read the database again.
    Resync,
}

/// A change event, framed once for every watcher.
#[derive(Debug)]
pub struct Framed {
    pub seq: u64,
    pub terminal: bool,
    /// `id: <seq>\nevent: progress\ndata: <json>\n\n`
    pub bytes: Bytes,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    topics: Mutex<HashMap<BatchId, broadcast::Sender<HubMsg>>>,
    prefix: String,
    publisher: Option<ConnectionManager>,
    /// Times the subscription was (re)established.
    subscriptions: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub for one process without Redis (`REDIS_URL=memory://`).
    pub fn memory() -> Self {
        Self::with(String::new(), None)
    }

    /// A hub on Redis: publishes through `publisher` and keeps one subscription on `client`,
    /// reconnecting with backoff for as long as the process runs.
    pub fn redis(client: redis::Client, publisher: ConnectionManager, prefix: &str) -> Self {
        let hub = Self::with(prefix.to_owned(), Some(publisher));
        tokio::spawn(subscribe_forever(client, hub.clone()));
        hub
    }

    fn with(prefix: String, publisher: Option<ConnectionManager>) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: Mutex::default(),
                prefix,
                publisher,
                subscriptions: AtomicU64::new(0),
            }),
        }
    }

    /// How many times the Redis subscription has been established (0 without Redis).
    pub fn subscriptions(&self) -> u64 {
        self.inner.subscriptions.load(Ordering::Relaxed)
    }

    /// Starts receiving a batch's events. Call it before reading the snapshot, so that no
    /// event can fall between the two.
    pub fn watch(&self, id: BatchId) -> Watch {
        let mut topics = self.topics();
        let rx = topics.entry(id).or_insert_with(|| broadcast::channel(RING).0).subscribe();
        Watch { rx: Some(rx), id, hub: self.inner.clone() }
    }

    /// Number of batches with at least one watcher here.
    pub fn watched(&self) -> usize {
        self.topics().len()
    }

    /// Publishes a committed change to every server's watchers.
    pub async fn publish(&self, event: &BatchProgress) {
        let payload = serde_json::to_vec(event).expect("progress types always serialize");
        match &self.inner.publisher {
            Some(conn) => {
                let channel = keys::channel(&self.inner.prefix, event.summary.batch_id);
                if let Err(error) = conn.clone().publish::<_, _, ()>(channel, payload).await {
                    // The database has the change; watchers resync once Redis is back.
                    tracing::warn!(%error, batch = %event.summary.batch_id, "publish failed");
                }
            }
            None => self.deliver(event.summary.batch_id, &payload),
        }
    }

    /// Frames one received event and hands it to the batch's watchers, if any.
    fn deliver(&self, id: BatchId, payload: &[u8]) {
        let Some(tx) = self.topics().get(&id).cloned() else { return };
        let event: BatchProgress = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, batch = %id, "dropping a malformed event");
                return;
            }
        };
        let seq = event.summary.seq;
        let bytes = frame("progress", Some(seq), payload);
        let framed = Framed { seq, terminal: event.summary.status.is_terminal(), bytes };
        // No receiver left is fine: the last watcher is just leaving.
        let _ = tx.send(HubMsg::Event(Arc::new(framed)));
    }

    /// Ends every watcher's stream (at shutdown): their pages reconnect elsewhere or later.
    pub fn close_all(&self) {
        self.topics().clear();
    }

    fn resync_all(&self) {
        for tx in self.topics().values() {
            let _ = tx.send(HubMsg::Resync);
        }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<BatchId, broadcast::Sender<HubMsg>>> {
        self.inner.topics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One watcher's subscription to a batch; leaving drops the batch's ring with the last one.
pub struct Watch {
    rx: Option<broadcast::Receiver<HubMsg>>,
    id: BatchId,
    hub: Arc<Inner>,
}

impl Watch {
    pub fn id(&self) -> BatchId {
        self.id
    }

    pub async fn recv(&mut self) -> Result<HubMsg, broadcast::error::RecvError> {
        self.rx.as_mut().expect("present until drop").recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut topics = self.hub.topics.lock().unwrap_or_else(|e| e.into_inner());
        if topics.get(&self.id).is_some_and(|tx| tx.receiver_count() == 0) {
            topics.remove(&self.id);
        }
    }
}

async fn subscribe_forever(client: redis::Client, hub: Hub) {
    let pattern = format!("{}batch:*", hub.inner.prefix);
    let mut failures = 0u32;
    loop {
        match subscribe_once(&client, &hub, &pattern).await {
            Ok(()) => {
                failures = 0;
                tracing::warn!("Redis subscription lost; reconnecting");
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, failures, "Redis subscription failed; retrying");
            }
        }
        let delay = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
        tokio::time::sleep(delay).await;
    }
}

/// Subscribes, then delivers until the connection ends. Returns `Ok` when an established
/// subscription was lost.
async fn subscribe_once(client: &redis::Client, hub: &Hub, pattern: &str) -> redis::RedisResult<()> {
    let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
    sink.psubscribe(pattern).await?;
    let count = hub.inner.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::info!(pattern, count, "subscribed to Redis");
    // Whatever was published while no subscription stood is only in the database now.
    hub.resync_all();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return Ok(()) };
                match keys::batch_of_channel(&hub.inner.prefix, msg.get_channel_name()) {
                    Some(id) => hub.deliver(id, msg.get_payload_bytes()),
                    None => tracing::debug!(channel = msg.get_channel_name(), "ignoring a message"),
                }
            }
            _ = ping.tick() => {
                // In subscriber mode Redis answers a PING with an array: any answer will do.
                match tokio::time::timeout(PING_EVERY, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "Redis did not answer a PING");
                        return Ok(());
                    }
                    Err(_) => {
                        tracing::warn!("Redis did not answer a PING in time");
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use batchwatch_core::{BatchSummary, Counts};

    use super::*;

    fn event(id: BatchId, seq: u64, terminal: bool) -> BatchProgress {
        let counts =
            if terminal { Counts { completed: 1, total: 1, ..Counts::default() } } else { Counts::queued(1) };
        BatchProgress { summary: BatchSummary::new(id, "b".into(), counts, seq, 0), items: Vec::new() }
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_holds_at_most_the_ring() {
        let hub = Hub::memory();
        let id = BatchId::new();
        let mut watch = hub.watch(id);
        for seq in 2..2_000 {
            hub.publish(&event(id, seq, false)).await;
        }
        hub.publish(&event(id, 2_000, true)).await;
        assert!(matches!(watch.recv().await, Err(broadcast::error::RecvError::Lagged(_))));
        let mut kept = Vec::new();
        while let Ok(Ok(HubMsg::Event(e))) =
            tokio::time::timeout(Duration::from_millis(10), watch.recv()).await
        {
            kept.push((e.seq, e.terminal));
        }
        assert_eq!(kept.len(), RING, "only the ring was kept for it");
        assert_eq!(kept.last(), Some(&(2_000, true)), "the newest, terminal event is still there");
    }

    #[tokio::test]
    async fn events_are_framed_once_with_their_seq() {
        let hub = Hub::memory();
        let id = BatchId::new();
        let (mut a, mut b) = (hub.watch(id), hub.watch(id));
        hub.publish(&event(id, 7, false)).await;
        let (Ok(HubMsg::Event(x)), Ok(HubMsg::Event(y))) = (a.recv().await, b.recv().await) else { panic!() };
        assert!(Arc::ptr_eq(&x, &y), "one framed event shared by both watchers");
        let text = std::str::from_utf8(&x.bytes).unwrap();
        assert!(text.starts_with("id: 7\nevent: progress\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"));
    }

    #[tokio::test]
    async fn the_last_watcher_leaving_releases_the_ring() {
        let hub = Hub::memory();
        let id = BatchId::new();
        let a = hub.watch(id);
        let b = hub.watch(id);
        drop(a);
        assert_eq!(hub.watched(), 1);
        drop(b);
        assert_eq!(hub.watched(), 0);
        // Events for nobody are dropped without work.
        hub.publish(&event(id, 2, false)).await;
        assert_eq!(hub.watched(), 0);
    }
}
