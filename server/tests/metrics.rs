//! `GET /metrics`: Prometheus text that a Prometheus parser reads, whose figures move with
//! what the server does. A test binary of its own: the figures are the process's.

mod common;

use common::server::{LiveServer, Options, read_to_end};
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue, prometheus::parse_prometheus};

struct Figures(MetricsExposition<PrometheusType, PrometheusValue>);

impl Figures {
    async fn scrape(server: &LiveServer) -> Self {
        let reply = reqwest::get(format!("{}/metrics", server.url)).await.unwrap();
        assert_eq!(reply.status(), 200);
        let content_type = reply.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        let text = reply.text().await.unwrap();
        Self(parse_prometheus(&text).unwrap_or_else(|e| panic!("not Prometheus text ({e:?}):\n{text}")))
    }

    /// Whether the metric is there with its help text.
    fn described(&self, metric: &str) -> bool {
        self.0.families.get(metric).is_some_and(|f| !f.help.is_empty())
    }

    /// The sum of a counter's or gauge's series whose labels include `labels`; 0 when absent.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(metric, labels)
            .map(|value| match value {
                PrometheusValue::Counter(c) => c.value.as_f64(),
                PrometheusValue::Gauge(v) | PrometheusValue::Unknown(v) => v.as_f64(),
                other => panic!("{metric} is not a single value: {other:?}"),
            })
            .sum()
    }

    /// How many observations a histogram holds, over the series whose labels include `labels`.
    fn observations(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(metric, labels)
            .map(|value| match value {
                PrometheusValue::Histogram(h) => {
                    assert!(h.buckets.len() > 5, "{metric} has its explicit buckets: {:?}", h.buckets);
                    h.count.expect("a _count line")
                }
                other => panic!("{metric} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// Every value the label takes in the metric's series.
    fn label_values(&self, metric: &str, label: &str) -> Vec<String> {
        let Some(family) = self.0.families.get(metric) else { return Vec::new() };
        family
            .iter_samples()
            .filter_map(|s| s.get_labelset().ok()?.get_label_value(label).map(str::to_owned))
            .collect()
    }

    fn matching<'a>(
        &'a self,
        metric: &str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a PrometheusValue> {
        self.0.families.get(metric).into_iter().flat_map(move |family| {
            family
                .iter_samples()
                .filter(move |s| {
                    let set = s.get_labelset().unwrap();
                    labels.iter().all(|(k, v)| set.get_label_value(k) == Some(*v))
                })
                .map(|s| &s.value)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_move_with_the_work() {
    let server = LiveServer::start(Options { workers: 2, ..Options::default() }).await;
    server.subscribed().await;
    let before = Figures::scrape(&server).await;
    assert_eq!(before.value("batchwatch_redis_subscribed", &[]), 1.0);
    assert!(before.value("batchwatch_redis_subscriptions_total", &[]) >= 1.0);

    let items = 3;
    let batch = server.create(items).await;
    let stream = server.stream(&batch, None).await;
    let during = Figures::scrape(&server).await;
    assert_eq!(during.value("batchwatch_streams_open", &[]), 1.0);
    let seen = read_to_end(stream).await;
    assert_eq!(seen.last().map(|(e, _)| e.as_str()), Some("complete"));
    server.finished(&batch).await;
    let _ = server.get(&batch).await;

    let after = Figures::scrape(&server).await;
    let moved =
        |metric: &str, labels: &[(&str, &str)]| after.value(metric, labels) - before.value(metric, labels);
    assert_eq!(after.value("batchwatch_streams_open", &[]), 0.0, "the stream ended");
    for metric in
        ["batchwatch_streams_open", "batchwatch_events_sent_total", "batchwatch_event_delay_seconds"]
    {
        assert!(after.described(metric), "{metric} says what it is");
    }
    // A claim and a finish per item, some of them committed together.
    let changes = moved("batchwatch_changes_committed_total", &[]);
    assert!((1.0..=2.0 * items as f64).contains(&changes), "{changes} change events");
    assert_eq!(moved("batchwatch_items_finished_total", &[("status", "done")]), items as f64);
    // One at the start; the catch-up may add one when it looks between a commit and its event.
    assert!(moved("batchwatch_events_sent_total", &[("event", "snapshot")]) >= 1.0);
    assert_eq!(moved("batchwatch_events_sent_total", &[("event", "complete")]), 1.0);
    assert!(moved("batchwatch_events_sent_total", &[("event", "progress")]) >= 1.0);
    assert!(moved("batchwatch_cache_reads_total", &[("result", "hit")]) >= 1.0);
    let delays = after.observations("batchwatch_event_delay_seconds", &[]);
    assert!(delays >= 1, "the events' delays were observed: {delays}");
    assert!(after.observations("batchwatch_snapshot_bytes", &[]) >= 1);
    // Durations by route template, never by the path with its ids; streams are left out.
    let created = [("method", "POST"), ("route", "/api/batches"), ("status", "201")];
    assert_eq!(after.observations("batchwatch_http_request_duration_seconds", &created), 1);
    let read = [("method", "GET"), ("route", "/api/batches/{id}"), ("status", "200")];
    assert!(after.observations("batchwatch_http_request_duration_seconds", &read) >= 1);
    let routes = after.label_values("batchwatch_http_request_duration_seconds", "route");
    assert!(!routes.iter().any(|r| r.ends_with("/stream")), "streams are not timed: {routes:?}");
    assert!(!routes.iter().any(|r| r.contains(batch["batch_id"].as_str().unwrap())), "{routes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_stream_parks_and_its_batch_s_events_still_reach_it() {
    use futures::StreamExt;

    let server = LiveServer::start(Options { workers: 0, ..Options::default() }).await;
    server.subscribed().await;
    let batch = server.create(2).await;
    let mut stream = server.stream(&batch, None).await;
    assert_eq!(stream.next().await.unwrap().event, "snapshot");
    let parked = || async { Figures::scrape(&server).await.value("batchwatch_streams_parked", &[]) };
    common::eventually("the stream to park", || async { (parked().await == 1.0).then_some(()) }).await;
    assert!(Figures::scrape(&server).await.described("batchwatch_streams_parked"));

    server.report(&batch, 0, "processing").await;
    let event = stream.next().await.unwrap();
    assert_eq!(event.event, "progress");
    let progress: batchwatch_core::BatchProgress = serde_json::from_str(&event.data).unwrap();
    assert_eq!(progress.summary.counts.processing, 1);
    common::eventually("the stream to park again", || async { (parked().await == 1.0).then_some(()) }).await;

    server.report(&batch, 0, "done").await;
    server.report(&batch, 1, "processing").await;
    server.report(&batch, 1, "failed").await;
    let seen = read_to_end(stream).await;
    assert_eq!(seen.last().map(|(e, _)| e.as_str()), Some("complete"), "the last event wakes it: {seen:?}");
    common::eventually("no stream parked", || async { (parked().await == 0.0).then_some(()) }).await;
}
