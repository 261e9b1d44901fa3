//! What a batch's owner does to it: pause, resume, cancel, retry every failed item, retry one;
//! on SQLite and on PostgreSQL. Each is a change its watchers see; a state that does not allow
//! it is a 409; another user's batch is not found.

mod common;

use std::time::Duration;

use batchwatch_core::{Control, now};
use common::server::{LiveServer, Options};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;

async fn control(server: &LiveServer, batch: &Value, what: &str) -> (u16, Value) {
    let url = format!("{}/api/batches/{}/{what}", server.url, batch["batch_id"].as_str().unwrap());
    let reply = server.http.post(url).send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

async fn next(
    events: &mut (impl futures::Stream<Item = eventsource_stream::Event> + Unpin),
) -> eventsource_stream::Event {
    tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap()
}

/// Reports items `range` of `batch` processing, then failed, through the bulk route.
async fn fail(server: &LiveServer, batch: &Value, range: std::ops::Range<usize>) {
    let url = format!("{}/api/batches/{}/items/status", server.url, batch["batch_id"].as_str().unwrap());
    let ids: Vec<&str> = range.map(|i| batch["items"][i]["id"].as_str().unwrap()).collect();
    for status in ["processing", "failed"] {
        for chunk in ids.chunks(1000) {
            let reports: Vec<Value> = chunk
                .iter()
                .map(|id| serde_json::json!({ "item": id, "status": status, "error": "no" }))
                .collect();
            let reply = server.http.post(&url).json(&reports).send().await.unwrap();
            assert_eq!(reply.status(), 200);
        }
    }
}

/// How many of the batch's items are in `status`, as a client reads them page by page.
async fn with_status(server: &LiveServer, batch: &Value, status: &str) -> usize {
    server.get(batch).await.items.iter().filter(|item| item.status.as_str() == status).count()
}

async fn claim(server: &LiveServer, batch: &Value, max: u32) -> usize {
    let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
    server.state.batches.claim(id, max).await.unwrap().len()
}

async fn pause_and_resume(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(5).await;
    assert_eq!(control(&server, &batch, "resume").await.0, 409, "resume a running batch");
    server.report(&batch, 0, "processing").await;

    let (status, paused) = control(&server, &batch, "pause").await;
    assert_eq!((status, paused["status"].as_str(), paused["seq"].as_u64()), (200, Some("paused"), Some(3)));
    assert_eq!(claim(&server, &batch, 10).await, 0, "workers take nothing from a paused batch");
    server.report(&batch, 0, "done").await;
    let summary = server.get(&batch).await.summary;
    assert_eq!((summary.status.as_str(), summary.counts.completed), ("paused", 1), "in progress finishes");
    assert_eq!(control(&server, &batch, "pause").await.0, 409);

    let (status, resumed) = control(&server, &batch, "resume").await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("processing")));
    assert_eq!(claim(&server, &batch, 10).await, 4, "resumed: the rest is taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_on_sqlite() {
    pause_and_resume(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_on_postgresql() {
    pause_and_resume(true).await;
}

async fn cancel(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(6).await;
    let mut events = server.stream(&batch, None).await;
    assert_eq!(events.next().await.unwrap().event, "snapshot");
    server.report(&batch, 0, "processing").await;
    server.report(&batch, 0, "done").await;
    server.report(&batch, 1, "processing").await;

    let (status, cancelled) = control(&server, &batch, "cancel").await;
    assert_eq!(
        (status, cancelled["status"].as_str(), cancelled["percent"].as_u64()),
        (200, Some("cancelled"), Some(100))
    );
    let counts = &cancelled["counts"];
    assert_eq!(
        (counts["cancelled"].as_u64(), counts["queued"].as_u64(), counts["processing"].as_u64()),
        (Some(5), Some(0), Some(0))
    );
    let stored = server.get(&batch).await;
    let statuses: Vec<&str> = stored.items.iter().map(|item| item.status.as_str()).collect();
    assert_eq!(statuses, ["done", "cancelled", "cancelled", "cancelled", "cancelled", "cancelled"]);

    // Its watchers see it as one change that lists the items it cancelled, then the end.
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap() {
        seen.push((event.event.clone(), serde_json::from_str::<Value>(&event.data).ok()));
        if event.event == "complete" {
            break;
        }
    }
    let (_, last) = seen.iter().rev().find(|(kind, _)| kind == "progress").unwrap();
    let last = last.as_ref().unwrap();
    // (Joined with the changes before it when they came close together.)
    let listed =
        last["items"].as_array().unwrap().iter().filter(|item| item["status"] == "cancelled").count();
    assert_eq!((last["status"].as_str(), last["seq"].as_u64(), listed), (Some("cancelled"), Some(5), 5));

    // The item that was in progress cannot be reported; nothing more is allowed.
    let url = format!(
        "{}/api/batches/{}/items/{}/status",
        server.url,
        batch["batch_id"].as_str().unwrap(),
        batch["items"][1]["id"].as_str().unwrap()
    );
    let late = server.http.post(url).json(&serde_json::json!({ "status": "done" })).send().await.unwrap();
    assert_eq!(late.status(), 409);
    for what in ["cancel", "pause", "retry"] {
        assert_eq!(control(&server, &batch, what).await.0, 409, "{what} a cancelled batch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_sqlite() {
    cancel(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_postgresql() {
    cancel(true).await;
}

/// A cancel answers with its first page of items cancelled; the rest follow a page per change,
/// each an event no bigger than a page, and its watchers end on the whole of it.
async fn cancel_a_page_at_a_time(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(1234).await;
    server.report(&batch, 0, "processing").await;
    server.report(&batch, 0, "done").await;
    server.report(&batch, 1, "processing").await;
    let events = server.stream(&batch, None).await;

    let (status, cancelled) = control(&server, &batch, "cancel").await;
    let counts = &cancelled["counts"];
    assert_eq!(
        (status, cancelled["status"].as_str(), counts["cancelled"].as_u64(), counts["queued"].as_u64()),
        (200, Some("cancelled"), Some(500), Some(733)),
        "the one in progress and the first 499 pending"
    );

    let seen = common::server::read_to_end(events).await;
    let final_seq = common::server::assert_unbroken(&seen);
    let states: Vec<&Value> = seen.iter().filter_map(|(_, data)| data.as_ref()).collect();
    assert!(states.iter().all(|state| state["items"].as_array().map_or(0, Vec::len) <= 500));
    let last = states.last().unwrap();
    assert_eq!(
        (
            last["status"].as_str(),
            last["seq"].as_u64(),
            &last["counts"]["cancelled"],
            &last["counts"]["queued"]
        ),
        (Some("cancelled"), Some(final_seq), &Value::from(1233), &Value::from(0))
    );
    assert_eq!(seen.last().map(|(kind, _)| kind.as_str()), Some("complete"), "over once all are cancelled");
    let (done, cancelled) =
        (with_status(&server, &batch, "done").await, with_status(&server, &batch, "cancelled").await);
    assert_eq!((done, cancelled, server.get(&batch).await.summary.counts.cancelled), (1, 1233, 1233));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_page_at_a_time_on_sqlite() {
    cancel_a_page_at_a_time(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_page_at_a_time_on_postgresql() {
    cancel_a_page_at_a_time(true).await;
}

/// A cancel its process did not finish (stopped after the first page) is finished by the
/// next worker's round; meanwhile nothing is claimed from the batch and nothing in it goes
/// back to the queue.
async fn a_cancel_cut_short_is_finished(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(700).await;
    server.report(&batch, 0, "processing").await;
    server.report(&batch, 0, "failed").await;
    let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
    let batches = &server.state.batches;
    batches.store().control(id, Control::Cancel, now()).await.unwrap().commit().await.unwrap();
    assert_eq!(batches.store().control_unfinished().await.unwrap(), Some(id));
    assert_eq!(claim(&server, &batch, 10).await, 0, "nothing is taken from a cancelled batch");
    let item = batch["items"][0]["id"].as_str().unwrap();
    let retry = format!("{}/api/batches/{id}/items/{item}/retry", server.url);
    assert_eq!(
        server.http.post(retry).send().await.unwrap().status(),
        409,
        "a cancelled batch is not retried"
    );

    batches.reclaim(Duration::from_secs(60), 3).await.unwrap();
    let summary = common::eventually("the cancel to finish", || async {
        Some(server.get(&batch).await.summary).filter(|summary| summary.counts.queued == 0)
    })
    .await;
    assert_eq!(
        (summary.status.as_str(), summary.counts.cancelled, summary.counts.failed),
        ("cancelled", 699, 1)
    );
    assert_eq!(batches.store().control_unfinished().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_cut_short_is_finished_on_sqlite() {
    a_cancel_cut_short_is_finished(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_cut_short_is_finished_on_postgresql() {
    a_cancel_cut_short_is_finished(true).await;
}

/// A finished batch opens again when its failed items are retried, and a page that follows
/// its stream past the end hears of it.
async fn retry_reopens(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(3).await;
    for (i, outcome) in [(0, "done"), (1, "failed"), (2, "failed")] {
        server.report(&batch, i, "processing").await;
        server.report(&batch, i, outcome).await;
    }
    let url =
        format!("{}/api/batches/{}/stream?follow=true", server.url, batch["batch_id"].as_str().unwrap());
    let response = server.http.get(url).send().await.unwrap();
    let mut events = Box::pin(response.bytes_stream().eventsource().map(|e| e.unwrap()));
    assert_eq!(next(&mut events).await.event, "snapshot");
    assert_eq!(next(&mut events).await.event, "complete", "finished: partial");

    let (status, retried) = control(&server, &batch, "retry").await;
    assert_eq!(
        (status, retried["status"].as_str(), retried["counts"]["queued"].as_u64()),
        (200, Some("processing"), Some(2))
    );
    let reopened = next(&mut events).await;
    assert_eq!(reopened.event, "progress", "the stream stayed and hears of the reopening");
    let reopened: Value = serde_json::from_str(&reopened.data).unwrap();
    let queued =
        reopened["items"].as_array().unwrap().iter().filter(|item| item["status"] == "pending").count();
    assert_eq!(
        (reopened["status"].as_str(), queued),
        (Some("processing"), 2),
        "it lists the items it queued"
    );
    assert_eq!(with_status(&server, &batch, "failed").await, 0);
    assert_eq!(control(&server, &batch, "retry").await.0, 409, "nothing failed any more");

    // One item: failed back to pending, and only a failed one.
    server.report(&batch, 1, "processing").await;
    server.report(&batch, 1, "failed").await;
    let retry_one = |item: usize| {
        let url = format!(
            "{}/api/batches/{}/items/{}/retry",
            server.url,
            batch["batch_id"].as_str().unwrap(),
            batch["items"][item]["id"].as_str().unwrap()
        );
        server.http.post(url).send()
    };
    let reply = retry_one(1).await.unwrap();
    assert_eq!(reply.status(), 200);
    let changed: Value = reply.json().await.unwrap();
    assert_eq!(changed["items"][0]["status"], "pending");
    assert_eq!(retry_one(0).await.unwrap().status(), 409, "a done item is not retried");
}

/// A retry of every failed item answers with its first page queued again; the rest follow a
/// page per change. One cut short is finished by a worker's round, and an item that failed
/// again behind it is not queued twice.
async fn retry_a_page_at_a_time(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(1100).await;
    fail(&server, &batch, 0..1050).await;
    let mut events = server.stream(&batch, None).await;
    assert_eq!(next(&mut events).await.event, "snapshot");

    let (status, retried) = control(&server, &batch, "retry").await;
    let counts = &retried["counts"];
    assert_eq!(
        (status, retried["status"].as_str(), counts["queued"].as_u64(), counts["failed"].as_u64()),
        (200, Some("processing"), Some(550), Some(550))
    );
    loop {
        let event: Value = serde_json::from_str(&next(&mut events).await.data).unwrap();
        assert!(event["items"].as_array().unwrap().len() <= 500);
        if event["counts"]["failed"] == 0 {
            assert_eq!(event["counts"]["queued"], 1100);
            break;
        }
    }
    assert_eq!(with_status(&server, &batch, "pending").await, 1100);

    // Cut short after its first page: item 0 fails again meanwhile, behind it.
    fail(&server, &batch, 0..1100).await;
    let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
    let batches = &server.state.batches;
    batches.store().control(id, Control::Retry, now()).await.unwrap().commit().await.unwrap();
    fail(&server, &batch, 0..1).await;
    assert_eq!(batches.store().control_unfinished().await.unwrap(), Some(id));
    batches.reclaim(Duration::from_secs(60), 3).await.unwrap();
    common::eventually("the retry to finish", || async {
        batches.store().control_unfinished().await.unwrap().is_none().then_some(())
    })
    .await;
    let (_, summary) = batches.store().summary(id).await.unwrap().unwrap();
    assert_eq!((summary.counts.failed, summary.counts.queued), (1, 1099));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_a_page_at_a_time_on_sqlite() {
    retry_a_page_at_a_time(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_a_page_at_a_time_on_postgresql() {
    retry_a_page_at_a_time(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reopens_a_finished_batch_on_sqlite() {
    retry_reopens(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reopens_a_finished_batch_on_postgresql() {
    retry_reopens(true).await;
}

#[tokio::test]
async fn controls_reach_only_their_owners_batches_and_known_words() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(2).await;
    let other = server.stranger().await;
    let id = batch["batch_id"].as_str().unwrap();
    for what in ["pause", "cancel", "retry", "resume"] {
        let reply = other.post(format!("{}/api/batches/{id}/{what}", server.url)).send().await.unwrap();
        assert_eq!(reply.status(), 404, "{what} on another's batch");
    }
    let (status, body) = control(&server, &batch, "explode").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let item = batch["items"][0]["id"].as_str().unwrap();
    let reply =
        other.post(format!("{}/api/batches/{id}/items/{item}/retry", server.url)).send().await.unwrap();
    assert_eq!(reply.status(), 404);
    assert_eq!(server.get(&batch).await.summary.seq, 1, "nothing changed");
}
