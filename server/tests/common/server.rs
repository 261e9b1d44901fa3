//! A real server on a loopback port with real Redis: shared (with a private key prefix) or a
//! private `redis-server` that a test can stop and start again.

use std::{
    net::TcpListener as StdListener,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use batchwatch_core::{BatchProgress, Role};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::Value;
use server::{
    batches::Access,
    config::Config,
    state::AppState,
    worker::{self, Demo},
};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::watch};

/// Creates a user on this server's database; returns their token.
pub async fn user(state: &AppState, name: &str) -> String {
    super::create_user(state, name, Role::User).await
}

/// An HTTP client that sends `token` with every request.
pub fn client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

pub fn shared_redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` of this test's own, killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut redis = Self { port: free_port(), child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (./dev.sh test installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        super::eventually("redis-server to start", || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct LiveServer {
    pub url: String,
    pub state: AppState,
    /// Sends the token of this server's user with every request.
    pub http: reqwest::Client,
    pub token: String,
    pub prefix: String,
    pub database_url: String,
    pub redis_url: String,
    stop: watch::Sender<bool>,
    postgres_database: Option<String>,
    _dir: TempDir,
}

pub struct Options {
    pub redis_url: String,
    pub workers: usize,
    pub item_delay: Duration,
    pub failure_rate: f64,
    /// A fresh PostgreSQL database of this test's own instead of a SQLite file.
    pub postgres: bool,
    /// High by default: fan-out tests open many streams as one user.
    pub max_streams_per_user: u32,
    /// Streams ping (and check their sign-in again) this often.
    pub keepalive_secs: u64,
    /// Streams end after this long.
    pub max_age_secs: u64,
    /// Connections whose writes stall this long are dropped.
    pub write_stall_secs: u64,
    /// Writes a user may make per minute.
    pub writes_per_minute: u32,
    pub max_items_per_batch: u32,
    /// An item `processing` this long without word from its worker is claimed again.
    pub lease_secs: u64,
    /// A busy batch's changes gather this long before they commit together.
    pub event_interval_ms: u64,
    /// Another server's database, Redis prefix and user: a second server of its deployment.
    pub shared: Option<Shared>,
    /// Peers whose `X-Forwarded-*` headers count.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A request's head, and an idle connection's next one, must come within this long.
    pub header_timeout_secs: u64,
    /// HTTP/2 with prior knowledge too.
    pub h2c: bool,
}

/// What two servers of one deployment share.
#[derive(Clone)]
pub struct Shared {
    pub database_url: String,
    pub prefix: String,
    pub token: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            redis_url: shared_redis_url(),
            workers: 0,
            item_delay: Duration::from_millis(5),
            failure_rate: 0.0,
            postgres: false,
            max_streams_per_user: 1_000,
            keepalive_secs: 15,
            max_age_secs: 1_800,
            write_stall_secs: 30,
            writes_per_minute: 120,
            max_items_per_batch: 1_000_000,
            lease_secs: 60,
            event_interval_ms: 20,
            shared: None,
            trusted_proxies: Vec::new(),
            header_timeout_secs: 30,
            h2c: false,
        }
    }
}

/// The local PostgreSQL server (trust auth), without a database name.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs one SQL command on the local PostgreSQL server (creating and dropping test databases).
pub fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([&format!("{}/postgres", postgres_server_url()), "-qc", sql])
        .output()
        .expect("psql must be installed (./dev.sh test installs PostgreSQL)");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
}

impl LiveServer {
    pub async fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let prefix = match &options.shared {
            Some(shared) => shared.prefix.clone(),
            None => format!("test-{}:", uuid::Uuid::new_v4()),
        };
        let postgres_database = (options.postgres && options.shared.is_none())
            .then(|| format!("bw_test_{}", uuid::Uuid::new_v4().simple()));
        let database_url = match (&options.shared, &postgres_database) {
            (Some(shared), _) => shared.database_url.clone(),
            (None, Some(name)) => {
                psql(&format!("CREATE DATABASE {name}"));
                format!("{}/{name}", postgres_server_url())
            }
            (None, None) => format!("sqlite://{}/live.db", dir.path().display()),
        };
        let config = Config {
            database_url: database_url.clone(),
            redis_url: options.redis_url.clone(),
            redis_prefix: prefix.clone(),
            workers: options.workers,
            max_attempts: 2,
            retry_base_ms: 1,
            worker_poll_ms: 20,
            processing_lease_secs: options.lease_secs,
            shutdown_secs: 1,
            max_streams_per_user: options.max_streams_per_user,
            stream_keepalive_secs: options.keepalive_secs,
            stream_max_secs: options.max_age_secs,
            write_stall_secs: options.write_stall_secs,
            writes_per_minute: options.writes_per_minute,
            max_items_per_batch: options.max_items_per_batch,
            event_interval_ms: options.event_interval_ms,
            trusted_proxies: options.trusted_proxies.clone(),
            header_timeout_secs: options.header_timeout_secs,
            h2c: options.h2c,
            ..Config::from_env()
        };
        let settings = (&config).into();
        let state = server::state(config, super::leptos_options()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = watch::channel(false);
        let mut server_stopped = stopped.clone();
        tokio::spawn(server::start(listener, state.clone(), async move {
            let _ = server_stopped.changed().await;
        }));
        let demo = Arc::new(Demo { delay: options.item_delay, failure_rate: options.failure_rate });
        tokio::spawn(worker::run(state.batches.clone(), demo, settings, stopped));
        let token = match &options.shared {
            Some(shared) => shared.token.clone(),
            None => user(&state, "live").await,
        };
        Self {
            url,
            state,
            http: client(&token),
            token,
            prefix,
            database_url,
            redis_url: options.redis_url,
            stop,
            postgres_database,
            _dir: dir,
        }
    }

    /// What a second server of this deployment needs (`Options::shared`).
    pub fn shared(&self) -> Shared {
        Shared {
            database_url: self.database_url.clone(),
            prefix: self.prefix.clone(),
            token: self.token.clone(),
        }
    }

    /// Stops this server and its workers, as SIGTERM does.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// A client of another user of this server, who must find none of this user's batches.
    pub async fn stranger(&self) -> reqwest::Client {
        client(&user(&self.state, "stranger").await)
    }

    /// The id of this server's user.
    pub async fn user_id(&self) -> String {
        self.state.accounts.authenticate(&self.token).await.unwrap().unwrap().viewer.user_id
    }

    pub async fn create(&self, items: usize) -> Value {
        self.create_named((0..items).map(|i| format!("{i}.jpg")).collect()).await
    }

    pub async fn create_named(&self, names: Vec<String>) -> Value {
        self.create_as(&self.http, names).await
    }

    /// Creates a batch as `client`'s user.
    pub async fn create_as(&self, client: &reqwest::Client, names: Vec<String>) -> Value {
        let reply = client
            .post(format!("{}/api/batches", self.url))
            .json(&serde_json::json!({ "name": "live", "items": names }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        reply.json().await.unwrap()
    }

    /// Reports an item's new status the way in-process workers do.
    pub async fn report(&self, batch: &Value, item: usize, status: &str) {
        let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
        let item = batch["items"][item]["id"].as_str().unwrap().parse().unwrap();
        let report = batchwatch_core::StatusReport { status: status.parse().unwrap(), error: None };
        self.state.batches.report(Access::Any, id, item, report).await.unwrap();
    }

    /// The batch's summary and every item, page by page, as a client reads them.
    pub async fn get(&self, batch: &Value) -> BatchProgress {
        let url = format!("{}/api/batches/{}", self.url, batch["batch_id"].as_str().unwrap());
        let summary = self.http.get(&url).send().await.unwrap().json().await.unwrap();
        let mut items = Vec::new();
        let mut after = None;
        loop {
            let page = match after {
                Some(after) => format!("{url}/items?limit=500&after={after}"),
                None => format!("{url}/items?limit=500"),
            };
            let page: batchwatch_core::ItemsPage =
                self.http.get(page).send().await.unwrap().json().await.unwrap();
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return BatchProgress::new(summary, items),
            }
        }
    }

    /// Every item of the batch as the export lists it (with `attempts`), in order.
    pub async fn export(&self, batch: &Value) -> Vec<Value> {
        let url =
            format!("{}/api/batches/{}/export?format=ndjson", self.url, batch["batch_id"].as_str().unwrap());
        let body = self.http.get(url).send().await.unwrap().text().await.unwrap();
        body.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// Waits until the batch is finished; returns its last state.
    pub async fn finished(&self, batch: &Value) -> BatchProgress {
        super::eventually("the batch to finish", || async {
            Some(self.get(batch).await).filter(|p| p.summary.status.is_terminal())
        })
        .await
    }

    /// Waits until the hub's Redis subscription stands.
    pub async fn subscribed(&self) {
        let hub = self.state.batches.hub();
        super::eventually("the hub's subscription", || async { (hub.subscriptions() > 0).then_some(()) })
            .await;
    }

    /// Opens the batch's stream, with `Last-Event-ID` when given.
    pub async fn stream(
        &self,
        batch: &Value,
        last_event_id: Option<u64>,
    ) -> impl Stream<Item = Event> + Unpin + use<> {
        let url = format!("{}/api/batches/{}/stream", self.url, batch["batch_id"].as_str().unwrap());
        let mut request = self.http.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Box::pin(response.bytes_stream().eventsource().map(|e| e.expect("a well-formed event")))
    }

    /// Opens the stream of `client`'s user (`GET /api/stream`).
    pub async fn user_stream(&self, client: &reqwest::Client) -> impl Stream<Item = Event> + Unpin + use<> {
        let response = client.get(format!("{}/api/stream", self.url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Box::pin(response.bytes_stream().eventsource().map(|e| e.expect("a well-formed event")))
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(name) = &self.postgres_database {
            psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
        super::clean_redis_prefix(&self.redis_url, &self.prefix);
    }
}

/// Reads a stream to its end: every event, and the JSON of each `snapshot`/`progress`.
pub async fn read_to_end(mut events: impl Stream<Item = Event> + Unpin) -> Vec<(String, Option<Value>)> {
    let mut seen = Vec::new();
    while let Some(event) =
        tokio::time::timeout(Duration::from_secs(30), events.next()).await.expect("stream stalled")
    {
        let data = matches!(event.event.as_str(), "snapshot" | "progress")
            .then(|| serde_json::from_str(&event.data).unwrap());
        seen.push((event.event, data));
    }
    seen
}

/// Checks one watcher's whole stream: `seq` strictly increasing, ending on `final_seq` in a
/// terminal state, then `complete`.
pub fn assert_ends_on(seen: &[(String, Option<Value>)], final_seq: u64) {
    let seqs: Vec<u64> = seen.iter().filter_map(|(_, d)| d.as_ref()?["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq not strictly increasing: {seqs:?}");
    assert_eq!(seqs.last(), Some(&final_seq), "did not end on the final state");
    let last_state = seen.iter().rev().find_map(|(_, d)| d.as_ref()).unwrap();
    assert!(["completed", "partial", "failed"].contains(&last_state["status"].as_str().unwrap()));
    assert_eq!(seen.last().map(|(e, _)| e.as_str()), Some("complete"));
}

/// Checks that one watcher's stream missed nothing: one snapshot, then events that each take
/// up where the one before left off (an event joining several changes starts at its `since`).
/// Returns the `seq` it ended on.
pub fn assert_unbroken(seen: &[(String, Option<Value>)]) -> u64 {
    let states: Vec<(&str, &Value)> =
        seen.iter().filter_map(|(event, data)| Some((event.as_str(), data.as_ref()?))).collect();
    assert_eq!(states.first().map(|(e, _)| *e), Some("snapshot"));
    assert_eq!(states.iter().filter(|(e, _)| *e == "snapshot").count(), 1, "no snapshot after the first");
    let mut have = states[0].1["seq"].as_u64().unwrap();
    for (_, event) in &states[1..] {
        let seq = event["seq"].as_u64().unwrap();
        let after = event.get("since").and_then(Value::as_u64).unwrap_or(seq - 1);
        if !(after <= have && have < seq) {
            let spans: Vec<String> = states
                .iter()
                .map(|(e, d)| {
                    format!("{e}:{}-{}", d.get("since").and_then(Value::as_u64).unwrap_or(0), d["seq"])
                })
                .collect();
            panic!("at {have}, an event from {after} to {seq}: {}", spans.join(" "));
        }
        have = seq;
    }
    have
}
