//! The server-rendered pages: the current progress is in the first HTML, and missing or
//! malformed batches answer with the right status.

mod common;

use axum::http::StatusCode;
use common::TestApp;

#[tokio::test]
async fn batch_page_renders_the_progress_into_the_html() {
    let app = TestApp::new().await;
    let batch = app.create("Holiday <photos>", 3).await;
    let id = batch["batch_id"].as_str().unwrap();
    let page = app.get(&format!("/batches/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("Holiday &lt;photos&gt;"), "the name, escaped");
    assert!(html.contains(r#"role="progressbar""#));
    assert!(html.contains(r#"aria-valuenow="0""#));
    assert_eq!(html.matches(r#"data-status="pending""#).count(), 3, "three pending items");
    assert!(html.contains("item-2.jpg"));
    assert!(html.contains(r#"data-status="queued""#), "the status badge");
    assert!(html.contains("/pkg/batchwatch.js"), "the hydration script");
}

#[tokio::test]
async fn batch_page_follows_reports() {
    let app = TestApp::new().await;
    let batch = app.create("b", 2).await;
    app.report(&batch, 0, "processing").await;
    app.report(&batch, 0, "done").await;
    let html = app.get(&format!("/batches/{}", batch["batch_id"].as_str().unwrap())).await.text();
    assert!(html.contains(r#"aria-valuenow="50""#));
    assert!(html.contains(r#"data-status="processing""#), "the badge");
    assert_eq!(html.matches(r#"data-status="done""#).count(), 1);
}

#[tokio::test]
async fn unknown_batch_is_a_404_page() {
    let app = TestApp::new().await;
    let page = app.get("/batches/67e55044-10b1-426f-9247-bb680e5fe0c8").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.text().contains("Not found"));
}

#[tokio::test]
async fn malformed_batch_id_is_a_400_page() {
    let app = TestApp::new().await;
    let page = app.get("/batches/not-an-id").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.text().contains("Bad request"));
}

#[tokio::test]
async fn unknown_path_is_a_404_page() {
    let app = TestApp::new().await;
    let page = app.get("/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.text().contains("Not found"));
}

#[tokio::test]
async fn home_lists_batches_newest_first() {
    let app = TestApp::new().await;
    app.create("older batch", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    app.create("newer batch", 1).await;
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    let (newer, older) = (html.find("newer batch").unwrap(), html.find("older batch").unwrap());
    assert!(newer < older);
    assert!(html.contains(r#"name="items""#), "the create form");
}
