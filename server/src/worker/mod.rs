//! Workers: claim items, run the [`Processor`], report the outcome, all through [`Batches`],
//! the path every change takes.
//!
//! One dispatcher per process claims items in chunks, batch after batch in turn
//! ([`turns::Turns`]), into a queue the workers take from; the workers report outcomes without
//! waiting for them to commit, so a batch's changes meet in its group commit (one transaction
//! and one event for many items). The dispatcher claims one item per idle worker, and ahead
//! only as far as the workers' pace needs: twice as many as they took while its last claim was
//! on its way, and twice as many as it claimed ahead last time when a worker found the queue
//! empty meanwhile (a claim's flight measures nothing while the workers wait for it: fast
//! items would be claimed a few at a time for ever). Slow items keep nothing claimed but what
//! is worked on, or a few now and then (a person sees about as many `processing` as there are
//! busy workers, and a process that dies loses only those); fast ones keep the workers fed.
//!
//! A failed attempt is retried in place with exponential backoff (the item stays
//! `processing`, so the batch never looks finished between attempts) until `MAX_ATTEMPTS`,
//! then the item fails for good. While an item is worked on its lease is renewed; an item
//! whose lease lapsed (its process died) is claimed again, up to `MAX_RECLAIMS` times.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

pub mod processor;
pub mod turns;

use batchwatch_core::{BatchId, ItemId, ItemProgress, ItemStatus, StatusReport};
use tokio::{
    sync::{Mutex, Notify, mpsc, watch},
    task::JoinSet,
};

pub use self::processor::{Demo, Processor};
use crate::{batches::Batches, config::Config};

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub workers: usize,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub poll: Duration,
    pub lease: Duration,
    pub max_reclaims: u32,
    /// The most items claimed at once.
    pub claim_chunk: u32,
    /// How long a stopping worker may go on with its item before giving it back.
    pub grace: Duration,
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Self {
            workers: c.workers,
            max_attempts: c.max_attempts,
            retry_base: Duration::from_millis(c.retry_base_ms),
            poll: Duration::from_millis(c.worker_poll_ms),
            lease: Duration::from_secs(c.processing_lease_secs),
            max_reclaims: c.max_reclaims,
            claim_chunk: c.claim_chunk,
            // Most of the shutdown time: the rest is for giving the item back and exiting.
            grace: c.shutdown().mul_f64(0.8),
        }
    }
}

/// An item claimed for a worker.
type Claimed = (BatchId, ItemProgress);

/// Runs the workers until `stop` turns true; each finishes its current item first, or gives
/// it back to the queue when that takes longer than `grace`. Claimed items no worker started
/// are given back, and every outcome is committed before this returns.
pub async fn run(
    batches: Batches,
    processor: Arc<dyn Processor>,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    if settings.workers == 0 {
        return;
    }
    let (queue, waiting) = mpsc::channel::<Claimed>(settings.claim_chunk.max(1) as usize);
    let waiting = Arc::new(Mutex::new(waiting));
    let pace = Arc::new(Pace::default());
    let mut set = JoinSet::new();
    for n in 0..settings.workers {
        let worker = Worker {
            n,
            batches: batches.clone(),
            processor: processor.clone(),
            settings,
            waiting: waiting.clone(),
            pace: pace.clone(),
            stop: stop.clone(),
        };
        set.spawn(worker.run());
    }
    dispatch(&batches, settings, &queue, &pace, stop).await;
    drop(queue);
    while set.join_next().await.is_some() {}
    // What was claimed and never started goes back at once, batch by batch.
    let mut left: HashMap<BatchId, Vec<ItemId>> = HashMap::new();
    let mut waiting = waiting.lock().await;
    while let Ok((batch, item)) = waiting.try_recv() {
        left.entry(batch).or_default().push(item.id);
    }
    for (batch, items) in left {
        release(&batches, batch, &items).await;
    }
    batches.settled().await;
}

/// How the workers get on: items taken so far, workers on an item now, times a worker that
/// finished an item found the queue empty, and a wake-up for the dispatcher whenever one
/// finishes.
#[derive(Default)]
struct Pace {
    taken: AtomicUsize,
    busy: AtomicUsize,
    starved: AtomicUsize,
    finished: Notify,
}

/// Claims items into `queue` until `stop`.
async fn dispatch(
    batches: &Batches,
    settings: Settings,
    queue: &mpsc::Sender<Claimed>,
    pace: &Pace,
    mut stop: watch::Receiver<bool>,
) {
    let mut turns = turns::Turns::default();
    let mut ahead = 0;
    let mut reclaimed_at = tokio::time::Instant::now();
    while !*stop.borrow() {
        let waiting = queue.max_capacity() - queue.capacity();
        let idle = settings.workers.saturating_sub(pace.busy.load(Ordering::Relaxed));
        let want = (idle + ahead).saturating_sub(waiting).min(queue.capacity());
        if want == 0 {
            tokio::select! {
                () = pace.finished.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let (taken_before, starved_before) =
            (pace.taken.load(Ordering::Relaxed), pace.starved.load(Ordering::Relaxed));
        // Items whose worker died are looked for a few times a lease, and whenever there is
        // nothing pending.
        let mut claimed = Vec::new();
        if reclaimed_at.elapsed() >= settings.lease / 3 {
            reclaimed_at = tokio::time::Instant::now();
            claimed.extend(reclaim(batches, settings, want).await);
        }
        if claimed.len() < want {
            match turns.claim(batches, (want - claimed.len()) as u32).await {
                Ok(items) => claimed.extend(items),
                Err(error) => tracing::warn!(%error, "claiming work failed"),
            }
        }
        if claimed.is_empty() {
            claimed.extend(reclaim(batches, settings, want).await);
        }
        if claimed.is_empty() {
            // Idle: a batch created here wakes us at once; other processes' after `poll`.
            tokio::select! {
                () = batches.work_available() => {}
                () = tokio::time::sleep(settings.poll) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for item in claimed {
            // Never more than `want` (the queue's free room): this does not wait.
            if queue.send(item).await.is_err() {
                return;
            }
        }
        let during = pace.taken.load(Ordering::Relaxed) - taken_before;
        let starved = pace.starved.load(Ordering::Relaxed) != starved_before;
        let grown = if starved { 2 * ahead.max(1) } else { 0 };
        ahead = (2 * during).max(grown).min(settings.claim_chunk as usize);
    }
}

/// Up to `want` items whose worker was lost, claimed again.
async fn reclaim(batches: &Batches, settings: Settings, want: usize) -> Vec<Claimed> {
    let mut claimed = Vec::new();
    while claimed.len() < want {
        match batches.reclaim(settings.lease, settings.max_reclaims).await {
            Ok(Some(item)) => claimed.push(item),
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "reclaiming work failed");
                break;
            }
        }
    }
    claimed
}

struct Worker {
    n: usize,
    batches: Batches,
    processor: Arc<dyn Processor>,
    settings: Settings,
    waiting: Arc<Mutex<mpsc::Receiver<Claimed>>>,
    pace: Arc<Pace>,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        tracing::debug!(worker = self.n, "worker started");
        loop {
            let next = {
                let mut waiting = self.waiting.lock().await;
                tokio::select! {
                    biased;
                    _ = self.stop.wait_for(|stopping| *stopping) => None,
                    next = waiting.recv() => next,
                }
            };
            let Some((batch, item)) = next else { break };
            self.pace.taken.fetch_add(1, Ordering::Relaxed);
            self.pace.busy.fetch_add(1, Ordering::Relaxed);
            let mut stop = self.stop.clone();
            let grace = self.settings.grace;
            let out_of_time = async move {
                if stop.wait_for(|stopping| *stopping).await.is_err() {
                    // Nobody can stop us any more: never out of time.
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                outcome = self.process(batch, &item) => self.report(batch, item.id, outcome),
                () = out_of_time => release(&self.batches, batch, &[item.id]).await,
            }
            self.pace.busy.fetch_sub(1, Ordering::Relaxed);
            // Nothing queued for this worker now (or another already waits for the queue):
            // counted before the dispatcher hears of it, so that only a shortage while a claim
            // is on its way makes the next one claim more.
            if self.waiting.try_lock().map_or(true, |waiting| waiting.is_empty()) {
                self.pace.starved.fetch_add(1, Ordering::Relaxed);
            }
            self.pace.finished.notify_one();
        }
        tracing::debug!(worker = self.n, "worker stopped");
    }

    /// Attempts the item until it succeeds or runs out of attempts, renewing its lease
    /// meanwhile.
    async fn process(&self, batch: BatchId, item: &ItemProgress) -> StatusReport {
        let settings = self.settings;
        let attempts = async {
            let mut attempt = 1;
            loop {
                match self.processor.process(item, attempt).await {
                    Ok(()) => break StatusReport { status: ItemStatus::Done, error: None },
                    Err(error) if attempt >= settings.max_attempts => {
                        break StatusReport { status: ItemStatus::Failed, error: Some(error) };
                    }
                    Err(error) => {
                        let wait = settings.retry_base * 2u32.saturating_pow(attempt - 1);
                        tracing::debug!(%batch, item = %item.id, attempt, %error, ?wait, "attempt failed; retrying");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                }
            }
        };
        // The lease is renewed three times a lease while the item is worked on: only a worker
        // that is gone lets it lapse, however long the item takes.
        let renewing = async {
            let mut every = tokio::time::interval(settings.lease / 3);
            every.tick().await;
            loop {
                every.tick().await;
                match self.batches.renew(batch, item.id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(%batch, item = %item.id, "the item is no longer this worker's")
                    }
                    Err(error) => tracing::warn!(%error, %batch, item = %item.id, "renewing a lease failed"),
                }
            }
        };
        tokio::select! {
            outcome = attempts => outcome,
            never = renewing => never,
        }
    }

    /// Reports an outcome without waiting for its commit: the worker goes on with its next
    /// item while the batch's group commit gathers this one with others.
    fn report(&self, batch: BatchId, item: ItemId, outcome: StatusReport) {
        let committed = self.batches.report_queued(batch, item, outcome);
        tokio::spawn(async move {
            if let Err(error) = committed.await {
                tracing::error!(%error, %batch, %item, "reporting an item's outcome failed");
            }
        });
    }
}

/// Gives unfinished items back to the queue as the process stops: another worker takes them
/// now, not after their lease.
async fn release(batches: &Batches, batch: BatchId, items: &[ItemId]) {
    match batches.release(batch, items).await {
        Ok(()) => tracing::info!(%batch, items = items.len(), "stopping: gave unfinished items back"),
        Err(error) => tracing::warn!(%error, %batch, "giving items back failed; their lease frees them"),
    }
}
