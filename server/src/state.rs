//! What every handler can extract: each takes only the part it uses.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use crate::{
    access::{accounts::Accounts, limits::Limits, sessions::Sessions, site::SiteSettings},
    batches::Batches,
    config::{Config, StreamTimes},
};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    pub batches: Batches,
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub limits: Limits,
    pub streams: StreamTimes,
    pub site: SiteSettings,
}
