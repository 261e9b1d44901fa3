//! What the server-rendered pages need from the server, declared here so that `app` depends on
//! an interface and `server` implements it: the arrow points one way.

use std::{future::Future, pin::Pin, sync::Arc};

use crate::{BatchId, BatchProgress, BatchSummary, NewBatch, Page};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The request itself is wrong: shown to the person as is.
    Invalid(String),
    /// Something on the server failed: logged there, shown as a generic message.
    Internal,
}

/// Batches as the pages see them, read cache-first by the implementation.
pub trait BatchSource: Send + Sync + 'static {
    fn progress(&self, id: BatchId) -> BoxFuture<'_, Result<Option<BatchProgress>, SourceError>>;
    fn list(&self, page: Page) -> BoxFuture<'_, Result<Vec<BatchSummary>, SourceError>>;
    fn create(&self, new: NewBatch) -> BoxFuture<'_, Result<BatchProgress, SourceError>>;
}

pub type SharedSource = Arc<dyn BatchSource>;
