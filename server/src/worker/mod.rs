//! Workers: the claim loop. Claim a pending item, run the [`Processor`], report the outcome,
//! all through [`Batches`], the path every change takes. A failed attempt is retried in place with
//! exponential backoff (the item stays `processing`, so the batch never looks finished
//! between attempts) until `MAX_ATTEMPTS`, then the item fails for good.

use std::{sync::Arc, time::Duration};

pub mod processor;

use batchwatch_core::{BatchId, ItemId, ItemStatus, StatusReport};
use tokio::{sync::watch, task::JoinSet};

pub use self::processor::{Demo, Processor};
use crate::{
    batches::{Access, Batches},
    config::Config,
};

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub workers: usize,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub poll: Duration,
    pub lease: Duration,
    pub max_reclaims: u32,
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
            // Most of the shutdown time: the rest is for giving the item back and exiting.
            grace: c.shutdown().mul_f64(0.8),
        }
    }
}

/// Runs the workers until `stop` turns true; each finishes its current item first, or gives
/// it back to the queue when that takes longer than `grace`.
pub async fn run(
    batches: Batches,
    processor: Arc<dyn Processor>,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    let mut set = JoinSet::new();
    for n in 0..settings.workers {
        set.spawn(work(n, batches.clone(), processor.clone(), settings, stop.clone()));
    }
    while set.join_next().await.is_some() {}
}

async fn work(
    n: usize,
    batches: Batches,
    processor: Arc<dyn Processor>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    tracing::debug!(worker = n, "worker started");
    while !*stop.borrow() {
        match batches.claim(settings.lease, settings.max_reclaims).await {
            Ok(Some(claimed)) => {
                let (batch, item) = (claimed.summary.batch_id, claimed.items.first().map(|i| i.id));
                let out_of_time = async {
                    if stop.wait_for(|stopping| *stopping).await.is_err() {
                        // Nobody can stop us any more: never out of time.
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(settings.grace).await;
                };
                tokio::select! {
                    () = process(&batches, processor.as_ref(), settings, claimed) => {}
                    () = out_of_time => {
                        if let Some(item) = item {
                            release(&batches, batch, item).await;
                        }
                    }
                }
            }
            Ok(None) => {
                // Idle: a new batch created here wakes us at once; other processes' after `poll`.
                tokio::select! {
                    () = batches.work_available() => {}
                    () = tokio::time::sleep(settings.poll) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, worker = n, "claiming work failed");
                tokio::time::sleep(settings.poll).await;
            }
        }
    }
    tracing::debug!(worker = n, "worker stopped");
}

async fn process(
    batches: &Batches,
    processor: &dyn Processor,
    settings: Settings,
    claimed: batchwatch_core::BatchProgress,
) {
    let batch = claimed.summary.batch_id;
    let Some(item) = claimed.items.into_iter().next() else { return };
    let attempts = async {
        let mut attempt = 1;
        loop {
            match processor.process(&item, attempt).await {
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
            match batches.renew(batch, item.id).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(%batch, item = %item.id, "the item is no longer this worker's"),
                Err(error) => tracing::warn!(%error, %batch, item = %item.id, "renewing a lease failed"),
            }
        }
    };
    let outcome = tokio::select! {
        outcome = attempts => outcome,
        never = renewing => never,
    };
    if let Err(error) = batches.report(Access::Any, batch, item.id, outcome).await {
        tracing::error!(%error, %batch, item = %item.id, "reporting an item's outcome failed");
    }
}

/// Gives an unfinished item back to the queue as the process stops: another worker takes it
/// now, not after its lease.
async fn release(batches: &Batches, batch: BatchId, item: ItemId) {
    match batches.release(batch, item).await {
        Ok(()) => tracing::info!(%batch, %item, "stopping: gave an unfinished item back"),
        Err(error) => tracing::warn!(%error, %batch, %item, "giving an item back failed; its lease frees it"),
    }
}
