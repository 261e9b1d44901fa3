//! `GET /api/batches/{id}/stream`: a batch's progress as Server-Sent Events.
//!
//! First the current snapshot (`event: snapshot`: the summary, cache-first, and no items; a
//! page reads the items it shows from `GET /api/batches/{id}/items`), unless the client says with
//! `Last-Event-ID` (or `?last_event_id=`) that it already has that `seq`; then `event:
//! progress` at each change, each with `id: <seq>`; `event: complete` once the batch is
//! over (final, and no item left to finish), then the stream ends (with `?follow=true` it goes on: a retry can open the batch
//! again, and the page hears of it). A `: ping` comment keeps idle connections open, `event:
//! timeout` ends a stream after its maximum age, `event: signed_out` one whose token was
//! revoked or whose session ended (announced at once, and asked every few keep-alives),
//! `event: reconnect` when the server shuts down (the page comes back at once), and `event:
//! error` one that cannot go on. Change events come framed from the hub and are shared by all
//! watchers; a watcher that answers on a connection of its own, and has nothing else to write,
//! parks, and its batch's writers write its events to the socket (`parked.rs`).
//!
//! `GET /api/stream` follows every batch of the signed-in user the same way (and counts as one
//! stream in their limit): `snapshot` is the newest page of their batches, then `batches` holds
//! the summaries of those that changed (a few times a second at most); it never completes.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use batchwatch_core::{BatchId, BatchProgress, BatchSummary, Page};
use bytes::{Buf, Bytes};
use futures::{Future, StreamExt};
use serde::Deserialize;
use tokio::{
    sync::{broadcast::error::RecvError, mpsc},
    time::Instant,
};

use crate::{
    access::{
        auth::{Recheck, SignedUser},
        limits::StreamSlot,
    },
    batches::{Access, Batches},
    config::StreamTimes,
    error::Result,
    extract::{Path, Query},
    live::{
        frame::{PING, RETRY, frame},
        hub::{Framed, Next, Watch, Watched},
        socket::{Out, Socket},
    },
    metrics::{OpenStream, Sent},
    state::AppState,
};

/// Chunks written ahead of the client. Kept small: a client that does not read stops the
/// watcher taking events from the hub's ring, and it skips ahead with a snapshot later.
const OUTBOX: usize = 4;
/// Keep-alives between two checks that the sign-in still holds. Revocations and sign-outs are
/// announced and end streams within a second; asking is the fallback for an announcement
/// lost while Redis was away, and a minute late is fine for that.
const RECHECK_EVERY: u32 = 4;

/// One event of a stream, as a client parses it (the OpenAPI description's per-event schema):
/// `data` is JSON (`{}` for the events that carry nothing).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "it describes the wire format; events are framed as bytes")]
pub struct SseEvent {
    /// `snapshot`, `progress`, `batches`, `complete`, `timeout`, `signed_out`, `reconnect` or
    /// `error`.
    event: String,
    data: String,
    /// The batch's `seq`, on a batch's `snapshot` and `progress`.
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Resume {
    last_event_id: Option<u64>,
    /// Stay after `complete`: a finished batch can be opened again (retried).
    #[serde(default)]
    follow: bool,
}

/// Follow a batch live, as Server-Sent Events: `snapshot` (the summary, no items, unless
/// `Last-Event-ID` says the client has it), `progress` at each change (the summary and the
/// changed items, `id` = `seq`), `complete` once finished, `timeout` after the stream's
/// maximum age, `signed_out`, `reconnect` (the server is stopping: come back now) and
/// `error`. A `: ping` comment keeps the connection open.
#[utoipa::path(
    get,
    path = "/api/batches/{id}/stream",
    params(
        ("id" = BatchId, Path, description = "The batch's id"),
        ("last_event_id" = Option<u64>, Query, description = "The `seq` the client has (as `Last-Event-ID`)"),
        ("follow" = Option<bool>, Query, description = "Stay open after `complete`, to hear of a retry that opens the batch again"),
        ("Last-Event-ID" = Option<u64>, Header, description = "The `seq` the client has"),
    ),
    responses(
        (status = 200, description = "An event stream that lasts until the batch finishes", content_type = "text/event-stream", body = SseEvent),
        (status = 400, description = "Not a batch id", body = crate::error::ErrorBody),
        (status = 401, description = "No valid token or session", body = crate::error::ErrorBody),
        (status = 403, description = "A worker token", body = crate::error::ErrorBody),
        (status = 404, description = "No such batch, or another user's", body = crate::error::ErrorBody),
        (status = 422, description = "A bad `last_event_id`", body = crate::error::ErrorBody),
        (status = 429, description = "Too many open streams; see `Retry-After`", body = crate::error::ErrorBody),
    ),
)]
pub async fn stream(
    State(state): State<AppState>,
    SignedUser(principal, credential): SignedUser,
    Path(id): Path<BatchId>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Result<Response> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(resume.last_event_id);
    tracing::debug!(batch = %id, ?last_seen, "stream opened");
    // Watch before reading the snapshot: an event committed in between is then in the ring.
    let watch = state.batches.hub().watch(id);
    let viewer = &principal.viewer;
    let snapshot =
        BatchProgress::new(state.batches.summary(Access::Owner(&viewer.user_id), id).await?, Vec::new());
    watch.seen(snapshot.summary.seq);
    // After the ownership check: another user's batch is a 404 whatever their count.
    let slot = state.limits.open_stream(&viewer.user_id).await?;
    let recheck = Recheck::new(&state, &principal, credential);
    let watcher = Watcher::new(Opened {
        watch,
        batches: state.batches.clone(),
        times: state.streams,
        snapshot: Snapshot::Batch(snapshot),
        last_seen,
        follow: resume.follow,
        slot,
        recheck,
    });
    Ok(respond(watcher))
}

/// Follow every batch of the signed-in user, as Server-Sent Events: `snapshot` (the newest 50
/// of their batches, newest first), then `batches` (the summaries of those that changed since
/// the last, at most four times a second), `timeout`, `signed_out`, `reconnect` (come back now:
/// the server is stopping, or it lost events and the list must be read again) and `error`. It
/// never completes; it counts as one stream in the user's limit.
#[utoipa::path(
    get,
    path = "/api/stream",
    responses(
        (status = 200, description = "An event stream of the user's batches", content_type = "text/event-stream", body = SseEvent),
        (status = 401, description = "No valid token or session", body = crate::error::ErrorBody),
        (status = 403, description = "A worker token", body = crate::error::ErrorBody),
        (status = 429, description = "Too many open streams; see `Retry-After`", body = crate::error::ErrorBody),
    ),
)]
pub async fn user_stream(
    State(state): State<AppState>,
    SignedUser(principal, credential): SignedUser,
) -> Result<Response> {
    let user = &principal.viewer.user_id;
    // Watch before reading the list: a change committed in between is then in the ring.
    let watch = state.batches.hub().watch_user(user);
    // The slot first: a stream refused for the limit costs no read.
    let slot = state.limits.open_stream(user).await?;
    let list = state.batches.list(user, Page::default()).await?;
    let recheck = Recheck::new(&state, &principal, credential);
    let watcher = Watcher::new(Opened {
        watch,
        batches: state.batches.clone(),
        times: state.streams,
        snapshot: Snapshot::Batches(list),
        last_seen: None,
        follow: true,
        slot,
        recheck,
    });
    Ok(respond(watcher))
}

/// The response of an opened stream, its watcher ready to run (see [`Unstarted`]).
fn respond(watcher: Watcher) -> Response {
    let unstarted = Unstarted(Arc::new(Mutex::new(Some(watcher))));
    // Fused: a layer may poll a body once more after its end.
    let body = Body::from_stream(
        futures::stream::unfold((unstarted.clone(), None), |(unstarted, rx)| async move {
            let mut rx = match rx {
                Some(rx) => rx,
                // The watcher runs as a task of its own, so that its timers, its slot and its
                // sign-in check keep going when the client stops reading (hyper polls a body
                // only while the socket takes data); the body only drains the small outbox it
                // fills.
                None => {
                    let watcher = unstarted.take()?;
                    let (tx, rx) = mpsc::channel(OUTBOX);
                    tokio::spawn(watcher.run(Sink { to: To::Outbox(tx), pending: Out::default() }));
                    rx
                }
            };
            let chunk = rx.recv().await?;
            Some((Ok::<_, Infallible>(chunk), (unstarted, Some(rx))))
        })
        .fuse(),
    );
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform")),
            (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
        ],
        body,
    )
        .into_response();
    response.extensions_mut().insert(unstarted);
    response
}

/// A stream's watcher before it runs, in its response's extensions. A connection answered
/// without hyper (`serve::stream_connection`) takes it and runs it in its own task, writing to
/// the socket; otherwise the body starts it at its first poll.
#[derive(Clone)]
pub struct Unstarted(Arc<Mutex<Option<Watcher>>>);

impl Unstarted {
    fn take(&self) -> Option<Watcher> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The watcher, writing to `socket` after `head` (the response's head, in its wire
    /// format), until the stream is over or the client leaves; `None` if it was taken.
    pub fn run_on(&self, socket: Socket, head: Out) -> Option<impl Future<Output = ()> + Send + use<>> {
        let watcher = self.take()?;
        Some(watcher.run(Sink { to: To::Socket(socket), pending: head }))
    }
}

/// Where a watcher's frames go.
struct Sink {
    to: To,
    /// What is taken from the watcher's queue and not yet written whole, in its wire format
    /// (a socket's).
    pending: Out,
}

enum To {
    /// The response body's channel, which hyper drains.
    Outbox(mpsc::Sender<Bytes>),
    /// The connection's socket, written by the watcher's task, and by its batch's writers
    /// while the watcher is parked.
    Socket(Socket),
}

impl To {
    /// Completes when the client is gone.
    async fn gone(&self) {
        match self {
            To::Outbox(tx) => tx.closed().await,
            To::Socket(socket) => drop(socket.client_left().await),
        }
    }

    /// Hands the first frames of `out` on, waiting for room: whether the client is still
    /// there. Frames ready together leave in one `writev`: a watcher that fell behind by a few
    /// events catches up in one system call (measured: writes per delivery 1.0 → 0.46 with
    /// 5,000 watchers, and the fan-out's latency with them).
    async fn send(&self, pending: &mut Out, out: &mut VecDeque<Bytes>) -> bool {
        match self {
            To::Outbox(tx) => match tx.reserve().await {
                Ok(permit) => {
                    permit.send(out.pop_front().expect("not empty"));
                    true
                }
                Err(_) => false,
            },
            To::Socket(socket) => {
                while pending.has_room()
                    && let Some(frame) = out.pop_front()
                {
                    pending.frame(frame, socket.chunked());
                }
                socket.write(pending).await.is_ok()
            }
        }
    }

    /// Sends what is left once the stream is over, and the body's end.
    async fn finish(self, mut pending: Out, rest: VecDeque<Bytes>) {
        match self {
            To::Outbox(tx) => {
                for chunk in rest {
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            }
            To::Socket(socket) => {
                for frame in rest {
                    pending.frame(frame, socket.chunked());
                }
                pending.end(socket.chunked());
                drop(socket.write(&mut pending).await);
            }
        }
    }
}

struct Watcher {
    watch: Watch,
    batches: Batches,
    /// The newest `seq` this client has.
    last: u64,
    out: VecDeque<Bytes>,
    done: bool,
    keepalive: tokio::time::Interval,
    /// Keep-alives so far.
    ticks: u32,
    /// Registered once: a timer made anew at every event costs more than the event's write.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// This stream's place in its user's limit, renewed at each keep-alive, freed on drop.
    slot: StreamSlot,
    /// Hears announced ends of sign-ins, and is asked every few keep-alives.
    recheck: Recheck,
    /// Goes on after `complete` (see [`Resume`]).
    follow: bool,
    _open: OpenStream,
}

/// The first state a stream sends: a batch's, or a user's list of batches.
enum Snapshot {
    Batch(BatchProgress),
    Batches(Vec<BatchSummary>),
}

/// What a stream starts from, once its request has been checked.
struct Opened {
    watch: Watch,
    batches: Batches,
    times: StreamTimes,
    snapshot: Snapshot,
    /// The `seq` the client says it has.
    last_seen: Option<u64>,
    follow: bool,
    slot: StreamSlot,
    recheck: Recheck,
}

impl Watcher {
    fn new(Opened { watch, batches, times, snapshot, last_seen, follow, slot, recheck }: Opened) -> Self {
        // The first keep-alive falls anywhere in the second half of a period: streams opened
        // together (a reconnect storm after a restart) would otherwise re-check their sign-in
        // and renew their slots together at every tick, a burst that shows in everyone's tail.
        let first = times.keepalive.mul_f64(0.5 + fastrand::f64() / 2.0);
        let mut keepalive = tokio::time::interval_at(Instant::now() + first, times.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut w = Self {
            watch,
            batches,
            last: 0,
            out: VecDeque::from([RETRY]),
            done: false,
            keepalive,
            ticks: 0,
            deadline: Box::pin(tokio::time::sleep(times.max_age)),
            slot,
            recheck,
            follow,
            _open: OpenStream::open(),
        };
        match snapshot {
            Snapshot::Batch(snapshot) if last_seen == Some(snapshot.summary.seq) => {
                w.last = snapshot.summary.seq;
                w.finish_if_over(&snapshot);
            }
            Snapshot::Batch(snapshot) => w.send_snapshot(&snapshot),
            Snapshot::Batches(list) => w.send_list(&list),
        }
        w
    }

    /// Fills `sink` until the stream is over or the client leaves. The keep-alive, the maximum
    /// age and the end of the sign-in act whether or not the client reads; events are taken
    /// from the hub only as the client takes them. On a socket, a watcher with nothing to
    /// write parks, and its batch's writers write its events (`parked.rs`).
    async fn run(mut self, mut sink: Sink) {
        loop {
            let idle = self.out.is_empty() && !sink.pending.has_remaining();
            if !idle && self.watch.is_parked() {
                // Something of its own to say: the socket is this task's again first.
                self.unpark(&mut sink).await;
                continue;
            }
            if self.done {
                break;
            }
            if idle && let To::Socket(socket) = &sink.to {
                self.watch.park(socket, self.last);
            }
            tokio::select! {
                () = sink.to.gone() => return,
                sent = sink.to.send(&mut sink.pending, &mut self.out), if !idle => if !sent {
                    return;
                },
                next = self.watch.next(), if idle => match next {
                    Next::Event(msg) => self.on_msg(msg).await,
                    Next::Woken => self.unpark(&mut sink).await,
                },
                () = self.recheck.ended() => self.signed_out(),
                _ = self.keepalive.tick() => {
                    self.ticks += 1;
                    // Boxed, as is `resync`: the rare lookup's future would otherwise be part of
                    // every stream's task for its whole life.
                    if self.ticks.is_multiple_of(RECHECK_EVERY) && !Box::pin(self.recheck.holds()).await {
                        self.signed_out();
                        continue;
                    }
                    self.slot.renew();
                    if self.out.is_empty() {
                        self.push(Sent::Ping, PING);
                    }
                }
                () = &mut self.deadline => {
                    self.push(Sent::Timeout, frame("timeout", None, b"{}"));
                    self.done = true;
                }
            }
        }
        // The stream is over: its place, its ring and its sign-in check go now; what is left to
        // write waits for the client (or for the kernel to drop a connection that stalls).
        let rest = std::mem::take(&mut self.out);
        drop(self);
        sink.to.finish(sink.pending, rest).await;
    }

    /// Takes the socket back from the batch's writers: what they left half written goes
    /// first, then what they did not write.
    async fn unpark(&mut self, sink: &mut Sink) {
        let Some(unparked) = self.watch.unpark() else { return };
        self.last = self.last.max(unparked.last);
        // Nothing was pending while it was parked.
        sink.pending = unparked.rest;
        if let Some(msg) = unparked.next.filter(|_| !self.done) {
            self.on_msg(msg).await;
        }
    }

    async fn on_msg(&mut self, msg: Result<Arc<Framed>, RecvError>) {
        match msg {
            Ok(event) => {
                if event.seq > self.last {
                    self.last = event.seq;
                    self.push(event.kind, event.bytes.clone());
                    if event.over {
                        self.complete();
                    }
                }
            }
            // Too far behind for the ring: jump to the newest state.
            Err(RecvError::Lagged(skipped)) => {
                tracing::debug!(skipped, "watcher lagged; sending a fresh snapshot");
                Box::pin(self.resync()).await;
            }
            // The server is stopping, or a user's stream must start again from a fresh list (see
            // `Hub::stale_all`).
            Err(RecvError::Closed) if self.watch.closing() || matches!(self.watch.of(), Watched::User(_)) => {
                // The page reconnects at once rather than after its backoff.
                self.push(Sent::Reconnect, frame("reconnect", None, b"{}"));
                self.done = true;
            }
            Err(RecvError::Closed) => self.fail(),
        }
    }

    fn push(&mut self, sent: Sent, chunk: Bytes) {
        sent.count();
        self.out.push_back(chunk);
    }

    /// Sends a fresh snapshot (a batch's cache-first) when it is newer than what the client
    /// has.
    async fn resync(&mut self) {
        // The stream checked its viewer when it opened.
        let read = match self.watch.of().clone() {
            Watched::Batch(id) => self.batches.summary(Access::Any, id).await.map(|summary| {
                if summary.seq > self.last {
                    self.send_snapshot(&BatchProgress::new(summary, Vec::new()));
                }
            }),
            Watched::User(user) => {
                self.batches.list(&user, Page::default()).await.map(|list| self.send_list(&list))
            }
        };
        if let Err(error) = read {
            tracing::warn!(%error, "cannot read a snapshot for a watcher");
            self.fail();
        }
    }

    /// Sends a user's list of batches (read for this stream alone: users have few streams).
    fn send_list(&mut self, list: &[BatchSummary]) {
        let json = serde_json::to_vec(list).expect("progress types always serialize");
        self.push(Sent::Snapshot, frame("snapshot", None, &json));
    }

    /// Sends a snapshot, framed once for all the watchers that start from it.
    fn send_snapshot(&mut self, snapshot: &BatchProgress) {
        self.last = snapshot.summary.seq;
        let framed = self.watch.framed_snapshot(snapshot);
        self.push(Sent::Snapshot, framed);
        self.finish_if_over(snapshot);
    }

    fn finish_if_over(&mut self, snapshot: &BatchProgress) {
        if snapshot.summary.is_over() {
            self.complete();
        }
    }

    fn complete(&mut self) {
        self.push(Sent::Complete, frame("complete", None, format!("{{\"seq\":{}}}", self.last).as_bytes()));
        self.done = !self.follow;
    }

    /// The page reloads, and the server sends it to /login. Nothing queued for the sign-in
    /// that ended is sent.
    fn signed_out(&mut self) {
        self.out.clear();
        self.push(Sent::SignedOut, frame("signed_out", None, b"{}"));
        self.done = true;
    }

    fn fail(&mut self) {
        self.push(Sent::Error, frame("error", None, br#"{"message":"the server cannot follow this batch"}"#));
        self.done = true;
    }
}
