//! Server functions: how the pages reach the server's data. On the server they call the
//! `BatchSource` that `server` provides as context, for the signed-in [`Viewer`] that the
//! server's sign-in check put into the request.

use batchwatch_core::{BatchId, BatchSummary, Control, ItemId, ItemQuery, ItemsPage, Page, Viewer};
use leptos::{
    ev::SubmitEvent,
    prelude::*,
    server_fn::{ServerFn, codec::GetUrl},
};
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use batchwatch_core::source::{SharedSource, SourceError};

/// A server function's error as a person reads it.
pub fn message(error: ServerFnError) -> String {
    error.to_string().trim_start_matches("error running server function: ").to_owned()
}

/// The `on:submit` of a `<form method="post" action=S::url()>`: with JavaScript the action
/// makes the call in place (its button disabled while it runs, its error shown) with the
/// arguments `args` gives; when it gives none the browser posts the form as it is, as it does
/// without JavaScript (and the server sends it back to the page it came from).
///
/// Not leptos's `ActionForm`: that one reads any form into any function's arguments (a
/// `serde_qs` decoder for each) and cost the wasm 31 KB gzipped, while our forms' arguments are
/// known to the page or two fields long.
pub fn submit<S>(
    action: ServerAction<S>,
    args: impl Fn() -> Option<S> + 'static,
) -> impl FnMut(SubmitEvent) + 'static
where
    S: ServerFn + Send + Sync + Clone + 'static,
    S::Output: Send + Sync + 'static,
    S::Error: Send + Sync + 'static,
{
    move |event: SubmitEvent| {
        if let Some(args) = args() {
            event.prevent_default();
            action.dispatch(args);
        }
    }
}

/// What the batch page found for the id in its URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Lookup {
    Found(Box<BatchSummary>),
    NotFound,
    Malformed,
}

/// The server's data. Every route and the not-found page provide it; rendering elsewhere is
/// an error, never a panic.
#[cfg(feature = "ssr")]
fn source() -> Result<SharedSource, ServerFnError> {
    use_context::<SharedSource>().ok_or_else(|| ServerFnError::new("no data source here"))
}

/// The signed-in user. The server answers 401 before a server function runs without one, so
/// this fails only when a page is rendered outside a request.
#[cfg(feature = "ssr")]
fn viewer() -> Result<Viewer, ServerFnError> {
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Viewer>().cloned())
        .ok_or_else(|| ServerFnError::new("sign in first"))
}

#[cfg(feature = "ssr")]
fn to_server_error(error: SourceError) -> ServerFnError {
    match error {
        SourceError::Invalid(message) => ServerFnError::new(message),
        SourceError::Internal => ServerFnError::new("something went wrong on the server"),
    }
}

/// Loads the batch named by the URL's id (a malformed id never reaches the server).
pub async fn lookup(id: String) -> Result<Lookup, ServerFnError> {
    match id.parse::<BatchId>() {
        Err(_) => Ok(Lookup::Malformed),
        Ok(id) => Ok(get_batch(id).await?.map_or(Lookup::NotFound, |s| Lookup::Found(Box::new(s)))),
    }
}

/// Whose account a sign-in link's token opens, for the button that names it; `None` for a
/// token that signs nobody in. A POST: the token is a secret and stays out of URLs and logs.
#[server(prefix = "/leptos")]
pub async fn token_owner(token: String) -> Result<Option<String>, ServerFnError> {
    use batchwatch_core::{account::ClientAddress, source::SharedSignIn};
    let client = use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<ClientAddress>().cloned())
        .ok_or_else(|| ServerFnError::new("no client address"))?;
    let sign_in = use_context::<SharedSignIn>().ok_or_else(|| ServerFnError::new("no sign-in here"))?;
    let owner = sign_in.user_of(&client.0, &token).await;
    if let Err(SourceError::Invalid(_)) = &owner {
        // The one refusal of a well-formed question: too many attempts.
        crate::set_status(http::StatusCode::TOO_MANY_REQUESTS);
    }
    owner.map_err(to_server_error)
}

/// Who is signed in, for the header and the sign-in page: read from the request on the
/// server, and from the page's hydration data in the browser (leptos's `SharedValue`), once per
/// page. Not a resource: the header then neither waits for nor makes a request of its own, and
/// the wasm carries no server function and suspense for it (9 KB gzipped).
pub fn signed_in() -> Option<Viewer> {
    SharedValue::new(|| {
        #[cfg(feature = "ssr")]
        return viewer().ok();
        // The app is only ever hydrated, never first rendered in the browser.
        #[cfg(not(feature = "ssr"))]
        None
    })
    .into_inner()
}

/// Reads are GETs: they change nothing, so they neither need the same-origin check nor count
/// against the write limit.
#[server(prefix = "/leptos", input = GetUrl)]
pub async fn get_batch(id: BatchId) -> Result<Option<BatchSummary>, ServerFnError> {
    source()?.summary(&viewer()?, id).await.map_err(to_server_error)
}

/// One page of a batch's items: the view the batch page shows.
#[server(prefix = "/leptos", input = GetUrl)]
pub async fn get_items(
    id: BatchId,
    // The first page of everything encodes as no parameters at all.
    #[server(default)] query: ItemQuery,
) -> Result<Option<ItemsPage>, ServerFnError> {
    source()?.items(&viewer()?, id, query).await.map_err(to_server_error)
}

#[server(prefix = "/leptos", input = GetUrl)]
pub async fn list_batches(page: Page) -> Result<Vec<BatchSummary>, ServerFnError> {
    source()?.list(&viewer()?, page).await.map_err(to_server_error)
}

/// The batch page's controls: pause, resume, cancel, retry every failed item. Without
/// JavaScript the form's POST comes back to the page it was sent from.
#[server(prefix = "/leptos")]
pub async fn control_batch(id: BatchId, control: Control) -> Result<BatchSummary, ServerFnError> {
    source()?.control(&viewer()?, id, control).await.map_err(to_server_error)
}

/// A failed item's Retry button.
#[server(prefix = "/leptos")]
pub async fn retry_item(id: BatchId, item: ItemId) -> Result<(), ServerFnError> {
    source()?.retry_item(&viewer()?, id, item).await.map_err(to_server_error)
}

/// The home page's form: a name and one item per line. Goes on to the new batch's page.
#[server(prefix = "/leptos")]
pub async fn create_batch(name: String, items: String) -> Result<BatchId, ServerFnError> {
    let new = batchwatch_core::NewBatch::from_lines(&name, &items);
    created(source()?.create(&viewer()?, new).await.map_err(to_server_error)?)
}

/// The home page's demo button: `count` made-up photos.
#[server(prefix = "/leptos")]
pub async fn create_demo_batch(count: usize) -> Result<BatchId, ServerFnError> {
    // Checked before building the names, so a huge count costs nothing.
    if count > batchwatch_core::NewBatch::MAX_ITEMS {
        return Err(ServerFnError::new(format!(
            "a batch holds at most {} items",
            batchwatch_core::NewBatch::MAX_ITEMS
        )));
    }
    let new = batchwatch_core::NewBatch::demo(count);
    created(source()?.create(&viewer()?, new).await.map_err(to_server_error)?)
}

#[cfg(feature = "ssr")]
fn created(progress: batchwatch_core::BatchProgress) -> Result<BatchId, ServerFnError> {
    let id = progress.summary.batch_id;
    leptos_axum::redirect(&format!("/batches/{id}"));
    Ok(id)
}
