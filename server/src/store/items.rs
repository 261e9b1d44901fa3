//! The SQL of item changes: reported statuses (one, or many at once) and a worker's claim,
//! each in one transaction with the batch's counts, status and `seq`.

use batchwatch_core::{
    BatchId, BatchProgress, Error as CoreError, ItemId, ItemProgress, ItemStatus, Millis, StatusReport,
};
use sqlx::{FromRow, Row, any::AnyRow};

use super::{Change, ITEM_COLUMNS, Store, Tx, Uncommitted, next_seq, save_counts};
use crate::error::{Error, Result};

impl Store {
    /// Moves one item to a new status, in one transaction with the batch's counts, status and
    /// `seq`.
    pub async fn report(
        &self,
        batch: BatchId,
        item: ItemId,
        report: StatusReport,
        now: Millis,
    ) -> Result<Uncommitted> {
        let from = report.status.source();
        let mut tx = self.pool.begin().await?;
        let row = update_item(&mut tx, batch, item, report, now).await??;
        finish_changes(tx, vec![(from, row)], now).await
    }

    /// Many reports for one batch in one transaction, each judged on its own in order: the
    /// answer holds, per report, `Ok` or why it was refused (an unknown item, an illegal
    /// move), and the accepted ones are committed together, as one change event per
    /// [`EVENT_ITEMS`] items. `None` when none was accepted (nothing is written then).
    pub async fn report_many(
        &self,
        batch: BatchId,
        reports: Vec<(ItemId, StatusReport)>,
        now: Millis,
    ) -> Result<(Option<Uncommitted>, Vec<Result<()>>)> {
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::new();
        let mut outcomes = Vec::with_capacity(reports.len());
        for (item, report) in reports {
            let from = report.status.source();
            match update_item(&mut tx, batch, item, report, now).await? {
                Ok(row) => {
                    changed.push((from, row));
                    outcomes.push(Ok(()));
                }
                Err(refused) => outcomes.push(Err(refused)),
            }
        }
        if changed.is_empty() {
            return Ok((None, outcomes));
        }
        Ok((Some(finish_changes(tx, changed, now).await?), outcomes))
    }

    /// Processing → Pending for an item its worker gives back unfinished (the process is
    /// stopping): outside the reported state machine, and its attempt does not count.
    pub async fn release(&self, batch: BatchId, item: ItemId, now: Millis) -> Result<Option<Uncommitted>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE items SET status = 'pending', updated_at = $1, attempts = attempts - 1 \
             WHERE id = $2 AND batch_id = $3 AND status = 'processing' RETURNING {ITEM_COLUMNS}, position, batch_id"
        ))
        .bind(now)
        .bind(item.to_string())
        .bind(batch.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(row) => finish_changes(tx, vec![(ItemStatus::Processing, row)], now).await.map(Some),
            None => Ok(None),
        }
    }

    /// Claims the next item for a worker, through the same transaction shape as
    /// [`Store::report`]: a pending one (Pending → Processing), or else one whose worker has
    /// not been heard of since `stale_before` (a crashed process; its count stays in
    /// `processing`) and that was not reclaimed `max_reclaims` times yet. `None` when there is
    /// nothing to do.
    pub async fn claim(
        &self,
        now: Millis,
        stale_before: Millis,
        max_reclaims: u32,
    ) -> Result<Option<Uncommitted>> {
        let claimed = "status = 'processing', error = NULL, updated_at = $1, attempts = attempts + 1";
        let pending = "status = 'pending'";
        if let Some(change) = self.change_first(ItemStatus::Pending, claimed, pending, now, None).await? {
            return Ok(Some(change));
        }
        let reclaimed = format!("{claimed}, reclaims = reclaims + 1");
        let stale = "status = 'processing' AND updated_at < $2 AND reclaims < $3";
        self.change_first(ItemStatus::Processing, &reclaimed, stale, now, Some((stale_before, max_reclaims)))
            .await
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
        self.change_first(ItemStatus::Processing, &failed, lost, now, Some((stale_before, max_reclaims)))
            .await
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

    /// Sets `set` on the first item (by position) that matches `filter`, as a change from
    /// `from`. `$1` is `now`; `stale` binds `$2` (a time) and `$3` (a count).
    async fn change_first(
        &self,
        from: ItemStatus,
        set: &str,
        filter: &str,
        now: Millis,
        stale: Option<(Millis, u32)>,
    ) -> Result<Option<Uncommitted>> {
        let mut tx = self.pool.begin().await?;
        // PostgreSQL lets concurrent claimers skip each other's rows; SQLite has one writer.
        let skip_locked = if self.postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE items SET {set} \
             WHERE id = (SELECT id FROM items WHERE {filter} ORDER BY position LIMIT 1{skip_locked}) \
             AND {filter} RETURNING {ITEM_COLUMNS}, position, batch_id"
        );
        let mut update = sqlx::query(&sql).bind(now);
        if let Some((stale_before, count)) = stale {
            update = update.bind(stale_before).bind(i64::from(count));
        }
        match update.fetch_optional(&mut *tx).await? {
            Some(row) => finish_changes(tx, vec![(from, row)], now).await.map(Some),
            None => Ok(None),
        }
    }
}

/// The most items one change event holds: a larger burst goes out as several events.
pub const EVENT_ITEMS: usize = 500;

/// Applies one report inside `tx`: the changed row, or why it was refused (the item is not in
/// this batch, or the move is illegal from its status). The outer error is the database's.
///
/// The item `UPDATE` comes first and carries the state machine in its `WHERE`: it takes
/// SQLite's write lock at once (no read-then-upgrade deadlock) and two racing reports cannot
/// both win.
async fn update_item(
    tx: &mut Tx,
    batch: BatchId,
    item: ItemId,
    report: StatusReport,
    now: Millis,
) -> Result<Result<AnyRow>> {
    let to = report.status;
    let from = to.source();
    let row = sqlx::query(&format!(
        "UPDATE items SET status = $1, error = $2, updated_at = $3, attempts = attempts + $4 \
         WHERE id = $5 AND batch_id = $6 AND status = $7 RETURNING {ITEM_COLUMNS}, position, batch_id"
    ))
    .bind(to.as_str())
    .bind(report.error)
    .bind(now)
    .bind(i64::from(to == ItemStatus::Processing))
    .bind(item.to_string())
    .bind(batch.to_string())
    .bind(from.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        return Ok(Ok(row));
    }
    let current: Option<(String,)> =
        sqlx::query_as("SELECT status FROM items WHERE id = $1 AND batch_id = $2")
            .bind(item.to_string())
            .bind(batch.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    let Some((status,)) = current else {
        let batch_exists = sqlx::query("SELECT 1 FROM batches WHERE id = $1")
            .bind(batch.to_string())
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        return Ok(Err(Error::NotFound(if batch_exists { "item" } else { "batch" })));
    };
    let from = ItemStatus::try_from(status)?;
    Ok(Err(CoreError::IllegalTransition { from, to }.into()))
}

/// The rest of every item change: the batch's counts, status, percent and `seq`, one `seq`
/// per event of at most [`EVENT_ITEMS`] items, in the order the items changed.
async fn finish_changes(mut tx: Tx, changed: Vec<(ItemStatus, AnyRow)>, now: Millis) -> Result<Uncommitted> {
    let mut changes = Vec::with_capacity(changed.len().div_ceil(EVENT_ITEMS));
    for chunk in changed.chunks(EVENT_ITEMS) {
        let batch: String = chunk[0].1.try_get("batch_id")?;
        // The item's row references its batch: the batch is there.
        let mut summary = next_seq(&mut tx, &batch, now).await?.ok_or(Error::NotFound("batch"))?;
        let mut counts = summary.counts;
        let mut changed = Vec::with_capacity(chunk.len());
        for (from, row) in chunk {
            let item = ItemProgress::from_row(row)?;
            counts.apply(*from, item.status);
            changed.push((item, row.try_get::<i64, _>("position")? as u32));
        }
        summary.set_counts(counts);
        // An item reported twice in one event appears once, as it ended.
        let mut seen = std::collections::HashSet::new();
        changed.reverse();
        changed.retain(|(item, _)| seen.insert(item.id));
        changed.reverse();
        let (items, positions) = changed.into_iter().unzip();
        save_counts(&mut tx, &batch, &summary).await?;
        changes.push(Change { event: BatchProgress { summary, items }, positions });
    }
    Ok(Uncommitted { tx, changes })
}
