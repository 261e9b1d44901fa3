//! The SQL of item changes: a reported status and a worker's claim, each in one transaction
//! with the batch's counts, status and `seq`.

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, Error as CoreError, ItemId, ItemProgress, ItemStatus, Millis,
    StatusReport,
};
use sqlx::{FromRow, Row, any::AnyRow};

use super::{Change, ITEM_COLUMNS, SUMMARY_COLUMNS, Store, Uncommitted, bind_state};
use crate::error::{Error, Result};

impl Store {
    /// Moves one item to a new status, in one transaction with the batch's counts, status and
    /// `seq`.
    ///
    /// The item `UPDATE` comes first and carries the state machine in its `WHERE`: it takes
    /// SQLite's write lock at once (no read-then-upgrade deadlock) and two racing reports
    /// cannot both win.
    pub async fn report(
        &self,
        batch: BatchId,
        item: ItemId,
        report: StatusReport,
        now: Millis,
    ) -> Result<Uncommitted> {
        let to = report.status;
        let from = to.source();
        let mut tx = self.pool.begin().await?;
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
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let current: Option<(String,)> =
                sqlx::query_as("SELECT status FROM items WHERE id = $1 AND batch_id = $2")
                    .bind(item.to_string())
                    .bind(batch.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((status,)) = current else {
                let batch_exists = sqlx::query("SELECT 1 FROM batches WHERE id = $1")
                    .bind(batch.to_string())
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                return Err(Error::NotFound(if batch_exists { "item" } else { "batch" }));
            };
            let from = ItemStatus::try_from(status)?;
            return Err(CoreError::IllegalTransition { from, to }.into());
        };
        finish_change(tx, from, &row, now).await
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
            Some(row) => finish_change(tx, ItemStatus::Processing, &row, now).await.map(Some),
            None => Ok(None),
        }
    }

    /// Claims the next item for a worker, through the same transaction shape as
    /// [`Store::report`]: a pending one (Pending → Processing), or else one whose worker has
    /// not been heard of since `stale_before` (a crashed process; its count stays in
    /// `processing`). `None` when there is nothing to do.
    pub async fn claim(&self, now: Millis, stale_before: Millis) -> Result<Option<Uncommitted>> {
        if let Some(change) = self.claim_where(ItemStatus::Pending, "status = 'pending'", now, None).await? {
            return Ok(Some(change));
        }
        let stale = "status = 'processing' AND updated_at < $2";
        self.claim_where(ItemStatus::Processing, stale, now, Some(stale_before)).await
    }

    async fn claim_where(
        &self,
        from: ItemStatus,
        filter: &str,
        now: Millis,
        stale_before: Option<Millis>,
    ) -> Result<Option<Uncommitted>> {
        let mut tx = self.pool.begin().await?;
        // PostgreSQL lets concurrent claimers skip each other's rows; SQLite has one writer.
        let skip_locked = if self.postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE items SET status = 'processing', error = NULL, updated_at = $1, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM items WHERE {filter} ORDER BY position LIMIT 1{skip_locked}) \
             AND {filter} RETURNING {ITEM_COLUMNS}, position, batch_id"
        );
        let mut update = sqlx::query(&sql).bind(now);
        if let Some(stale_before) = stale_before {
            update = update.bind(stale_before);
        }
        match update.fetch_optional(&mut *tx).await? {
            Some(row) => finish_change(tx, from, &row, now).await.map(Some),
            None => Ok(None),
        }
    }
}

/// The rest of every item change: the batch's counts, status, percent and `seq`.
async fn finish_change(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    from: ItemStatus,
    row: &AnyRow,
    now: Millis,
) -> Result<Uncommitted> {
    let changed = ItemProgress::from_row(row)?;
    let position: i64 = row.try_get("position")?;
    let batch: String = row.try_get("batch_id")?;
    // `seq` first, with an UPDATE: on PostgreSQL it locks the batch's row until commit, so two
    // changes of one batch cannot both read the same counts and lose one of the updates (a
    // plain SELECT would; SQLite serializes writers anyway).
    let mut summary = sqlx::query_as::<_, BatchSummary>(&format!(
        "UPDATE batches SET seq = seq + 1, updated_at = $1 WHERE id = $2 RETURNING {SUMMARY_COLUMNS}"
    ))
    .bind(now)
    .bind(&batch)
    .fetch_one(&mut *tx)
    .await?;
    let mut counts = summary.counts;
    counts.apply(from, changed.status);
    summary.set_counts(counts);
    let update = sqlx::query(
        "UPDATE batches SET status = $1, percent = $2, queued = $3, processing = $4, completed = $5, \
         failed = $6 WHERE id = $7",
    );
    bind_state(update, &summary).bind(&batch).execute(&mut *tx).await?;
    let change =
        Change { event: BatchProgress { summary, items: vec![changed] }, positions: vec![position as u32] };
    Ok(Uncommitted { tx, change })
}
