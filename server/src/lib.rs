//! The batchwatch server: the router and how it is started. `main.rs` only parses the command
//! line; tests build the same parts with [`state`], [`app`] and [`start`].

pub mod access;
pub mod api;
pub mod batches;
pub mod config;
pub mod error;
pub mod export;
pub mod extract;
pub mod group_commit;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod redis_conn;
pub mod serve;
pub mod state;
pub mod store;
pub mod worker;

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, Uri, header},
    middleware::{Next, from_fn, from_fn_with_state},
    response::{IntoResponse, Redirect, Response},
    routing::post,
};
use batchwatch_core::source::{SharedSignIn, SharedSource};
use leptos::{config::LeptosOptions, prelude::provide_context};
use leptos_axum::{LeptosRoutes, generate_route_list};
use tokio::net::TcpListener;
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use crate::{
    access::{auth, limits::Limits, sessions::Sessions},
    batches::Batches,
    config::Config,
    live::hub::Hub,
    redis_conn::{RedisConn, RedisTarget},
    state::AppState,
    store::{Store, cache::Cache},
};

/// The pages' routes, listed once per process. Listing them renders the app with resource
/// loading switched off by a process-wide flag (leptos_server's `SuppressResourceLoad`): a page
/// rendered meanwhile by another `app()` in the same process (tests build many) never loaded
/// its data and hung.
static ROUTES: std::sync::OnceLock<Vec<leptos_axum::AxumRouteListing>> = std::sync::OnceLock::new();

/// The whole HTTP surface: the JSON API, the pages, sign-in, and the static files of the site.
/// Every request is identified first (`auth::identify`); pages and server functions then need
/// a signed-in user, while `/login` and the static files are open to all.
pub fn app(state: AppState) -> Router {
    let routes = ROUTES.get_or_init(|| generate_route_list(app::App)).clone();
    let source: SharedSource = Arc::new(state.batches.clone());
    let sign_in: SharedSignIn =
        Arc::new(auth::SignInCheck { accounts: state.accounts.clone(), limits: state.limits.clone() });
    let page_context = move || {
        provide_context(source.clone());
        provide_context(sign_in.clone());
    };
    let options = state.leptos_options.clone();
    let router = Router::new()
        .leptos_routes_with_context(&state, routes, page_context.clone(), move || app::shell(options.clone()))
        .route_layer(from_fn(auth::pages_need_sign_in))
        .route_layer(from_fn(error::server_fn_rejections))
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        // The not-found page renders the app too: it gets the same context as the routes.
        .fallback(leptos_axum::file_and_error_handler_with_context::<AppState, _>(page_context, app::shell))
        .layer(from_fn(metrics::time_requests))
        .layer(trace_layer())
        // After the layers: the API traces its own routes.
        .nest("/api", api::router())
        // Routes only: the static files (the fallback) are the same for everyone, and a page
        // load fetches several, none of which needs a session lookup.
        .route_layer(from_fn_with_state(state.clone(), auth::identify))
        // After the sign-in check: health and readiness are for probes that hold no token.
        .merge(ops::router());
    let router = with_security_headers(router)
        .layer(from_fn_with_state(state.clone(), cache_built_files))
        // Pages, JSON and exports, compressed as the client asks (br or gzip), except
        // responses that are encoded already (the precompressed static files).
        .layer(CompressionLayer::new());
    // The streams after the compression: never compressed (a compressor would hold events
    // back), and not even wrapped (see `api::streams`).
    let streams = api::streams().route_layer(from_fn_with_state(state.clone(), auth::identify));
    router
        .merge(with_security_headers(streams))
        .layer(from_fn(canonical_path))
        // Outermost: the id is there for every layer's log lines, and answers with the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span of every traced request, named with its `x-request-id` (the caller's, or a new
/// UUID): every line logged while serving it carries the id.
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, fn(&Request) -> tracing::Span> {
    TraceLayer::new_for_http().make_span_with(request_span as fn(&Request) -> tracing::Span)
}

fn request_span(request: &Request) -> tracing::Span {
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = id)
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
    let mut options =
        leptos_config::get_configuration(file).context("reading the Leptos settings")?.leptos_options;
    // The release build names the site's files by their hash (Cargo.toml's `hash-files`) and
    // lists them in `hash.txt` beside the binary. Whether to use hashed names follows from that
    // list being there: leptos panics on every page when told to hash without it (a binary
    // built by plain `cargo build`, or moved without its list).
    options.hash_files = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(&*options.hash_file)))
        .is_some_and(|list| list.exists());
    Ok(options)
}

/// The shared parts: the database, and Redis (or the in-process twins for `memory://`).
pub struct Backends {
    pub store: Store,
    redis: Option<(RedisTarget, RedisConn)>,
}

impl Backends {
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database_url, config.database_max_connections)
            .await
            .with_context(|| format!("opening the database at {}", config.database_url))?;
        if config.redis_url.starts_with("memory://") {
            tracing::info!(
                "REDIS_URL=memory://: cache, events, sessions and limits stay inside this process"
            );
            return Ok(Self { store, redis: None });
        }
        let target = RedisTarget::parse(&config.redis_url)?;
        if matches!(target, RedisTarget::Cluster(_)) && config.redis_prefix.contains(['{', '}']) {
            // The prefix's braces would be the partition channels' hash tag: one slot for all.
            anyhow::bail!("REDIS_PREFIX may not hold braces on a Redis Cluster");
        }
        let conn = target.connect()?;
        Ok(Self { store, redis: Some((target, conn)) })
    }

    pub fn batches(&self, config: &Config) -> Batches {
        let (cache, hub) = match &self.redis {
            None => (Cache::memory(config.cache_ttl()), Hub::memory(config.event_interval())),
            Some((target, conn)) => (
                Cache::redis(conn.clone(), &config.redis_prefix, config.cache_ttl()),
                Hub::redis(target.clone(), conn.clone(), &config.redis_prefix, config.event_interval()),
            ),
        };
        Batches::new(self.store.clone(), cache, hub)
    }

    pub fn sessions(&self, config: &Config) -> Sessions {
        let ttl = config.session_ttl();
        match &self.redis {
            None => Sessions::memory(ttl),
            Some((_, conn)) => Sessions::redis(conn.clone(), &config.redis_prefix, ttl),
        }
    }

    pub fn limits(&self, config: &Config) -> Limits {
        let settings = config.into();
        match &self.redis {
            None => Limits::memory(settings),
            Some((_, conn)) => Limits::redis(conn.clone(), &config.redis_prefix, settings),
        }
    }
}

/// Builds the state every handler shares.
pub async fn state(config: Config, leptos_options: LeptosOptions) -> anyhow::Result<AppState> {
    metrics::install();
    let backends = Backends::connect(&config).await?;
    let batches = backends.batches(&config);
    tokio::spawn(live::catch_up::run(batches.clone()));
    Ok(AppState {
        leptos_options,
        batches,
        accounts: backends.store.accounts(),
        sessions: backends.sessions(&config),
        limits: backends.limits(&config),
        streams: (&config).into(),
        site: (&config).into(),
        config: Arc::new(config),
    })
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
    let write_stall = Duration::from_secs(state.config.write_stall_secs);
    let tune = move |tcp: &tokio::net::TcpStream| {
        // Events are small and latency matters more than packing them.
        let _ = tcp.set_nodelay(true);
        let socket = socket2::SockRef::from(tcp);
        let _ = socket.set_send_buffer_size(SEND_BUFFER);
        // A reader that stops reading stops hyper from polling its body, and nothing in the
        // process can tell the connection from a slow one: the kernel can. Data left unsent
        // behind a zero window (or unacknowledged) this long closes the connection, and the
        // stream's task ends with it.
        let _ = socket.set_tcp_user_timeout(Some(write_stall));
    };
    let protocols =
        serve::Protocols::new(Duration::from_secs(state.config.header_timeout_secs), state.config.h2c);
    serve::serve(listener, app(state), tune, protocols, shutdown).await;
    Ok(())
}

/// How long browsers keep the build's files (`/pkg/…`). Hashed, a name never changes content
/// (a new build gives new names, which the next page asks for): a year, without asking again.
/// Unhashed (a binary without `hash.txt`: see [`leptos_options`]), they must ask every time: a
/// stale wasm cannot hydrate the new server's HTML.
async fn cache_built_files(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let options = &state.leptos_options;
    let built = request
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|path| path.strip_prefix(&*options.site_pkg_dir))
        .is_some_and(|rest| rest.starts_with('/'));
    let mut response = next.run(request).await;
    if built && response.status().is_success() {
        let policy = if options.hash_files { "public, max-age=31536000, immutable" } else { "no-cache" };
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    response
}

/// `/batches/<id>/`, `/batches//<id>` and `/batches/<id>/.` name the same page as
/// `/batches/<id>`, and the pages' router reads them so, while axum's routes do not: send the
/// browser to the one spelling (308 keeps the method and body), so that a page is only ever
/// rendered by its own route.
async fn canonical_path(request: Request, next: Next) -> Response {
    match canonical(request.uri()) {
        Some(location) => Redirect::permanent(&location).into_response(),
        None => next.run(request).await,
    }
}

/// The path without empty and dot segments (RFC 3986's `remove_dot_segments`, and repeated
/// slashes folded), or `None` when it is already so. The result always starts with exactly one
/// slash: `//evil.example/` must not become a redirect to another site.
fn canonical(uri: &Uri) -> Option<String> {
    let path = uri.path();
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let clean = format!("/{}", segments.join("/"));
    if clean == path {
        return None;
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{clean}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fold_to_one_local_spelling() {
        let canon = |uri: &str| canonical(&uri.parse().unwrap());
        assert_eq!(canon("/batches/x/"), Some("/batches/x".into()));
        assert_eq!(canon("/batches/x///?a=1"), Some("/batches/x?a=1".into()));
        assert_eq!(canon("/batches//x"), Some("/batches/x".into()));
        assert_eq!(canon("/batches/x/."), Some("/batches/x".into()));
        assert_eq!(canon("/batches/x/../y"), Some("/batches/y".into()));
        assert_eq!(canon("/../../etc"), Some("/etc".into()));
        assert_eq!(canon("//evil.example/"), Some("/evil.example".into()));
        assert_eq!(canon("///"), Some("/".into()));
        assert_eq!(canon("/"), None);
        assert_eq!(canon("/batches/x"), None);
        assert_eq!(canon("/batches/%2e%2e"), None, "escaped dots are a name, not a step");
    }
}
