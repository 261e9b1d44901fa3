//! Many reports in one call (`POST /api/batches/{id}/items/status`), on SQLite and on
//! PostgreSQL: each judged on its own, the accepted ones committed together and announced as
//! one event per 500 items; and the single report's answer, which holds only what changed.

mod common;

use common::server::{LiveServer, Options};
use futures::StreamExt;
use serde_json::{Value, json};

async fn send(server: &LiveServer, batch: &Value, reports: Value) -> (u16, Value) {
    let url = format!("{}/api/batches/{}/items/status", server.url, batch["batch_id"].as_str().unwrap());
    let reply = server.http.post(url).json(&reports).send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

fn item(batch: &Value, i: usize) -> &str {
    batch["items"][i]["id"].as_str().unwrap()
}

async fn judged_each_and_committed_together(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(3).await;
    let mut events = server.stream(&batch, None).await;
    assert_eq!(events.next().await.unwrap().event, "snapshot");

    let (status, answer) = send(
        &server,
        &batch,
        json!([
            { "item": item(&batch, 0), "status": "processing" },
            { "item": item(&batch, 1), "status": "done" },
            { "item": common::UNKNOWN_ID, "status": "processing" },
            { "item": item(&batch, 2), "status": "failed", "error": "a\u{0}b" },
            { "item": item(&batch, 0), "status": "done" },
        ]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let applied: Vec<bool> = results.iter().map(|r| r["applied"].as_bool().unwrap()).collect();
    assert_eq!(applied, [true, false, false, false, true]);
    let refused: Vec<(u64, &str)> = results
        .iter()
        .filter_map(|r| Some((r["error"]["status"].as_u64()?, r["error"]["code"].as_str()?)))
        .collect();
    assert_eq!(refused, [(409, "illegal_transition"), (404, "not_found"), (422, "invalid")]);
    assert_eq!(results[2]["item"], common::UNKNOWN_ID, "results follow the order sent");
    // One change: `seq` 1 → 2, the item once, as it ended.
    assert_eq!(answer["seq"], 2);
    assert_eq!(answer["items"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["items"][0]["status"], "done");
    assert_eq!(
        answer["counts"],
        json!({ "queued": 2, "processing": 0, "completed": 1, "failed": 0, "cancelled": 0, "total": 3 })
    );

    let event = events.next().await.unwrap();
    assert_eq!((event.event.as_str(), event.id.as_str()), ("progress", "2"));
    let event: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(event["items"].as_array().unwrap().len(), 1);
    assert_eq!(server.get(&batch).await.summary.seq, 2);

    // Nothing accepted: nothing written, no event; the summary as it is.
    let (status, answer) =
        send(&server, &batch, json!([{ "item": item(&batch, 0), "status": "done" }])).await;
    assert_eq!(
        (status, answer["seq"].as_u64(), answer["items"].as_array().map(Vec::len)),
        (200, Some(2), Some(0))
    );
    assert_eq!(answer["results"][0]["error"]["status"], 409);
    assert_eq!(server.get(&batch).await.summary.seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_reports_are_judged_each_and_committed_together_on_sqlite() {
    judged_each_and_committed_together(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_reports_are_judged_each_and_committed_together_on_postgresql() {
    judged_each_and_committed_together(true).await;
}

/// Reports of one call with different statuses and errors: each item ends with its own, and
/// the answer lists them in the order sent.
async fn each_keeps_its_own_status_and_error(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(4).await;
    let all: Vec<Value> =
        (0..4).map(|i| json!({ "item": item(&batch, i), "status": "processing" })).collect();
    assert_eq!(send(&server, &batch, Value::Array(all)).await.0, 200);
    let (status, answer) = send(
        &server,
        &batch,
        json!([
            { "item": item(&batch, 0), "status": "failed", "error": "disk full" },
            { "item": item(&batch, 1), "status": "failed", "error": "timeout" },
            { "item": item(&batch, 2), "status": "done" },
            { "item": item(&batch, 3), "status": "failed", "error": "disk full" },
            { "item": item(&batch, 2), "status": "done" },
        ]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let applied: Vec<bool> =
        answer["results"].as_array().unwrap().iter().map(|r| r["applied"].as_bool().unwrap()).collect();
    assert_eq!(applied, [true, true, true, true, false], "{answer}");
    let ended: Vec<(&str, Option<&str>)> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["error"].as_str()))
        .collect();
    assert_eq!(
        ended,
        [
            (item(&batch, 0), Some("disk full")),
            (item(&batch, 1), Some("timeout")),
            (item(&batch, 2), None),
            (item(&batch, 3), Some("disk full")),
        ]
    );
    assert_eq!(answer["counts"]["failed"], 3);
    assert_eq!(answer["counts"]["completed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_report_keeps_its_own_status_and_error_on_sqlite() {
    each_keeps_its_own_status_and_error(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_report_keeps_its_own_status_and_error_on_postgresql() {
    each_keeps_its_own_status_and_error(true).await;
}

async fn a_burst_goes_out_as_events_of_500(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let items = 700;
    let batch = server.create(items).await;
    let mut events = server.stream(&batch, None).await;
    assert_eq!(events.next().await.unwrap().event, "snapshot");
    let reports: Vec<Value> =
        (0..items).map(|i| json!({ "item": item(&batch, i), "status": "processing" })).collect();
    let (status, answer) = send(&server, &batch, Value::Array(reports)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["seq"], 3, "two events: seq 1 → 3");
    assert_eq!(answer["items"].as_array().unwrap().len(), items);
    assert_eq!(answer["counts"]["processing"], items);
    let mut sizes = Vec::new();
    for seq in ["2", "3"] {
        let event = events.next().await.unwrap();
        assert_eq!((event.event.as_str(), event.id.as_str()), ("progress", seq));
        let data: Value = serde_json::from_str(&event.data).unwrap();
        sizes.push(data["items"].as_array().unwrap().len());
    }
    assert_eq!(sizes, [500, 200]);
    // Read back cache-first: the cache took both events' items too.
    let stored = server.get(&batch).await;
    assert_eq!((stored.summary.seq, stored.summary.counts.processing), (3, items as u32));
    assert!(stored.items.iter().all(|i| i.status == batchwatch_core::ItemStatus::Processing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_goes_out_as_events_of_at_most_500_items_on_sqlite() {
    a_burst_goes_out_as_events_of_500(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_goes_out_as_events_of_at_most_500_items_on_postgresql() {
    a_burst_goes_out_as_events_of_500(true).await;
}

#[tokio::test]
async fn a_call_is_refused_whole_when_its_batch_or_its_size_is_wrong() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(1).await;
    let one = json!([{ "item": item(&batch, 0), "status": "processing" }]);
    let missing = json!({ "batch_id": common::UNKNOWN_ID });
    assert_eq!(send(&server, &missing, one.clone()).await.0, 404);
    assert_eq!(send(&server, &batch, json!([])).await.0, 422);
    let too_many: Vec<Value> = (0..1_001).map(|_| one[0].clone()).collect();
    assert_eq!(send(&server, &batch, Value::Array(too_many)).await.0, 422);
    assert_eq!(send(&server, &batch, json!([{ "item": item(&batch, 0), "status": "x" }])).await.0, 422);
    // Another user's batch is not found, and nothing of it changes.
    let other = server.stranger().await;
    let url = format!("{}/api/batches/{}/items/status", server.url, batch["batch_id"].as_str().unwrap());
    assert_eq!(other.post(url).json(&one).send().await.unwrap().status(), 404);
    assert_eq!(server.get(&batch).await.summary.seq, 1);
}

#[tokio::test]
async fn a_single_report_answers_with_what_changed_only() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(50).await;
    let url = format!("{}{}", server.url, common::report_uri(&batch, 3));
    let answer: Value = server
        .http
        .post(url)
        .json(&json!({ "status": "processing" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["seq"], 2);
    assert_eq!(answer["counts"]["processing"], 1);
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "not the whole batch");
    assert_eq!(items[0]["id"], batch["items"][3]["id"]);
}
