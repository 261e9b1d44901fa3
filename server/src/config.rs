//! Command line and environment: parsed once at start; a bad value stops the process there,
//! with clap's message naming the variable and the range it must be in. Every number has
//! one: a zero keep-alive would panic tokio's interval, a zero pool would hang every request.

use std::time::Duration;

use clap::{Parser, Subcommand, builder::RangedU64ValueParser, value_parser};

#[derive(Debug, Parser)]
#[command(name = "batchwatch", version, about = "Watch processing batches live in the browser")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the pages, the API and the streams, with `WORKERS` workers inside (the default).
    Serve,
    /// Run `WORKERS` workers and nothing else, beside one or more servers.
    Worker,
    /// Manage users and their API tokens.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum UserAction {
    /// Create a user and print its first token (shown this once only).
    Create {
        name: String,
        /// A worker: may report item status for any batch, and do nothing else.
        #[arg(long)]
        worker: bool,
    },
    /// Print one more token for an existing user.
    Token { name: String },
    /// List every token, with its user and role (never the secret).
    List,
    /// Revoke a token by its id: it stops working at once.
    Revoke { token_id: String },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Log lines as `text` for people or `json` (one object a line, with the request's span and
    /// its `request_id`) for a log pipeline.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Runtime threads: 0 is one per core; 1 runs tokio's current-thread runtime, which
    /// fans out with fewer context switches on small machines (see the README's figures).
    #[arg(long, env = "SERVER_THREADS", default_value_t = 0, value_parser = RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub server_threads: usize,

    /// Where batches are stored: `sqlite://path` (created when missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/batchwatch.db")]
    pub database_url: String,

    /// The most database connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8, value_parser = value_parser!(u32).range(1..=10_000))]
    pub database_max_connections: u32,

    /// The runtime settings file (a `[package.metadata.leptos]` section); `LEPTOS_*`
    /// variables override it. Without the file, the variables alone are used.
    #[arg(long, env = "LEPTOS_CONFIG", default_value = "Leptos.toml")]
    pub leptos_config: String,

    /// Redis for the progress cache and the change events, or `memory://` for one process
    /// with neither (a quick local try: no other process sees its events).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Put before every Redis key and channel name, so deployments (or tests) can share a Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,

    /// How long a batch's cached progress lives after its last change, in seconds.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 30, value_parser = value_parser!(u64).range(1..=86_400))]
    pub cache_ttl_secs: u64,

    /// The most items a batch holds: it starts with up to 10,000 and takes more with `POST
    /// /api/batches/{id}/items` while it is not finished.
    #[arg(long, env = "MAX_ITEMS_PER_BATCH", default_value_t = 1_000_000, value_parser = value_parser!(u32).range(1..=100_000_000))]
    pub max_items_per_batch: u32,

    /// Workers in this process; 0 serves without processing anything.
    #[arg(long, env = "WORKERS", default_value_t = 2, value_parser = RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub workers: usize,

    /// How long the demo processor takes per item, in milliseconds (with ±50 % jitter).
    #[arg(long, env = "ITEM_DELAY_MS", default_value_t = 400, value_parser = value_parser!(u64).range(0..=3_600_000))]
    pub item_delay_ms: u64,

    /// The share of attempts the demo processor fails, from 0 to 1.
    #[arg(long, env = "DEMO_FAILURE_RATE", default_value_t = 0.1, value_parser = parse_rate)]
    pub demo_failure_rate: f64,

    /// Attempts per item before it fails for good.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 3, value_parser = value_parser!(u32).range(1..=1_000))]
    pub max_attempts: u32,

    /// The wait before the first retry of an item, in milliseconds; it doubles each time.
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 200, value_parser = value_parser!(u64).range(0..=3_600_000))]
    pub retry_base_ms: u64,

    /// How long an idle worker waits before looking for work again, in milliseconds.
    #[arg(long, env = "WORKER_POLL_MS", default_value_t = 500, value_parser = value_parser!(u64).range(1..=3_600_000))]
    pub worker_poll_ms: u64,

    /// Seconds after which an item still `processing` is taken to have lost its worker (a
    /// crashed process) and is claimed again.
    #[arg(long, env = "PROCESSING_LEASE_SECS", default_value_t = 300, value_parser = value_parser!(u64).range(1..=604_800))]
    pub processing_lease_secs: u64,

    /// Times an item whose worker was lost (its lease lapsed) is claimed again; once more and
    /// it fails for good, so that an item that kills its worker cannot loop forever.
    #[arg(long, env = "MAX_RECLAIMS", default_value_t = 3, value_parser = value_parser!(u32).range(0..=1_000))]
    pub max_reclaims: u32,

    /// The most items a process's workers claim at once (they claim ahead only as far as
    /// their pace needs).
    #[arg(long, env = "CLAIM_CHUNK", default_value_t = 500, value_parser = value_parser!(u32).range(1..=10_000))]
    pub claim_chunk: u32,

    /// The least time between two events to a batch's watchers, in milliseconds: on a busy
    /// batch what changes meanwhile goes out joined in one event, so watchers get at most
    /// about 1000 / this events a second. A quiet batch's change goes out at once.
    #[arg(long, env = "EVENT_INTERVAL_MS", default_value_t = 20, value_parser = value_parser!(u64).range(0..=1_000))]
    pub event_interval_ms: u64,

    /// Seconds a stopping process (SIGTERM, Ctrl-C) gives its workers: an item not finished by
    /// then goes back to the queue for another worker, rather than waiting for its lease.
    #[arg(long, env = "SHUTDOWN_SECS", default_value_t = 10, value_parser = value_parser!(u64).range(1..=3_600))]
    pub shutdown_secs: u64,

    /// Seconds between keep-alive pings on an idle stream.
    #[arg(long, env = "STREAM_KEEPALIVE_SECS", default_value_t = 15, value_parser = value_parser!(u64).range(1..=3_600))]
    pub stream_keepalive_secs: u64,

    /// Seconds after which a stream ends with `event: timeout` (the page reconnects).
    #[arg(long, env = "STREAM_MAX_SECS", default_value_t = 1800, value_parser = value_parser!(u64).range(1..=604_800))]
    pub stream_max_secs: u64,

    /// Seconds a connection's writes may stall (its reader takes nothing: a closed laptop, a
    /// stuck proxy) before the kernel drops it (`TCP_USER_TIMEOUT`), which frees its stream.
    /// Longer than a mobile handover or a burst of retransmissions; short beside a stream's
    /// keep-alive slot, so a reader that stalls cannot keep its place for long.
    #[arg(long, env = "WRITE_STALL_SECS", default_value_t = 30, value_parser = value_parser!(u64).range(1..=3_600))]
    pub write_stall_secs: u64,

    /// How long a connection may take to send a request's head, in seconds, and how long an
    /// idle kept-alive connection waits for the next one: one that sends nothing, or a byte at
    /// a time, would otherwise hold its socket and task for ever.
    #[arg(long, env = "HEADER_TIMEOUT_SECS", default_value_t = 30, value_parser = value_parser!(u64).range(1..=3_600))]
    pub header_timeout_secs: u64,

    /// Also serve HTTP/2 without TLS, with prior knowledge (h2c), as a proxy in front can speak
    /// it to its upstream: many streams then share one connection. An HTTP/2 connection that
    /// sends no answer for `HEADER_TIMEOUT_SECS` is shut down. Off by default: no browser
    /// speaks it.
    #[arg(long, env = "H2C", default_value_t = false)]
    pub h2c: bool,

    /// How long a browser stays signed in, in seconds (the session in Redis and its cookie).
    #[arg(long, env = "SESSION_TTL_SECS", default_value_t = 7 * 24 * 3600, value_parser = value_parser!(u64).range(60..=31_536_000))]
    pub session_ttl_secs: u64,

    /// Open streams a user may hold at once, across all servers; the next one gets 429. Each
    /// open page holds two (its batch's and the user's own, for the toasts): 40 is 20 pages.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 40, value_parser = value_parser!(u32).range(1..=1_000_000))]
    pub max_streams_per_user: u32,

    /// Write requests a user's token (or session) may make per minute; more get 429.
    #[arg(long, env = "WRITES_PER_MINUTE", default_value_t = 120, value_parser = value_parser!(u32).range(1..))]
    pub writes_per_minute: u32,

    /// Write requests (status reports) a worker's token may make per minute.
    #[arg(long, env = "WORKER_WRITES_PER_MINUTE", default_value_t = 60_000, value_parser = value_parser!(u32).range(1..))]
    pub worker_writes_per_minute: u32,

    /// Sign-in attempts per minute from one client address, and with one token.
    #[arg(long, env = "SIGN_INS_PER_MINUTE", default_value_t = 30, value_parser = value_parser!(u32).range(1..))]
    pub sign_ins_per_minute: u32,

    /// The origin people open, e.g. `https://watch.example.com`, when a proxy stands in
    /// front: the same-origin rule compares scheme and host with it, and an `https` one makes
    /// the session cookie `Secure` and `__Host-bw_session`.
    #[arg(long, env = "PUBLIC_URL", value_parser = crate::access::site::parse_public_url)]
    pub public_url: Option<String>,

    /// Proxies whose `X-Forwarded-For/-Host/-Proto` are believed: IP addresses, comma-separated.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// When no user exists yet: create `demo` and print a link that signs the browser in
    /// (`./dev.sh run` sets it).
    #[arg(long, env = "DEMO_SIGN_IN", default_value_t = false)]
    pub demo_sign_in: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a rate between 0 and 1")),
    }
}

impl Config {
    /// The settings from the environment alone, as if no flag were given.
    pub fn from_env() -> Self {
        Cli::parse_from(["batchwatch"]).config
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    pub fn event_interval(&self) -> Duration {
        Duration::from_millis(self.event_interval_ms)
    }

    pub fn shutdown(&self) -> Duration {
        Duration::from_secs(self.shutdown_secs)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

/// Streams' timing.
#[derive(Debug, Clone, Copy)]
pub struct StreamTimes {
    pub keepalive: Duration,
    pub max_age: Duration,
}

impl From<&Config> for StreamTimes {
    fn from(c: &Config) -> Self {
        Self {
            keepalive: Duration::from_secs(c.stream_keepalive_secs),
            max_age: Duration::from_secs(c.stream_max_secs),
        }
    }
}

impl From<&Config> for crate::access::site::SiteSettings {
    fn from(c: &Config) -> Self {
        Self { public_url: c.public_url.clone(), trusted_proxies: c.trusted_proxies.clone() }
    }
}
