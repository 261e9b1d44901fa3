//! Answers are compressed for clients that ask (pages, JSON, exports), and event streams never
//! are: a compressor would hold events back until it had enough to compress.

mod common;

use std::io::Read;

use common::server::{LiveServer, Options};
use futures::StreamExt;

#[tokio::test]
async fn pages_and_json_are_compressed_as_asked_and_streams_are_not() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create_named((0..300).map(|i| format!("scan-{i:03}.tiff")).collect()).await;
    let id = batch["batch_id"].as_str().unwrap();
    let get = |path: String, encoding: &'static str| {
        server.http.get(format!("{}{path}", server.url)).header("accept-encoding", encoding).send()
    };

    let page = get(format!("/batches/{id}"), "gzip").await.unwrap();
    assert_eq!(page.headers()["content-encoding"], "gzip");
    assert!(page.headers()["vary"].to_str().unwrap().to_lowercase().contains("accept-encoding"));
    let compressed = page.bytes().await.unwrap();
    let mut html = String::new();
    flate2::read::GzDecoder::new(&compressed[..]).read_to_string(&mut html).unwrap();
    assert!(html.contains("scan-099.tiff"), "the page, whole");
    assert!(compressed.len() * 4 < html.len(), "{} bytes for {} of HTML", compressed.len(), html.len());

    let items = get(format!("/api/batches/{id}/items?limit=500"), "br;q=1, gzip;q=0.5").await.unwrap();
    assert_eq!(items.headers()["content-encoding"], "br", "brotli when the client prefers it");
    let plain = get(format!("/api/batches/{id}/items?limit=500"), "identity").await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(plain.json::<serde_json::Value>().await.unwrap()["items"][299]["name"] == "scan-299.tiff");

    // A streamed export, compressed whole (the body is polled once more after its end).
    let export = get(format!("/api/batches/{id}/export?format=csv"), "gzip").await.unwrap();
    assert_eq!(export.headers()["content-encoding"], "gzip");
    let mut csv = String::new();
    flate2::read::GzDecoder::new(&export.bytes().await.unwrap()[..]).read_to_string(&mut csv).unwrap();
    assert_eq!(csv.lines().count(), 301, "the header and every item");

    let stream = get(format!("/api/batches/{id}/stream"), "gzip, br").await.unwrap();
    assert!(stream.headers().get("content-encoding").is_none(), "events go out as they are");
    // Served apart from the compressed routes, with the headers of every answer all the same.
    assert_eq!(stream.headers()["x-content-type-options"], "nosniff");
    assert_eq!(stream.headers()["x-frame-options"], "DENY");
    assert!(stream.headers().contains_key("x-request-id"));
    let first = stream.bytes_stream().next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("retry:"), "the stream's first bytes, plain");
}
