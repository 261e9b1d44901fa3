//! Every route of the JSON API and every error row, against a real SQLite file per test.

mod common;

use axum::http::{StatusCode, header};
use common::TestApp;
use serde_json::{Value, json};

/// What is wrong, content type, body, expected status and error code.
type BodyCase<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, &'a str);
/// The same with the report's URL.
type ReportCase<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, StatusCode, &'a str);

#[tokio::test]
async fn create_returns_201_location_and_the_progress() {
    let app = TestApp::new().await;
    let reply = app
        .post_json(
            "/api/batches",
            &json!({ "name": " Holiday photos ", "items": ["a.jpg", "b.jpg", "c.jpg"] }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let body = reply.json();
    let id = body["batch_id"].as_str().unwrap();
    assert_eq!(reply.headers[header::LOCATION], format!("/api/batches/{id}").as_str());
    assert_eq!(body["name"], "Holiday photos");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["percent"], 0);
    assert_eq!(body["seq"], 1);
    assert_eq!(
        body["counts"],
        json!({ "queued": 3, "processing": 0, "completed": 0, "failed": 0, "total": 3 })
    );
    let names: Vec<&str> =
        body["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.jpg", "b.jpg", "c.jpg"]);
    assert!(body["items"].as_array().unwrap().iter().all(|i| i["status"] == "pending"));

    let fetched = app.get(&format!("/api/batches/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.json(), body);
}

#[tokio::test]
async fn create_accepts_the_largest_batch() {
    let app = TestApp::new().await;
    let batch = app.create("big", 10_000).await;
    assert_eq!(batch["counts"]["total"], 10_000);
    let fetched = app.get(&format!("/api/batches/{}", batch["batch_id"].as_str().unwrap())).await.json();
    assert_eq!(fetched["items"].as_array().unwrap().len(), 10_000);
    assert_eq!(fetched["items"][9_999]["name"], "item-9999.jpg");
}

#[tokio::test]
async fn create_rejects_bad_bodies_and_writes_nothing() {
    let app = TestApp::new().await;
    app.create("existing", 2).await;
    let before = app.fingerprint().await;
    let many: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    let cases: Vec<BodyCase> = vec![
        (
            "empty name",
            Some("application/json"),
            br#"{"name":"","items":["a"]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "blank name",
            Some("application/json"),
            br#"{"name":"   ","items":["a"]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "long name",
            Some("application/json"),
            json!({ "name": "n".repeat(201), "items": ["a"] }).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "zero items",
            Some("application/json"),
            br#"{"name":"b","items":[]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "too many items",
            Some("application/json"),
            json!({ "name": "b", "items": many }).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "blank item",
            Some("application/json"),
            br#"{"name":"b","items":["a"," "]}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "invalid JSON",
            Some("application/json"),
            b"{\"name\": ".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "missing field",
            Some("application/json"),
            br#"{"name":"b"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "wrong type",
            Some("application/json"),
            br#"{"name":"b","items":"a"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "unknown field",
            Some("application/json"),
            br#"{"name":"b","items":["a"],"x":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "no content type",
            None,
            br#"{"name":"b","items":["a"]}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "wrong content type",
            Some("text/plain"),
            br#"{"name":"b","items":["a"]}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "over 1 MiB",
            Some("application/json"),
            json!({ "name": "b", "items": ["x".repeat(1 << 20)] }).to_string().into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (what, content_type, body, status, code) in cases {
        let reply = app.post_raw("/api/batches", content_type, body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert_eq!(reply.error_code(), code, "{what}");
        assert_eq!(app.fingerprint().await, before, "{what} wrote to the database");
    }
}

#[tokio::test]
async fn list_is_newest_first_with_limit_and_offset() {
    let app = TestApp::new().await;
    for name in ["first", "second", "third"] {
        app.create(name, 1).await;
        // Creation times are in milliseconds: keep them apart.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let names = |v: Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()).collect()
    };
    let all = app.get("/api/batches").await;
    assert_eq!(all.status, StatusCode::OK);
    let all = all.json();
    assert!(all[0].get("items").is_none(), "summaries carry no items");
    assert_eq!(names(all), ["third", "second", "first"]);
    assert_eq!(names(app.get("/api/batches?limit=1&offset=1").await.json()), ["second"]);
    assert_eq!(names(app.get("/api/batches?offset=3").await.json()), Vec::<String>::new());

    let bad = app.get("/api/batches?limit=many").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.error_code(), "invalid");
}

#[tokio::test]
async fn get_answers_400_for_malformed_and_404_for_unknown_ids() {
    let app = TestApp::new().await;
    let malformed = app.get("/api/batches/not-a-uuid").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "malformed_id");
    let unknown = app.get("/api/batches/67e55044-10b1-426f-9247-bb680e5fe0c8").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "not_found");
    let no_route = app.get("/api/nothing/here").await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    assert_eq!(no_route.error_code(), "not_found");
}

#[tokio::test]
async fn reports_move_items_and_the_batch() {
    let app = TestApp::new().await;
    let batch = app.create("b", 2).await;

    let reply = app.report(&batch, 0, "processing").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let p = reply.json();
    assert_eq!(p["status"], "processing");
    assert_eq!(p["seq"], 2);
    assert_eq!(p["items"].as_array().unwrap().len(), 2, "the full progress comes back");
    assert_eq!(p["items"][0]["status"], "processing");
    assert_eq!(p["counts"]["processing"], 1);

    let p = app.report(&batch, 0, "done").await.json();
    assert_eq!((p["seq"].as_u64(), p["percent"].as_u64()), (Some(3), Some(50)));

    app.report(&batch, 1, "processing").await;
    let uri = format!(
        "/api/batches/{}/items/{}/status",
        batch["batch_id"].as_str().unwrap(),
        batch["items"][1]["id"].as_str().unwrap()
    );
    let p = app.post_json(&uri, &json!({ "status": "failed", "error": "corrupt file" })).await.json();
    assert_eq!(p["status"], "partial");
    assert_eq!(p["percent"], 100);
    assert_eq!(p["items"][1]["error"], "corrupt file");
    assert_eq!(p["counts"], json!({ "queued": 0, "processing": 0, "completed": 1, "failed": 1, "total": 2 }));

    // A retry puts the failed item back in the queue and clears its error.
    let p = app.report(&batch, 1, "pending").await.json();
    assert_eq!(p["status"], "processing");
    assert_eq!(p["items"][1]["error"], Value::Null);
    app.report(&batch, 1, "processing").await;
    let p = app.report(&batch, 1, "done").await.json();
    assert_eq!((p["status"].as_str(), p["seq"].as_u64()), (Some("completed"), Some(8)));
}

#[tokio::test]
async fn all_failed_is_failed() {
    let app = TestApp::new().await;
    let batch = app.create("b", 1).await;
    app.report(&batch, 0, "processing").await;
    assert_eq!(app.report(&batch, 0, "failed").await.json()["status"], "failed");
}

#[tokio::test]
async fn bad_reports_get_the_right_error_and_write_nothing() {
    let app = TestApp::new().await;
    let batch = app.create("b", 2).await;
    let other = app.create("other", 1).await;
    app.report(&batch, 0, "processing").await;
    app.report(&batch, 0, "done").await;
    let before = app.fingerprint().await;

    let id = batch["batch_id"].as_str().unwrap();
    let done = batch["items"][0]["id"].as_str().unwrap();
    let pending = batch["items"][1]["id"].as_str().unwrap();
    let foreign = other["items"][0]["id"].as_str().unwrap();
    let unknown = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let url = |b: &str, i: &str| format!("/api/batches/{b}/items/{i}/status");
    let processing = br#"{"status":"processing"}"#.to_vec();
    let json = Some("application/json");
    let cases: Vec<ReportCase> = vec![
        (
            "done -> processing",
            url(id, done),
            json,
            processing.clone(),
            StatusCode::CONFLICT,
            "illegal_transition",
        ),
        (
            "done -> done",
            url(id, done),
            json,
            br#"{"status":"done"}"#.to_vec(),
            StatusCode::CONFLICT,
            "illegal_transition",
        ),
        (
            "pending -> done",
            url(id, pending),
            json,
            br#"{"status":"done"}"#.to_vec(),
            StatusCode::CONFLICT,
            "illegal_transition",
        ),
        (
            "unknown batch",
            url(unknown, pending),
            json,
            processing.clone(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("unknown item", url(id, unknown), json, processing.clone(), StatusCode::NOT_FOUND, "not_found"),
        (
            "another batch's item",
            url(id, foreign),
            json,
            processing.clone(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "malformed batch id",
            url("nope", pending),
            json,
            processing.clone(),
            StatusCode::BAD_REQUEST,
            "malformed_id",
        ),
        (
            "malformed item id",
            url(id, "nope"),
            json,
            processing.clone(),
            StatusCode::BAD_REQUEST,
            "malformed_id",
        ),
        (
            "unknown status",
            url(id, pending),
            json,
            br#"{"status":"exploded"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        ("invalid JSON", url(id, pending), json, b"{".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        (
            "long error",
            url(id, pending),
            json,
            json!({ "status": "failed", "error": "e".repeat(2_001) }).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "no content type",
            url(id, pending),
            None,
            processing.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "over 1 MiB",
            url(id, pending),
            json,
            json!({ "status": "failed", "error": "e".repeat(1 << 20) }).to_string().into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (what, uri, content_type, body, status, code) in cases {
        let reply = app.post_raw(&uri, content_type, body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert_eq!(reply.error_code(), code, "{what}");
        assert_eq!(app.fingerprint().await, before, "{what} wrote to the database");
    }
}

#[tokio::test]
async fn racing_reports_for_one_item_have_one_winner() {
    let app = TestApp::new().await;
    let batch = app.create("b", 1).await;
    let replies = futures::future::join_all((0..8).map(|_| app.report(&batch, 0, "processing"))).await;
    let ok = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    let conflicts = replies.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
    assert_eq!((ok, conflicts), (1, 7));
    let p = app.get(&format!("/api/batches/{}", batch["batch_id"].as_str().unwrap())).await.json();
    assert_eq!((p["seq"].as_u64(), p["counts"]["processing"].as_u64()), (Some(2), Some(1)));
}
