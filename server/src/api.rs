//! The JSON API under `/api`. Users create, list and read their own batches; a worker token
//! only reports item status, for any batch.

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, Uri, header::LOCATION},
    response::IntoResponse,
    routing::{get, post},
};
use batchwatch_core::{BatchId, ItemId, NewBatch, Page, Role, StatusReport};

use crate::{
    access::auth::{Caller, User},
    batches::{Access, Batches},
    error::{Error, Result},
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
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(crate::trace_layer())
        // After the layers: tracing wraps a response body and reads the clock at every chunk,
        // which on a stream is every event for every watcher. Streams log their own start.
        .route("/batches/{id}/stream", get(stream::stream))
}

async fn create_batch(
    State(batches): State<Batches>,
    User(viewer): User,
    Json(new): Json<NewBatch>,
) -> Result<impl IntoResponse> {
    let progress = batches.create(&viewer.user_id, new).await?;
    let location = format!("/api/batches/{}", progress.summary.batch_id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], axum::Json(progress)))
}

async fn list_batches(
    State(batches): State<Batches>,
    User(viewer): User,
    Query(page): Query<Page>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.list(&viewer.user_id, page).await?))
}

async fn get_batch(
    State(batches): State<Batches>,
    User(viewer): User,
    Path(id): Path<BatchId>,
) -> Result<impl IntoResponse> {
    Ok(axum::Json(batches.progress(Access::Owner(&viewer.user_id), id).await?))
}

async fn report_status(
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
