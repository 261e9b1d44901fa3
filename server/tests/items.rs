//! One page of a batch's items (`GET /api/batches/{id}/items`), on SQLite and on PostgreSQL:
//! keyset pages in order, a status filter, a name search that takes `%` and `_` literally.

mod common;

use common::server::{LiveServer, Options};
use serde_json::{Value, json};

async fn page(server: &LiveServer, batch: &Value, query: &str) -> (u16, Value) {
    let url = format!("{}/api/batches/{}/items?{query}", server.url, batch["batch_id"].as_str().unwrap());
    let reply = server.http.get(url).send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

fn names(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
}

async fn pages_filters_and_search(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let mut all: Vec<String> = (0..600).map(|i| format!("photo-{i:03}.jpg")).collect();
    all.extend(["Invoice_2024.pdf", "invoice-2024.pdf", "100%.txt", "INVOICEX2024.pdf"].map(String::from));
    let batch = server.create_named(all.clone()).await;

    // Keyset pages, in order, end to end.
    let (mut seen, mut after) = (Vec::new(), None::<u64>);
    loop {
        let query = after.map_or("limit=250".to_owned(), |a| format!("limit=250&after={a}"));
        let (status, body) = page(&server, &batch, &query).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(names(&body));
        match body["next"].as_u64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, all, "every item once, in order");

    // At most 500 at once, whatever is asked.
    let (_, body) = page(&server, &batch, "limit=100000").await;
    assert_eq!((body["items"].as_array().unwrap().len(), body["next"].as_u64()), (500, Some(499)));

    // By status.
    let reports: Vec<Value> = [3, 250, 599]
        .iter()
        .map(|&i| json!({ "item": batch["items"][i]["id"], "status": "processing" }))
        .collect();
    let url = format!("{}/api/batches/{}/items/status", server.url, batch["batch_id"].as_str().unwrap());
    assert_eq!(server.http.post(url).json(&reports).send().await.unwrap().status(), 200);
    let (_, body) = page(&server, &batch, "status=processing&limit=2").await;
    assert_eq!(names(&body), ["photo-003.jpg", "photo-250.jpg"]);
    let (_, body) = page(&server, &batch, &format!("status=processing&after={}", body["next"])).await;
    assert_eq!((names(&body), body["next"].clone()), (vec!["photo-599.jpg".to_owned()], Value::Null));

    // By name: letters in either case; `_` and `%` are themselves, not wildcards.
    let (_, body) = page(&server, &batch, "q=invoice").await;
    assert_eq!(names(&body), ["Invoice_2024.pdf", "invoice-2024.pdf", "INVOICEX2024.pdf"]);
    let (_, body) = page(&server, &batch, "q=_2024").await;
    assert_eq!(names(&body), ["Invoice_2024.pdf"]);
    let (_, body) = page(&server, &batch, "q=%25").await;
    assert_eq!(names(&body), ["100%.txt"]);
    let (_, body) = page(&server, &batch, "q=photo-59&status=processing").await;
    assert_eq!(names(&body), ["photo-599.jpg"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_page_filter_and_search_on_sqlite() {
    pages_filters_and_search(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_page_filter_and_search_on_postgresql() {
    pages_filters_and_search(true).await;
}

#[tokio::test]
async fn bad_item_queries_are_refused() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(2).await;
    for query in ["status=exploded", "after=-1", "limit=x", "nope=1", &format!("q={}", "x".repeat(201))] {
        let (status, body) = page(&server, &batch, query).await;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{query}: {body}");
    }
    let other = server.stranger().await;
    let url = format!("{}/api/batches/{}/items", server.url, batch["batch_id"].as_str().unwrap());
    let reply = other.get(url).send().await.unwrap();
    assert_eq!(reply.status(), 404, "another user's batch is not found");
}

async fn append(server: &LiveServer, batch: &Value, names: Vec<String>) -> (u16, Value) {
    let url = format!("{}/api/batches/{}/items", server.url, batch["batch_id"].as_str().unwrap());
    let reply = server.http.post(url).json(&json!({ "items": names })).send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

async fn items_are_added_at_the_end(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(3).await;
    let mut events = server.stream(&batch, None).await;
    assert_eq!(futures::StreamExt::next(&mut events).await.unwrap().event, "snapshot");

    let added: Vec<String> = (0..600).map(|i| format!("late-{i:03}.jpg")).collect();
    let (status, answer) = append(&server, &batch, added.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["seq"].as_u64(), answer["counts"]["total"].as_u64()), (Some(3), Some(603)));
    assert_eq!((answer["status"].as_str(), answer["counts"]["queued"].as_u64()), (Some("queued"), Some(603)));
    assert_eq!(names(&answer), added, "the answer holds the new items, not the batch");
    // Watchers get them as events of at most 500 items, in order.
    let mut sizes = Vec::new();
    for seq in ["2", "3"] {
        let event = futures::StreamExt::next(&mut events).await.unwrap();
        assert_eq!((event.event.as_str(), event.id.as_str()), ("progress", seq));
        sizes.push(serde_json::from_str::<Value>(&event.data).unwrap()["items"].as_array().unwrap().len());
    }
    assert_eq!(sizes, [500, 100]);
    // After the first three, in order; the cache has them too.
    let (_, page) = page(&server, &batch, "after=2&limit=2").await;
    assert_eq!(names(&page), ["late-000.jpg", "late-001.jpg"]);
    let stored = server.get(&batch).await;
    assert_eq!(stored.items.len(), 603);
    assert_eq!(stored.items[602].name, "late-599.jpg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_added_at_the_end_on_sqlite() {
    items_are_added_at_the_end(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_added_at_the_end_on_postgresql() {
    items_are_added_at_the_end(true).await;
}

#[tokio::test]
async fn adding_items_keeps_to_the_limit_and_to_unfinished_batches() {
    let server = LiveServer::start(Options { max_items_per_batch: 5, ..Options::default() }).await;
    let batch = server.create(3).await;
    let names = |n: usize| (0..n).map(|i| format!("{i}.jpg")).collect::<Vec<_>>();
    let (status, body) = append(&server, &batch, names(3)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "{body}");
    assert_eq!(append(&server, &batch, vec![]).await.0, 422);
    assert_eq!(append(&server, &batch, vec![" ".into()]).await.0, 422);
    assert_eq!(append(&server, &batch, names(2)).await.0, 200);
    assert_eq!(server.get(&batch).await.summary.counts.total, 5);

    let finished = server.create(1).await;
    server.report(&finished, 0, "processing").await;
    server.report(&finished, 0, "done").await;
    let (status, body) = append(&server, &finished, names(1)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")));
    assert_eq!(server.get(&finished).await.summary.counts.total, 1, "nothing was added");

    let other = server.stranger().await;
    let url = format!("{}/api/batches/{}/items", server.url, batch["batch_id"].as_str().unwrap());
    assert_eq!(other.post(url).json(&json!({ "items": ["x"] })).send().await.unwrap().status(), 404);
}

/// Pages go both ways (`after`, `before`) with the cursors of the pages around them, say the
/// `seq` they were read at, and carry each item's position and attempts.
async fn pages_go_both_ways(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(10).await;
    for i in [1, 4, 5, 8] {
        server.report(&batch, i, "processing").await;
        server.report(&batch, i, "failed").await;
    }
    let cursors = |body: &Value| (body["prev"].as_u64(), body["next"].as_u64());
    let positions = |body: &Value| -> Vec<u64> {
        body["items"].as_array().unwrap().iter().map(|i| i["position"].as_u64().unwrap()).collect()
    };
    let (_, first) = page(&server, &batch, "limit=3").await;
    assert_eq!((positions(&first), cursors(&first)), (vec![0, 1, 2], (None, Some(2))));
    assert_eq!(first["seq"].as_u64(), Some(9), "the batch's seq: created at 1, eight reports");
    let (_, second) = page(&server, &batch, "limit=3&after=2").await;
    assert_eq!((positions(&second), cursors(&second)), (vec![3, 4, 5], (Some(3), Some(5))));
    let (_, back) = page(&server, &batch, "limit=3&before=3").await;
    assert_eq!((positions(&back), cursors(&back)), (vec![0, 1, 2], (None, Some(2))), "back to the first");
    let (_, last) = page(&server, &batch, "limit=3&before=10").await;
    assert_eq!((positions(&last), cursors(&last)), (vec![7, 8, 9], (Some(7), None)));
    let (_, past) = page(&server, &batch, "limit=3&after=9").await;
    assert_eq!((positions(&past), cursors(&past)), (vec![], (Some(10), None)), "past the end: only back");

    // Filtered, both ways.
    let (_, failed) = page(&server, &batch, "status=failed&limit=2&after=1").await;
    assert_eq!((positions(&failed), cursors(&failed)), (vec![4, 5], (Some(4), Some(5))));
    let (_, before) = page(&server, &batch, "status=failed&limit=2&before=4").await;
    assert_eq!((positions(&before), cursors(&before)), (vec![1], (None, Some(1))));
    let item = &failed["items"][0];
    assert_eq!((item["status"].as_str(), item["attempts"].as_u64()), (Some("failed"), Some(1)));

    let (status, body) = page(&server, &batch, "after=1&before=4").await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid")), "one cursor at most");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_go_both_ways_on_sqlite() {
    pages_go_both_ways(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_go_both_ways_on_postgresql() {
    pages_go_both_ways(true).await;
}
