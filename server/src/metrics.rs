//! `GET /metrics`: the process's figures in Prometheus's text format.
//!
//! Recorded with the `metrics` facade and rendered by `metrics-exporter-prometheus`, the pair
//! axum's own example uses: code that records a figure names it and nothing more, and the
//! exporter keeps histograms in the explicit buckets set here. `prometheus-client` would have
//! every metric registered and passed around by hand for no gain at this size. The exporter's
//! own HTTP listener is off: axum serves the text beside the API.
//!
//! The README's "Operating" section says what each figure means and how to alert on it.

use std::{
    sync::{LazyLock, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use batchwatch_core::{BatchProgress, Millis, now};
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const STREAMS_OPEN: &str = "batchwatch_streams_open";
pub const STREAMS_PARKED: &str = "batchwatch_streams_parked";
pub const EVENTS_SENT: &str = "batchwatch_events_sent_total";
pub const ITEMS_LEFT_OUT: &str = "batchwatch_events_items_left_out_total";
pub const EVENT_DELAY: &str = "batchwatch_event_delay_seconds";
pub const SNAPSHOT_READS: &str = "batchwatch_snapshot_reads_total";
pub const SNAPSHOT_BYTES: &str = "batchwatch_snapshot_bytes";
pub const CACHE_READS: &str = "batchwatch_cache_reads_total";
pub const REDIS_SUBSCRIBED: &str = "batchwatch_redis_subscribed";
pub const REDIS_SUBSCRIPTIONS: &str = "batchwatch_redis_subscriptions_total";
pub const REDIS_LOST: &str = "batchwatch_redis_subscription_losses_total";
pub const CHANGES: &str = "batchwatch_changes_committed_total";
pub const ITEMS_FINISHED: &str = "batchwatch_items_finished_total";
pub const HTTP_DURATION: &str = "batchwatch_http_request_duration_seconds";

/// Seconds: from a millisecond on loopback to the 10 s a stuck pipeline shows as.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bytes: a few items to a 10,000-item batch.
const SIZE_BUCKETS: &[f64] = &[1e3, 4e3, 16e3, 64e3, 256e3, 1e6, 4e6, 16e6];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder, once: tests build several servers in one process, and
/// the figures are the process's.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(EVENT_DELAY.into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(SNAPSHOT_BYTES.into()), SIZE_BUCKETS))
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!(STREAMS_OPEN, "Event streams open now.");
    describe_gauge!(
        STREAMS_PARKED,
        "Event streams caught up now, their events written by their batch's writers rather than by their own tasks."
    );
    describe_counter!(EVENTS_SENT, "Events handed to streams, by event type.");
    describe_counter!(
        ITEMS_LEFT_OUT,
        "Events offered to a batch's watchers without their items (changes faster than events list them)."
    );
    describe_histogram!(
        EVENT_DELAY,
        metrics::Unit::Seconds,
        "From a change's commit to its event reaching this process's watchers."
    );
    describe_counter!(SNAPSHOT_READS, "Snapshots read from the database (cache misses and catch-ups).");
    describe_histogram!(SNAPSHOT_BYTES, metrics::Unit::Bytes, "Size of each snapshot written to streams.");
    describe_counter!(CACHE_READS, "Progress reads from the cache, by result (hit or miss).");
    describe_gauge!(REDIS_SUBSCRIBED, "1 while the Redis subscription stands.");
    describe_counter!(REDIS_SUBSCRIPTIONS, "Times the Redis subscription was established.");
    describe_counter!(REDIS_LOST, "Times the Redis subscription was lost or could not be made.");
    describe_counter!(CHANGES, "Changes committed to batches by this process.");
    describe_counter!(ITEMS_FINISHED, "Items that reached a final status here, by status.");
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request durations by route template (streams excluded)."
    );
}

/// Drains the histograms now and then, so that a process nobody scrapes does not grow.
pub async fn upkeep() {
    let handle = install();
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

pub async fn render() -> Response {
    let text = install().render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
}

/// Times every request by its route template (never the raw path: ids would make a series
/// each). Layered where the tracing is, so streams are left out: a stream lasts as long as
/// its watcher stays, which says nothing about speed.
pub async fn time_requests(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route.unwrap_or_else(|| "unmatched".into())),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::histogram!(HTTP_DURATION, &labels).record(started.elapsed());
    response
}

/// What a stream wrote, for [`EVENTS_SENT`].
#[derive(Debug, Clone, Copy)]
pub enum Sent {
    Snapshot,
    Progress,
    Complete,
    Ping,
    Timeout,
    SignedOut,
    Reconnect,
    Error,
}

impl Sent {
    const ALL: [Sent; 8] = [
        Sent::Snapshot,
        Sent::Progress,
        Sent::Complete,
        Sent::Ping,
        Sent::Timeout,
        Sent::SignedOut,
        Sent::Reconnect,
        Sent::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Sent::Snapshot => "snapshot",
            Sent::Progress => "progress",
            Sent::Complete => "complete",
            Sent::Ping => "ping",
            Sent::Timeout => "timeout",
            Sent::SignedOut => "signed_out",
            Sent::Reconnect => "reconnect",
            Sent::Error => "error",
        }
    }

    /// Counts one.
    pub fn count(self) {
        self.add(1);
    }

    /// Counts `n`. The handles are made once: a delivery costs an atomic add, not a lookup.
    pub fn add(self, n: u64) {
        static COUNTERS: LazyLock<Vec<Counter>> = LazyLock::new(|| {
            install();
            Sent::ALL.iter().map(|s| counter!(EVENTS_SENT, "event" => s.name())).collect()
        });
        COUNTERS[self as usize].increment(n);
    }
}

pub fn redis_subscribed() {
    counter!(REDIS_SUBSCRIPTIONS).increment(1);
    gauge!(REDIS_SUBSCRIBED).set(1.0);
}

pub fn redis_lost() {
    gauge!(REDIS_SUBSCRIBED).set(0.0);
    counter!(REDIS_LOST).increment(1);
}

pub fn cache_read(hit: bool) {
    counter!(CACHE_READS, "result" => if hit { "hit" } else { "miss" }).increment(1);
}

pub fn snapshot_read() {
    counter!(SNAPSHOT_READS).increment(1);
}

/// A committed change, and the items it brought to a final status.
pub fn committed(event: &BatchProgress) {
    counter!(CHANGES).increment(1);
    for item in event.items.iter().filter(|item| item.status.is_terminal()) {
        counter!(ITEMS_FINISHED, "status" => item.status.as_str()).increment(1);
    }
}

/// An event offered to a batch's watchers without its items ([`batchwatch_core::LeftOut`]).
pub fn items_left_out() {
    counter!(ITEMS_LEFT_OUT).increment(1);
}

/// Records how long ago (by the database's clock of the committing process) an event arriving
/// here was committed.
pub fn event_delay(committed_at: Millis) {
    static DELAYS: LazyLock<metrics::Histogram> = LazyLock::new(|| {
        install();
        metrics::histogram!(EVENT_DELAY)
    });
    DELAYS.record((now() - committed_at).max(0) as f64 / 1_000.0);
}

/// Records the size of a snapshot written to streams.
pub fn snapshot_written(bytes: usize) {
    static SIZES: LazyLock<metrics::Histogram> = LazyLock::new(|| {
        install();
        metrics::histogram!(SNAPSHOT_BYTES)
    });
    SIZES.record(bytes as f64);
}

/// Streams that parked (`n` = 1) or left the parked ones (-1), for [`STREAMS_PARKED`]. The
/// handle is made once: a stream parks after each of its own writes.
pub fn parked(n: f64) {
    static PARKED: LazyLock<Gauge> = LazyLock::new(|| {
        install();
        gauge!(STREAMS_PARKED)
    });
    PARKED.increment(n);
}

/// One open stream in [`STREAMS_OPEN`], for as long as this lives.
#[derive(Debug)]
pub struct OpenStream(Gauge);

impl OpenStream {
    pub fn open() -> Self {
        let gauge = gauge!(STREAMS_OPEN);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
