//! The batchwatch server: the router and how it is started. `main.rs` only parses the command
//! line; tests build the same router with [`app`] and [`start`].

pub mod api;
pub mod batches;
pub mod config;
pub mod error;
pub mod extract;
pub mod state;
pub mod store;

use std::{path::Path, sync::Arc};

use anyhow::Context;
use axum::Router;
use batchwatch_core::source::SharedSource;
use leptos::{config::LeptosOptions, prelude::provide_context};
use leptos_axum::{LeptosRoutes, generate_route_list};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::{batches::Batches, config::Config, state::AppState, store::Store};

/// The whole HTTP surface: the JSON API, the pages, and the static files of the site.
pub fn app(state: AppState) -> Router {
    let routes = generate_route_list(app::App);
    let source: SharedSource = Arc::new(state.batches.clone());
    let options = state.leptos_options.clone();
    Router::new()
        .nest("/api", api::router())
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(source.clone()),
            move || app::shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(app::shell))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Reads the runtime settings: `Leptos.toml` when present, overridden by `LEPTOS_*` variables.
pub fn leptos_options(config: &Config) -> anyhow::Result<LeptosOptions> {
    let file = Path::new(&config.leptos_config).exists().then_some(config.leptos_config.as_str());
    let conf = leptos_config::get_configuration(file).context("reading the Leptos settings")?;
    Ok(conf.leptos_options)
}

/// Connects to the database and builds the state every handler shares.
pub async fn state(config: Config, leptos_options: LeptosOptions) -> anyhow::Result<AppState> {
    let store = Store::connect(&config.database_url, config.database_max_connections)
        .await
        .with_context(|| format!("opening the database at {}", config.database_url))?;
    Ok(AppState { leptos_options, config: Arc::new(config), batches: Batches::new(store) })
}

/// Serves on `listener` until the future `shutdown` completes.
pub async fn start(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
