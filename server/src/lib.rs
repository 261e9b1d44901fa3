//! The batchwatch server: the router and how it is started. `main.rs` only parses the command
//! line; tests build the same parts with [`state`], [`app`] and [`start`].

pub mod accounts;
pub mod api;
pub mod batches;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod hub;
pub mod sse;
pub mod state;
pub mod store;
pub mod worker;

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use axum::http::{HeaderValue, header};
use axum::{Router, serve::ListenerExt};
use batchwatch_core::source::SharedSource;
use leptos::{config::LeptosOptions, prelude::provide_context};
use leptos_axum::{LeptosRoutes, generate_route_list};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::net::TcpListener;
use tower_http::{set_header::SetResponseHeaderLayer, trace::TraceLayer};

use crate::{
    batches::Batches, cache::Cache, config::Config, hub::Hub, sse::StreamTimes, state::AppState, store::Store,
};

/// The whole HTTP surface: the JSON API, the pages, and the static files of the site.
pub fn app(state: AppState) -> Router {
    let routes = generate_route_list(app::App);
    let source: SharedSource = Arc::new(state.batches.clone());
    let options = state.leptos_options.clone();
    let router = Router::new()
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(source.clone()),
            move || app::shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(app::shell))
        .layer(TraceLayer::new_for_http())
        // After the layer: the API traces its own routes, all but the streams (`api::router`).
        .nest("/api", api::router());
    with_security_headers(router).with_state(state)
}

/// Headers on every response. Pages set their own Content-Security-Policy (with the nonce of
/// their inline scripts, see `app::content_security_policy`); everything else gets one that
/// allows nothing.
fn with_security_headers(router: Router<AppState>) -> Router<AppState> {
    let set = SetResponseHeaderLayer::overriding;
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(set(header::REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin")))
        .layer(set(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
}

/// Reads the runtime settings: `Leptos.toml` when present, overridden by `LEPTOS_*` variables.
pub fn leptos_options(config: &Config) -> anyhow::Result<LeptosOptions> {
    let file = Path::new(&config.leptos_config).exists().then_some(config.leptos_config.as_str());
    let conf = leptos_config::get_configuration(file).context("reading the Leptos settings")?;
    Ok(conf.leptos_options)
}

/// Connects to the database and Redis (or sets up the in-process twins for `memory://`).
pub async fn batches(config: &Config) -> anyhow::Result<Batches> {
    let store = Store::connect(&config.database_url, config.database_max_connections)
        .await
        .with_context(|| format!("opening the database at {}", config.database_url))?;
    let (cache, hub) = if config.redis_url.starts_with("memory://") {
        tracing::info!("REDIS_URL=memory://: cache and events stay inside this process");
        (Cache::memory(config.cache_ttl()), Hub::memory())
    } else {
        let client = redis::Client::open(config.redis_url.as_str()).context("parsing REDIS_URL")?;
        // Short timeouts: while Redis is away, requests fall back to the database quickly.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        (
            Cache::redis(conn.clone(), &config.redis_prefix, config.cache_ttl()),
            Hub::redis(client, conn, &config.redis_prefix),
        )
    };
    Ok(Batches::new(store, cache, hub))
}

/// Builds the state every handler shares.
pub async fn state(config: Config, leptos_options: LeptosOptions) -> anyhow::Result<AppState> {
    let batches = batches(&config).await?;
    let streams = StreamTimes {
        keepalive: Duration::from_secs(config.stream_keepalive_secs),
        max_age: Duration::from_secs(config.stream_max_secs),
    };
    Ok(AppState { leptos_options, batches, streams, config: Arc::new(config) })
}

/// The kernel's send buffer per connection. Fixing it turns off autotuning, which would let a
/// stream whose reader stalls park megabytes in the kernel; 64 KiB still fills loopback and
/// LAN links, and a stalled watcher falls behind the hub's ring sooner and skips ahead.
const SEND_BUFFER: usize = 64 * 1024;

/// Serves on `listener` until the future `shutdown` completes.
pub async fn start(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = listener.tap_io(|tcp| {
        // Events are small and latency matters more than packing them.
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(SEND_BUFFER);
    });
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
