//! What an operator asks of a running server: `GET /health` (the process answers), `GET
//! /ready` (it can serve: the database and Redis answer, each check with its latency) and `GET
//! /metrics` (see `metrics.rs`). None needs a sign-in, and none touches a batch.

use std::time::{Duration, Instant};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde::Serialize;

use crate::{batches::Batches, state::AppState};

/// A check that takes longer than this has failed: a load balancer must not wait on it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(crate::metrics::render))
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Serialize)]
struct Check {
    ok: bool,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    database: Check,
    redis: Check,
}

async fn ready(State(batches): State<Batches>) -> impl IntoResponse {
    let (database, redis) = tokio::join!(check(batches.store().ping()), check(batches.cache().ping()));
    let ok = database.ok && redis.ok;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ok { "ready" } else { "unready" }, database, redis }))
}

async fn check<E: std::fmt::Display>(probe: impl Future<Output = Result<(), E>>) -> Check {
    let started = Instant::now();
    let error = match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    };
    Check { ok: error.is_none(), latency_ms: started.elapsed().as_secs_f64() * 1_000.0, error }
}
