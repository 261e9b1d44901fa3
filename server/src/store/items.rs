//! The SQL of item changes: reported statuses and a worker's claims, judged and applied in one
//! transaction with the batch's counts, status and `seq`.

use batchwatch_core::{
    BatchId, BatchProgress, BatchStatus, Control, Error as CoreError, ItemId, ItemProgress, ItemStatus,
    Millis, StatusReport, latest_each,
};
use std::collections::{HashMap, HashSet};

use sqlx::{FromRow, Row};

use super::{ITEM_COLUMNS, Store, Tx, Uncommitted, next_seq, placeholders, save_counts};
use crate::error::{Error, Result};

/// What one transaction does to one batch: reports to judge in order, then up to `claim`
/// pending items for workers (the first by position).
#[derive(Debug, Default)]
pub struct Changes {
    pub reports: Vec<(ItemId, StatusReport)>,
    pub claim: u32,
}

/// What a transaction made of its [`Changes`]: per report, the item as it is now or why the
/// report was refused (an unknown item, an illegal move); and the items claimed, in order.
#[derive(Debug, Default)]
pub struct Judged {
    pub reports: Vec<Result<ItemProgress>>,
    pub claimed: Vec<ItemProgress>,
}

impl Store {
    /// Applies `changes` to one batch in one transaction. Nothing is written when nothing
    /// changed (`None`); otherwise one change event per [`EVENT_ITEMS`] items.
    pub async fn change(
        &self,
        batch: BatchId,
        changes: Changes,
        now: Millis,
    ) -> Result<(Option<Uncommitted>, Judged)> {
        let mut tx = self.begin().await?;
        let mut changed = Vec::new();
        let mut judged = Judged { reports: Vec::with_capacity(changes.reports.len()), claimed: Vec::new() };
        for (report, outcome) in
            changes.reports.iter().zip(update_items(&mut tx, batch, &changes.reports, now).await?)
        {
            if let Ok(item) = &outcome {
                changed.push((report.1.status.source(), item.clone()));
            }
            judged.reports.push(outcome);
        }
        if changes.claim > 0 {
            // PostgreSQL lets concurrent claimers skip each other's rows (and rechecks a locked
            // row's status); SQLite has one writer. No `status` test outside the subquery:
            // SQLite would answer it by scanning every pending item of every batch.
            let skip_locked = if self.postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
            let rows = sqlx::query(&format!(
                "UPDATE items SET status = 'processing', error = NULL, updated_at = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM items WHERE batch_id = $2 AND status = 'pending' \
                 ORDER BY position LIMIT $3{skip_locked}) RETURNING {ITEM_COLUMNS}, batch_id"
            ))
            .bind(now)
            .bind(batch.to_string())
            .bind(i64::from(changes.claim))
            .fetch_all(&mut *tx)
            .await?;
            let mut claimed = rows.iter().map(ItemProgress::from_row).collect::<Result<Vec<_>, _>>()?;
            claimed.sort_by_key(|item| item.position);
            for item in claimed {
                judged.claimed.push(item.clone());
                changed.push((ItemStatus::Pending, item));
            }
        }
        if changed.is_empty() {
            return Ok((None, judged));
        }
        let uncommitted = finish_changes(tx, batch, changed, now).await?;
        // Nothing is claimed from a paused or cancelled batch, and nothing in a cancelled one
        // goes back to the queue (a retried item). Asked here, after `seq` + 1 has locked the
        // batch's row (PostgreSQL; SQLite has one writer), a control cannot slip in between,
        // and the claim's own query need not read the batch. Workers pick batches that are
        // neither, so this is a rare race: the change is dropped (rolled back), and the group
        // commit tries each of its units alone.
        let status = uncommitted.changes.first().map(|event| event.summary.status);
        if status == Some(BatchStatus::Paused) && !judged.claimed.is_empty() {
            return Err(Error::Conflict("the batch is paused"));
        }
        let requeued =
            judged.reports.iter().any(|item| matches!(item, Ok(item) if item.status == ItemStatus::Pending));
        if status == Some(BatchStatus::Cancelled) && (requeued || !judged.claimed.is_empty()) {
            return Err(Error::Conflict("the batch is cancelled"));
        }
        Ok((Some(uncommitted), judged))
    }

    /// A control of its owner (pause, resume, cancel, retry every failed item), as one change:
    /// 409 when the batch's state does not allow it. A cancel or a retry changes the first
    /// page of its items, listed in its event; [`Store::control_more`] does the rest, a page
    /// per change, so that no transaction or event grows with the batch.
    pub async fn control(&self, batch: BatchId, control: Control, now: Millis) -> Result<Uncommitted> {
        let mut tx = self.begin().await?;
        let batch_id = batch.to_string();
        let (owner, mut summary) =
            next_seq(&mut tx, &batch_id, now).await?.ok_or(Error::NotFound("batch"))?;
        control.check(&summary).map_err(Error::Conflict)?;
        control.apply(&mut summary);
        let changed = match control {
            Control::Pause | Control::Resume => Vec::new(),
            Control::Cancel => {
                // A retry under way stops here: nothing goes back to a cancelled batch's queue.
                sqlx::query("UPDATE batches SET retry_after = NULL WHERE id = $1")
                    .bind(&batch_id)
                    .execute(&mut *tx)
                    .await?;
                self.cancel_page(&mut tx, &batch_id, now).await?
            }
            Control::Retry => {
                // From the first position, again when a retry was under way.
                sqlx::query("UPDATE batches SET retry_after = -1 WHERE id = $1")
                    .bind(&batch_id)
                    .execute(&mut *tx)
                    .await?;
                self.retry_page(&mut tx, &batch_id, -1, now).await?
            }
        };
        let mut counts = summary.counts;
        for (from, item) in &changed {
            counts.apply(*from, item.status);
        }
        summary.set_counts(counts);
        save_counts(&mut tx, &batch_id, &summary).await?;
        let items = changed.into_iter().map(|(_, item)| item).collect();
        Ok(Uncommitted { tx, owner, changes: vec![BatchProgress::new(summary, items)] })
    }

    /// The next page of what a cancel or a retry left to do to a batch's items, as one change:
    /// `None` when nothing is left.
    pub async fn control_more(&self, batch: BatchId, now: Millis) -> Result<Option<Uncommitted>> {
        let batch_id = batch.to_string();
        // Read before the transaction, which takes the items' rows first, as a report takes
        // them, so that the two never wait for each other crosswise; and so that its first
        // statement writes (SQLite cannot turn a transaction that read into one that writes
        // once another connection wrote). A cancelled batch stays cancelled; a retry's
        // progress is checked again where it is written.
        let state: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT status, retry_after FROM batches WHERE id = $1")
                .bind(&batch_id)
                .fetch_optional(&self.pool)
                .await?;
        let mut tx = self.begin().await?;
        let changed = match state {
            Some((status, _)) if status == BatchStatus::Cancelled.as_str() => {
                self.cancel_page(&mut tx, &batch_id, now).await?
            }
            Some((_, Some(after))) => self.retry_page(&mut tx, &batch_id, after, now).await?,
            _ => Vec::new(),
        };
        if changed.is_empty() {
            return Ok(None);
        }
        finish_changes(tx, batch, changed, now).await.map(Some)
    }

    /// A batch with a cancel or a retry not finished yet: cut short (its process stopped), or
    /// with an item reported while it went. `None` when there is none.
    pub async fn control_unfinished(&self) -> Result<Option<BatchId>> {
        let id: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM batches WHERE retry_after IS NOT NULL \
             OR (status = 'cancelled' AND (queued > 0 OR processing > 0)) LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.map(|(id,)| id.parse()).transpose()?)
    }

    /// Cancels up to one event's worth of a batch's unfinished items, those in progress first
    /// (then by position); returns each with the status it had. PostgreSQL skips rows another
    /// transaction holds (a report under way): a later page takes them.
    async fn cancel_page(
        &self,
        tx: &mut Tx,
        batch_id: &str,
        now: Millis,
    ) -> Result<Vec<(ItemStatus, ItemProgress)>> {
        let mut changed = Vec::new();
        for from in [ItemStatus::Processing, ItemStatus::Pending] {
            let room = EVENT_ITEMS - changed.len();
            if room == 0 {
                break;
            }
            let set = "status = 'cancelled', updated_at = $1";
            let page = self.change_page(tx, batch_id, from, set, -1, room, now).await?;
            changed.extend(page.into_iter().map(|item| (from, item)));
        }
        Ok(changed)
    }

    /// Queues again up to one event's worth of a batch's failed items after position `after`,
    /// and notes how far the retry got (`retry_after`; NULL once a page finds none left),
    /// unless another retry started over meanwhile. An item that fails again behind that
    /// point waits for the next retry.
    async fn retry_page(
        &self,
        tx: &mut Tx,
        batch_id: &str,
        after: i64,
        now: Millis,
    ) -> Result<Vec<(ItemStatus, ItemProgress)>> {
        let set = "status = 'pending', error = NULL, updated_at = $1";
        let page = self.change_page(tx, batch_id, ItemStatus::Failed, set, after, EVENT_ITEMS, now).await?;
        let reached = match page.last() {
            Some(last) if page.len() == EVENT_ITEMS => Some(i64::from(last.position)),
            _ => None,
        };
        sqlx::query("UPDATE batches SET retry_after = $1 WHERE id = $2 AND retry_after = $3")
            .bind(reached)
            .bind(batch_id)
            .bind(after)
            .execute(&mut **tx)
            .await?;
        Ok(page.into_iter().map(|item| (ItemStatus::Failed, item)).collect())
    }

    /// Sets `set` (`$1` is `now`) on up to `limit` of a batch's items in status `from` after
    /// position `after`, the first by position; returns them as they are now, in order.
    #[allow(clippy::too_many_arguments)]
    async fn change_page(
        &self,
        tx: &mut Tx,
        batch_id: &str,
        from: ItemStatus,
        set: &str,
        after: i64,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<ItemProgress>> {
        let skip_locked = if self.postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let rows = sqlx::query(&format!(
            "UPDATE items SET {set} WHERE id IN (SELECT id FROM items \
             WHERE batch_id = $2 AND status = $3 AND position > $4 \
             ORDER BY position LIMIT $5{skip_locked}) RETURNING {ITEM_COLUMNS}, batch_id"
        ))
        .bind(now)
        .bind(batch_id)
        .bind(from.as_str())
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&mut **tx)
        .await?;
        let mut items = rows.iter().map(ItemProgress::from_row).collect::<Result<Vec<_>, _>>()?;
        items.sort_by_key(|item| item.position);
        Ok(items)
    }

    /// Processing → Pending for items their worker gives back unfinished (the process is
    /// stopping): outside the reported state machine, and their attempt does not count.
    pub async fn release(
        &self,
        batch: BatchId,
        items: &[ItemId],
        now: Millis,
    ) -> Result<Option<Uncommitted>> {
        let mut tx = self.begin().await?;
        let mut changed = Vec::new();
        for item in items {
            let row = sqlx::query(&format!(
                "UPDATE items SET status = 'pending', updated_at = $1, attempts = attempts - 1 \
                 WHERE id = $2 AND batch_id = $3 AND status = 'processing' RETURNING {ITEM_COLUMNS}, batch_id"
            ))
            .bind(now)
            .bind(item.to_string())
            .bind(batch.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                changed.push((ItemStatus::Processing, ItemProgress::from_row(&row)?));
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        finish_changes(tx, batch, changed, now).await.map(Some)
    }

    /// Claims again the first item whose worker has not been heard of since `stale_before` (a
    /// crashed process; its count stays in `processing`) and that was not reclaimed
    /// `max_reclaims` times yet. `None` when there is none.
    pub async fn reclaim(
        &self,
        now: Millis,
        stale_before: Millis,
        max_reclaims: u32,
    ) -> Result<Option<Uncommitted>> {
        let reclaimed = "status = 'processing', error = NULL, updated_at = $1, attempts = attempts + 1, \
                         reclaims = reclaims + 1";
        let stale = "status = 'processing' AND updated_at < $2 AND reclaims < $3";
        self.change_first(ItemStatus::Processing, reclaimed, stale, now, stale_before, max_reclaims).await
    }

    /// Fails, for good, the first item whose worker was lost once more after `max_reclaims`
    /// reclaims: an item that kills every worker that takes it must not loop forever.
    pub async fn fail_lost(
        &self,
        now: Millis,
        stale_before: Millis,
        max_reclaims: u32,
    ) -> Result<Option<Uncommitted>> {
        let failed = format!(
            "status = 'failed', updated_at = $1, error = 'its worker was lost {} times: failed for good'",
            u64::from(max_reclaims) + 1
        );
        let lost = "status = 'processing' AND updated_at < $2 AND reclaims >= $3";
        self.change_first(ItemStatus::Processing, &failed, lost, now, stale_before, max_reclaims).await
    }

    /// Keeps an item's lease while its worker is on it: `false` when the item is no longer
    /// that worker's (reported meanwhile, or claimed again).
    pub async fn renew(&self, batch: BatchId, item: ItemId, now: Millis) -> Result<bool> {
        let renewed = sqlx::query(
            "UPDATE items SET updated_at = $1 WHERE id = $2 AND batch_id = $3 AND status = 'processing'",
        )
        .bind(now)
        .bind(item.to_string())
        .bind(batch.to_string())
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Sets `set` on the first item (by position, in any batch) that matches `filter`, as a
    /// change from `from`. `$1` is `now`, `$2` a time before which the item is stale, `$3` a
    /// count of reclaims.
    async fn change_first(
        &self,
        from: ItemStatus,
        set: &str,
        filter: &str,
        now: Millis,
        stale_before: Millis,
        max_reclaims: u32,
    ) -> Result<Option<Uncommitted>> {
        let mut tx = self.begin().await?;
        let skip_locked = if self.postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE items SET {set} \
             WHERE id = (SELECT id FROM items WHERE {filter} ORDER BY position LIMIT 1{skip_locked}) \
             AND {filter} RETURNING {ITEM_COLUMNS}, batch_id"
        );
        let row = sqlx::query(&sql)
            .bind(now)
            .bind(stale_before)
            .bind(i64::from(max_reclaims))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let batch: BatchId = row.try_get::<String, _>("batch_id")?.parse()?;
        finish_changes(tx, batch, vec![(from, ItemProgress::from_row(&row)?)], now).await.map(Some)
    }
}

/// The most items one change event holds: a larger burst goes out as several events.
pub const EVENT_ITEMS: usize = 500;

/// Applies reports inside `tx`, as if one by one in their order: per report, the changed item,
/// or why it was refused (the item is not in this batch, or the move is illegal from its
/// status). The outer error is the database's.
///
/// A statement per report made a call of 1,000 reports a thousand round trips, and its
/// transaction (with the batch's row locked, or SQLite's one writer) that long. So the reports
/// go in runs where no item appears twice (within one the order cannot matter), and a run's
/// reports of one target status and error are one `UPDATE`. It carries the state machine in
/// its `WHERE`: it takes SQLite's write lock at once (no read-then-upgrade deadlock) and two
/// racing reports cannot both win. What it did not change is explained by one read.
async fn update_items(
    tx: &mut Tx,
    batch: BatchId,
    reports: &[(ItemId, StatusReport)],
    now: Millis,
) -> Result<Vec<Result<ItemProgress>>> {
    let batch_id = batch.to_string();
    let mut outcomes = Vec::with_capacity(reports.len());
    let mut start = 0;
    while start < reports.len() {
        let mut seen = HashSet::new();
        let run = reports[start..].iter().take_while(|(item, _)| seen.insert(*item)).count();
        let run = &reports[start..start + run];
        let mut groups: HashMap<(ItemStatus, Option<&str>), Vec<usize>> = HashMap::new();
        for (i, (_, report)) in run.iter().enumerate() {
            groups.entry((report.status, report.error.as_deref())).or_default().push(i);
        }
        let mut done: HashMap<ItemId, ItemProgress> = HashMap::with_capacity(run.len());
        for ((to, error), members) in groups {
            // `|| ''` keeps the planner on the primary key: PostgreSQL, without statistics of
            // a new batch yet, chose the (batch, status) index and filtered every item of the
            // batch in that status by the list, for each statement (33 s for the bench's 200,000 reports).
            let query = format!(
                "UPDATE items SET status = $1, error = $2, updated_at = $3, attempts = attempts + $4 \
                 WHERE id IN ({}) AND batch_id || '' = $5 AND status || '' = $6 RETURNING {ITEM_COLUMNS}",
                placeholders(7, members.len())
            );
            let mut update = sqlx::query(&query)
                .bind(to.as_str())
                .bind(error)
                .bind(now)
                .bind(i64::from(to == ItemStatus::Processing))
                .bind(&batch_id)
                .bind(to.source().as_str());
            for &i in &members {
                update = update.bind(run[i].0.to_string());
            }
            for row in update.fetch_all(&mut **tx).await? {
                let item = ItemProgress::from_row(&row)?;
                done.insert(item.id, item);
            }
        }
        let refused: Vec<ItemId> =
            run.iter().map(|(item, _)| *item).filter(|item| !done.contains_key(item)).collect();
        let statuses = current_statuses(tx, &batch_id, &refused).await?;
        let batch_exists = refused.len() == statuses.len()
            || sqlx::query("SELECT 1 FROM batches WHERE id = $1")
                .bind(&batch_id)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
        for (item, report) in run {
            outcomes.push(match (done.remove(item), statuses.get(item)) {
                (Some(changed), _) => Ok(changed),
                (None, Some(&from)) => Err(CoreError::IllegalTransition { from, to: report.status }.into()),
                (None, None) => Err(Error::NotFound(if batch_exists { "item" } else { "batch" })),
            });
        }
        start += run.len();
    }
    Ok(outcomes)
}

/// The status of each of `items` in the batch (those not in it are absent).
async fn current_statuses(
    tx: &mut Tx,
    batch_id: &str,
    items: &[ItemId],
) -> Result<HashMap<ItemId, ItemStatus>> {
    let mut statuses = HashMap::with_capacity(items.len());
    if items.is_empty() {
        return Ok(statuses);
    }
    let query = format!(
        "SELECT id, status FROM items WHERE id IN ({}) AND batch_id || '' = $1",
        placeholders(2, items.len())
    );
    let mut select = sqlx::query_as::<_, (String, String)>(&query).bind(batch_id);
    for item in items {
        select = select.bind(item.to_string());
    }
    for (id, status) in select.fetch_all(&mut **tx).await? {
        statuses.insert(ItemId::try_from(id)?, ItemStatus::try_from(status)?);
    }
    Ok(statuses)
}

/// The rest of every item change: the batch's counts, status, percent and `seq`, one `seq`
/// per event of at most [`EVENT_ITEMS`] items, in the order the items changed.
async fn finish_changes(
    mut tx: Tx,
    batch: BatchId,
    changed: Vec<(ItemStatus, ItemProgress)>,
    now: Millis,
) -> Result<Uncommitted> {
    let batch_id = batch.to_string();
    let mut changes = Vec::with_capacity(changed.len().div_ceil(EVENT_ITEMS));
    let mut owner = String::new();
    for chunk in changed.chunks(EVENT_ITEMS) {
        // The items' rows reference their batch: the batch is there.
        let mut summary;
        (owner, summary) = next_seq(&mut tx, &batch_id, now).await?.ok_or(Error::NotFound("batch"))?;
        let mut counts = summary.counts;
        for (from, item) in chunk {
            counts.apply(*from, item.status);
        }
        summary.set_counts(counts);
        // An item changed twice in one event appears once, as it ended.
        let items = latest_each(chunk.iter().map(|(_, item)| item.clone()).collect(), |item| item.id);
        save_counts(&mut tx, &batch_id, &summary).await?;
        changes.push(BatchProgress::new(summary, items));
    }
    Ok(Uncommitted { tx, owner, changes })
}
