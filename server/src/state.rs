//! What every handler can extract: each takes only the part it uses.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::{batches::Batches, config::Config, sse::StreamTimes};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    pub batches: Batches,
    pub streams: StreamTimes,
}
