//! Parked streams: caught up, their events written by their batch's writers.
//!
//! Why: each delivery through the ring woke its stream's task (the ring's waker, the task's
//! `select!`, its write). A stream that answers on a connection of its own
//! (`serve::stream_connection`) and is caught up (nothing queued, nothing half written) parks
//! instead: it hands its place in the ring and its socket to its batch's writers, a few tasks
//! (one per runtime thread but one, see [`shares`]) that each keep a share of the batch's
//! parked streams. An event wakes the writers, not the streams (Nchan's way), and a
//! writer writes to each of its streams what it has not had yet, from the stream's own place in
//! the ring, in one write that does not wait. When the writers fall behind (a wave of 10,000
//! writes takes longer than the time between two events), the next wave writes two events in
//! one call: the cost of a delivery falls as the load grows, as it does when each stream writes
//! for itself. A writer whose round took long rests as long before the next ([`LONG_ROUND`]), so
//! that at high fan-out each write carries several events.
//!
//! The socket has one writer at a time. A write the socket does not take whole (the client
//! reads slowly), an event that ends the batch, a watcher too far behind for the ring, and a
//! ring that closes wake the stream's task: the writer hands it its place in the ring, what is
//! left of the write, and what it did not write. A stream that has to say something of its own
//! (a keep-alive, its end) takes its place back. Both happen under its share's lock, so no
//! event is written twice or missed: the place in the ring was the stream's all along.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use slab::Slab;
use tokio::{
    sync::{
        Notify,
        broadcast::{
            self,
            error::{RecvError, TryRecvError},
        },
    },
    time::Instant,
};

use crate::{
    live::{
        hub::Framed,
        socket::{Out, Socket},
    },
    metrics,
};

/// Streams written to under one hold of a share's lock: a stream that takes its place back
/// waits for at most this many writes.
const HOLD: usize = 64;

/// A round at least this long is followed by a rest as long as itself (at most [`MAX_REST`]):
/// the writer then spends at most half its time writing, and each of its next writes carries
/// what came in the meantime, two or three events in one system call instead of one each.
/// Most of a write's cost is the call and the packet, not its bytes, so at high fan-out the CPU
/// per delivery halves, for a round's more latency (a progress bar still moves a few times a
/// second). Shorter rounds (1,000 watchers: ~5 ms) are not touched: their events are written as
/// they come. Measured on 2 cores with the load tool beside the server, without → with the rest
/// (`loadgen --bin`, alternated): 1 × 10,000 watchers at 20 events/s, CPU per delivery 5.0 →
/// 2.8–2.9 µs, p50 / p99 39–61 / 97–173 → 117–132 / 271–341 ms; 1 × 5,000 at 50/s, 4.0–4.1 →
/// 2.0–2.2 µs, 20–35 / 46–84 → 54–62 / 122–147 ms; 1 × 1,000 and 1,000 × 1 unchanged. A rest of
/// half the round gave 3.6 µs and p50 96 ms; one bounded at 100 ms 2.9–3.1 µs (README).
const LONG_ROUND: Duration = Duration::from_millis(20);
/// The longest rest: what a stream's event may wait beyond a round, however slow the machine.
const MAX_REST: Duration = Duration::from_millis(250);

type Ring = broadcast::Receiver<Arc<Framed>>;

/// A batch's parked streams, in shares.
pub struct Parked {
    shares: Vec<Arc<Share>>,
    /// The share the next stream goes to.
    turn: usize,
}

/// A share of a batch's parked streams, and its writer.
#[derive(Default)]
pub struct Share {
    streams: Mutex<Slab<Entry>>,
    /// How many streams it holds, read without the lock.
    len: AtomicUsize,
    /// Tells the writer there is something new in the ring.
    signal: Notify,
    /// Its writer is running.
    started: AtomicBool,
    /// The batch is no longer watched here: a last round, then the writer ends.
    closed: AtomicBool,
}

struct Entry {
    /// Tells this stream from one that took its key after it left.
    id: u64,
    socket: Socket,
    rx: Ring,
    /// The newest `seq` its client has.
    last: u64,
    wake: Arc<Wake>,
}

/// A parked stream's claim on its entry.
pub struct Ticket {
    share: Arc<Share>,
    key: usize,
    id: u64,
}

/// How a writer wakes a parked stream's task, and what it hands it.
#[derive(Default)]
pub struct Wake {
    notify: Notify,
    woken: Mutex<Option<Woken>>,
}

/// What a stream starts again from when it leaves the parked ones.
pub struct Woken {
    /// Its place in the ring.
    pub rx: Ring,
    /// The newest `seq` its client has, once `rest` is written.
    pub last: u64,
    /// What is left to write, in its wire format.
    pub rest: Out,
    /// What the ring gave that the writer did not write: an event that ends the batch, or word
    /// that the stream fell behind or the ring closed.
    pub next: Option<Result<Arc<Framed>, RecvError>>,
}

impl Wake {
    /// What the writer handed over when it woke the stream, if it did.
    pub fn take(&self) -> Option<Woken> {
        lock(&self.woken).take()
    }

    /// Completes once a writer has woken the stream.
    pub async fn woken(&self) {
        loop {
            let notified = self.notify.notified();
            if lock(&self.woken).is_some() {
                return;
            }
            notified.await;
        }
    }

    fn wake(&self, woken: Woken) {
        *lock(&self.woken) = Some(woken);
        self.notify.notify_one();
    }
}

impl Default for Parked {
    fn default() -> Self {
        Self { shares: (0..shares()).map(|_| Arc::default()).collect(), turn: 0 }
    }
}

impl Parked {
    /// Parks a stream whose client has `last`, with its place in the ring (where nothing waits
    /// for it).
    pub fn park(&mut self, socket: Socket, rx: Ring, last: u64, wake: Arc<Wake>) -> Ticket {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let share = self.shares[self.turn % self.shares.len()].clone();
        self.turn += 1;
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let key = share.lock().insert(Entry { id, socket, rx, last, wake });
        share.len.fetch_add(1, Ordering::Relaxed);
        metrics::parked(1.0);
        if !share.started.swap(true, Ordering::Relaxed) {
            tokio::spawn(share.clone().write());
        }
        Ticket { share, key, id }
    }

    /// Tells the writers of shares with streams that an event is in the ring.
    pub fn signal(&self) {
        for share in &self.shares {
            if share.len.load(Ordering::Relaxed) > 0 {
                share.signal.notify_one();
            }
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        // The ring is gone with the batch's topic: the writers' last round hands each stream
        // its closed place.
        for share in &self.shares {
            share.closed.store(true, Ordering::Relaxed);
            share.signal.notify_one();
        }
    }
}

impl Ticket {
    /// Takes the stream back, with its place in the ring and the newest `seq` its client has,
    /// unless a writer woke it first (then [`Wake::take`] has what it handed over).
    pub fn take(&self) -> Option<(Ring, u64)> {
        let mut streams = self.share.lock();
        streams.get(self.key).filter(|entry| entry.id == self.id)?;
        let entry = streams.remove(self.key);
        self.share.left();
        Some((entry.rx, entry.last))
    }
}

impl Share {
    fn lock(&self) -> MutexGuard<'_, Slab<Entry>> {
        lock(&self.streams)
    }

    /// One stream fewer in this share (taken back, or woken), in its count and the gauge.
    fn left(&self) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        metrics::parked(-1.0);
    }

    /// The writer: a round over the share's streams at each signal.
    async fn write(self: Arc<Self>) {
        let mut out = Out::default();
        loop {
            self.signal.notified().await;
            let closed = self.closed.load(Ordering::Relaxed);
            let started = Instant::now();
            self.round(&mut out).await;
            if closed {
                return;
            }
            if let Some(rest) = rest_after(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }

    /// Writes to each stream what the ring holds for it, a few streams per hold of the lock.
    /// Between two holds the writer lets the thread run other tasks: a round over thousands of
    /// streams takes tens of milliseconds, and the hub's subscriber must not wait that long to
    /// take the next event (it would then come late, joined with the ones after it).
    async fn round(&self, out: &mut Out) {
        let mut key = 0;
        loop {
            if key > 0 {
                tokio::task::yield_now().await;
            }
            let mut streams = self.lock();
            let end = streams.capacity().min(key + HOLD);
            if key >= end {
                return;
            }
            for key in key..end {
                let Some(entry) = streams.get_mut(key) else { continue };
                let Some(next) = entry.write(out) else { continue };
                let entry = streams.remove(key);
                self.left();
                let rest = std::mem::take(out);
                entry.wake.wake(Woken { rx: entry.rx, last: entry.last, rest, next });
            }
            key = end;
        }
    }
}

impl Entry {
    /// Writes what the ring holds for this stream: `None` when the socket took it all and there
    /// is nothing the stream's task must see to; otherwise what the ring gave that was not
    /// written (`out` keeps what the socket did not take).
    #[allow(clippy::option_option, reason = "woken, and with what")]
    fn write(&mut self, out: &mut Out) -> Option<Option<Result<Arc<Framed>, RecvError>>> {
        let chunked = self.socket.chunked();
        loop {
            let next = loop {
                match self.rx.try_recv() {
                    Ok(framed) if framed.seq <= self.last => {}
                    Ok(framed) if framed.over => break Some(Ok(framed)),
                    Ok(framed) => {
                        self.last = framed.seq;
                        framed.kind.count();
                        out.wired(framed.wire(chunked));
                        if !out.has_room() {
                            break None;
                        }
                    }
                    Err(TryRecvError::Empty) => break None,
                    Err(TryRecvError::Lagged(skipped)) => break Some(Err(RecvError::Lagged(skipped))),
                    Err(TryRecvError::Closed) => break Some(Err(RecvError::Closed)),
                }
            };
            let full = !out.has_room();
            // Would block, or the connection failed: the task finds out which as it writes.
            let written = self.socket.try_write(out).unwrap_or(false);
            if !written || next.is_some() {
                return Some(next);
            }
            if !full {
                return None;
            }
        }
    }
}

/// How long a writer rests after a round that took `took` (see [`LONG_ROUND`]).
fn rest_after(took: Duration) -> Option<Duration> {
    (took >= LONG_ROUND).then(|| took.min(MAX_REST))
}

/// Shares a batch's parked streams are split into: one per thread of the runtime but one, so
/// that a wave of writes never holds every thread, and the hub's subscriber, its timers and the
/// API's requests keep one. Measured on 2 cores with the load tool beside the server, one
/// writer against two: 1 × 5,000 watchers p50 / p99 25–27 / 69–74 ms against 32–37 / 73–82
/// and events joined by the pacing 0.4–1.6 % against 1.6–5.2 %; 1 × 10,000 40–43 / 101–106 ms
/// against 49–50 / 127–135; the same CPU per delivery.
fn shares() -> usize {
    static SHARES: OnceLock<usize> = OnceLock::new();
    *SHARES.get_or_init(|| {
        tokio::runtime::Handle::try_current()
            .map_or(1, |runtime| runtime.metrics().num_workers().saturating_sub(1).max(1))
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_long_round_is_followed_by_a_rest_as_long_and_bounded() {
        assert_eq!(rest_after(Duration::from_millis(5)), None);
        assert_eq!(rest_after(LONG_ROUND - Duration::from_micros(1)), None);
        assert_eq!(rest_after(LONG_ROUND), Some(LONG_ROUND));
        assert_eq!(rest_after(Duration::from_millis(60)), Some(Duration::from_millis(60)));
        assert_eq!(rest_after(Duration::from_secs(3)), Some(MAX_REST));
    }
}
