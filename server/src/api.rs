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
use batchwatch_core::{BatchId, BatchProgress, BatchSummary, ItemId, NewBatch, Page, Role, StatusReport};

use crate::{
    access::auth::{Caller, User},
    batches::{Access, Batches},
    error::{Error, ErrorBody, Result},
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
        .route("/batches/{id}/items/{item_id}/status", post(report_status))
        .route("/openapi.json", get(crate::openapi::serve))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(crate::metrics::time_requests))
        .layer(crate::trace_layer())
        // After the layers: tracing wraps a response body and reads the clock at every chunk,
        // which on a stream is every event for every watcher. Streams log their own start.
        .route("/batches/{id}/stream", get(stream::stream))
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

/// A batch with every item: the same snapshot a stream starts with.
#[utoipa::path(
    get,
    path = "/api/batches/{id}",
    params(("id" = BatchId, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch", body = BatchProgress),
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
    Ok(axum::Json(batches.progress(Access::Owner(&viewer.user_id), id).await?))
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
        (status = 200, description = "Applied; the batch as it is now", body = BatchProgress),
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
    let access = match caller.role {
        Role::User => Access::Owner(&caller.viewer.user_id),
        Role::Worker => Access::Any,
    };
    batches.report(access, id, item_id, report).await?;
    Ok(axum::Json(batches.progress(access, id).await?))
}

async fn not_found(uri: Uri) -> Error {
    tracing::debug!(%uri, "no such API route");
    Error::NotFound("route")
}
