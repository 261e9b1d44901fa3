//! The SQL of batches: creating one with its items, appending items, listing a user's, reading
//! a summary or one page of items.

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, Counts, ItemId, ItemProgress, ItemQuery, ItemStatus, ItemsPage,
    Millis, NewBatch, Page,
};
use std::collections::HashMap;

use sqlx::{FromRow, Row};

use super::{
    INSERT_CHUNK, ITEM_COLUMNS, SUMMARY_COLUMNS, Store, Tx, Uncommitted, bind_state, items::EVENT_ITEMS,
    next_seq, placeholders, save_counts,
};
use crate::error::{Error, Result};

/// New pending items named `names`, at positions `start`, `start + 1`, ...
fn new_items(names: impl IntoIterator<Item = String>, start: u32, now: Millis) -> Vec<ItemProgress> {
    (start..)
        .zip(names)
        .map(|(position, name)| ItemProgress {
            id: ItemId::new(),
            name,
            status: ItemStatus::Pending,
            error: None,
            attempts: 0,
            position,
            updated_at: now,
        })
        .collect()
}

/// Inserts new items, a thousand rows a statement.
async fn insert_items(tx: &mut Tx, batch_id: &str, items: &[ItemProgress]) -> Result<()> {
    for chunk in items.chunks(INSERT_CHUNK) {
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
        for item in chunk {
            query = query
                .bind(item.id.to_string())
                .bind(batch_id)
                .bind(i64::from(item.position))
                .bind(&item.name)
                .bind(item.updated_at);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    pub async fn create_batch(&self, owner: &str, new: NewBatch, now: Millis) -> Result<BatchProgress> {
        let counts = Counts::queued(new.items.len() as u32);
        let summary = BatchSummary::new(BatchId::new(), new.name, counts, 1, now);
        let items = new_items(new.items, 0, now);

        let mut tx = self.begin().await?;
        let sql = format!(
            "INSERT INTO batches ({SUMMARY_COLUMNS}, owner_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
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
        insert_items(&mut tx, &summary.batch_id.to_string(), &items).await?;
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

    /// One page of a batch's items in order (keyset on `position`, forwards from `after` or
    /// backwards from `before`), filtered by status and by a name substring; `seq` is the
    /// batch's, read by the caller before them. The cost is the page's, whatever the batch's
    /// size (an index serves each status).
    pub async fn items_page(&self, id: BatchId, query: &ItemQuery, seq: u64) -> Result<ItemsPage> {
        let limit = query.limit();
        let backwards = query.before.is_some();
        // One more than the page: whether there is another page that way.
        let mut rows = self.matching(id, query, backwards, query.before.or(query.after), limit + 1).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        if backwards {
            rows.reverse();
        }
        // The other way, from where this page starts: anything there?
        let (first, last) = (rows.first().map(|i| i.position), rows.last().map(|i| i.position));
        let other_way = match (backwards, query.after, query.before) {
            (false, Some(after), _) => Some(first.unwrap_or(after.saturating_add(1))),
            (true, _, Some(before)) => Some(last.unwrap_or(before.saturating_sub(1))),
            _ => None,
        };
        let beyond = match other_way {
            Some(from) => !self.matching(id, query, !backwards, Some(from), 1).await?.is_empty(),
            None => false,
        };
        let (more_after, more_before) = if backwards { (beyond, more) } else { (more, beyond) };
        let next = if more_after { last.or(other_way) } else { None };
        let prev = if more_before { first.or(other_way) } else { None };
        Ok(ItemsPage { items: rows, next, prev, seq })
    }

    /// Up to `limit` items that match `query`'s filter and search, from the cursor `from`
    /// (exclusive) on, in position order or backwards.
    async fn matching(
        &self,
        id: BatchId,
        query: &ItemQuery,
        backwards: bool,
        from: Option<u32>,
        limit: u32,
    ) -> Result<Vec<ItemProgress>> {
        let (op, order) = if backwards { ("<", "DESC") } else { (">", "ASC") };
        let mut sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = $1 AND position {op} $2");
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
        sql.push_str(&format!(" ORDER BY position {order} LIMIT ${}", params + 1));
        let start = match (from, backwards) {
            (Some(from), _) => i64::from(from),
            (None, false) => -1,
            (None, true) => i64::from(u32::MAX) + 1,
        };
        let mut select = sqlx::query_as(&sql).bind(id.to_string()).bind(start);
        if let Some(status) = query.status {
            select = select.bind(status.as_str());
        }
        if let Some(q) = &query.q {
            let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            select = select.bind(format!("%{escaped}%"));
        }
        Ok(select.bind(i64::from(limit)).fetch_all(&self.pool).await?)
    }

    /// Up to `limit` items after position `after`, in order, as an export writes them.
    pub async fn export_page(
        &self,
        id: BatchId,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<ItemProgress>> {
        self.matching(id, &ItemQuery::default(), false, after, limit).await
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
        let mut tx = self.begin().await?;
        let batch_id = id.to_string();
        let mut changes = Vec::with_capacity(names.len().div_ceil(EVENT_ITEMS));
        let mut owner = String::new();
        for (chunk_index, chunk) in names.chunks(EVENT_ITEMS).enumerate() {
            let mut summary;
            (owner, summary) = next_seq(&mut tx, &batch_id, now).await?.ok_or(Error::NotFound("batch"))?;
            if chunk_index == 0 {
                if summary.status.is_terminal() {
                    return Err(Error::Conflict("a finished batch takes no more items"));
                }
                if u64::from(summary.counts.total) + names.len() as u64 > u64::from(max) {
                    return Err(Error::Unprocessable(format!("a batch holds at most {max} items")));
                }
            }
            // Items are never removed: positions run from 0 to total - 1.
            let items = new_items(chunk.iter().cloned(), summary.counts.total, now);
            insert_items(&mut tx, &batch_id, &items).await?;
            let added = items.len() as u32;
            let mut counts = summary.counts;
            counts.queued += added;
            counts.total += added;
            summary.set_counts(counts);
            save_counts(&mut tx, &batch_id, &summary).await?;
            changes.push(BatchProgress::new(summary, items));
        }
        Ok(Uncommitted { tx, owner, changes })
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
                "SELECT owner_id FROM batches WHERE queued > 0 AND status NOT IN ('paused', 'cancelled') AND owner_id {op} $1 \
                 ORDER BY owner_id LIMIT 1"
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
                "SELECT id FROM batches WHERE queued > 0 AND status NOT IN ('paused', 'cancelled') AND owner_id = $1 AND id {op} $2 \
                 ORDER BY id LIMIT 1"
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
            let sql = format!("SELECT id, seq FROM batches WHERE id IN ({})", placeholders(1, chunk.len()));
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
