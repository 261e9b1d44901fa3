//! The JSON API under `/api`. Users create, list and read their own batches; a worker token
//! only reports item status, for any batch. Each handler carries its OpenAPI description
//! (`openapi.rs` gathers them), written beside the code whose answers it describes.

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, Uri, header::LOCATION},
    response::IntoResponse,
    routing::{get, post},
};
use batchwatch_core::{
    BatchId, BatchProgress, BatchSummary, Control, ItemId, ItemQuery, ItemReport, ItemsPage, NewBatch,
    NewItems, Page, Role, StatusReport,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    access::auth::{Caller, User},
    batches::{Access, Batches},
    error::{Error, ErrorBody, ErrorDetail, Result},
    extract::{Json, Path, Query},
    live::stream,
    state::AppState,
};

/// The largest request body any route accepts.
pub const BODY_LIMIT: usize = 1 << 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/batches", post(create_batch).get(list_batches))
        .route("/batches/{id}", get(get_batch))
        .route("/batches/{id}/items", get(list_items).post(append_items))
        .route("/batches/{id}/export", get(crate::export::export))
        .route("/batches/{id}/items/status", post(report_many))
        .route("/batches/{id}/items/{item_id}/status", post(report_status))
        .route("/batches/{id}/items/{item_id}/retry", post(retry_item))
        // After the static routes of the same shape (`items`, `export`), which match first.
        .route("/batches/{id}/{control}", post(control_batch))
        .route("/openapi.json", get(crate::openapi::serve))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(crate::metrics::time_requests))
        .layer(crate::trace_layer())
}

/// The event streams, under `/api` as well but served apart from [`router`]'s layers and the
/// compression of everything else: tracing wraps a response body and reads the clock at every
/// chunk (every event for every watcher; streams log their own start), and a compressing body,
/// even one that passes a stream through, is a 5 KB box per open stream.
pub fn streams() -> Router<AppState> {
    Router::new()
        .route("/api/batches/{id}/stream", get(stream::stream))
        .route("/api/stream", get(stream::user_stream))
}

/// Create a batch: every item starts `pending`, and the server's workers take them.
#[utoipa::path(
    post,
    path = "/api/batches",
    request_body = NewBatch,
    responses(
        (status = 201, description = "Created; `Location` names it", body = BatchProgress,
            headers(("location" = String, description = "The batch's URL"))),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A cookie request from another site, or a worker token", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Breaks a rule: blank or long name, too many items, control characters", body = ErrorBody),
        (status = 429, description = "Over the write limit; see `Retry-After`", body = ErrorBody),
    ),
)]
pub async fn create_batch(
    State(batches): State<Batches>,
    User(viewer): User,
    Json(new): Json<NewBatch>,
) -> Result<impl IntoResponse> {
    let progress = batches.create(&viewer.user_id, new).await?;
    let location = format!("/api/batches/{}", progress.summary.batch_id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], axum::Json(progress)))
}

/// The caller's batches, newest first, without their items.
#[utoipa::path(
    get,
    path = "/api/batches",
    params(Page),
    responses(
        (status = 200, description = "One page of batches", body = Vec<BatchSummary>),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A worker token", body = ErrorBody),
        (status = 422, description = "A bad `limit` or `offset`", body = ErrorBody),
    ),
)]
pub async fn list_batches(
    State(batches): State<Batches>,
    User(viewer): User,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.list(&viewer.user_id, page).await?))
}

/// A batch's summary: status, counts, percent, `seq`. Its items are paged through with
/// `GET /api/batches/{id}/items`, or exported whole.
#[utoipa::path(
    get,
    path = "/api/batches/{id}",
    params(("id" = BatchId, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch's summary", body = BatchSummary),
        (status = 400, description = "Not a batch id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A worker token", body = ErrorBody),
        (status = 404, description = "No such batch, or another user's", body = ErrorBody),
    ),
)]
pub async fn get_batch(
    State(batches): State<Batches>,
    User(viewer): User,
    Path(id): Path<BatchId>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.summary(Access::Owner(&viewer.user_id), id).await?))
}

/// Add items at the end of a batch that is not finished (up to 10,000 a call, up to
/// `MAX_ITEMS_PER_BATCH` in all): they start `pending`, and the workers take them.
#[utoipa::path(
    post,
    path = "/api/batches/{id}/items",
    params(("id" = BatchId, Path, description = "The batch's id")),
    request_body = NewItems,
    responses(
        (status = 200, description = "Added; the summary after, and the new items", body = BatchProgress),
        (status = 400, description = "Not a batch id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A cookie request from another site, or a worker token", body = ErrorBody),
        (status = 404, description = "No such batch, or another user's", body = ErrorBody),
        (status = 409, description = "The batch is finished", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Breaks a rule, or the batch would exceed its limit", body = ErrorBody),
        (status = 429, description = "Over the write limit; see `Retry-After`", body = ErrorBody),
    ),
)]
pub async fn append_items(
    State(batches): State<Batches>,
    State(config): State<std::sync::Arc<crate::config::Config>>,
    User(viewer): User,
    Path(id): Path<BatchId>,
    Json(new): Json<NewItems>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.append(&viewer.user_id, id, new, config.max_items_per_batch).await?))
}

/// One page of a batch's items in order, filtered by status and by a name substring; follow
/// `next` as `after` for the page after.
#[utoipa::path(
    get,
    path = "/api/batches/{id}/items",
    params(("id" = BatchId, Path, description = "The batch's id"), ItemQuery),
    responses(
        (status = 200, description = "One page of items", body = ItemsPage),
        (status = 400, description = "Not a batch id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A worker token", body = ErrorBody),
        (status = 404, description = "No such batch, or another user's", body = ErrorBody),
        (status = 422, description = "A bad status, `after` or `limit`, or a long `q`", body = ErrorBody),
    ),
)]
pub async fn list_items(
    State(batches): State<Batches>,
    User(viewer): User,
    Path(id): Path<BatchId>,
    Query(query): Query<ItemQuery>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.items_page(&viewer.user_id, id, query).await?))
}

/// Report an item's new status: `pending` → `processing` → `done` or `failed` (with `error`);
/// a failed item may go back to `pending` for another try. Workers' tokens may report for any
/// batch; users for their own.
#[utoipa::path(
    post,
    path = "/api/batches/{id}/items/{item_id}/status",
    params(
        ("id" = BatchId, Path, description = "The batch's id"),
        ("item_id" = ItemId, Path, description = "The item's id"),
    ),
    request_body = StatusReport,
    responses(
        (status = 200, description = "Applied; what changed: the summary and that item", body = BatchProgress),
        (status = 400, description = "Not a batch or item id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A cookie request from another site", body = ErrorBody),
        (status = 404, description = "No such batch or item, or another user's", body = ErrorBody),
        (status = 409, description = "Not a legal move from the item's status", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "An unknown status, or a long error", body = ErrorBody),
        (status = 429, description = "Over the write limit; see `Retry-After`", body = ErrorBody),
    ),
)]
pub async fn report_status(
    State(batches): State<Batches>,
    Caller(caller): Caller,
    Path((id, item_id)): Path<(BatchId, ItemId)>,
    Json(report): Json<StatusReport>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.report(access(&caller), id, item_id, report).await?))
}

/// Pause, resume, cancel a batch, or retry every failed item: `pause` (workers take nothing
/// more from it; items in progress finish), `resume`, `cancel` (every item not finished is
/// cancelled and the batch is over), `retry` (every failed item back to pending; a finished
/// batch opens again). Watchers see it as any change.
#[utoipa::path(
    post,
    path = "/api/batches/{id}/{control}",
    params(
        ("id" = BatchId, Path, description = "The batch's id"),
        ("control" = Control, Path, description = "`pause`, `resume`, `cancel` or `retry`"),
    ),
    responses(
        (status = 200, description = "Done; the summary after", body = BatchSummary),
        (status = 400, description = "Not a batch id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A cookie request from another site, or a worker token", body = ErrorBody),
        (status = 404, description = "No such batch or control, or another user's batch", body = ErrorBody),
        (status = 409, description = "The batch's state does not allow it (resume a running batch, cancel a finished one)", body = ErrorBody),
        (status = 429, description = "Over the write limit; see `Retry-After`", body = ErrorBody),
    ),
)]
pub async fn control_batch(
    State(batches): State<Batches>,
    User(viewer): User,
    Path((id, control)): Path<(BatchId, String)>,
) -> Result<impl IntoResponse> {
    let control = control.parse::<Control>().map_err(|_| Error::NotFound("route"))?;
    Ok(axum::Json(batches.control(&viewer.user_id, id, control).await?))
}

/// Retry one failed item: back to pending (a finished batch opens again).
#[utoipa::path(
    post,
    path = "/api/batches/{id}/items/{item_id}/retry",
    params(
        ("id" = BatchId, Path, description = "The batch's id"),
        ("item_id" = ItemId, Path, description = "The item's id"),
    ),
    responses(
        (status = 200, description = "Back in the queue; the summary and the item", body = BatchProgress),
        (status = 400, description = "Not a batch or item id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A cookie request from another site, or a worker token", body = ErrorBody),
        (status = 404, description = "No such batch or item, or another user's", body = ErrorBody),
        (status = 409, description = "The item has not failed", body = ErrorBody),
        (status = 429, description = "Over the write limit; see `Retry-After`", body = ErrorBody),
    ),
)]
pub async fn retry_item(
    State(batches): State<Batches>,
    User(viewer): User,
    Path((id, item_id)): Path<(BatchId, ItemId)>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.retry_item(&viewer.user_id, id, item_id).await?))
}

/// What a call with many reports did: the summary after its last change, every item it
/// changed, and a result per report, in the order they were sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reported {
    #[serde(flatten)]
    pub changed: BatchProgress,
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportResult {
    pub item: ItemId,
    pub applied: bool,
    /// Why it was not: the status the report alone would have had (404, 409, 422), and the
    /// error as every error answer holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RefusedReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefusedReport {
    pub status: u16,
    #[serde(flatten)]
    pub detail: ErrorDetail,
}

/// Report many items' new statuses at once (up to 1,000): each is judged on its own; the
/// accepted ones are committed together and announced as one change event per 500 items.
#[utoipa::path(
    post,
    path = "/api/batches/{id}/items/status",
    params(("id" = BatchId, Path, description = "The batch's id")),
    request_body(content = Vec<ItemReport>, description = "1 to 1,000 reports"),
    responses(
        (status = 200, description = "Judged; what changed, and a result per report", body = Reported),
        (status = 400, description = "Not a batch id", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A cookie request from another site", body = ErrorBody),
        (status = 404, description = "No such batch, or another user's", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Not a list of 1 to 1,000 reports", body = ErrorBody),
        (status = 429, description = "Over the write limit; see `Retry-After`", body = ErrorBody),
    ),
)]
pub async fn report_many(
    State(batches): State<Batches>,
    Caller(caller): Caller,
    Path(id): Path<BatchId>,
    Json(reports): Json<Vec<ItemReport>>,
) -> Result<impl IntoResponse> {
    if reports.is_empty() || reports.len() > ItemReport::MAX_PER_CALL {
        return Err(Error::Unprocessable(format!("send 1 to {} reports", ItemReport::MAX_PER_CALL)));
    }
    let items: Vec<ItemId> = reports.iter().map(|r| r.item).collect();
    let (changed, outcomes) = batches
        .report_many(access(&caller), id, reports.into_iter().map(ItemReport::split).collect())
        .await?;
    let results = items
        .into_iter()
        .zip(outcomes)
        .map(|(item, outcome)| ReportResult {
            item,
            applied: outcome.is_ok(),
            error: outcome
                .err()
                .map(|e| RefusedReport { status: e.status_code().as_u16(), detail: e.detail() }),
        })
        .collect();
    Ok(axum::Json(Reported { changed, results }))
}

/// Workers report for any batch; users for their own.
fn access(caller: &crate::access::accounts::Principal) -> Access<'_> {
    match caller.role {
        Role::User => Access::Owner(&caller.viewer.user_id),
        Role::Worker => Access::Any,
    }
}

async fn not_found(uri: Uri) -> Error {
    tracing::debug!(%uri, "no such API route");
    Error::NotFound("route")
}
