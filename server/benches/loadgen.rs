//! `loadgen`: the SSE fan-out benchmark. Starts a release `batchwatch` (no workers), opens N
//! streams on loopback, publishes M change events at R/s into `batch:{id}` the way workers
//! do, and prints publish→receive latency p50/p99, lost and duplicate events, deliveries/s,
//! and the server's RSS and CPU. A figure printer, not a test: nothing here asserts a target.
//!
//! `cargo bench -p server --bench loadgen -- --help`

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use batchwatch_core::{BatchId, BatchProgress, BatchStatus, BatchSummary, Counts, ItemStatus, keys};
use clap::Parser;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

#[derive(Debug, Parser)]
struct Args {
    /// Which shape to run: `fanout` (1 batch, many watchers), `wide` (1 batch, 10,000
    /// watchers: memory per active stream, CPU per delivery), `batches` (many batches, one
    /// watcher each), `saturate` (publish as fast as the server delivers), `items` (a
    /// 10,000-item batch through the real worker path), `idle` (10,000 streams that only get
    /// keep-alives: memory per stream, CPU at idle), `bulk` (a 100,000-item batch driven by
    /// bulk reports, on SQLite and on PostgreSQL), `paced` (the same at 10,000 changes/s, the
    /// issue's target rate), `workers` (a 100,000-item batch through the
    /// built-in workers, on SQLite and on PostgreSQL), `export` (a 1,000,000-item batch
    /// exported as CSV: the server's RSS while it streams), `controls` (a cancel and a retry
    /// of 100,000 items, on SQLite and on PostgreSQL), or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// The server binary [default: `batchwatch` beside this bench's build, from
    /// `cargo leptos build --release`].
    #[arg(long)]
    bin: Option<std::path::PathBuf>,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The server's runtime threads (`SERVER_THREADS`): 0 is one per core (the server's
    /// default), 1 is tokio's current-thread runtime.
    #[arg(long, default_value_t = 0)]
    server_threads: usize,
    /// Where `bulk`, `paced`, `workers` and `controls` run: `sqlite`, `postgres` or `both`.
    #[arg(long, default_value = "both")]
    database: String,
    /// Watchers' streams share HTTP/2 connections (200 each, the server's limit per
    /// connection), as a proxy speaking h2c to the server would carry them; the server runs
    /// with `H2C` (`fanout`, `batches`, `saturate`, `items` and `idle`).
    #[arg(long)]
    http2: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let all = args.scenario == "all";
    println!("server threads: {}", args.server_threads);
    if all || args.scenario == "fanout" {
        fanout(&args, 1, 1_000, 500, 50.0).await?;
        fanout(&args, 1, 5_000, 250, 50.0).await?;
    }
    if all || args.scenario == "wide" {
        fanout(&args, 1, 10_000, 200, 20.0).await?;
    }
    if all || args.scenario == "batches" {
        fanout(&args, 1_000, 1, 5_000, 500.0).await?;
    }
    if all || args.scenario == "saturate" {
        fanout(&args, 1, 1_000, 2_000, 200.0).await?;
    }
    if all || args.scenario == "items" {
        items(&args).await?;
    }
    if all || args.scenario == "idle" {
        idle(&args, 10_000, 30).await?;
    }
    if all || args.scenario == "export" {
        println!("{}", export(&args).await?);
    }
    for (scenario, what) in [
        ("bulk", "bulk reports"),
        ("paced", "bulk reports at 10,000 changes/s"),
        ("workers", "built-in workers"),
        ("controls", "cancel and retry"),
    ] {
        if all || args.scenario == scenario {
            for (postgres, name) in [(false, "sqlite"), (true, "postgres")] {
                if args.database != "both" && args.database != name {
                    continue;
                }
                let line = on_database(postgres, |extra| async {
                    match scenario {
                        "bulk" => bulk(&args, &extra, None).await,
                        "paced" => bulk(&args, &extra, Some(10_000.0)).await,
                        "workers" => workers(&args, extra).await,
                        _ => controls(&args, &extra).await,
                    }
                })
                .await?;
                println!("{what} on {}: {line}", if postgres { "PostgreSQL" } else { "SQLite" });
            }
        }
    }
    Ok(())
}

/// A `batchwatch` process of the bench's own.
struct Server {
    child: Child,
    addr: SocketAddr,
    prefix: String,
    /// Sends the bench user's token with every request.
    http: reqwest::Client,
    token: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(args: &Args, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let prefix = format!("bench-{}-{port}:", std::process::id());
        // <target>/release/deps/loadgen-… → <target>/release/batchwatch
        let bin = match &args.bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?
                .parent()
                .and_then(|d| d.parent())
                .context("no target dir")?
                .join("batchwatch"),
        };
        let database_url = extra
            .iter()
            .find(|(k, _)| *k == "DATABASE_URL")
            .map_or_else(|| format!("sqlite://{}/bench.db", dir.path().display()), |(_, v)| v.clone());
        let token = bench_user(&bin, &database_url)?;
        let mut command = Command::new(&bin);
        command
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env("DATABASE_URL", &database_url)
            // One user watches everything here: lift the per-user limits.
            .env("MAX_STREAMS_PER_USER", "1000000")
            .env("WRITES_PER_MINUTE", "1000000")
            .env("LEPTOS_SITE_ADDR", addr.to_string())
            .env("REDIS_URL", &args.redis_url)
            .env("REDIS_PREFIX", &prefix)
            .env("SERVER_THREADS", args.server_threads.to_string())
            .env("H2C", args.http2.to_string())
            .env("WORKERS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().with_context(|| {
            format!("starting {} (build it with ./dev.sh run or cargo leptos build --release)", bin.display())
        })?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
        let http = reqwest::Client::builder().default_headers(headers).build()?;
        let server = Self { child, addr, prefix, http, token, _dir: dir };
        for _ in 0..200 {
            if server.http.get(format!("http://{addr}/api/batches")).send().await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not start")
    }

    async fn create(&self, items: usize) -> anyhow::Result<BatchProgress> {
        let names: Vec<String> = (0..items).map(|i| format!("photo-{i:05}.jpg")).collect();
        let body = serde_json::json!({ "name": "bench", "items": names });
        let url = format!("http://{}/api/batches", self.addr);
        Ok(self.http.post(url).json(&body).send().await?.error_for_status()?.json().await?)
    }

    /// Adds `names` at the end of `batch` (`POST /api/batches/{id}/items`); returns what changed.
    async fn append(&self, batch: BatchId, names: Vec<String>) -> anyhow::Result<BatchProgress> {
        let url = format!("http://{}/api/batches/{batch}/items", self.addr);
        let body = serde_json::json!({ "items": names });
        Ok(self.http.post(url).json(&body).send().await?.error_for_status()?.json().await?)
    }

    /// The batch's summary, as `GET /api/batches/{id}` answers it.
    async fn summary(&self, batch: BatchId) -> anyhow::Result<BatchSummary> {
        let url = format!("http://{}/api/batches/{batch}", self.addr);
        Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
    }

    /// (RSS in KiB, CPU seconds used so far)
    fn usage(&self) -> (u64, f64) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (rss, ticks as f64 / 100.0)
    }
}

/// Creates the bench's user with the binary, as an operator would; returns its token.
fn bench_user(bin: &std::path::Path, database_url: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["user", "create", "bench"])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .map(|t| t.trim().to_owned())
        .with_context(|| format!("no token from `batchwatch user create`: {stdout}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a batch's stream as `token`'s user, over HTTP/1.1 as a browser does. The body comes
/// chunked: the watchers read the chunks' size lines as lines that are no event's.
async fn open_stream(addr: SocketAddr, token: &str, id: BatchId) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET /api/batches/{id}/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// Streams on one HTTP/2 connection, as a proxy in front of the server would carry them: the
/// server's limit per connection (hyper's default).
const STREAMS_PER_HTTP2_CONNECTION: usize = 200;

type Http2 = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// Opens batches' streams: each on a connection of its own (HTTP/1), or `--http2`, 200 to an
/// HTTP/2 connection with prior knowledge (h2c), as a proxy opens to its upstream.
struct Opener {
    addr: SocketAddr,
    token: String,
    http2: Option<Vec<(Http2, usize)>>,
}

impl Opener {
    fn new(args: &Args, addr: SocketAddr, token: &str) -> Self {
        Self { addr, token: token.to_owned(), http2: args.http2.then(Vec::new) }
    }

    async fn open(&mut self, id: BatchId) -> anyhow::Result<Lines> {
        let Some(connections) = &mut self.http2 else {
            return Ok(Lines::Http1(BufReader::new(open_stream(self.addr, &self.token, id).await?).lines()));
        };
        if connections.last().is_none_or(|(_, streams)| *streams == STREAMS_PER_HTTP2_CONNECTION) {
            let tcp = TcpStream::connect(self.addr).await?;
            let (sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await?;
            tokio::spawn(connection);
            connections.push((sender, 0));
        }
        let (sender, streams) = connections.last_mut().expect("one connection at least");
        *streams += 1;
        let request = hyper::Request::get(format!("http://{}/api/batches/{id}/stream", self.addr))
            .header("authorization", format!("Bearer {}", self.token))
            .body(http_body_util::Empty::new())?;
        let response = sender.send_request(request).await?;
        anyhow::ensure!(response.status() == 200, "the stream answered {}", response.status());
        Ok(Lines::Http2 { body: response.into_body(), buffer: Vec::new() })
    }

    /// How the streams went, for the figures' line.
    fn over(&self) -> String {
        self.http2.as_ref().map_or(String::new(), |c| format!(" over {} HTTP/2 connections", c.len()))
    }
}

/// A stream's lines, over either protocol.
enum Lines {
    Http1(tokio::io::Lines<BufReader<TcpStream>>),
    Http2 { body: hyper::body::Incoming, buffer: Vec<u8> },
}

impl Lines {
    async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        use http_body_util::BodyExt;
        let (body, buffer) = match self {
            Lines::Http1(lines) => return Ok(lines.next_line().await?),
            Lines::Http2 { body, buffer } => (body, buffer),
        };
        loop {
            if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&buffer[..end]).into_owned();
                buffer.drain(..=end);
                return Ok(Some(line));
            }
            match body.frame().await {
                Some(frame) => buffer.extend_from_slice(&frame?.into_data().unwrap_or_default()),
                None => return Ok(None),
            }
        }
    }
}

/// What every watcher saw.
#[derive(Default)]
struct Seen {
    latencies_us: Mutex<Vec<u32>>,
    received: AtomicU64,
    duplicates: AtomicU64,
    bytes: AtomicU64,
    /// The last `seq` of each watcher whose stream ended with `complete`.
    ended_at: Mutex<Vec<u64>>,
    /// Watchers that have their first snapshot.
    ready: AtomicU64,
}

/// When each (batch, seq) was published, in µs since `start`.
struct Sent {
    start: Instant,
    at: Vec<Vec<AtomicU64>>,
}

async fn watcher(mut lines: Lines, batch: usize, sent: Arc<Sent>, seen: Arc<Seen>) -> anyhow::Result<()> {
    let (mut seq, mut last, mut latencies, mut bytes) = (0u64, 0u64, Vec::new(), 0u64);
    while let Some(line) = lines.next_line().await? {
        bytes += line.len() as u64 + 1;
        if let Some(id) = line.strip_prefix("id: ") {
            seq = id.parse().unwrap_or(0);
        } else if line == "event: progress" {
            let now = sent.start.elapsed().as_micros() as u64;
            let at = sent.at[batch].get(seq as usize).map_or(0, |a| a.load(Ordering::Acquire));
            if seq <= last {
                seen.duplicates.fetch_add(1, Ordering::Relaxed);
            } else {
                latencies.push(now.saturating_sub(at) as u32);
                seen.received.fetch_add(1, Ordering::Relaxed);
                last = seq;
            }
        } else if line == "event: snapshot" {
            if last == 0 {
                seen.ready.fetch_add(1, Ordering::Relaxed);
            }
            last = last.max(seq);
        } else if line == "event: complete" {
            seen.ended_at.lock().unwrap().push(last);
            break;
        }
    }
    seen.bytes.fetch_add(bytes, Ordering::Relaxed);
    seen.latencies_us.lock().unwrap().extend(latencies);
    Ok(())
}

impl Seen {
    /// Watchers whose stream ended with `complete` after `seq`, the batch's last.
    fn ended_on(&self, seq: u64) -> usize {
        self.ended_at.lock().unwrap().iter().filter(|&&last| last == seq).count()
    }
}

/// The change event a worker would publish: `seq`, and the batch terminal on the last one.
fn event(base: &BatchProgress, seq: u64, last: bool) -> Vec<u8> {
    let mut summary = base.summary.clone();
    summary.seq = seq;
    let total = summary.counts.total;
    let counts = if last {
        Counts { completed: total, total, ..Counts::default() }
    } else {
        Counts { processing: 1, queued: total - 1, total, ..Counts::default() }
    };
    summary.set_counts(counts);
    let mut item = base.items[0].clone();
    item.status = if last { ItemStatus::Done } else { ItemStatus::Processing };
    debug_assert!(!last || summary.status == BatchStatus::Completed);
    serde_json::to_vec(&BatchProgress::new(summary, vec![item])).unwrap()
}

/// `batches` batches with `watchers` watchers each; `updates` events in all at `rate`/s
/// (0: as fast as they go), spread round-robin over the batches.
async fn fanout(
    args: &Args,
    batches: usize,
    watchers: usize,
    updates: usize,
    rate: f64,
) -> anyhow::Result<()> {
    let server = Server::start(args, &[]).await?;
    let mut created = Vec::with_capacity(batches);
    for _ in 0..batches {
        created.push(server.create(1).await?);
    }
    let per_batch = updates.div_ceil(batches);
    let final_seq = 1 + per_batch as u64;
    let sent = Arc::new(Sent {
        start: Instant::now(),
        at: (0..batches).map(|_| (0..=final_seq + 1).map(|_| AtomicU64::new(0)).collect()).collect(),
    });
    let seen = Arc::new(Seen::default());
    let mut tasks = Vec::new();
    let (rss_start, _) = server.usage();
    let mut opener = Opener::new(args, server.addr, &server.token);
    for (b, batch) in created.iter().enumerate() {
        for _ in 0..watchers {
            let lines = opener.open(batch.summary.batch_id).await?;
            tasks.push(tokio::spawn(watcher(lines, b, sent.clone(), seen.clone())));
        }
    }
    // Every stream has its snapshot before the first event: a late one would miss events.
    while seen.ready.load(Ordering::Relaxed) < (batches * watchers) as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss_before, cpu_before) = server.usage();

    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut tick = (rate > 0.0).then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / rate)));
    let started = Instant::now();
    for round in 0..per_batch {
        for (b, batch) in created.iter().enumerate() {
            if let Some(tick) = tick.as_mut() {
                tick.tick().await;
            }
            let seq = 2 + round as u64;
            let payload = event(batch, seq, seq == final_seq);
            sent.at[b][seq as usize].store(sent.start.elapsed().as_micros() as u64, Ordering::Release);
            let _: () = redis::cmd("PUBLISH")
                .arg(keys::channel(&server.prefix, batch.summary.batch_id))
                .arg(payload)
                .query_async(&mut conn)
                .await?;
        }
    }
    let published = Instant::now();
    // The streams have all been carrying events, and are all still open.
    let (rss_live, _) = server.usage();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss_after, cpu_after) = server.usage();
    let mut lat = std::mem::take(&mut *seen.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&v| f64::from(v) / 1_000.0)
    };
    let expected = (batches * watchers * per_batch) as u64;
    let received = seen.received.load(Ordering::Relaxed);
    let cpu = cpu_after - cpu_before;
    let over = opener.over();
    println!(
        "{batches} batch(es) x {watchers} watcher(s){over}, {} updates at {}: p50 {:.2} ms, p99 {:.2} ms, \
         lost {} ({:.1} %), duplicates {}, ended on the final state {}/{}, {:.0} deliveries/s, \
         publish {:.0}/s, server RSS {:.1} MB (before publishing {:.1} MB; {:.1} KB per stream while live), \
         server CPU {:.2} s = {:.2} µs/delivery",
        per_batch * batches,
        if rate > 0.0 { format!("{rate}/s") } else { "full speed".into() },
        pct(0.50),
        pct(0.99),
        expected - received,
        (expected - received) as f64 * 100.0 / expected as f64,
        seen.duplicates.load(Ordering::Relaxed),
        seen.ended_on(final_seq),
        batches * watchers,
        received as f64 / elapsed,
        (per_batch * batches) as f64 / (published - started).as_secs_f64(),
        rss_after as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss_live.saturating_sub(rss_start) as f64 / (batches * watchers) as f64,
        cpu,
        cpu * 1e6 / received.max(1) as f64,
    );
    Ok(())
}

/// A 10,000-item batch through the real path (workers, database, cache, publish) at about
/// 200 items/s, with 100 watchers.
async fn items(args: &Args) -> anyhow::Result<()> {
    let server = Server::start(
        args,
        &[
            ("WORKERS", "4".into()),
            ("ITEM_DELAY_MS", "20".into()),
            ("DEMO_FAILURE_RATE", "0".into()),
            ("WORKER_POLL_MS", "5".into()),
        ],
    )
    .await?;
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info = |text: String, key: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))?.trim().parse().ok()).unwrap_or(0)
    };
    let commands_before =
        info(redis::cmd("INFO").arg("stats").query_async(&mut conn).await?, "total_commands_processed");
    let (_, cpu_before) = server.usage();
    let started = Instant::now();
    let batch = server.create(10_000).await?;
    let sent = Arc::new(Sent { start: Instant::now(), at: vec![Vec::new()] });
    let seen = Arc::new(Seen::default());
    let mut tasks = Vec::with_capacity(100);
    let mut opener = Opener::new(args, server.addr, &server.token);
    for _ in 0..100 {
        let lines = opener.open(batch.summary.batch_id).await?;
        tasks.push(tokio::spawn(watcher(lines, 0, sent.clone(), seen.clone())));
    }
    let mut redis_memory = 0;
    for t in tasks {
        while !t.is_finished() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let key = keys::progress_key(&server.prefix, batch.summary.batch_id);
            let used: Option<u64> =
                redis::cmd("MEMORY").arg("USAGE").arg(&key).query_async(&mut conn).await.unwrap_or(None);
            redis_memory = redis_memory.max(used.unwrap_or(0));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss, cpu_after) = server.usage();
    let commands =
        info(redis::cmd("INFO").arg("stats").query_async(&mut conn).await?, "total_commands_processed")
            - commands_before;
    let received = seen.received.load(Ordering::Relaxed);
    // Group commit joins changes into events: the batch's last `seq` is the server's to say.
    let final_seq = server.summary(batch.summary.batch_id).await?.seq;
    println!(
        "10,000 items x 100 watchers through workers: {:.0} items/s, {} events per watcher, {:.0} bytes per event, \
         ended on the final state {}/100, server CPU {:.1} s ({:.0} % of one core), RSS {:.1} MB, \
         Redis: cached progress {:.2} MB, {:.0} commands/s",
        10_000.0 / elapsed,
        received / 100,
        seen.bytes.load(Ordering::Relaxed) as f64 / received.max(1) as f64,
        seen.ended_on(final_seq),
        cpu_after - cpu_before,
        (cpu_after - cpu_before) * 100.0 / elapsed,
        rss as f64 / 1024.0,
        redis_memory as f64 / 1e6,
        commands as f64 / elapsed,
    );
    Ok(())
}

/// `streams` streams on one batch that then only receive keep-alives (every 15 s): the
/// server's RSS per open stream, and its CPU over `secs` of idling.
async fn idle(args: &Args, streams: usize, secs: u64) -> anyhow::Result<()> {
    let server = Server::start(args, &[]).await?;
    let batch = server.create(1).await?;
    let id = batch.summary.batch_id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, _) = server.usage();
    let ready = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(streams);
    let mut opener = Opener::new(args, server.addr, &server.token);
    for _ in 0..streams {
        let mut lines = opener.open(id).await?;
        let ready = ready.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "event: snapshot" {
                    ready.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    while ready.load(Ordering::Relaxed) < streams as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_open, cpu_before) = server.usage();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (rss_idle, cpu_after) = server.usage();
    let over = opener.over();
    println!(
        "{streams} idle streams{over}: server RSS {:.1} MB before, {:.1} MB open, {:.1} MB after {secs} s idle = \
         {:.1} KB per stream; server CPU at idle {:.2} s in {secs} s = {:.2} % of one core",
        rss_before as f64 / 1024.0,
        rss_open as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        (rss_idle.saturating_sub(rss_before)) as f64 / streams as f64,
        cpu_after - cpu_before,
        (cpu_after - cpu_before) * 100.0 / secs as f64,
    );
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

/// A 100,000-item batch (created with 10,000, then 9 appends) driven through the HTTP API by 4
/// reporters sending 1,000 reports a call (`processing`, then `done`), with 100 watchers that
/// opened on the first 10,000: changes/s, events/s per watcher, and the single-report latency
/// on a 10-item batch against the 100,000-item one.
///
/// `rate` paces the reporters to that many changes a second in all (each sends its next call
/// on a fixed tick); without it they send as fast as the server answers, which saturates
/// the shared cores, so freshness then measures the queue of an overloaded machine.
async fn bulk(args: &Args, extra: &[(&str, String)], rate: Option<f64>) -> anyhow::Result<String> {
    let server = Server::start(args, extra).await?;
    let batch = server.create(10_000).await?;
    let id = batch.summary.batch_id;
    let mut items: Vec<String> = batch.items.iter().map(|i| i.id.to_string()).collect();

    let watchers = Watchers::open(&server, id, 100).await?;
    let url = |path: &str| format!("http://{}/api/batches/{id}{path}", server.addr);
    for chunk in 0..9 {
        let names: Vec<String> = (0..10_000).map(|i| format!("more-{chunk}-{i:05}.jpg")).collect();
        let added = server.append(id, names).await?;
        items.extend(added.items.iter().map(|i| i.id.to_string()));
    }
    // Ten more the reporters leave alone: the batch stays open for the latency probe below.
    let probes = server.append(id, (0..10).map(|i| format!("probe-{i}.jpg")).collect()).await?;
    // Freshness is that of the reports: the appends' events (when the pace joins them, their
    // oldest change is an append's start) are let through first, and not counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watchers.restart_freshness();
    let (_, cpu_before) = server.usage();
    let (progress_before, snapshots_before) = watchers.counts();
    let received_before = watchers.received();
    let started = Instant::now();
    let reporters = items.chunks(items.len() / 4).enumerate().map(|(n, share)| {
        let (http, url, share) = (server.http.clone(), url("/items/status"), share.to_vec());
        // Each of the 4 sends 1,000 changes a call, a quarter of a period after the one before
        // it: the calls arrive evenly spread, not four at once.
        let mut tick = rate.map(|rate| {
            let period = Duration::from_secs_f64(4.0 * 1_000.0 / rate);
            let first = tokio::time::Instant::now() + period * n as u32 / 4;
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        tokio::spawn(async move {
            for calls in share.chunks(1_000) {
                for status in ["processing", "done"] {
                    if let Some(tick) = &mut tick {
                        tick.tick().await;
                    }
                    let reports: Vec<_> = calls
                        .iter()
                        .map(|item| serde_json::json!({ "item": item, "status": status }))
                        .collect();
                    http.post(&url).json(&reports).send().await?.error_for_status()?;
                }
            }
            anyhow::Ok(())
        })
    });
    for reporter in futures::future::join_all(reporters).await {
        reporter??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss, cpu_after) = server.usage();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (progress_after, snapshots_after) = watchers.counts();
    let (events, resyncs) = (progress_after - progress_before, snapshots_after - snapshots_before);
    let received = watchers.received() - received_before;
    let (p50, p99) = watchers.freshness();
    drop(watchers);

    // One report's latency: on a 10-item batch, and on the 100,000-item one (its probes).
    let small = server.create(10).await?;
    let latency = |batch: BatchId, item: String| {
        let (http, url) =
            (server.http.clone(), format!("http://{}/api/batches/{batch}/items/{item}/status", server.addr));
        async move {
            let started = Instant::now();
            http.post(url)
                .json(&serde_json::json!({ "status": "processing" }))
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(started.elapsed().as_secs_f64() * 1_000.0)
        }
    };
    let mut on_small = Vec::new();
    for item in &small.items {
        on_small.push(latency(small.summary.batch_id, item.id.to_string()).await?);
    }
    let mut on_large = Vec::new();
    for item in &probes.items {
        on_large.push(latency(id, item.id.to_string()).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let changes = 2 * items.len();
    Ok(format!(
        "{changes} changes in {elapsed:.1} s = {:.0} changes/s ({} items, 4 reporters, 1,000 reports a call{}); \
         100 watchers got {:.1} events/s and {:.0} KB/s each ({resyncs} resync snapshots), freshness p50 \
         {p50} ms, p99 {p99} ms; server CPU {:.1} s, RSS {:.1} MB; \
         one report p50 {:.2} ms on a 10-item batch, {:.2} ms on the {}-item one",
        changes as f64 / elapsed,
        items.len(),
        rate.map_or(String::new(), |rate| format!(", paced to {rate:.0} changes/s")),
        events as f64 / 100.0 / elapsed,
        received as f64 / 100.0 / 1024.0 / elapsed,
        cpu_after - cpu_before,
        rss as f64 / 1024.0,
        median(&mut on_small),
        median(&mut on_large),
        items.len() + 10,
    ))
}

/// A cancel of a 100,000-item batch's pending items, and a retry of another's failed ones:
/// how long the control's answer takes, and until its last page of items is written.
async fn controls(args: &Args, extra: &[(&str, String)]) -> anyhow::Result<String> {
    let server = Server::start(args, extra).await?;
    let big = || async {
        let batch = server.create(10_000).await?;
        let id = batch.summary.batch_id;
        let url = format!("http://{}/api/batches/{id}", server.addr);
        let mut items: Vec<String> = batch.items.iter().map(|i| i.id.to_string()).collect();
        for chunk in 1..10 {
            let names: Vec<String> = (0..10_000).map(|i| format!("more-{chunk}-{i:05}.jpg")).collect();
            let added = server.append(id, names).await?;
            items.extend(added.items.iter().map(|i| i.id.to_string()));
        }
        anyhow::Ok((url, items))
    };
    // The control's answer, then until the batch's counts say every item was changed.
    let control = |url: String, what: &'static str, done: fn(&Counts) -> bool| {
        let http = server.http.clone();
        async move {
            let started = Instant::now();
            http.post(format!("{url}/{what}")).send().await?.error_for_status()?;
            let answered = started.elapsed().as_secs_f64() * 1_000.0;
            loop {
                let summary: BatchSummary = http.get(&url).send().await?.error_for_status()?.json().await?;
                if done(&summary.counts) {
                    return anyhow::Ok((answered, started.elapsed().as_secs_f64() * 1_000.0));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let (url, _) = big().await?;
    let (cancel_answer, cancel_all) = control(url, "cancel", |c| c.queued == 0).await?;
    let (url, items) = big().await?;
    for status in ["processing", "failed"] {
        for calls in items.chunks(1_000) {
            let reports: Vec<_> =
                calls.iter().map(|item| serde_json::json!({ "item": item, "status": status })).collect();
            server
                .http
                .post(format!("{url}/items/status"))
                .json(&reports)
                .send()
                .await?
                .error_for_status()?;
        }
    }
    let (retry_answer, retry_all) = control(url, "retry", |c| c.failed == 0).await?;
    Ok(format!(
        "cancel of 100,000 pending items: answered in {cancel_answer:.0} ms, every item cancelled \
         {cancel_all:.0} ms after; retry of 100,000 failed items: answered in {retry_answer:.0} ms, \
         every item queued {retry_all:.0} ms after"
    ))
}

/// Runs `scenario` on a fresh SQLite file, or on a fresh PostgreSQL database dropped after.
async fn on_database<F: Future<Output = anyhow::Result<String>>>(
    postgres: bool,
    scenario: impl FnOnce(Vec<(&'static str, String)>) -> F,
) -> anyhow::Result<String> {
    let database = postgres.then(|| format!("bw_bench_{}", std::process::id()));
    let admin = "postgres://postgres@127.0.0.1:5432/postgres";
    let psql = |sql: String| Command::new("psql").args([admin, "-qc", &sql]).status();
    let mut extra = Vec::new();
    if let Some(name) = &database {
        psql(format!("CREATE DATABASE {name}"))?;
        extra.push(("DATABASE_URL", format!("postgres://postgres@127.0.0.1:5432/{name}")));
    }
    let result = scenario(extra).await;
    if let Some(name) = &database {
        psql(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    }
    result
}

/// Watchers of one batch: every one counts its events; every tenth also reads them and
/// measures their freshness: how long ago the oldest change in each was committed (an
/// append's pending items are not counted).
struct Watchers {
    progress: Arc<AtomicU64>,
    snapshots: Arc<AtomicU64>,
    /// Bytes of the streams' bodies, all watchers together.
    bytes: Arc<AtomicU64>,
    staleness_ms: Arc<Mutex<Vec<u32>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    async fn open(server: &Server, id: BatchId, n: usize) -> anyhow::Result<Self> {
        let mut watchers = Self {
            progress: Arc::default(),
            snapshots: Arc::default(),
            bytes: Arc::default(),
            staleness_ms: Arc::default(),
            readers: Vec::new(),
        };
        for i in 0..n {
            let stream = open_stream(server.addr, &server.token, id).await?;
            let (progress, snapshots, bytes, staleness) = (
                watchers.progress.clone(),
                watchers.snapshots.clone(),
                watchers.bytes.clone(),
                watchers.staleness_ms.clone(),
            );
            watchers.readers.push(tokio::spawn(async move {
                // One buffer for every line, and no UTF-8 check: an event of 500 items is
                // ~80 KB, and 90 of the 100 only count them, so the tool's own work stays
                // small beside the server's on the shared cores.
                let (mut reader, mut line) = (BufReader::new(stream), Vec::new());
                let mut in_progress = false;
                while reader.read_until(b'\n', &mut line).await.is_ok_and(|n| n > 0) {
                    bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
                    match line.trim_ascii_end() {
                        b"event: progress" => {
                            progress.fetch_add(1, Ordering::Relaxed);
                            in_progress = true;
                        }
                        b"event: snapshot" => drop(snapshots.fetch_add(1, Ordering::Relaxed)),
                        line if in_progress && i % 10 == 0 => {
                            if let Some(data) = line.strip_prefix(b"data: ") {
                                let now = batchwatch_core::now();
                                let event: BatchProgress = serde_json::from_slice(data).unwrap();
                                // Reports and workers' changes only: the items an append adds
                                // arrive pending, stamped when its transaction began.
                                let changed = event.items.iter().filter(|i| i.status != ItemStatus::Pending);
                                // An event that leaves its items out says when the oldest
                                // change it joins was made.
                                let left_out = event.left_out.map(|left| left.oldest);
                                if let Some(oldest) = changed.map(|i| i.updated_at).min().or(left_out) {
                                    staleness.lock().unwrap().push((now - oldest).max(0) as u32);
                                }
                                in_progress = false;
                            }
                        }
                        _ => {}
                    }
                    line.clear();
                }
            }));
        }
        while watchers.snapshots.load(Ordering::Relaxed) < n as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(watchers)
    }

    /// (progress events, snapshots) so far.
    fn counts(&self) -> (u64, u64) {
        (self.progress.load(Ordering::Relaxed), self.snapshots.load(Ordering::Relaxed))
    }

    /// Bytes received so far, all watchers together.
    fn received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Forgets the freshness measured so far.
    fn restart_freshness(&self) {
        self.staleness_ms.lock().unwrap().clear();
    }

    /// Freshness p50 and p99, in ms.
    fn freshness(&self) -> (u32, u32) {
        let mut all = self.staleness_ms.lock().unwrap().clone();
        all.sort_unstable();
        let at =
            |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1))).copied();
        (at(0.5).unwrap_or(0), at(0.99).unwrap_or(0))
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// The built-in workers (8, no processing delay, no failures) through a 100,000-item batch
/// created with 10,000 and appended to, watched by 100.
async fn workers(args: &Args, mut extra: Vec<(&'static str, String)>) -> anyhow::Result<String> {
    extra.extend([("WORKERS", "8".into()), ("ITEM_DELAY_MS", "0".into()), ("DEMO_FAILURE_RATE", "0".into())]);
    // Paused until watched: the batch is made while no worker runs, then they are let go.
    let server = Server::start(args, &extra).await?;
    let names = |from: usize| (from..from + 10_000).map(|i| format!("photo-{i:06}.jpg")).collect::<Vec<_>>();
    let batch = server.create(10_000).await?;
    let id = batch.summary.batch_id;
    let watchers = Watchers::open(&server, id, 100).await?;
    let (_, cpu_before) = server.usage();
    let (before, snapshots_before) = watchers.counts();
    let started = Instant::now();
    let url = format!("http://{}/api/batches/{id}", server.addr);
    for chunk in 1..10 {
        server.append(id, names(chunk * 10_000)).await?;
    }
    // Each append of 10,000 holds the batch for its transaction: the changes waiting behind
    // it are stale by that much. Freshness is given with and without those moments.
    let (appending_p50, appending_p99) = watchers.freshness();
    watchers.restart_freshness();
    loop {
        let summary: serde_json::Value = server.http.get(&url).send().await?.json().await?;
        if summary["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss, cpu_after) = server.usage();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (after, snapshots_after) = watchers.counts();
    let (p50, p99) = watchers.freshness();
    Ok(format!(
        "100,000 items in {elapsed:.1} s = {:.0} items/s, {:.0} changes/s; 100 watchers got {:.1} events/s \
         each ({} resync snapshots), freshness p50 {p50} ms, p99 {p99} ms after the appends (p50 \
         {appending_p50} ms, p99 {appending_p99} ms while 10,000-item appends ran); server CPU {:.1} s, RSS {:.1} MB",
        100_000.0 / elapsed,
        200_000.0 / elapsed,
        (after - before) as f64 / 100.0 / elapsed,
        snapshots_after - snapshots_before,
        cpu_after - cpu_before,
        rss as f64 / 1024.0,
    ))
}

/// A 1,000,000-item batch (created with 10,000, then 99 appends), exported as CSV while the
/// server's RSS is sampled: the export streams, so the peak stays near the idle figure.
async fn export(args: &Args) -> anyhow::Result<String> {
    let server = Server::start(args, &[]).await?;
    let batch = server.create(10_000).await?;
    let url = format!("http://{}/api/batches/{}", server.addr, batch.summary.batch_id);
    for chunk in 1..100 {
        let names: Vec<String> = (0..10_000).map(|i| format!("photo-{chunk:02}-{i:05}.jpg")).collect();
        server.append(batch.summary.batch_id, names).await?;
    }
    let (rss_before, _) = server.usage();
    let started = Instant::now();
    let mut response =
        server.http.get(format!("{url}/export?format=csv")).send().await?.error_for_status()?;
    let (mut bytes, mut lines, mut peak) = (0usize, 0usize, rss_before);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        peak = peak.max(server.usage().0);
    }
    Ok(format!(
        "export of a 1,000,000-item batch: {lines} CSV lines, {:.1} MB in {:.1} s; server RSS {:.1} MB before, \
         {:.1} MB at most while streaming",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
    ))
}
