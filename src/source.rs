//! What the server-rendered pages need from the server, declared here so that `app` depends on
//! an interface and `server` implements it: the arrow points one way.

use std::{future::Future, pin::Pin, sync::Arc};

use crate::{
    BatchId, BatchProgress, BatchSummary, Control, ItemId, ItemQuery, ItemsPage, NewBatch, Page, Viewer,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a source could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The request itself is wrong: shown to the person as is.
    Invalid(String),
    /// Something on the server failed: logged there, shown as a generic message.
    Internal,
}

/// Batches as the pages see them, read cache-first by the implementation. Every call is made
/// for a viewer and sees only that viewer's batches: another's batch is `None`, as if it did
/// not exist.
pub trait BatchSource: Send + Sync + 'static {
    fn summary<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
    ) -> BoxFuture<'a, Result<Option<BatchSummary>, SourceError>>;
    /// One page of a batch's items.
    fn items<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
        query: ItemQuery,
    ) -> BoxFuture<'a, Result<Option<ItemsPage>, SourceError>>;
    fn list<'a>(
        &'a self,
        viewer: &'a Viewer,
        page: Page,
    ) -> BoxFuture<'a, Result<Vec<BatchSummary>, SourceError>>;
    /// Pauses, resumes, cancels a batch or retries its failed items; the summary after.
    fn control<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
        control: Control,
    ) -> BoxFuture<'a, Result<BatchSummary, SourceError>>;
    /// Puts one failed item back in the queue.
    fn retry_item<'a>(
        &'a self,
        viewer: &'a Viewer,
        id: BatchId,
        item: ItemId,
    ) -> BoxFuture<'a, Result<(), SourceError>>;
    fn create<'a>(
        &'a self,
        viewer: &'a Viewer,
        new: NewBatch,
    ) -> BoxFuture<'a, Result<BatchProgress, SourceError>>;
}

pub type SharedSource = Arc<dyn BatchSource>;

/// Sign-in links as the sign-in page sees them: whose account a token opens, asked before
/// anyone signs in with it, so that the page can name it on the button a person must press.
pub trait SignInSource: Send + Sync + 'static {
    /// The name of the user `token` signs in as; `None` for a bad, revoked or worker token.
    /// Counted as a sign-in attempt from `client` (an address).
    fn user_of<'a>(
        &'a self,
        client: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, SourceError>>;
}

pub type SharedSignIn = Arc<dyn SignInSource>;
