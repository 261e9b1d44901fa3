//! The one path through which batches are created, changed and read, whoever asks: the JSON
//! API, the server-rendered pages, and (later) the workers.

use std::time::{SystemTime, UNIX_EPOCH};

use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, ItemId, Millis, NewBatch, Page, StatusReport,
    source::{BatchSource, BoxFuture, SourceError},
};

use crate::{
    error::{Error, Result},
    store::Store,
};

#[derive(Clone, Debug)]
pub struct Batches {
    store: Store,
}

impl Batches {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn create(&self, new: NewBatch) -> Result<BatchProgress> {
        let new = new.validate()?;
        let progress = self.store.create_batch(new, now()).await?;
        tracing::info!(batch = %progress.summary.batch_id, items = progress.items.len(), "batch created");
        Ok(progress)
    }

    pub async fn list(&self, page: Page) -> Result<Vec<BatchSummary>> {
        self.store.list_batches(page).await
    }

    pub async fn progress(&self, id: BatchId) -> Result<BatchProgress> {
        self.store.progress(id).await?.ok_or(Error::NotFound("batch"))
    }

    /// Applies a worker's report. Returns the change: the batch with only the changed item.
    pub async fn report(&self, batch: BatchId, item: ItemId, report: StatusReport) -> Result<BatchProgress> {
        let report = report.validate()?;
        self.store.report(batch, item, report, now()).await
    }
}

pub fn now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
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
    fn progress(&self, id: BatchId) -> BoxFuture<'_, Result<Option<BatchProgress>, SourceError>> {
        Box::pin(async move {
            match Batches::progress(self, id).await {
                Ok(progress) => Ok(Some(progress)),
                Err(Error::NotFound(_)) => Ok(None),
                Err(e) => Err(for_page(e)),
            }
        })
    }

    fn list(&self, page: Page) -> BoxFuture<'_, Result<Vec<BatchSummary>, SourceError>> {
        Box::pin(async move { Batches::list(self, page).await.map_err(for_page) })
    }

    fn create(&self, new: NewBatch) -> BoxFuture<'_, Result<BatchProgress, SourceError>> {
        Box::pin(async move { Batches::create(self, new).await.map_err(for_page) })
    }
}
