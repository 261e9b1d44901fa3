//! The SQL of batches: creating one with its items, listing a user's, reading a whole
//! snapshot, a summary, or one page of items.

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, Counts, ItemId, ItemProgress, ItemQuery, ItemStatus, ItemsPage,
    Millis, NewBatch, Page,
};
use std::collections::HashMap;

use sqlx::{FromRow, Row};

use super::{
    Change, INSERT_CHUNK, ITEM_COLUMNS, Owned, SUMMARY_COLUMNS, Store, Tx, Uncommitted, bind_state,
    items::EVENT_ITEMS, next_seq, save_counts,
};
use crate::error::{Error, Result};

/// Inserts pending items at positions `start`, `start + 1`, ..., a thousand rows a statement.
async fn insert_items(tx: &mut Tx, batch_id: &str, start: u32, items: &[ItemProgress]) -> Result<()> {
    for (chunk_index, chunk) in items.chunks(INSERT_CHUNK).enumerate() {
        let mut sql =
            String::from("INSERT INTO items (id, batch_id, position, name, status, updated_at) VALUES ");
        for i in 0..chunk.len() {
            let p = i * 5;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, ${}, ${}, 'pending', ${})", p + 1, p + 2, p + 3, p + 4, p + 5));
        }
        let mut query = sqlx::query(&sql);
        for (i, item) in chunk.iter().enumerate() {
            query = query
                .bind(item.id.to_string())
                .bind(batch_id)
                .bind(i64::from(start) + (chunk_index * INSERT_CHUNK + i) as i64)
                .bind(&item.name)
                .bind(item.updated_at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// An item as an export reads it.
#[derive(Debug, FromRow)]
pub struct ExportRow {
    pub position: i64,
    pub id: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub status: ItemStatus,
    pub error: Option<String>,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
    pub updated_at: Millis,
}

impl Store {
    pub async fn create_batch(&self, owner: &str, new: NewBatch, now: Millis) -> Result<BatchProgress> {
        let counts = Counts::queued(new.items.len() as u32);
        let summary = BatchSummary::new(BatchId::new(), new.name, counts, 1, now);
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
        let sql = format!(
            "INSERT INTO batches ({SUMMARY_COLUMNS}, owner_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        let insert = sqlx::query(&sql).bind(summary.batch_id.to_string()).bind(&summary.name);
        bind_state(insert, &summary)
            .bind(i64::from(counts.total))
            .bind(summary.seq as i64)
            .bind(summary.created_at)
            .bind(summary.updated_at)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        insert_items(&mut tx, &summary.batch_id.to_string(), 0, &items).await?;
        tx.commit().await?;
        Ok(BatchProgress::new(summary, items))
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
        Ok(Some(Owned { owner, progress: BatchProgress::new(summary, items) }))
    }

    /// One page of a batch's items in order (keyset on `position`), filtered by status and by
    /// a name substring: the cost is the page's, whatever the batch's size (an index serves
    /// each status).
    pub async fn items_page(&self, id: BatchId, query: &ItemQuery) -> Result<ItemsPage> {
        let limit = query.limit();
        let mut sql =
            format!("SELECT {ITEM_COLUMNS}, position FROM items WHERE batch_id = $1 AND position > $2");
        let mut params = 2;
        if query.status.is_some() {
            params += 1;
            sql.push_str(&format!(" AND status = ${params}"));
        }
        if query.q.is_some() {
            params += 1;
            // ASCII letters match in either case on both: SQLite's LIKE already does.
            let like = if self.postgres { "ILIKE" } else { "LIKE" };
            sql.push_str(&format!(" AND name {like} ${params} ESCAPE '\\'"));
        }
        sql.push_str(&format!(" ORDER BY position LIMIT ${}", params + 1));
        let mut select = sqlx::query(&sql).bind(id.to_string()).bind(query.after.map_or(-1, i64::from));
        if let Some(status) = query.status {
            select = select.bind(status.as_str());
        }
        if let Some(q) = &query.q {
            let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            select = select.bind(format!("%{escaped}%"));
        }
        // One more than the page: whether there is a next one.
        let rows = select.bind(i64::from(limit) + 1).fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let rows = &rows[..rows.len().min(limit as usize)];
        let items = rows.iter().map(ItemProgress::from_row).collect::<Result<Vec<_>, _>>()?;
        let next = match rows.last() {
            Some(last) if more => Some(last.try_get::<i64, _>("position")? as u32),
            _ => None,
        };
        Ok(ItemsPage { items, next })
    }

    /// Up to `limit` items after `after` (a position), in order, as an export writes them.
    pub async fn export_page(&self, id: BatchId, after: Option<i64>, limit: u32) -> Result<Vec<ExportRow>> {
        let rows = sqlx::query_as(
            "SELECT position, id, name, status, error, attempts, updated_at FROM items \
             WHERE batch_id = $1 AND position > $2 ORDER BY position LIMIT $3",
        )
        .bind(id.to_string())
        .bind(after.unwrap_or(-1))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Adds items at the end of a batch that is not finished, keeping it within `max` items:
    /// one change event per [`super::items::EVENT_ITEMS`] new items, each holding them.
    pub async fn append_items(
        &self,
        id: BatchId,
        names: Vec<String>,
        max: u32,
        now: Millis,
    ) -> Result<Uncommitted> {
        let mut tx = self.pool.begin().await?;
        let batch_id = id.to_string();
        let mut changes = Vec::with_capacity(names.len().div_ceil(EVENT_ITEMS));
        for (chunk_index, chunk) in names.chunks(EVENT_ITEMS).enumerate() {
            let mut summary = next_seq(&mut tx, &batch_id, now).await?.ok_or(Error::NotFound("batch"))?;
            if chunk_index == 0 {
                if summary.status.is_terminal() {
                    return Err(Error::Conflict("a finished batch takes no more items"));
                }
                if u64::from(summary.counts.total) + names.len() as u64 > u64::from(max) {
                    return Err(Error::Unprocessable(format!("a batch holds at most {max} items")));
                }
            }
            // Items are never removed: positions run from 0 to total - 1.
            let start = summary.counts.total;
            let items: Vec<ItemProgress> = chunk
                .iter()
                .map(|name| ItemProgress {
                    id: ItemId::new(),
                    name: name.clone(),
                    status: ItemStatus::Pending,
                    error: None,
                    updated_at: now,
                })
                .collect();
            insert_items(&mut tx, &batch_id, start, &items).await?;
            let added = items.len() as u32;
            let mut counts = summary.counts;
            counts.queued += added;
            counts.total += added;
            summary.set_counts(counts);
            save_counts(&mut tx, &batch_id, &summary).await?;
            let positions = (start..start + added).collect();
            changes.push(Change { event: BatchProgress::new(summary, items), positions });
        }
        Ok(Uncommitted { tx, changes })
    }

    /// A batch's summary alone, and whom it belongs to (`""` for a batch made before
    /// accounts).
    pub async fn summary(&self, id: BatchId) -> Result<Option<(String, BatchSummary)>> {
        let sql =
            format!("SELECT COALESCE(owner_id, '') AS owner, {SUMMARY_COLUMNS} FROM batches WHERE id = $1");
        let Some(row) = sqlx::query(&sql).bind(id.to_string()).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        Ok(Some((row.try_get("owner")?, BatchSummary::from_row(&row)?)))
    }

    /// The first owner after `after` (by id, wrapping around) with a batch that has pending
    /// items: workers serve owners in turn.
    pub async fn owner_with_work(&self, after: &str) -> Result<Option<String>> {
        let sql = |op| {
            format!(
                "SELECT owner_id FROM batches WHERE queued > 0 AND owner_id {op} $1 ORDER BY owner_id LIMIT 1"
            )
        };
        match self.first_text(&sql(">"), &[after]).await? {
            Some(owner) => Ok(Some(owner)),
            None => self.first_text(&sql("<="), &[after]).await,
        }
    }

    /// `owner`'s first batch after `after` (by id, wrapping around) that has pending items:
    /// an owner's batches are served in turn.
    pub async fn batch_with_work(&self, owner: &str, after: Option<BatchId>) -> Result<Option<BatchId>> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let sql = |op| {
            format!(
                "SELECT id FROM batches WHERE queued > 0 AND owner_id = $1 AND id {op} $2 ORDER BY id LIMIT 1"
            )
        };
        let found = match self.first_text(&sql(">"), &[owner, &after]).await? {
            Some(id) => Some(id),
            None => self.first_text(&sql("<="), &[owner, &after]).await?,
        };
        Ok(found.map(|id| id.parse()).transpose()?)
    }

    /// The first row's one text column.
    async fn first_text(&self, sql: &str, binds: &[&str]) -> Result<Option<String>> {
        let mut query = sqlx::query_as::<_, (String,)>(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        Ok(query.fetch_optional(&self.pool).await?.map(|(text,)| text))
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

    /// The current `seq` of each batch of `ids` that exists, in one query per thousand ids.
    pub async fn seqs(&self, ids: &[BatchId]) -> Result<HashMap<BatchId, u64>> {
        let mut seqs = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT id, seq FROM batches WHERE id IN ({})", placeholders.join(", "));
            let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for (id, seq) in query.fetch_all(&self.pool).await? {
                seqs.insert(id.parse()?, seq as u64);
            }
        }
        Ok(seqs)
    }
}
