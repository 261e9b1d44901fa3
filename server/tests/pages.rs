//! The server-rendered pages: the current progress is in the first HTML, and missing or
//! malformed batches answer with the right status.

mod common;

use axum::http::StatusCode;
use common::{TestApp, UNKNOWN_ID};

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
    // The hydration script loads `pkg/batchwatch.js` and `batchwatch.wasm`, the files
    // cargo-leptos writes, whoever built the binary (hashed names come with the `hash.txt`
    // beside a release binary, which a test's has not: the end-to-end tests check those).
    assert!(
        html.contains(r#""pkg", "batchwatch", "batchwatch", false"#),
        "the hydration script's file names"
    );
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

/// The view in the URL is the view in the first HTML: a status tab, a search, a page.
#[tokio::test]
async fn batch_page_renders_the_view_its_url_asks_for() {
    let app = TestApp::new().await;
    let batch = app.create("b", 30).await;
    for i in [3, 13, 17, 23] {
        app.report(&batch, i, "processing").await;
        app.report(&batch, i, "failed").await;
    }
    let id = batch["batch_id"].as_str().unwrap();
    let html = app.get(&format!("/batches/{id}?status=failed&q=item-1")).await.text();
    assert_eq!(html.matches(r#"data-testid="item""#).count(), 2, "failed, named item-1…");
    assert!(html.contains("item-13.jpg") && html.contains("item-17.jpg"));
    let at = html.find(r#"data-testid="tab-failed""#).expect("a Failed tab");
    let start = html[..at].rfind('<').unwrap();
    let tab = &html[start..start + html[start..].find('>').unwrap()];
    assert!(tab.contains(r#"aria-selected="true""#), "the Failed tab is selected: {tab}");
    assert!(tab.contains(r#"tabindex="0""#), "and it is the tabs' one Tab stop: {tab}");
    assert!(html.contains(r#"value="item-1""#), "the search box holds the search");
    // A hand-edited link still shows a page: what does not parse is left out.
    let html = app.get(&format!("/batches/{id}?status=lost&after=x")).await.text();
    assert_eq!(html.matches(r#"data-testid="item""#).count(), 30);
}

/// However big the batch, the page shows one page of items, and links to the next.
#[tokio::test]
async fn a_big_batch_page_holds_one_page_of_items() {
    let app = TestApp::new().await;
    let batch = app.create("big", 10_000).await;
    let id = batch["batch_id"].as_str().unwrap();
    let html = app.get(&format!("/batches/{id}")).await.text();
    assert_eq!(html.matches(r#"data-testid="item""#).count(), 100);
    assert!(html.contains(&format!(r#"href="/batches/{id}?after=99""#)), "the next page's link");
    assert!(html.len() < 100_000, "first HTML of {} bytes", html.len());
    let html = app.get(&format!("/batches/{id}?after=99")).await.text();
    assert!(html.contains("item-100.jpg") && html.contains("item-199.jpg") && !html.contains("item-99.jpg"));
    assert!(html.contains(&format!(r#"href="/batches/{id}?before=100""#)), "the previous page's link");
}

#[tokio::test]
async fn unknown_batch_is_a_404_page() {
    let app = TestApp::new().await;
    let page = app.get(&format!("/batches/{UNKNOWN_ID}")).await;
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

#[tokio::test]
async fn pages_carry_a_content_security_policy_with_their_script_nonce() {
    let app = TestApp::new().await;
    let batch = app.create("b", 1).await;
    let page = app.get(&format!("/batches/{}", batch["batch_id"].as_str().unwrap())).await;
    let csp = page.headers["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("'wasm-unsafe-eval'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let script_src = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap();
    assert!(!script_src.contains("'unsafe-inline'"), "inline scripts only by nonce: {csp}");
    let nonce =
        csp.split("'nonce-").nth(1).and_then(|r| r.split('\'').next()).expect("a nonce in the policy");
    let html = page.text();
    assert!(html.contains(&format!(r#"nonce="{nonce}""#)), "the inline scripts carry the header's nonce");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(page.headers["x-frame-options"], "DENY");

    // A fresh nonce for every response.
    let again = app.get(&format!("/batches/{}", batch["batch_id"].as_str().unwrap())).await;
    assert_ne!(again.headers["content-security-policy"].to_str().unwrap(), csp);
}

#[tokio::test]
async fn api_responses_carry_the_security_headers_too() {
    let app = TestApp::new().await;
    for reply in [app.get("/api/batches").await, app.get("/api/batches/nope").await] {
        assert_eq!(reply.headers["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn html_in_names_and_errors_is_text() {
    let app = TestApp::new().await;
    let evil = "</title><img src=x onerror=alert(1)>";
    let reply = app.post_json("/api/batches", &serde_json::json!({ "name": evil, "items": [evil] })).await;
    let batch = reply.json();
    app.report(&batch, 0, "processing").await;
    let failed = serde_json::json!({ "status": "failed", "error": "<script>alert(2)</script>" });
    app.report_as(&batch, 0, &failed, &app.token).await;
    let html = app.get(&format!("/batches/{}", batch["batch_id"].as_str().unwrap())).await.text();
    assert!(!html.contains("<img src=x"), "markup from input must not reach the page as markup");
    assert!(!html.contains("<script>alert(2)"));
    assert!(html.contains("&lt;/title&gt;&lt;img src=x onerror=alert(1)&gt;"));
}
