//! The database, the source of truth: every query batchwatch runs lives here.
//!
//! The store speaks to SQLite (the embedded default) and PostgreSQL through sqlx's `Any`
//! driver, with one schema and one set of queries for both (text ids, integer times, `$n`
//! placeholders, `RETURNING`), so choosing a database is a matter of `DATABASE_URL` and no
//! caller knows which one it got. Queries are checked at run time: the build needs no database.

use std::{path::Path, str::FromStr, time::Duration};

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, Counts, Error as CoreError, ItemId, ItemProgress, ItemStatus,
    Millis, NewBatch, Page, StatusReport,
};
use sqlx::{
    AnyPool, Executor, FromRow, Row,
    any::{AnyConnectOptions, AnyPoolOptions, AnyRow},
};

use crate::error::{Error, Result};

const SUMMARY_COLUMNS: &str =
    "id, name, status, percent, queued, processing, completed, failed, total, seq, created_at, updated_at";
const ITEM_COLUMNS: &str = "id, name, status, error, updated_at";

/// Rows per multi-row `INSERT`: 5 parameters each stays far below SQLite's and PostgreSQL's
/// limits on bound parameters.
const INSERT_CHUNK: usize = 1_000;

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
}

/// A batch's progress and whom it belongs to (`""` for a batch made before accounts).
#[derive(Debug, Clone)]
pub struct Owned {
    pub owner: String,
    pub progress: BatchProgress,
}

/// One change: the event (the batch after it, with only the items that changed) and where
/// those items sit in the batch, for the cache.
#[derive(Debug, Clone)]
pub struct Change {
    pub event: BatchProgress,
    pub positions: Vec<u32>,
}

/// A change written but not yet committed: the caller commits it when it is ready to announce
/// it, so that commits and announcements happen in the same order.
pub struct Uncommitted {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    change: Change,
}

impl Uncommitted {
    pub async fn commit(self) -> Result<Change> {
        self.tx.commit().await?;
        Ok(self.change)
    }
}

impl Store {
    /// Connects (creating a SQLite file and its folder when missing) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let url = prepare_sqlite(url).await?;
        let options = AnyConnectOptions::from_str(&url)?;
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets pages read while a worker writes; NORMAL sync is safe with WAL.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!().run(&pool).await?;
        Ok(Self { pool, postgres: url.starts_with("postgres") })
    }

    /// The users and tokens kept in the same database.
    pub fn accounts(&self) -> crate::accounts::Accounts {
        crate::accounts::Accounts::new(self.pool.clone())
    }

    pub async fn create_batch(&self, owner: &str, new: NewBatch, now: Millis) -> Result<BatchProgress> {
        let counts = Counts::queued(new.items.len() as u32);
        let mut summary = BatchSummary {
            batch_id: BatchId::new(),
            name: new.name,
            status: batchwatch_core::BatchStatus::Queued,
            percent: 0,
            counts,
            seq: 1,
            created_at: now,
            updated_at: now,
        };
        summary.set_counts(counts);
        let items: Vec<ItemProgress> = new
            .items
            .into_iter()
            .map(|name| ItemProgress {
                id: ItemId::new(),
                name,
                status: ItemStatus::Pending,
                error: None,
                updated_at: now,
            })
            .collect();

        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!("INSERT INTO batches ({SUMMARY_COLUMNS}, owner_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"))
            .bind(summary.batch_id.to_string())
            .bind(&summary.name)
            .bind(summary.status.as_str())
            .bind(i64::from(summary.percent))
            .bind(i64::from(counts.queued))
            .bind(i64::from(counts.processing))
            .bind(i64::from(counts.completed))
            .bind(i64::from(counts.failed))
            .bind(i64::from(counts.total))
            .bind(summary.seq as i64)
            .bind(summary.created_at)
            .bind(summary.updated_at)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        let batch_id = summary.batch_id.to_string();
        for (chunk_index, chunk) in items.chunks(INSERT_CHUNK).enumerate() {
            let mut sql =
                String::from("INSERT INTO items (id, batch_id, position, name, status, updated_at) VALUES ");
            for i in 0..chunk.len() {
                let p = i * 5;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, 'pending', ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                ));
            }
            let mut query = sqlx::query(&sql);
            for (i, item) in chunk.iter().enumerate() {
                query = query
                    .bind(item.id.to_string())
                    .bind(&batch_id)
                    .bind((chunk_index * INSERT_CHUNK + i) as i64)
                    .bind(&item.name)
                    .bind(item.updated_at);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(BatchProgress { summary, items })
    }

    /// One user's batches, newest first.
    pub async fn list_batches(&self, owner: &str, page: Page) -> Result<Vec<BatchSummary>> {
        let page = page.clamped();
        let rows = sqlx::query_as::<_, BatchSummary>(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM batches WHERE owner_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(owner)
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// A full snapshot: the summary and every item in order, read in one transaction so that
    /// the items match the summary's `seq`.
    pub async fn progress(&self, id: BatchId) -> Result<Option<Owned>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {SUMMARY_COLUMNS}, COALESCE(owner_id, '') AS owner FROM batches WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let summary = BatchSummary::from_row(&row)?;
        let owner: String = row.try_get("owner")?;
        let items = sqlx::query_as::<_, ItemProgress>(&format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = $1 ORDER BY position"
        ))
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Owned { owner, progress: BatchProgress { summary, items } }))
    }

    /// Whom a batch belongs to: `None` when there is no such batch.
    pub async fn owner(&self, id: BatchId) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT COALESCE(owner_id, '') FROM batches WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(owner,)| owner))
    }

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
    sqlx::query(
        "UPDATE batches SET status = $1, percent = $2, queued = $3, processing = $4, completed = $5, \
         failed = $6 WHERE id = $7",
    )
    .bind(summary.status.as_str())
    .bind(i64::from(summary.percent))
    .bind(i64::from(counts.queued))
    .bind(i64::from(counts.processing))
    .bind(i64::from(counts.completed))
    .bind(i64::from(counts.failed))
    .bind(&batch)
    .execute(&mut *tx)
    .await?;
    let change =
        Change { event: BatchProgress { summary, items: vec![changed] }, positions: vec![position as u32] };
    Ok(Uncommitted { tx, change })
}

/// For a SQLite URL: creates the file's folder and asks sqlx to create the file.
async fn prepare_sqlite(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return Ok(url.to_owned());
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(|e| Error::Database(sqlx::Error::Io(e)))?;
    }
    if query.split('&').any(|kv| kv.starts_with("mode=")) {
        Ok(url.to_owned())
    } else {
        let sep = if query.is_empty() { "?" } else { "&" };
        Ok(format!("{url}{sep}mode=rwc"))
    }
}
