//! The one path through which batches are created, changed and read, whoever asks: the JSON
//! API, the server-rendered pages, the streams and the workers.
//!
//! Every call says whose it is ([`Access`]): a user reaches only their own batches, and
//! another's batch is answered exactly like one that does not exist.
//!
//! A change is one database transaction; after the commit the cached progress is brought up
//! to date and the event is published. Reports and claims that arrive close together share
//! one transaction and one event ([`crate::group_commit`]). Reads go to the cache first and
//! refill it on a miss.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, Control, ItemId, ItemProgress, ItemQuery, ItemStatus, ItemsPage,
    Millis, NewBatch, NewItems, Page, StatusReport, Viewer, latest_each, now,
    source::{BatchSource, BoxFuture, SourceError},
};
use tokio::sync::oneshot;

use crate::{
    error::{Error, Result},
    group_commit::Queues,
    live::hub::Hub,
    metrics,
    store::{
        Store, Uncommitted,
        cache::Cache,
        items::{Changes, Judged},
    },
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
    /// Summaries read from the database (every other read is the cache's).
    database_reads: Arc<AtomicU64>,
    /// Reports and claims waiting for their batch's next group commit.
    group: Queues<Unit>,
    /// Batches whose cancel or retry this process is carrying out ([`Batches::finish_control`]).
    controlling: Arc<Mutex<HashSet<BatchId>>>,
}

/// One caller's share of a group commit: its changes, and where its answer goes: the batch's
/// summary after the commit, and what became of its changes.
#[derive(Debug)]
struct Unit {
    changes: Changes,
    answer: oneshot::Sender<Result<(BatchSummary, Judged)>>,
}

impl Batches {
    pub fn new(store: Store, cache: Cache, hub: Hub) -> Self {
        Self {
            store,
            cache,
            hub,
            work: Arc::default(),
            database_reads: Arc::default(),
            group: Queues::default(),
            controlling: Arc::default(),
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

    /// How many summaries were read from the database since start.
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
        self.cache.fill(owner, &progress.summary).await;
        self.hub.publish_new(owner, &progress.summary).await;
        self.work.notify_waiters();
        tracing::info!(batch = %progress.summary.batch_id, items = progress.items.len(), "batch created");
        Ok(progress)
    }

    /// A user's batches, newest first.
    pub async fn list(&self, owner: &str, page: Page) -> Result<Vec<BatchSummary>> {
        self.store.list_batches(owner, page).await
    }

    /// A batch's summary, cache-first: what it costs does not grow with the batch.
    pub async fn summary(&self, access: Access<'_>, id: BatchId) -> Result<BatchSummary> {
        let cached = self.cache.summary(id).await;
        metrics::cache_read(cached.is_some());
        match cached {
            Some((owner, summary)) => reachable(access, Some(owner)).map(|()| summary),
            None => self.summary_from_database(access, id).await,
        }
    }

    /// A batch's summary from the source of truth, which also refills the cache.
    pub async fn summary_from_database(&self, access: Access<'_>, id: BatchId) -> Result<BatchSummary> {
        self.database_reads.fetch_add(1, Ordering::Relaxed);
        metrics::snapshot_read();
        let (owner, summary) = self.store.summary(id).await?.ok_or(Error::NotFound("batch"))?;
        self.cache.fill(&owner, &summary).await;
        reachable(access, Some(owner)).map(|()| summary)
    }

    /// Adds items at the end of `owner`'s batch while it is not finished, keeping it within
    /// `max` items; announced like any other change. Returns the summary after, and the new
    /// items.
    pub async fn append(
        &self,
        owner: &str,
        batch: BatchId,
        new: NewItems,
        max: u32,
    ) -> Result<BatchProgress> {
        let new = new.validate()?;
        self.check_owner(owner, batch).await?;
        let events = self.announce(self.store.append_items(batch, new.items, max, now()).await?).await?;
        self.work.notify_waiters();
        Ok(merged(events).expect("at least one item was added"))
    }

    /// Pauses, resumes, cancels `owner`'s batch or retries its failed items: one change,
    /// announced like any other. Returns the summary after.
    pub async fn control(&self, owner: &str, batch: BatchId, control: Control) -> Result<BatchSummary> {
        self.check_owner(owner, batch).await?;
        let mut events = self.announce(self.store.control(batch, control, now()).await?).await?;
        match control {
            Control::Pause => {}
            Control::Resume => self.work.notify_waiters(),
            Control::Cancel => self.finish_control(batch),
            Control::Retry => {
                self.work.notify_waiters();
                self.finish_control(batch);
            }
        }
        tracing::info!(%batch, control = control.as_str(), "batch controlled");
        Ok(events.pop().expect("one event").summary)
    }

    /// Does what a cancel or a retry left of its items (all but its first page), a page per
    /// change, in a task of its own: the control's answer and every transaction stay the same
    /// size whatever the batch's. One such task per batch in this process; another process may
    /// run one too (after a restart cut one short: [`Batches::reclaim`]), each page taking
    /// rows the other does not hold. A control that comes as the task ends is left to the
    /// next such round.
    pub fn finish_control(&self, batch: BatchId) {
        let running = || self.controlling.lock().unwrap_or_else(PoisonError::into_inner);
        if !running().insert(batch) {
            return;
        }
        let batches = self.clone();
        tokio::spawn(async move {
            let outcome = async {
                while let Some(change) = batches.store.control_more(batch, now()).await? {
                    batches.announce(change).await?;
                }
                Ok::<_, Error>(())
            };
            if let Err(error) = outcome.await {
                // The batch is still found by `reclaim`, which tries again.
                tracing::warn!(%batch, %error, "changing a controlled batch's items failed");
            }
            batches.controlling.lock().unwrap_or_else(PoisonError::into_inner).remove(&batch);
        });
    }

    /// Puts one failed item of `owner`'s batch back in the queue (a finished batch opens
    /// again). Returns what changed.
    pub async fn retry_item(&self, owner: &str, batch: BatchId, item: ItemId) -> Result<BatchProgress> {
        let retry = StatusReport { status: ItemStatus::Pending, error: None };
        let changed = self.report(Access::Owner(owner), batch, item, retry).await?;
        self.work.notify_waiters();
        Ok(changed)
    }

    /// One page of a batch's items, for its owner.
    pub async fn items_page(&self, owner: &str, batch: BatchId, query: ItemQuery) -> Result<ItemsPage> {
        let query = query.validate()?;
        // The summary checks the owner (cache-first) and gives the `seq` the page is at least
        // as new as: read before the items.
        let summary = self.summary(Access::Owner(owner), batch).await?;
        self.store.items_page(batch, &query, summary.seq).await
    }

    /// `Ok` when `batch` is `owner`'s; not found otherwise, as a missing one.
    pub async fn check_owner(&self, owner: &str, batch: BatchId) -> Result<()> {
        reachable(Access::Owner(owner), self.store.owner(batch).await?)
    }

    /// Applies a report. Returns what changed: the summary after, and the item.
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
            // rather than carried through the state machine's `UPDATE`.
            reachable(access, self.store.owner(batch).await?)?;
        }
        let (summary, judged) =
            self.change(batch, Changes { reports: vec![(item, report)], claim: 0 }).await?;
        let item = judged.reports.into_iter().next().expect("one report")?;
        Ok(BatchProgress::new(summary, vec![item]))
    }

    /// Applies many reports for one batch, each judged on its own: per report, `Ok` or why it
    /// was refused; the accepted ones commit together. Returns what changed (the summary
    /// after, every changed item; the summary alone when nothing was accepted).
    pub async fn report_many(
        &self,
        access: Access<'_>,
        batch: BatchId,
        reports: Vec<(ItemId, StatusReport)>,
    ) -> Result<(BatchProgress, Vec<Result<()>>)> {
        // A missing batch fails the whole call, not each report.
        reachable(access, self.store.owner(batch).await?)?;
        let mut valid = Vec::with_capacity(reports.len());
        let mut outcomes: Vec<Option<Result<()>>> = Vec::with_capacity(reports.len());
        for (item, report) in reports {
            match report.validate() {
                Ok(report) => {
                    valid.push((item, report));
                    outcomes.push(None);
                }
                Err(invalid) => outcomes.push(Some(Err(invalid.into()))),
            }
        }
        // A call of many reports is a group already: it commits on its own, beside the batch's
        // group commit, so that several bulk reporters' transactions overlap (on PostgreSQL
        // their item updates run at once; only the batch's row takes them in turn).
        let (summary, judged) = self.apply(batch, Changes { reports: valid, claim: 0 }).await?;
        let mut items = Vec::new();
        // The invalid ones keep their place among the judged.
        let mut judged = judged.reports.into_iter();
        let outcomes = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| match judged.next().expect("one each") {
                    Ok(item) => {
                        items.push(item);
                        Ok(())
                    }
                    Err(refused) => Err(refused),
                })
            })
            .collect();
        // An item reported twice appears once, as it ended.
        Ok((BatchProgress::new(summary, latest_each(items, |item| item.id)), outcomes))
    }

    /// Claims up to `max` pending items of `batch` (the first by position) for a worker,
    /// announced like any other change.
    pub async fn claim(&self, batch: BatchId, max: u32) -> Result<Vec<ItemProgress>> {
        match self.change(batch, Changes { reports: Vec::new(), claim: max }).await {
            Ok((_, judged)) => Ok(judged.claimed),
            // Paused between the worker's choice and its claim: nothing to take.
            Err(Error::Conflict(_)) => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// Claims again an item left `processing` for longer than `lease` (its worker died), up to
    /// `max_reclaims` times; once more and it fails for good. Announced like any change. Also
    /// finishes a cancel or a retry that a stopped process left halfway.
    pub async fn reclaim(
        &self,
        lease: std::time::Duration,
        max_reclaims: u32,
    ) -> Result<Option<(BatchId, ItemProgress)>> {
        let now = now();
        let stale_before = now - lease.as_millis() as Millis;
        if let Some(batch) = self.store.control_unfinished().await? {
            self.finish_control(batch);
        }
        if let Some(lost) = self.store.fail_lost(now, stale_before, max_reclaims).await? {
            let failed = self.announce(lost).await?;
            let (batch, item) = (failed[0].summary.batch_id, failed[0].items[0].id);
            tracing::warn!(%batch, %item, "an item lost its worker too often: failed for good");
        }
        match self.store.reclaim(now, stale_before, max_reclaims).await? {
            Some(change) => {
                let mut event = self.announce(change).await?.pop().expect("a change");
                Ok(Some((event.summary.batch_id, event.items.pop().expect("the item"))))
            }
            None => Ok(None),
        }
    }

    /// Keeps a claimed item's lease while its worker is on it; `false` once it is not that
    /// worker's any more.
    pub async fn renew(&self, batch: BatchId, item: ItemId) -> Result<bool> {
        self.store.renew(batch, item, now()).await
    }

    /// Puts items a stopping worker did not finish back in the queue, announced like any
    /// other change. Items no longer `processing` are left as they are.
    pub async fn release(&self, batch: BatchId, items: &[ItemId]) -> Result<()> {
        if let Some(change) = self.store.release(batch, items, now()).await? {
            self.announce(change).await?;
        }
        Ok(())
    }

    /// Completes when every change queued for a group commit has been committed.
    pub async fn settled(&self) {
        self.group.settled().await;
    }

    /// Queues a worker's outcome for the batch's next group commit before it returns, and
    /// does not wait for the commit: the future says how it went. A stopping process's
    /// [`Batches::settled`] waits for what was queued so.
    pub fn report_queued(
        &self,
        batch: BatchId,
        item: ItemId,
        report: StatusReport,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let queued = report
            .validate()
            .map(|report| self.queue(batch, Changes { reports: vec![(item, report)], claim: 0 }));
        async move {
            let (_, judged) = queued?.await.map_err(|_| Error::Internal("the change was dropped"))??;
            judged.reports.into_iter().next().expect("one report").map(drop)
        }
    }

    /// Queues `changes` for the batch's next group commit and waits for it.
    async fn change(&self, batch: BatchId, changes: Changes) -> Result<(BatchSummary, Judged)> {
        self.queue(batch, changes).await.map_err(|_| Error::Internal("the change was dropped"))?
    }

    fn queue(&self, batch: BatchId, changes: Changes) -> oneshot::Receiver<Result<(BatchSummary, Judged)>> {
        let size = changes.reports.len() + changes.claim as usize;
        let (answer, answered) = oneshot::channel();
        if self.group.push(batch, Unit { changes, answer }, size) {
            tokio::spawn(self.clone().lead(batch));
        }
        answered
    }

    /// A batch's leader (see [`crate::group_commit`]): commits what is queued, group after
    /// group, until nothing is.
    async fn lead(self, batch: BatchId) {
        loop {
            let units = self.group.take(batch);
            if units.is_empty() {
                if self.group.step_down(batch) {
                    return;
                }
                continue;
            }
            self.commit_group(batch, units).await;
        }
    }

    /// Commits several callers' changes in one transaction; should that fail, each alone, so
    /// that one caller's trouble is not another's.
    async fn commit_group(&self, batch: BatchId, units: Vec<Unit>) {
        if units.len() > 1 {
            let together = Changes {
                reports: units.iter().flat_map(|u| u.changes.reports.iter().cloned()).collect(),
                claim: units.iter().map(|u| u.changes.claim).sum(),
            };
            match self.apply(batch, together).await {
                Ok((summary, judged)) => return answer_each(units, summary, judged),
                Err(error) => {
                    tracing::warn!(%error, %batch, "a group commit failed; trying each change alone")
                }
            }
        }
        for unit in units {
            let _ = unit.answer.send(self.apply(batch, unit.changes).await);
        }
    }

    /// Applies changes to one batch, commits and announces them: the summary after, and what
    /// became of each change.
    async fn apply(&self, batch: BatchId, changes: Changes) -> Result<(BatchSummary, Judged)> {
        let (uncommitted, judged) = self.store.change(batch, changes, now()).await?;
        let summary = match uncommitted {
            Some(uncommitted) => self.announce(uncommitted).await?.pop().expect("a change").summary,
            None => self.store.summary(batch).await?.ok_or(Error::NotFound("batch"))?.1,
        };
        Ok((summary, judged))
    }

    /// Commits changes, then brings the cache up to date before publishing them, so that a
    /// watcher woken by an event reads it fresh. Returns their events, in order.
    ///
    /// Two commits of one batch can announce out of order (a bulk call beside the group
    /// commit, or two processes): the cache keeps the newest summary, and the hub puts events
    /// back in `seq` order, so no lock is held from commit to publish.
    async fn announce(&self, uncommitted: Uncommitted) -> Result<Vec<BatchProgress>> {
        let (owner, events) = uncommitted.commit().await?;
        events.iter().for_each(metrics::committed);
        if let Some(last) = events.last() {
            // The cache keeps the newest summary: the last one is all it needs.
            self.cache.apply(&last.summary).await;
        }
        self.hub.publish(&owner, &events).await;
        Ok(events)
    }
}

/// Gives each caller of a group its share of what the group's transaction did.
fn answer_each(units: Vec<Unit>, summary: BatchSummary, judged: Judged) {
    let mut reports = judged.reports.into_iter();
    let mut claimed = judged.claimed.into_iter();
    for unit in units {
        let share = Judged {
            reports: reports.by_ref().take(unit.changes.reports.len()).collect(),
            claimed: claimed.by_ref().take(unit.changes.claim as usize).collect(),
        };
        let _ = unit.answer.send(Ok((summary.clone(), share)));
    }
}

/// Events of one call as one answer: the summary after the last, and every item they hold.
fn merged(events: Vec<BatchProgress>) -> Option<BatchProgress> {
    let summary = events.last()?.summary.clone();
    Some(BatchProgress::new(summary, events.into_iter().flat_map(|e| e.items).collect()))
}

/// `Ok` when the batch exists (`owner` is its owner) and `access` reaches it: another user's
/// batch is not found, exactly like a missing one.
fn reachable(access: Access<'_>, owner: Option<String>) -> Result<()> {
    match owner {
        Some(owner) if access.allows(&owner) => Ok(()),
        _ => Err(Error::NotFound("batch")),
    }
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

/// A page's answer: a batch that is not there (or another's) is `None`.
fn found<T>(result: Result<T>) -> Result<Option<T>, SourceError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(for_page(e)),
    }
}

impl BatchSource for Batches {
    fn summary<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
    ) -> BoxFuture<'a, Result<Option<BatchSummary>, SourceError>> {
        Box::pin(async move { found(Batches::summary(self, Access::Owner(&viewer.user_id), id).await) })
    }

    fn items<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
        query: ItemQuery,
    ) -> BoxFuture<'a, Result<Option<ItemsPage>, SourceError>> {
        Box::pin(async move { found(Batches::items_page(self, &viewer.user_id, id, query).await) })
    }

    fn list<'a>(
        &'a self,
        viewer: &'a Viewer,
        page: Page,
    ) -> BoxFuture<'a, Result<Vec<BatchSummary>, SourceError>> {
        Box::pin(async move { Batches::list(self, &viewer.user_id, page).await.map_err(for_page) })
    }

    fn control<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
        control: Control,
    ) -> BoxFuture<'a, Result<BatchSummary, SourceError>> {
        Box::pin(async move { Batches::control(self, &viewer.user_id, id, control).await.map_err(for_page) })
    }

    fn retry_item<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
        item: ItemId,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            Batches::retry_item(self, &viewer.user_id, id, item).await.map(drop).map_err(for_page)
        })
    }

    fn create<'a>(
        &'a self,
        viewer: &'a Viewer,
        new: NewBatch,
    ) -> BoxFuture<'a, Result<BatchProgress, SourceError>> {
        Box::pin(async move { Batches::create(self, &viewer.user_id, new).await.map_err(for_page) })
    }
}
