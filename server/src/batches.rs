//! The one path through which batches are created, changed and read, whoever asks: the JSON
//! API, the server-rendered pages, the streams and the workers.
//!
//! Every call says whose it is ([`Access`]): a user reaches only their own batches, and
//! another's batch is answered exactly like one that does not exist.
//!
//! A change is one database transaction; after the commit the cached progress is brought up
//! to date and the event is published. Reads go to the cache first and refill it on a miss.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, ItemId, Millis, NewBatch, Page, StatusReport, Viewer, now,
    source::{BatchSource, BoxFuture, SourceError},
};

use crate::{
    error::{Error, Result},
    live::hub::Hub,
    metrics,
    store::{Owned, Store, Uncommitted, cache::Cache},
};

/// On whose behalf a batch is read or changed.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// A user: their own batches only.
    Owner(&'a str),
    /// A worker, or the server itself (a stream that has already checked its viewer).
    Any,
}

impl Access<'_> {
    fn allows(self, owner: &str) -> bool {
        match self {
            Access::Owner(user) => user == owner,
            Access::Any => true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Batches {
    store: Store,
    cache: Cache,
    hub: Hub,
    /// Wakes this process's idle workers when a batch is created here.
    work: Arc<tokio::sync::Notify>,
    /// Snapshots read from the database (every other read is the cache's).
    database_reads: Arc<AtomicU64>,
    /// Held from commit to publish, so that this process announces changes in the order they
    /// were committed: two workers finishing at once would otherwise publish `seq` 5 before
    /// 4, and every page would see a gap and fetch a fresh snapshot.
    order: Arc<tokio::sync::Mutex<()>>,
}

impl Batches {
    pub fn new(store: Store, cache: Cache, hub: Hub) -> Self {
        Self {
            store,
            cache,
            hub,
            work: Arc::default(),
            database_reads: Arc::default(),
            order: Arc::default(),
        }
    }

    /// Completes when a batch was created by this process.
    pub async fn work_available(&self) {
        self.work.notified().await;
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The database itself, for what does not go through this path (tests, the CLI).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many snapshots were read from the database since start.
    pub fn database_reads(&self) -> u64 {
        self.database_reads.load(Ordering::Relaxed)
    }

    /// The current `seq` of each of these batches that exists.
    pub async fn seqs(&self, ids: &[BatchId]) -> Result<HashMap<BatchId, u64>> {
        self.store.seqs(ids).await
    }

    /// Creates a batch owned by `owner` (a user id).
    pub async fn create(&self, owner: &str, new: NewBatch) -> Result<BatchProgress> {
        let new = new.validate()?;
        let progress = self.store.create_batch(owner, new, now()).await?;
        let owned = Owned { owner: owner.to_owned(), progress };
        self.cache.fill(&owned).await;
        self.work.notify_waiters();
        let progress = owned.progress;
        tracing::info!(batch = %progress.summary.batch_id, items = progress.items.len(), "batch created");
        Ok(progress)
    }

    /// A user's batches, newest first.
    pub async fn list(&self, owner: &str, page: Page) -> Result<Vec<BatchSummary>> {
        self.store.list_batches(owner, page).await
    }

    /// A full snapshot, cache-first.
    pub async fn progress(&self, access: Access<'_>, id: BatchId) -> Result<BatchProgress> {
        let cached = self.cache.get(id).await;
        metrics::cache_read(cached.is_some());
        let owned = match cached {
            Some(owned) => owned,
            None => self.owned_from_database(id).await?,
        };
        visible(access, owned)
    }

    /// A full snapshot from the source of truth, which also refills the cache.
    pub async fn progress_from_database(&self, access: Access<'_>, id: BatchId) -> Result<BatchProgress> {
        visible(access, self.owned_from_database(id).await?)
    }

    async fn owned_from_database(&self, id: BatchId) -> Result<Owned> {
        self.database_reads.fetch_add(1, Ordering::Relaxed);
        metrics::snapshot_read();
        let owned = self.store.progress(id).await?.ok_or(Error::NotFound("batch"))?;
        self.cache.fill(&owned).await;
        Ok(owned)
    }

    /// Applies a report. Returns the change event: the batch with only that item.
    pub async fn report(
        &self,
        access: Access<'_>,
        batch: BatchId,
        item: ItemId,
        report: StatusReport,
    ) -> Result<BatchProgress> {
        let report = report.validate()?;
        if let Access::Owner(_) = access {
            // Users report rarely (workers report for any batch), so the owner is read here
            // rather than carried through the state machine's UPDATE.
            match self.store.owner(batch).await? {
                Some(owner) if access.allows(&owner) => {}
                _ => return Err(Error::NotFound("batch")),
            }
        }
        let change = self.store.report(batch, item, report, now()).await?;
        self.announce(change).await
    }

    /// Claims the next item for a worker, announced like any other change. An item left
    /// `processing` for longer than `lease` (its worker died) is claimed again.
    pub async fn claim(&self, lease: std::time::Duration) -> Result<Option<BatchProgress>> {
        let now = now();
        match self.store.claim(now, now - lease.as_millis() as Millis).await? {
            Some(change) => self.announce(change).await.map(Some),
            None => Ok(None),
        }
    }

    /// Puts an item a stopping worker did not finish back in the queue, announced like any
    /// other change. Nothing happens when it is no longer `processing`.
    pub async fn release(&self, batch: BatchId, item: ItemId) -> Result<()> {
        if let Some(change) = self.store.release(batch, item, now()).await? {
            self.announce(change).await?;
        }
        Ok(())
    }

    /// Commits a change, then brings the cache up to date before publishing, so that a
    /// watcher woken by the event reads it fresh.
    async fn announce(&self, change: Uncommitted) -> Result<BatchProgress> {
        let _in_order = self.order.lock().await;
        let change = change.commit().await?;
        metrics::committed(&change.event);
        self.cache.apply(&change).await;
        self.hub.publish(&change.event).await;
        Ok(change.event)
    }
}

/// Another user's batch is not found, exactly like a missing one.
fn visible(access: Access<'_>, owned: Owned) -> Result<BatchProgress> {
    if access.allows(&owned.owner) { Ok(owned.progress) } else { Err(Error::NotFound("batch")) }
}

/// How a page sees a failure: its own mistakes as they are, the server's as a generic message.
fn for_page(error: Error) -> SourceError {
    if error.status_code().is_server_error() {
        tracing::error!(?error, "page data failed");
        SourceError::Internal
    } else {
        SourceError::Invalid(error.to_string())
    }
}

impl BatchSource for Batches {
    fn progress<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
    ) -> BoxFuture<'a, Result<Option<BatchProgress>, SourceError>> {
        Box::pin(async move {
            match Batches::progress(self, Access::Owner(&viewer.user_id), id).await {
                Ok(progress) => Ok(Some(progress)),
                Err(Error::NotFound(_)) => Ok(None),
                Err(e) => Err(for_page(e)),
            }
        })
    }

    fn list<'a>(
        &'a self,
        viewer: &'a Viewer,
        page: Page,
    ) -> BoxFuture<'a, Result<Vec<BatchSummary>, SourceError>> {
        Box::pin(async move { Batches::list(self, &viewer.user_id, page).await.map_err(for_page) })
    }

    fn create<'a>(
        &'a self,
        viewer: &'a Viewer,
        new: NewBatch,
    ) -> BoxFuture<'a, Result<BatchProgress, SourceError>> {
        Box::pin(async move { Batches::create(self, &viewer.user_id, new).await.map_err(for_page) })
    }
}
