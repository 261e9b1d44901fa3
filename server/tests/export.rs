//! `GET /api/batches/{id}/export`: every item, in order, as CSV or NDJSON, read page by page
//! (more items than one page here), on SQLite and on PostgreSQL.

mod common;

use common::server::{LiveServer, Options};
use serde_json::{Value, json};

async fn export(server: &LiveServer, batch: &Value, query: &str) -> reqwest::Response {
    let url = format!("{}/api/batches/{}/export{query}", server.url, batch["batch_id"].as_str().unwrap());
    server.http.get(url).send().await.unwrap()
}

async fn every_item_in_order(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let mut names: Vec<String> = (0..2_500).map(|i| format!("scan {i:04}, page 1.tif")).collect();
    names[7] = "=HYPERLINK(\"http://evil\")".into();
    let batch = server.create_named(names.clone()).await;
    let url = format!("{}/api/batches/{}/items/status", server.url, batch["batch_id"].as_str().unwrap());
    let item = &batch["items"][3]["id"];
    for report in [
        json!([{ "item": item, "status": "processing" }]),
        json!([{ "item": item, "status": "failed", "error": "bad \"header\"\nat byte 3" }]),
    ] {
        assert_eq!(server.http.post(&url).json(&report).send().await.unwrap().status(), 200);
    }

    let reply = export(&server, &batch, "?format=csv").await;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = reply.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"batch-") && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let body = reply.bytes().await.unwrap();
    let mut csv = csv::Reader::from_reader(&body[..]);
    assert_eq!(csv.headers().unwrap(), vec!["id", "name", "status", "error", "attempts", "updated_at"]);
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), names.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], *batch["items"][i]["id"].as_str().unwrap(), "in order");
        if i != 7 {
            assert_eq!(row[1], names[i]);
        }
    }
    assert_eq!(&rows[7][1], "'=HYPERLINK(\"http://evil\")", "a formula is defused");
    assert_eq!((&rows[3][2], &rows[3][3], &rows[3][4]), ("failed", "bad \"header\"\nat byte 3", "1"));
    assert!(rows[3][5].ends_with('Z') && rows[3][5].contains('T'), "RFC 3339: {}", &rows[3][5]);

    let reply = export(&server, &batch, "?format=ndjson").await;
    assert_eq!(reply.headers()["content-type"], "application/x-ndjson");
    let text = reply.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), names.len());
    assert_eq!(lines[7]["name"], names[7], "NDJSON keeps names as they are");
    assert_eq!((lines[3]["status"].as_str(), lines[3]["attempts"].as_u64()), (Some("failed"), Some(1)));
    assert_eq!(lines[2_499]["name"], names[2_499]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_every_item_in_order_on_sqlite() {
    every_item_in_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_every_item_in_order_on_postgresql() {
    every_item_in_order(true).await;
}

#[tokio::test]
async fn an_export_is_refused_for_a_bad_format_or_another_users_batch() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(1).await;
    assert_eq!(export(&server, &batch, "?format=xlsx").await.status(), 422);
    assert_eq!(export(&server, &batch, "").await.headers()["content-type"], "text/csv; charset=utf-8");
    let other = server.stranger().await;
    let url = format!("{}/api/batches/{}/export", server.url, batch["batch_id"].as_str().unwrap());
    assert_eq!(other.get(url).send().await.unwrap().status(), 404);
}
