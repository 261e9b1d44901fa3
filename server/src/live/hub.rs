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
//! grows with a slow reader. Each batch also remembers the newest `seq` its watchers were
//! offered: the catch-up task (`catch_up.rs`) compares it with the database and shares one
//! fresh snapshot with all of them when events were lost (a failed publish, a process that
//! died between commit and publish, Redis restarting).
//!
//!
//! Events reach a batch's watchers at a bounded pace, whatever the rate of changes and however
//! many processes make them: about one event per `EVENT_INTERVAL_MS` in the long run, with a
//! reserve for bursts (`pace.rs`). A quiet batch's event goes out at once; on a busy batch,
//! what arrives before its turn waits for it and goes out joined (`merge_events`: each item
//! once, as it ended; at most [`EVENT_ITEMS`] items an event), framed once for every watcher.
//! When what waited is more than the pace lets go in events of a page each (above 25,000 item
//! changes a second at the default interval, once the reserve is spent), the last event the
//! pace allows lists none of the items and says how many changes it left out
//! (`leave_out_items`): its summary is whole, and a page reads the rows it shows again, so a
//! watcher's work and traffic stay bounded at any rate rather than growing with it. The same
//! wait puts events of several processes back in order: one process's event can overtake
//! another's that it follows, and an event that does not follow what the watchers were offered
//! waits for the missing ones while they keep coming (up to [`HOLD`] after the last one came).
//! Only a missing event that never comes (its process died) leaves a gap, which the page fills
//! with a fresh snapshot.
//!
//! Each change is also published, as the batch's summary alone, on its owner's channel
//! (`user:<id>`, one more pattern on the same connection): the user's stream (the home's live
//! list, the toasts on every page) follows all of their batches through it. A user's streams
//! are offered at most one frame per [`USER_INTERVAL`], holding the newest summary of each
//! batch that changed since the last one.
//!
//! On a Redis Cluster pub/sub is sharded (a channel lives on its slot's node) and has no
//! patterns, so the same changes go out on [`keys::PARTITIONS`] partition channels instead,
//! each with a hash tag of its own, and every server holds one `SSUBSCRIBE` per partition
//! (Centrifugo's approach) rather than one per watched batch: no subscribe round trip before a
//! stream's snapshot, no race between a batch's last watcher leaving and a new one arriving,
//! and a fixed set to subscribe again after trouble. Each message carries the event and the
//! batch's owner ([`Routed`]): one `SPUBLISH` serves the batch's watchers and the owner's
//! streams. A slot that moves drops its channel's subscription (`sunsubscribe`; the client
//! library does not move it), and the library's own resubscription after a node's connection
//! drops fails for channels of several slots: the hub subscribes each such channel again on
//! its own, so a node's trouble stops only its partitions, and catches up as after any lost
//! subscription once they all stand again.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, account::Ended, keys, leave_out_items, merge_events,
};
use bytes::Bytes;
use futures::StreamExt;
use redis::{
    ProtocolVersion, PushKind, Value, cluster::ClusterClientBuilder, cluster_async::ClusterConnection,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use crate::{
    live::{
        frame::frame,
        pace::Pace,
        parked::{Parked, Ticket, Wake},
        socket::{Out, Socket, chunk},
    },
    metrics::{self, Sent},
    redis_conn::{RedisConn, RedisTarget},
    store::items::EVENT_ITEMS,
};

/// Events kept per watched batch for watchers that are briefly behind.
pub const RING: usize = 64;
/// How often the subscriber checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How often a cluster's partition channels that could not be subscribed are tried again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);
/// How often a cluster's every channel is subscribed again, standing or not: the client
/// library can replace a node's connection without a word (seen right after a node restart:
/// the node counted one server's subscription gone that the server held standing), and
/// subscribing again is nothing where the subscription stands and brings it back where it
/// went. The catch-up (every 2 s) brings what was published in between.
const RESUBSCRIBE_ALL_EVERY: Duration = Duration::from_secs(2);
/// Ended sign-ins kept for streams that are briefly behind; one that falls further asks the
/// database instead.
const ENDED_RING: usize = 256;
/// The longest an event waits for one it follows once nothing that fills the gap comes (see
/// above).
const HOLD: Duration = Duration::from_millis(500);
/// The least time between two frames offered to a user's streams: the home's percentages move
/// a few times a second, and a batch that finished is told within it.
const USER_INTERVAL: Duration = Duration::from_millis(250);
/// The waits before each new try of a failed publish.
const PUBLISH_RETRIES: [Duration; 3] =
    [Duration::from_millis(50), Duration::from_millis(250), Duration::from_millis(1_000)];

/// What a watcher receives: a change event, or a snapshot the hub read once for all of a
/// batch's watchers, framed once and shared.
#[derive(Debug)]
pub struct Framed {
    pub kind: Sent,
    pub seq: u64,
    /// The batch is over ([`batchwatch_core::BatchSummary::is_over`]): the stream ends here.
    pub over: bool,
    /// `id: <seq>\nevent: progress|snapshot\ndata: <json>\n\n`
    pub bytes: Bytes,
    /// The same as an HTTP/1.1 chunk, for parked streams (`parked.rs`).
    chunk: Bytes,
}

impl Framed {
    pub fn new(kind: Sent, seq: u64, over: bool, bytes: Bytes) -> Self {
        Self { kind, seq, over, chunk: chunk(&bytes), bytes }
    }

    /// The event as it goes on a stream's own connection: chunked or not.
    pub fn wire(&self, chunked: bool) -> Bytes {
        if chunked { self.chunk.clone() } else { self.bytes.clone() }
    }
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A watched batch: its ring, the newest `seq` offered to all of its watchers, and its newest
/// snapshot as streams write it, framed once for all the watchers that start from it.
struct Topic {
    tx: broadcast::Sender<Arc<Framed>>,
    seq: u64,
    snapshot: Option<(u64, Bytes)>,
    /// Events waiting for the end of the interval, or for one they follow.
    pending: Vec<BatchProgress>,
    pace: Pace,
    /// When `pending` is looked at next.
    flush_at: Option<tokio::time::Instant>,
    /// Since when `pending` starts with an event that does not follow `seq`.
    gap_since: Option<tokio::time::Instant>,
    /// Watchers whose events its writers write (`parked.rs`).
    parked: Parked,
}

/// A user with a stream here: the newest summary of each of their batches that changed since
/// the last frame.
struct UserTopic {
    tx: broadcast::Sender<Arc<Framed>>,
    /// The newest summary of each batch since the last frame. One older than a summary
    /// already offered can still come (from another process) and go out: pages keep the
    /// newer `seq` of each batch.
    pending: HashMap<BatchId, BatchSummary>,
    offered_at: tokio::time::Instant,
    flush_at: Option<tokio::time::Instant>,
    /// Frames offered so far: the `seq` of the next one.
    frames: u64,
}

struct Inner {
    /// The least time between two events offered to a batch's watchers.
    interval: Duration,
    topics: Mutex<HashMap<BatchId, Topic>>,
    users: Mutex<HashMap<String, UserTopic>>,
    prefix: String,
    publisher: Option<RedisConn>,
    /// Times the subscription was (re)established.
    subscriptions: AtomicU64,
    /// Wakes the catch-up task at once: events may have been lost.
    stale: Notify,
    /// Set at shutdown: a ring that closes means "go elsewhere now", not "something broke".
    closing: AtomicBool,
    /// Ended sign-ins heard on the control channel, for every open stream to check.
    ended: broadcast::Sender<Arc<Ended>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub for one process without Redis (`REDIS_URL=memory://`).
    pub fn memory(interval: Duration) -> Self {
        Self::with(String::new(), None, interval)
    }

    /// A hub on Redis: publishes through `publisher` and keeps one subscription on `target`,
    /// reconnecting with backoff for as long as the process runs.
    pub fn redis(target: RedisTarget, publisher: RedisConn, prefix: &str, interval: Duration) -> Self {
        let hub = Self::with(prefix.to_owned(), Some(publisher), interval);
        tokio::spawn(subscribe_forever(target, hub.clone()));
        hub
    }

    fn with(prefix: String, publisher: Option<RedisConn>, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                interval,
                topics: Mutex::default(),
                users: Mutex::default(),
                prefix,
                publisher,
                subscriptions: AtomicU64::new(0),
                stale: Notify::new(),
                closing: AtomicBool::new(false),
                ended: broadcast::channel(ENDED_RING).0,
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
        if self.inner.closing.load(Ordering::Relaxed) {
            // Stopping: a stream that opens now (the listener is not closed yet) is told at
            // once to go elsewhere, rather than holding the shutdown up.
            return Watch::new(closed(), Watched::Batch(id), self.inner.clone());
        }
        let mut topics = self.topics();
        let topic = topics.entry(id).or_insert_with(|| Topic {
            tx: broadcast::channel(RING).0,
            seq: 0,
            snapshot: None,
            pending: Vec::new(),
            pace: Pace::new(self.inner.interval, tokio::time::Instant::now()),
            flush_at: None,
            gap_since: None,
            parked: Parked::default(),
        });
        Watch::new(topic.tx.subscribe(), Watched::Batch(id), self.inner.clone())
    }

    /// Starts receiving the summaries of every batch of `user` that changes. Call it before
    /// reading the list the stream starts from.
    pub fn watch_user(&self, user: &str) -> Watch {
        let of = Watched::User(user.to_owned());
        if self.inner.closing.load(Ordering::Relaxed) {
            return Watch::new(closed(), of, self.inner.clone());
        }
        let rx = self
            .users()
            .entry(user.to_owned())
            .or_insert_with(|| UserTopic {
                tx: broadcast::channel(RING).0,
                pending: HashMap::new(),
                offered_at: tokio::time::Instant::now() - USER_INTERVAL,
                flush_at: None,
                frames: 0,
            })
            .tx
            .subscribe();
        Watch::new(rx, of, self.inner.clone())
    }

    /// Number of batches with at least one watcher here.
    pub fn watched(&self) -> usize {
        self.topics().len()
    }

    /// Every watched batch with the newest `seq` its watchers were offered.
    pub fn watched_seqs(&self) -> Vec<(BatchId, u64)> {
        self.topics().iter().map(|(id, topic)| (*id, topic.seq)).collect()
    }

    /// Completes when events may have been lost (the subscription was re-established).
    pub async fn went_stale(&self) {
        self.inner.stale.notified().await;
    }

    /// Publishes the events of one commit of `owner`'s batch, in order, to every server's
    /// watchers, and its newest summary to the owner's streams, in one round trip: an append's
    /// or a cancel's pages arrive together, not one by one behind the changes committed after
    /// them. A failed publish is tried again a few times in the background; what is still lost,
    /// every server's catch-up finds in the database within seconds (a user's stream hears of
    /// the batch at its next change).
    pub async fn publish(&self, owner: &str, events: &[BatchProgress]) {
        if let Some(last) = events.last() {
            self.send(owner, &last.summary, events).await;
        }
    }

    /// Tells the owner's streams of a batch just created.
    pub async fn publish_new(&self, owner: &str, summary: &BatchSummary) {
        self.send(owner, summary, &[]).await;
    }

    /// Publishes `events` on their batch's channel and `summary`, their newest, on the owner's.
    async fn send(&self, owner: &str, summary: &BatchSummary, events: &[BatchProgress]) {
        let id = summary.batch_id;
        let Some(conn) = &self.inner.publisher else {
            for event in events {
                self.deliver_event(event.clone());
            }
            return self.deliver_user(owner, summary.clone());
        };
        let (prefix, publish) = (&self.inner.prefix, conn.publish_command());
        let mut pipe = redis::pipe();
        if let RedisConn::Cluster(_) = conn {
            // A creation has no event of its own: its summary goes as one without items.
            let created;
            let events = match events {
                [] => {
                    created = [BatchProgress::new(summary.clone(), Vec::new())];
                    &created[..]
                }
                events => events,
            };
            let channel = keys::partition_channel(prefix, keys::partition_of(id));
            for event in events {
                pipe.cmd(publish).arg(&channel).arg(json(&Routed { batch: id, owner, event })).ignore();
            }
        } else {
            for event in events {
                pipe.cmd(publish).arg(keys::channel(prefix, id)).arg(json(event)).ignore();
            }
            // Batches made before accounts have no owner to tell.
            if !owner.is_empty() {
                pipe.cmd(publish).arg(keys::user_channel(prefix, owner)).arg(json(summary)).ignore();
            }
        }
        if pipe.is_empty() {
            return;
        }
        if let Err(error) = pipe.exec_async(&mut conn.clone()).await {
            tracing::warn!(%error, batch = %id, "publish failed; trying again");
            let conn = conn.clone();
            tokio::spawn(async move {
                for wait in PUBLISH_RETRIES {
                    tokio::time::sleep(wait).await;
                    if pipe.exec_async(&mut conn.clone()).await.is_ok() {
                        return;
                    }
                }
                tracing::warn!(batch = %id, "publish lost; watchers catch up from the database");
            });
        }
    }

    /// Tells every server's streams that a sign-in ended. Without Redis only this process
    /// hears it; either way, streams still check their sign-in at each keep-alive.
    pub async fn announce_ended(&self, ended: &Ended) {
        let Some(conn) = &self.inner.publisher else {
            let _ = self.inner.ended.send(Arc::new(ended.clone()));
            return;
        };
        if let Err(error) = announce(conn, &self.inner.prefix, ended).await {
            tracing::warn!(%error, "announcing an ended sign-in failed; streams notice at their keep-alive");
        }
    }

    /// Takes a message of the control channel.
    fn hear_control(&self, payload: &[u8]) {
        match serde_json::from_slice::<Ended>(payload) {
            Ok(ended) => drop(self.inner.ended.send(Arc::new(ended))),
            Err(error) => tracing::warn!(%error, "dropping a malformed control message"),
        }
    }

    /// Takes a message of a cluster's partition channel. Every server gets every message of
    /// the cluster: the event is parsed only when this one has a watcher for it.
    fn deliver_routed(&self, payload: &[u8]) {
        let routed = match serde_json::from_slice::<Routed<&str, &serde_json::value::RawValue>>(payload) {
            Ok(routed) => routed,
            Err(error) => return tracing::warn!(%error, "dropping a malformed message"),
        };
        let for_user = self.users().contains_key(routed.owner);
        if !for_user && !self.topics().contains_key(&routed.batch) {
            return;
        }
        match serde_json::from_str::<BatchProgress>(routed.event.get()) {
            Ok(event) => {
                if for_user {
                    self.deliver_user(routed.owner, event.summary.clone());
                }
                self.deliver_event(event);
            }
            Err(error) => tracing::warn!(%error, "dropping a malformed event"),
        }
    }

    /// Ended sign-ins, as they are heard.
    pub fn ended(&self) -> broadcast::Receiver<Arc<Ended>> {
        self.inner.ended.subscribe()
    }

    /// Takes one received event for its batch's watchers, if any.
    fn deliver(&self, id: BatchId, payload: &[u8]) {
        if !self.topics().contains_key(&id) {
            return;
        }
        match serde_json::from_slice(payload) {
            Ok(event) => self.deliver_event(event),
            Err(error) => tracing::warn!(%error, batch = %id, "dropping a malformed event"),
        }
    }

    /// Hands an event to its batch's watchers, if any.
    fn deliver_event(&self, event: BatchProgress) {
        let id = event.summary.batch_id;
        let mut topics = self.topics();
        let Some(topic) = topics.get_mut(&id) else { return };
        metrics::event_delay(event.summary.updated_at);
        if event.summary.seq <= topic.seq {
            return;
        }
        topic.pending.push(event);
        // On a busy batch the flush at the end of the interval takes it; an event that fills
        // a gap lets those that waited for it go at once.
        if topic.flush_at.is_none() || topic.gap_since.is_some() {
            self.flush(id, topic);
        }
    }

    /// Offers what is pending for a batch as far as its pace allows (at once for a quiet batch),
    /// joined, in order, as far as nothing is missing; and makes sure that what is left is
    /// looked at again when its time comes.
    fn flush(&self, id: BatchId, topic: &mut Topic) {
        let now = tokio::time::Instant::now();
        let allowed = topic.pace.available(now) as usize;
        if allowed == 0 {
            return self.flush_at(id, topic, topic.pace.next_at());
        }
        topic.pending.sort_by_key(|event| event.summary.seq);
        topic.pending.retain(|event| event.summary.seq > topic.seq);
        let mut ready = Vec::new();
        for event in merge_events(std::mem::take(&mut topic.pending), EVENT_ITEMS) {
            // What the watchers will have been offered when this event comes to them.
            let follows = ready.last().map_or(topic.seq, |last: &BatchProgress| last.summary.seq);
            let gap = follows != 0 && event.after() > follows;
            let waited_enough = topic.gap_since.is_some_and(|since| now >= since + HOLD);
            if !topic.pending.is_empty() || (gap && !waited_enough) {
                topic.pending.push(event);
                continue;
            }
            if gap {
                tracing::debug!(batch = %id, offered = follows, next = event.after(), "an event never came; going on without it");
            }
            ready.push(event);
        }
        if ready.len() > allowed {
            let rest = ready.split_off(allowed - 1);
            ready.extend(leave_out_items(rest));
            metrics::items_left_out();
        }
        let offered = ready.len() as u32;
        if offered > 0 {
            topic.pace.spend(now, offered);
        }
        for event in ready {
            let payload = json(&event);
            let seq = event.summary.seq;
            let bytes = frame("progress", Some(seq), &payload);
            let over = event.summary.is_over();
            offer(topic, Framed::new(Sent::Progress, seq, over, bytes));
        }
        // A gap is waited for from when it last moved: events that fill it are on their way as
        // long as they keep coming (an append's pages can take longer than HOLD to arrive and
        // be read one after another), while a missing one that never comes stops it at once.
        topic.gap_since = match topic.pending.first() {
            Some(_) if offered > 0 => Some(now),
            Some(_) => Some(topic.gap_since.unwrap_or(now)),
            None => None,
        };
        if let Some(since) = topic.gap_since {
            let at = if offered > 0 { now + self.inner.interval } else { since + HOLD };
            self.flush_at(id, topic, at.max(topic.pace.next_at()));
        }
    }

    /// Takes a summary published on a user's channel, if they have a stream here.
    fn deliver_user_payload(&self, user: &str, payload: &[u8]) {
        if !self.users().contains_key(user) {
            return;
        }
        match serde_json::from_slice(payload) {
            Ok(summary) => self.deliver_user(user, summary),
            Err(error) => tracing::warn!(%error, "dropping a malformed summary"),
        }
    }

    fn deliver_user(&self, user: &str, summary: BatchSummary) {
        let mut users = self.users();
        let Some(topic) = users.get_mut(user) else { return };
        if topic.pending.get(&summary.batch_id).is_some_and(|pending| pending.seq >= summary.seq) {
            return;
        }
        topic.pending.insert(summary.batch_id, summary);
        if topic.flush_at.is_none() {
            self.flush_user(user, topic);
        }
    }

    /// Offers a user's pending summaries as one frame if the interval is over (at once when
    /// the user's batches were quiet), or makes sure they are offered when it is.
    fn flush_user(&self, user: &str, topic: &mut UserTopic) {
        let now = tokio::time::Instant::now();
        let at = topic.offered_at + USER_INTERVAL;
        if now < at {
            topic.flush_at = Some(at);
            let (hub, user) = (self.clone(), user.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let mut users = hub.users();
                if let Some(topic) = users.get_mut(&user).filter(|topic| topic.flush_at == Some(at)) {
                    topic.flush_at = None;
                    hub.flush_user(&user, topic);
                }
            });
            return;
        }
        if topic.pending.is_empty() {
            return;
        }
        let summaries: Vec<BatchSummary> = topic.pending.drain().map(|(_, summary)| summary).collect();
        topic.frames += 1;
        topic.offered_at = now;
        let bytes = frame("batches", None, &json(&summaries));
        // No receiver left is fine: the last stream is just leaving.
        let _ = topic.tx.send(Arc::new(Framed::new(Sent::Progress, topic.frames, false, bytes)));
    }

    fn flush_at(&self, id: BatchId, topic: &mut Topic, at: tokio::time::Instant) {
        if topic.flush_at.is_some_and(|sooner| sooner <= at) {
            return;
        }
        topic.flush_at = Some(at);
        let hub = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut topics = hub.topics();
            // A later flush may have replaced this one.
            if let Some(topic) = topics.get_mut(&id).filter(|topic| topic.flush_at == Some(at)) {
                topic.flush_at = None;
                hub.flush(id, topic);
            }
        });
    }

    /// Offers a snapshot read from the database to every watcher of its batch, when it is newer
    /// than what they were offered: one read serves them all.
    pub fn share_snapshot(&self, snapshot: &BatchProgress) {
        let id = snapshot.summary.batch_id;
        let seq = snapshot.summary.seq;
        if self.topics().get(&id).is_none_or(|topic| topic.seq >= seq) {
            return;
        }
        let bytes = framed_snapshot(&self.inner, snapshot);
        let over = snapshot.summary.is_over();
        self.offer(id, Framed::new(Sent::Snapshot, seq, over, bytes));
    }

    fn offer(&self, id: BatchId, framed: Framed) {
        if let Some(topic) = self.topics().get_mut(&id) {
            offer(topic, framed);
        }
    }

    /// Ends every watcher's stream (at shutdown), telling their pages to reconnect at once: to
    /// another server behind the same address, or to this one once it is back.
    pub fn close_all(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        // Each ring closes, and its parked watchers are woken to hear it.
        self.topics().clear();
        self.users().clear();
    }

    /// Events published while no subscription stood are lost: forget what every batch was
    /// offered, so that the catch-up task reads each one once and shares it.
    fn stale_all(&self) {
        for topic in self.topics().values_mut() {
            topic.seq = 0;
        }
        // A user's stream starts again from a fresh list: closing its ring tells it to.
        self.users().clear();
        self.inner.stale.notify_one();
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<BatchId, Topic>> {
        self.inner.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserTopic>> {
        self.inner.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Offers an event to a batch's watchers, in the ring: the parked ones' writers are told.
fn offer(topic: &mut Topic, framed: Framed) {
    topic.seq = topic.seq.max(framed.seq);
    // No receiver left is fine: the last watcher is just leaving.
    let _ = topic.tx.send(Arc::new(framed));
    topic.parked.signal();
}

/// A ring that is closed already.
fn closed() -> broadcast::Receiver<Arc<Framed>> {
    broadcast::channel(1).1
}

/// What a stream follows: one batch, or every batch of one user.
#[derive(Clone, Debug)]
pub enum Watched {
    Batch(BatchId),
    User(String),
}

/// One stream's subscription to a batch or a user; leaving drops the ring with the last one.
pub struct Watch {
    /// Its place in the ring (its batch's writers hold it while it is parked).
    rx: Option<broadcast::Receiver<Arc<Framed>>>,
    of: Watched,
    hub: Arc<Inner>,
    /// Its claim among its batch's parked watchers, while parked.
    parked: Option<Ticket>,
    /// Made when it first parks.
    wake: Option<Arc<Wake>>,
}

/// What a watcher hears next.
pub enum Next {
    Event(Result<Arc<Framed>, broadcast::error::RecvError>),
    /// Its batch's writer stopped writing to this parked watcher: it must take its place
    /// back ([`Watch::unpark`]).
    Woken,
}

/// What a watcher that leaves the parked ones starts again from.
pub struct Unparked {
    /// The newest `seq` its client has, once `rest` is written.
    pub last: u64,
    /// What is left to write, in its wire format.
    pub rest: Out,
    /// What the ring gave that the writer did not write (see [`crate::live::parked::Woken`]).
    pub next: Option<Result<Arc<Framed>, broadcast::error::RecvError>>,
}

impl Watch {
    fn new(rx: broadcast::Receiver<Arc<Framed>>, of: Watched, hub: Arc<Inner>) -> Self {
        Self { rx: Some(rx), of, hub, parked: None, wake: None }
    }

    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Hands this watcher's place in the ring and `socket` to its batch's writers (see
    /// `parked.rs`), when nothing waits for it in the ring: whether it did. Its client has
    /// `last`.
    pub fn park(&mut self, socket: &Socket, last: u64) -> bool {
        let Watched::Batch(id) = &self.of else { return false };
        if self.parked.is_some() {
            return true;
        }
        // Under the hub's lock: the batch cannot stop being watched (and its writers end) in
        // between.
        let mut topics = self.hub.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(topic) = topics.get_mut(id) else { return false };
        let Some(rx) = self.rx.take_if(|rx| rx.is_empty()) else { return false };
        let wake = self.wake.get_or_insert_with(Arc::default).clone();
        self.parked = Some(topic.parked.park(socket.clone(), rx, last, wake));
        true
    }

    /// Takes this watcher's place in the ring back from its batch's writers; `None` when it was
    /// not parked.
    pub fn unpark(&mut self) -> Option<Unparked> {
        let ticket = self.parked.take()?;
        if let Some((rx, last)) = ticket.take() {
            self.rx = Some(rx);
            return Some(Unparked { last, rest: Out::default(), next: None });
        }
        // A writer woke it, and handed everything over before it let go of the entry (a closed
        // ring is only a fallback).
        let Some(woken) = self.wake.as_ref().and_then(|wake| wake.take()) else {
            self.rx = Some(closed());
            return Some(Unparked { last: 0, rest: Out::default(), next: None });
        };
        self.rx = Some(woken.rx);
        Some(Unparked { last: woken.last, rest: woken.rest, next: woken.next })
    }

    /// The next event in the ring or, while parked, a writer waking this watcher.
    pub async fn next(&mut self) -> Next {
        match (&self.wake, &self.parked) {
            (Some(wake), Some(_)) => {
                wake.woken().await;
                Next::Woken
            }
            _ => Next::Event(self.recv().await),
        }
    }

    pub fn of(&self) -> &Watched {
        &self.of
    }

    /// Whether the server is shutting down (the ring was closed for that).
    pub fn closing(&self) -> bool {
        self.hub.closing.load(Ordering::Relaxed)
    }

    async fn recv(&mut self) -> Result<Arc<Framed>, broadcast::error::RecvError> {
        self.rx.as_mut().expect("present until drop").recv().await
    }

    /// `event: snapshot` of this batch at the snapshot's `seq`, serialized and framed once for
    /// every watcher that starts or resyncs from it.
    pub fn framed_snapshot(&self, snapshot: &BatchProgress) -> Bytes {
        framed_snapshot(&self.hub, snapshot)
    }

    /// The snapshot this watcher started from: the `seq` a batch nobody watched before has
    /// been offered, so that the catch-up task need not read it again.
    pub fn seen(&self, seq: u64) {
        let Watched::Batch(id) = &self.of else { return };
        let mut topics = self.hub.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(topic) = topics.get_mut(id).filter(|t| t.seq == 0) {
            topic.seq = seq;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.rx.take());
        match &self.of {
            Watched::Batch(id) => {
                // Its place in the ring goes first, wherever it is: parked, or handed back.
                if let Some(ticket) = self.parked.take() {
                    drop(ticket.take());
                }
                drop(self.wake.as_ref().and_then(|wake| wake.take()));
                let mut topics = self.hub.topics.lock().unwrap_or_else(|e| e.into_inner());
                if topics.get(id).is_some_and(|topic| topic.tx.receiver_count() == 0) {
                    topics.remove(id);
                }
            }
            Watched::User(user) => {
                let mut users = self.hub.users.lock().unwrap_or_else(|e| e.into_inner());
                if users.get(user).is_some_and(|topic| topic.tx.receiver_count() == 0) {
                    users.remove(user);
                }
            }
        }
    }
}

/// A snapshot framed as streams write it, taken from its batch's topic when the topic already
/// holds that `seq`, and kept there for the next watcher otherwise.
fn framed_snapshot(hub: &Inner, snapshot: &BatchProgress) -> Bytes {
    let (id, seq) = (snapshot.summary.batch_id, snapshot.summary.seq);
    let lock = || hub.topics.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, bytes)) = lock().get(&id).and_then(|t| t.snapshot.as_ref()).filter(|(s, _)| *s == seq) {
        return bytes.clone();
    }
    // Serialized outside the lock: a large batch takes milliseconds.
    let json = json(snapshot);
    metrics::snapshot_written(json.len());
    let bytes = frame("snapshot", Some(seq), &json);
    if let Some(topic) = lock().get_mut(&id).filter(|t| t.snapshot.as_ref().is_none_or(|(s, _)| *s < seq)) {
        topic.snapshot = Some((seq, bytes.clone()));
    }
    bytes
}

/// A change as it goes out on a cluster's partition channel: the event, for the batch's
/// watchers, and the batch's owner, for their streams; the batch's id beside them, so that a
/// server parses the event only when it has a watcher for it.
#[derive(Serialize, Deserialize)]
struct Routed<O, E> {
    batch: BatchId,
    owner: O,
    event: E,
}

/// A message's JSON.
fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("progress types always serialize")
}

/// Publishes an ended sign-in on the control channel, which every server hears.
pub async fn announce(conn: &RedisConn, prefix: &str, ended: &Ended) -> redis::RedisResult<()> {
    let payload = serde_json::to_vec(ended).expect("control messages always serialize");
    redis::cmd(conn.publish_command())
        .arg(keys::control_channel(prefix))
        .arg(payload)
        .exec_async(&mut conn.clone())
        .await
}

async fn subscribe_forever(target: RedisTarget, hub: Hub) {
    let mut failures = 0u32;
    loop {
        let subscribed = match &target {
            RedisTarget::Single(client) => subscribe_once(client, &hub).await,
            RedisTarget::Cluster(seeds) => subscribe_cluster_once(seeds, &hub).await,
        };
        match subscribed {
            Ok(()) => {
                failures = 0;
                tracing::warn!("Redis subscription lost; reconnecting");
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, failures, "Redis subscription failed; retrying");
            }
        }
        metrics::redis_lost();
        let delay = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
        tokio::time::sleep(delay).await;
    }
}

/// A subscription stands: whatever was published while none stood is only in the database now.
fn subscribed(hub: &Hub, what: &str) {
    let count = hub.inner.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::redis_subscribed();
    tracing::info!(what, count, "subscribed to Redis");
    hub.stale_all();
}

/// Subscribes, then delivers until the connection ends. Returns `Ok` when an established
/// subscription was lost.
async fn subscribe_once(client: &redis::Client, hub: &Hub) -> redis::RedisResult<()> {
    let prefix = &hub.inner.prefix;
    let patterns = [format!("{prefix}batch:*"), format!("{prefix}user:*")];
    let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
    sink.psubscribe(&patterns).await?;
    let control = keys::control_channel(prefix);
    sink.subscribe(&control).await?;
    subscribed(hub, "batch:* and user:*");
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return Ok(()) };
                let channel = msg.get_channel_name();
                if channel == control {
                    hub.hear_control(msg.get_payload_bytes());
                } else if let Some(id) = keys::batch_of_channel(prefix, channel) {
                    hub.deliver(id, msg.get_payload_bytes());
                } else if let Some(user) = keys::user_of_channel(prefix, channel) {
                    hub.deliver_user_payload(user, msg.get_payload_bytes());
                } else {
                    tracing::debug!(channel, "ignoring a message");
                }
            }
            _ = ping.tick() => {
                // In subscriber mode Redis answers a PING with an array: any answer will do.
                if !answers(sink.ping::<redis::Value>()).await {
                    return Ok(());
                }
            }
        }
    }
}

/// On a cluster: one `SSUBSCRIBE` per partition channel and the control channel, on a
/// connection of their own (RESP3: messages come as pushes), each channel subscribed again on
/// its own whenever it was dropped, so that a node's trouble stops only its own partitions.
async fn subscribe_cluster_once(seeds: &[String], hub: &Hub) -> redis::RedisResult<()> {
    let (tx, mut pushed) = tokio::sync::mpsc::unbounded_channel();
    let client = ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(tx)
        .connection_timeout(PING_EVERY)
        .response_timeout(PING_EVERY)
        .build()?;
    let conn = client.get_async_connection().await?;
    let prefix = &hub.inner.prefix;
    let control = keys::control_channel(prefix);
    let channels: Vec<String> =
        (0..keys::PARTITIONS).map(|p| keys::partition_channel(prefix, p)).chain([control.clone()]).collect();
    let mut missing = channels.clone();
    let mut retry = tokio::time::interval(RESUBSCRIBE_EVERY);
    let mut all = tokio::time::interval(RESUBSCRIBE_ALL_EVERY);
    all.tick().await;
    loop {
        tokio::select! {
            push = pushed.recv() => {
                let Some(push) = push else { return Ok(()) };
                match (&push.kind, push.data.as_slice()) {
                    (PushKind::SMessage, [Value::BulkString(channel), Value::BulkString(payload)]) => {
                        if channel.as_slice() == control.as_bytes() {
                            hub.hear_control(payload);
                        } else {
                            hub.deliver_routed(payload);
                        }
                    }
                    // Nothing here unsubscribes: the channel's slot moved (`CLUSTER SETSLOT …
                    // NODE`), and the library drops such a subscription rather than moving it.
                    (PushKind::SUnsubscribe, [Value::BulkString(channel), ..]) => {
                        let channel = String::from_utf8_lossy(channel).into_owned();
                        tracing::warn!(channel, "a sharded subscription was dropped");
                        if !missing.contains(&channel) {
                            missing.push(channel);
                        }
                        retry.reset_immediately();
                    }
                    // A node's connection dropped. The library subscribes its channels again,
                    // but in one command, which fails when they lie in several slots
                    // (CROSSSLOT), as the partitions do: subscribe each again.
                    (PushKind::Disconnection, _) => {
                        tracing::warn!("a Redis Cluster node's connection dropped");
                        missing.clone_from(&channels);
                        retry.reset_immediately();
                    }
                    _ => {}
                }
            }
            _ = all.tick(), if missing.is_empty() => {
                missing = ssubscribe_each(&conn, &channels).await;
                if !missing.is_empty() {
                    // Their subscriptions were lost, and with them perhaps events.
                    tracing::warn!(missing = missing.len(), "some partition channels could not be subscribed again");
                    retry.reset_immediately();
                }
            }
            _ = retry.tick(), if !missing.is_empty() => {
                missing = ssubscribe_each(&conn, &missing).await;
                if missing.is_empty() {
                    // Whatever was published while a channel was not subscribed is only in the
                    // database now.
                    subscribed(hub, "partition channels");
                } else {
                    tracing::warn!(missing = missing.len(), "some partition channels are not subscribed yet");
                }
            }
        }
    }
}

/// Subscribes each channel (one per command: channels of several slots in one fail with
/// CROSSSLOT) and returns those it could not.
async fn ssubscribe_each(conn: &ClusterConnection, channels: &[String]) -> Vec<String> {
    let tries = channels.iter().map(|channel| {
        let mut conn = conn.clone();
        async move { conn.ssubscribe(channel).await.is_ok() }
    });
    let done = futures::future::join_all(tries).await;
    channels.iter().zip(done).filter(|(_, done)| !done).map(|(channel, _)| channel.clone()).collect()
}

/// Whether Redis answers `ping` within [`PING_EVERY`].
async fn answers(ping: impl Future<Output = redis::RedisResult<redis::Value>>) -> bool {
    match tokio::time::timeout(PING_EVERY, ping).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "Redis did not answer a PING");
            false
        }
        Err(_) => {
            tracing::warn!("Redis did not answer a PING in time");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use batchwatch_core::{BatchSummary, Counts};
    use bytes::Buf;

    use super::*;
    use crate::live::pace;

    fn event(id: BatchId, seq: u64, terminal: bool) -> BatchProgress {
        let counts =
            if terminal { Counts { completed: 1, total: 1, ..Counts::default() } } else { Counts::queued(1) };
        BatchProgress::new(BatchSummary::new(id, "b".into(), counts, seq, 0), Vec::new())
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_holds_at_most_the_ring() {
        let hub = Hub::memory(Duration::ZERO);
        let id = BatchId::new();
        let mut watch = hub.watch(id);
        for seq in 2..2_000 {
            hub.publish("u", &[event(id, seq, false)]).await;
        }
        hub.publish("u", &[event(id, 2_000, true)]).await;
        assert!(matches!(watch.recv().await, Err(broadcast::error::RecvError::Lagged(_))));
        let mut kept = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(10), watch.recv()).await {
            kept.push((e.seq, e.over));
        }
        assert_eq!(kept.len(), RING, "only the ring was kept for it");
        assert_eq!(kept.last(), Some(&(2_000, true)), "the newest, terminal event is still there");
    }

    #[tokio::test]
    async fn events_are_framed_once_with_their_seq() {
        let hub = Hub::memory(Duration::ZERO);
        let id = BatchId::new();
        let (mut a, mut b) = (hub.watch(id), hub.watch(id));
        hub.publish("u", &[event(id, 7, false)]).await;
        let (Ok(x), Ok(y)) = (a.recv().await, b.recv().await) else { panic!() };
        assert!(Arc::ptr_eq(&x, &y), "one framed event shared by both watchers");
        let text = std::str::from_utf8(&x.bytes).unwrap();
        assert!(text.starts_with("id: 7\nevent: progress\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"));
    }

    #[test]
    fn a_snapshot_is_framed_once_for_all_the_watchers_that_start_from_it() {
        let hub = Hub::memory(Duration::ZERO);
        let id = BatchId::new();
        let (a, b) = (hub.watch(id), hub.watch(id));
        let first = a.framed_snapshot(&event(id, 5, false));
        let again = b.framed_snapshot(&event(id, 5, false));
        assert_eq!(first.as_ptr(), again.as_ptr(), "one allocation shared");
        assert!(std::str::from_utf8(&first).unwrap().starts_with("id: 5\nevent: snapshot\ndata: {"));
        let newer = b.framed_snapshot(&event(id, 6, false));
        assert_ne!(newer.as_ptr(), first.as_ptr());
        assert_eq!(a.framed_snapshot(&event(id, 6, false)).as_ptr(), newer.as_ptr());
    }

    #[tokio::test]
    async fn the_last_watcher_leaving_releases_the_ring() {
        let hub = Hub::memory(Duration::ZERO);
        let id = BatchId::new();
        let a = hub.watch(id);
        let b = hub.watch(id);
        drop(a);
        assert_eq!(hub.watched(), 1);
        drop(b);
        assert_eq!(hub.watched(), 0);
        // Events for nobody are dropped without work.
        hub.publish("u", &[event(id, 2, false)]).await;
        assert_eq!(hub.watched(), 0);
    }

    /// A stream's socket, server side, and its client's end.
    async fn connection() -> (Socket, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Small, so that a client that does not read soon fills it.
        socket2::SockRef::from(&server).set_send_buffer_size(8 * 1024).unwrap();
        server.writable().await.unwrap();
        (Socket::new(Arc::new(server), true), client)
    }

    /// Everything the client was sent, so far.
    async fn received(client: &mut tokio::net::TcpStream) -> Vec<u8> {
        received_until_quiet(client, Duration::from_millis(50)).await
    }

    /// Everything the client is sent until nothing comes for `quiet`.
    async fn received_until_quiet(client: &mut tokio::net::TcpStream, quiet: Duration) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(quiet, client.read(&mut buf)).await {
            bytes.extend_from_slice(&buf[..n]);
        }
        bytes
    }

    /// The `seq` of each event in a chunked body.
    fn seqs(mut body: &[u8]) -> Vec<u64> {
        let mut seqs = Vec::new();
        while !body.is_empty() {
            let line = body.iter().position(|&b| b == b'\r').unwrap();
            let len = usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap(), 16).unwrap();
            let data = std::str::from_utf8(&body[line + 2..line + 2 + len]).unwrap();
            assert_eq!(&body[line + 2 + len..line + 4 + len], b"\r\n");
            seqs.push(data.strip_prefix("id: ").unwrap().split_once('\n').unwrap().0.parse().unwrap());
            body = &body[line + 4 + len..];
        }
        seqs
    }

    /// Whether the watcher was woken within a moment.
    async fn woken(watch: &mut Watch) -> bool {
        tokio::time::timeout(Duration::from_millis(20), watch.next()).await.is_ok()
    }

    // Three threads: two writers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn writers_write_to_parked_watchers_and_hand_back_what_a_socket_did_not_take() {
        let hub = Hub::memory(Duration::ZERO);
        let id = BatchId::new();
        let (mut watch, mut other) = (hub.watch(id), hub.watch(id));
        let ((socket, mut client), (other_socket, mut other_client)) =
            (connection().await, connection().await);
        assert!(watch.park(&socket, 1));
        assert!(other.park(&other_socket, 1), "the second goes to the other writer");
        assert_eq!(hub.watched(), 1, "the batch stays watched");
        hub.publish("u", &[event(id, 2, false)]).await;
        hub.publish("u", &[event(id, 1, false)]).await;
        assert_eq!(seqs(&received(&mut client).await), [2], "written by a writer, once, in order");
        assert_eq!(seqs(&received(&mut other_client).await), [2]);
        assert!(!woken(&mut watch).await, "still parked");
        let other_reads =
            tokio::spawn(
                async move { received_until_quiet(&mut other_client, Duration::from_millis(500)).await },
            );

        // The client stops reading: its writer writes until the socket takes no more, then
        // wakes the watcher with what is left.
        let mut seq = 2;
        while !woken(&mut watch).await {
            seq += 1;
            hub.publish("u", &[page(id, seq, 20)]).await;
            assert!(seq < 10_000, "the socket never filled");
        }
        hub.publish("u", &[event(id, seq + 1, false)]).await;
        let mut unparked = watch.unpark().expect("it was parked");
        assert!(unparked.rest.has_remaining() && unparked.next.is_none());
        assert!(unparked.last > 10, "several were written first");
        let mut ring = Vec::new();
        while let Ok(Ok(framed)) = tokio::time::timeout(Duration::from_millis(20), watch.recv()).await {
            ring.push(framed.seq);
        }
        assert_eq!(
            ring,
            (unparked.last + 1..=seq + 1).collect::<Vec<_>>(),
            "the rest is in its place in the ring"
        );
        let mut body = received(&mut client).await;
        body.extend_from_slice(&unparked.rest.copy_to_bytes(unparked.rest.remaining()));
        assert_eq!(seqs(&body), (3..=unparked.last).collect::<Vec<_>>(), "every event once, whole, in order");
        let other_body = other_reads.await.unwrap();
        assert_eq!(seqs(&other_body), (3..=seq + 1).collect::<Vec<_>>(), "a client that reads gets all");
        assert!(!woken(&mut other).await);
    }

    #[tokio::test]
    async fn the_last_event_and_the_shutdown_wake_parked_watchers() {
        let hub = Hub::memory(Duration::ZERO);
        let id = BatchId::new();
        let mut watch = hub.watch(id);
        let (socket, mut client) = connection().await;
        assert!(watch.park(&socket, 1));
        hub.publish("u", &[event(id, 2, true)]).await;
        assert!(matches!(watch.next().await, Next::Woken));
        let unparked = watch.unpark().unwrap();
        assert_eq!((unparked.last, unparked.rest.remaining()), (1, 0));
        let Some(Ok(last)) = unparked.next else { panic!("the last event is handed over") };
        assert!(last.over && last.seq == 2, "it ends as any other watcher does");
        assert!(received(&mut client).await.is_empty());

        assert!(watch.park(&socket, 2), "a watcher that follows a finished batch parks again");
        hub.close_all();
        assert!(matches!(watch.next().await, Next::Woken));
        let unparked = watch.unpark().unwrap();
        assert!(matches!(unparked.next, Some(Err(broadcast::error::RecvError::Closed))));
        assert!(!watch.park(&socket, 2), "no parking while stopping");
    }

    #[tokio::test]
    async fn a_parked_watcher_leaving_releases_the_ring() {
        let hub = Hub::memory(Duration::ZERO);
        let id = BatchId::new();
        let (mut a, b) = (hub.watch(id), hub.watch(id));
        let (socket, _client) = connection().await;
        assert!(a.park(&socket, 0));
        assert!(!hub.watch_user("u").park(&socket, 0), "a user's streams do not park");
        drop(b);
        assert_eq!(hub.watched(), 1, "a parked watcher holds its batch");
        drop(a);
        assert_eq!(hub.watched(), 0);
    }

    /// A change of `items` items, each made at `seq` ms.
    fn page(id: BatchId, seq: u64, items: usize) -> BatchProgress {
        let item = |position| batchwatch_core::ItemProgress {
            id: batchwatch_core::ItemId::new(),
            name: "i".into(),
            status: batchwatch_core::ItemStatus::Processing,
            error: None,
            attempts: 1,
            position,
            updated_at: seq as i64,
        };
        BatchProgress::new(event(id, seq, false).summary, (0..items as u32).map(item).collect())
    }

    /// The events offered to a watcher so far and not yet taken.
    fn take(watch: &mut Watch) -> Vec<BatchProgress> {
        let mut offered = Vec::new();
        while let Ok(framed) = watch.rx.as_mut().unwrap().try_recv() {
            let json = std::str::from_utf8(&framed.bytes).unwrap().split_once("data: ").unwrap().1;
            offered.push(serde_json::from_str::<BatchProgress>(json.trim_end()).unwrap());
        }
        offered
    }

    #[tokio::test(start_paused = true)]
    async fn changes_faster_than_the_pace_carries_go_out_as_events_that_leave_their_items_out() {
        let interval = Duration::from_millis(20);
        let hub = Hub::memory(interval);
        let id = BatchId::new();
        let mut watch = hub.watch(id);
        watch.seen(1);
        // 40 pages of changes at once: the first goes at once, then the reserve's burst whole
        // at the next turn, and the rest joined into one event.
        for seq in 2..42 {
            hub.publish("u", &[page(id, seq, 500)]).await;
        }
        assert_eq!(take(&mut watch).iter().map(|e| e.summary.seq).collect::<Vec<_>>(), [2]);
        tokio::time::sleep(interval).await;
        let mut burst = take(&mut watch);
        let joined = burst.pop().unwrap();
        assert_eq!(burst.len(), pace::BURST as usize);
        assert!(burst.iter().all(|e| e.items.len() == 500 && e.left_out.is_none()));
        assert_eq!((joined.after(), joined.summary.seq), (27, 41));
        assert!(joined.items.is_empty());
        assert_eq!(joined.left_out, Some(batchwatch_core::LeftOut { changes: 14 * 500, oldest: 28 }));

        // Then a page of changes every 4 ms for a second: one event an interval, none listing
        // more than a page, and the watchers always on the newest summary within an interval.
        let mut events = Vec::new();
        for seq in 42..292 {
            hub.publish("u", &[page(id, seq, 500)]).await;
            tokio::time::sleep(Duration::from_millis(4)).await;
            events.extend(take(&mut watch));
        }
        tokio::time::sleep(interval).await;
        events.extend(take(&mut watch));
        assert!((49..=52).contains(&events.len()), "{} events in a second", events.len());
        assert!(events.iter().all(|e| e.items.len() <= 500));
        assert!(events.windows(2).all(|w| w[1].after() == w[0].summary.seq), "in order, nothing missing");
        assert_eq!(events.last().unwrap().summary.seq, 291);
        let changes: u32 =
            events.iter().map(|e| e.left_out.map_or(e.items.len() as u32, |l| l.changes)).sum();
        assert_eq!(changes, 250 * 500, "every change counted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_is_waited_for_while_the_events_that_fill_it_keep_coming() {
        let hub = Hub::memory(Duration::from_millis(20));
        let id = BatchId::new();
        let mut watch = hub.watch(id);
        watch.seen(1);
        hub.publish("u", &[event(id, 2, false)]).await;
        // Another process's 27 events arrive after the one that follows them, one every
        // 100 ms: 2.7 s in all, each well within HOLD of the one before.
        hub.publish("u", &[event(id, 30, false)]).await;
        for seq in 3..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            hub.publish("u", &[event(id, seq, false)]).await;
        }
        tokio::time::sleep(HOLD).await;
        let offered: Vec<_> = take(&mut watch).iter().map(|e| (e.after(), e.summary.seq)).collect();
        assert!(offered.windows(2).all(|w| w[1].0 == w[0].1), "an event went out over a gap: {offered:?}");
        assert_eq!(offered.last().map(|e| e.1), Some(30));
    }

    async fn next_frame(watch: &mut Watch) -> (u64, Vec<BatchSummary>) {
        let framed = tokio::time::timeout(Duration::from_secs(2), watch.recv()).await.unwrap().unwrap();
        let text = std::str::from_utf8(&framed.bytes).unwrap();
        let json = text.strip_prefix("event: batches\ndata: ").unwrap().trim_end();
        (framed.seq, serde_json::from_str(json).unwrap())
    }

    #[tokio::test]
    async fn a_users_streams_get_the_newest_summary_of_each_batch_at_a_bounded_pace() {
        let hub = Hub::memory(Duration::ZERO);
        let (a, b) = (BatchId::new(), BatchId::new());
        let mut watch = hub.watch_user("u");
        let mut other = hub.watch_user("someone else");
        // A quiet user's change goes out at once.
        hub.publish("u", &[event(a, 2, false)]).await;
        let (first, summaries) = next_frame(&mut watch).await;
        assert_eq!(summaries.iter().map(|s| (s.batch_id, s.seq)).collect::<Vec<_>>(), [(a, 2)]);
        // What follows within the interval waits for its end, the newest of each batch only
        // (one that arrives after a newer one of its batch is dropped).
        let started = tokio::time::Instant::now();
        hub.publish("u", &[event(a, 4, false)]).await;
        hub.publish("u", &[event(a, 3, false)]).await;
        hub.publish("u", &[event(b, 2, false)]).await;
        hub.publish_new("u", &event(b, 1, false).summary).await;
        let (second, mut summaries) = next_frame(&mut watch).await;
        assert!(started.elapsed() >= USER_INTERVAL / 2, "{:?}", started.elapsed());
        assert_eq!(second, first + 1);
        summaries.sort_by_key(|s| s.seq);
        assert_eq!(summaries.iter().map(|s| (s.batch_id, s.seq)).collect::<Vec<_>>(), [(b, 2), (a, 4)]);
        // Nobody else hears of it.
        assert!(other.rx.as_mut().unwrap().try_recv().is_err());
        drop((watch, other));
        assert!(hub.users().is_empty(), "the last stream of a user releases their ring");
    }
}
