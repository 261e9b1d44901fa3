//! Every route of the JSON API and every error row, against a real SQLite file per test.

mod common;

use axum::http::{StatusCode, header};
use common::{
    Rejected, TestApp, UNKNOWN_ID, assert_rejected, report_uri,
    server::{LiveServer, Options},
};
use serde_json::{Value, json};

const JSON: Option<&str> = Some("application/json");

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
        json!({ "queued": 3, "processing": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 3 })
    );
    let names: Vec<&str> =
        body["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.jpg", "b.jpg", "c.jpg"]);
    assert!(body["items"].as_array().unwrap().iter().all(|i| i["status"] == "pending"));

    let fetched = app.get(&format!("/api/batches/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    let mut summary = body.clone();
    summary.as_object_mut().unwrap().remove("items");
    assert_eq!(fetched.json(), summary, "the summary, without the items");
}

#[tokio::test]
async fn create_accepts_the_largest_batch() {
    let app = TestApp::new().await;
    let batch = app.create("big", 10_000).await;
    assert_eq!(batch["counts"]["total"], 10_000);
    let id = batch["batch_id"].as_str().unwrap();
    let fetched = app.get(&format!("/api/batches/{id}/items?after=9998")).await.json();
    assert_eq!(fetched["items"].as_array().unwrap().len(), 1);
    assert_eq!(fetched["items"][0]["name"], "item-9999.jpg");
}

#[tokio::test]
async fn create_rejects_bad_bodies_and_writes_nothing() {
    let app = TestApp::new().await;
    app.create("existing", 2).await;
    let many: Vec<String> = (0..10_001).map(|i| i.to_string()).collect();
    let cases = vec![
        Rejected {
            what: "empty name",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: br#"{"name":"","items":["a"]}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "blank name",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: br#"{"name":"   ","items":["a"]}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "long name",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: json!({ "name": "n".repeat(201), "items": ["a"] }).to_string().into_bytes(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "zero items",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: br#"{"name":"b","items":[]}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "too many items",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: json!({ "name": "b", "items": many }).to_string().into_bytes(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "NUL in the name",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: json!({ "name": "a\u{0}b", "items": ["a"] }).to_string().into_bytes(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "a direction override in an item",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: json!({ "name": "b", "items": ["invoice\u{202E}fdp.exe"] }).to_string().into_bytes(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "blank item",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: br#"{"name":"b","items":["a"," "]}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "invalid JSON",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: b"{\"name\": ".to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "missing field",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: br#"{"name":"b"}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "wrong type",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: br#"{"name":"b","items":"a"}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "unknown field",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: br#"{"name":"b","items":["a"],"x":1}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "no content type",
            uri: "/api/batches".into(),
            content_type: None,
            body: br#"{"name":"b","items":["a"]}"#.to_vec(),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
        },
        Rejected {
            what: "wrong content type",
            uri: "/api/batches".into(),
            content_type: Some("text/plain"),
            body: br#"{"name":"b","items":["a"]}"#.to_vec(),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
        },
        Rejected {
            what: "over 1 MiB",
            uri: "/api/batches".into(),
            content_type: JSON,
            body: json!({ "name": "b", "items": ["x".repeat(1 << 20)] }).to_string().into_bytes(),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
        },
    ];
    assert_rejected(&app, cases).await;
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
    let unknown = app.get(&format!("/api/batches/{UNKNOWN_ID}")).await;
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
    assert_eq!(p["items"].as_array().unwrap().len(), 1, "what changed comes back, not the batch");
    assert_eq!(p["items"][0]["status"], "processing");
    assert_eq!(p["counts"]["processing"], 1);

    let p = app.report(&batch, 0, "done").await.json();
    assert_eq!((p["seq"].as_u64(), p["percent"].as_u64()), (Some(3), Some(50)));

    app.report(&batch, 1, "processing").await;
    let p = app
        .report_as(&batch, 1, &json!({ "status": "failed", "error": "corrupt file" }), &app.token)
        .await
        .json();
    assert_eq!(p["status"], "partial");
    assert_eq!(p["percent"], 100);
    assert_eq!(p["items"][0]["error"], "corrupt file");
    assert_eq!(
        p["counts"],
        json!({ "queued": 0, "processing": 0, "completed": 1, "failed": 1, "cancelled": 0, "total": 2 })
    );

    // A retry puts the failed item back in the queue and clears its error.
    let p = app.report(&batch, 1, "pending").await.json();
    assert_eq!(p["status"], "processing");
    assert_eq!(p["items"][0]["error"], Value::Null);
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

    let id = batch["batch_id"].as_str().unwrap();
    let done = batch["items"][0]["id"].as_str().unwrap();
    let pending = batch["items"][1]["id"].as_str().unwrap();
    let foreign = other["items"][0]["id"].as_str().unwrap();
    let unknown = UNKNOWN_ID;
    let url = |b: &str, i: &str| format!("/api/batches/{b}/items/{i}/status");
    let processing = br#"{"status":"processing"}"#.to_vec();
    let cases = vec![
        Rejected {
            what: "done -> processing",
            uri: url(id, done),
            content_type: JSON,
            body: processing.clone(),
            status: StatusCode::CONFLICT,
            code: "illegal_transition",
        },
        Rejected {
            what: "done -> done",
            uri: url(id, done),
            content_type: JSON,
            body: br#"{"status":"done"}"#.to_vec(),
            status: StatusCode::CONFLICT,
            code: "illegal_transition",
        },
        Rejected {
            what: "pending -> done",
            uri: url(id, pending),
            content_type: JSON,
            body: br#"{"status":"done"}"#.to_vec(),
            status: StatusCode::CONFLICT,
            code: "illegal_transition",
        },
        Rejected {
            what: "unknown batch",
            uri: url(unknown, pending),
            content_type: JSON,
            body: processing.clone(),
            status: StatusCode::NOT_FOUND,
            code: "not_found",
        },
        Rejected {
            what: "unknown item",
            uri: url(id, unknown),
            content_type: JSON,
            body: processing.clone(),
            status: StatusCode::NOT_FOUND,
            code: "not_found",
        },
        Rejected {
            what: "another batch's item",
            uri: url(id, foreign),
            content_type: JSON,
            body: processing.clone(),
            status: StatusCode::NOT_FOUND,
            code: "not_found",
        },
        Rejected {
            what: "malformed batch id",
            uri: url("nope", pending),
            content_type: JSON,
            body: processing.clone(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_id",
        },
        Rejected {
            what: "malformed item id",
            uri: url(id, "nope"),
            content_type: JSON,
            body: processing.clone(),
            status: StatusCode::BAD_REQUEST,
            code: "malformed_id",
        },
        Rejected {
            what: "unknown status",
            uri: url(id, pending),
            content_type: JSON,
            body: br#"{"status":"exploded"}"#.to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "invalid JSON",
            uri: url(id, pending),
            content_type: JSON,
            body: b"{".to_vec(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "long error",
            uri: url(id, pending),
            content_type: JSON,
            body: json!({ "status": "failed", "error": "e".repeat(2_001) }).to_string().into_bytes(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "control characters in the error",
            uri: url(id, pending),
            content_type: JSON,
            body: json!({ "status": "failed", "error": "disk\u{0}full\u{1b}[2J" }).to_string().into_bytes(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
        },
        Rejected {
            what: "no content type",
            uri: url(id, pending),
            content_type: None,
            body: processing.clone(),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
        },
        Rejected {
            what: "over 1 MiB",
            uri: url(id, pending),
            content_type: JSON,
            body: json!({ "status": "failed", "error": "e".repeat(1 << 20) }).to_string().into_bytes(),
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
        },
    ];
    assert_rejected(&app, cases).await;
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

/// PostgreSQL refuses a NUL in text with an error of its own, which was a 500: the same 422 as
/// on SQLite now comes before the database is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_422_on_postgresql_too() {
    let server = LiveServer::start(Options { postgres: true, ..Options::default() }).await;
    let create = server
        .http
        .post(format!("{}/api/batches", server.url))
        .json(&json!({ "name": "nul\u{0}", "items": ["a"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 422);
    let batch = server.create(1).await;
    let report =
        |body: Value| server.http.post(format!("{}{}", server.url, report_uri(&batch, 0))).json(&body).send();
    assert_eq!(report(json!({ "status": "processing" })).await.unwrap().status(), 200);
    let failed = report(json!({ "status": "failed", "error": "a\u{0}b" })).await.unwrap();
    assert_eq!(failed.status(), 422);
    assert_eq!(server.get(&batch).await.summary.counts.processing, 1, "the rejected report wrote nothing");
}
