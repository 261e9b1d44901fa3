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
    let other = common::server::client(&common::server::user(&server.state, "other").await);
    let url = format!("{}/api/batches/{}/items", server.url, batch["batch_id"].as_str().unwrap());
    let reply = other.get(url).send().await.unwrap();
    assert_eq!(reply.status(), 404, "another user's batch is not found");
}
