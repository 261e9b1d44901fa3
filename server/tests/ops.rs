//! What operators use: `/health`, `/ready` with each check, a request id on every answer and in
//! the log lines of its request, and JSON logs.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use common::{
    TestApp,
    server::{LiveServer, Options, PrivateRedis, free_port},
};
use serde_json::Value;

#[tokio::test]
async fn health_and_readiness_answer_without_a_sign_in() {
    let app = TestApp::new().await;
    for (path, body) in [("/health", "ok"), ("/ready", "ready")] {
        let reply = app.send(Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert_eq!(reply.json()["status"], body, "{path}");
    }
    let ready = app.send(Request::get("/ready").body(Body::empty()).unwrap()).await.json();
    for check in ["database", "redis"] {
        assert_eq!(ready[check]["ok"], true, "{ready}");
        assert!(ready[check]["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{ready}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_with_503_while_redis_is_away() {
    let mut redis = PrivateRedis::start().await;
    let server = LiveServer::start(Options { redis_url: redis.url(), ..Options::default() }).await;
    let ready = |server: &LiveServer| {
        let url = format!("{}/ready", server.url);
        async move {
            let reply = reqwest::get(url).await.unwrap();
            (reply.status().as_u16(), reply.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = ready(&server).await;
    assert_eq!((status, body["redis"]["ok"].as_bool()), (200, Some(true)), "{body}");

    redis.stop();
    let (status, body) = ready(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unready");
    assert_eq!(body["redis"]["ok"], false);
    assert!(body["redis"]["error"].is_string());
    assert_eq!(body["database"]["ok"], true, "the database still answers");
    // Still alive: health says nothing of its dependencies.
    assert_eq!(reqwest::get(format!("{}/health", server.url)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_keeps_the_callers() {
    let app = TestApp::new().await;
    let fresh = app.get("/api/batches").await;
    let id = fresh.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let again = app.get("/api/batches").await;
    assert_ne!(again.headers["x-request-id"], fresh.headers["x-request-id"], "a new id per request");

    let request =
        Request::get("/no/such/page").header("x-request-id", "trace-me-7").body(Body::empty()).unwrap();
    assert_eq!(app.send(request).await.headers["x-request-id"], "trace-me-7");
}

/// Through the real binary: `LOG_FORMAT=json` writes one JSON object a line, and the lines
/// logged while serving a request carry its id.
#[tokio::test]
async fn json_log_lines_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/logs.db", dir.path().display());
    let bin = env!("CARGO_BIN_EXE_batchwatch");
    let created = Command::new(bin)
        .args(["user", "create", "logger"])
        .env("DATABASE_URL", &database_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&created.stdout);
    let token = stdout.lines().find_map(|l| l.strip_prefix("token:")).unwrap().trim().to_owned();

    let port = free_port();
    let mut child = Command::new(bin)
        .env("DATABASE_URL", &database_url)
        .env("REDIS_URL", "memory://")
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("WORKERS", "0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let found = tokio::task::spawn_blocking(move || {
        lines.map_while(Result::ok).find(|line| line.contains("batch created"))
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let sent = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/batches"))
            .bearer_auth(&token)
            .header("x-request-id", "trace-me-42")
            .json(&serde_json::json!({ "name": "logged", "items": ["a"] }))
            .send()
            .await;
        if let Ok(reply) = sent {
            break reply.status();
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(created, 201);
    let line = tokio::time::timeout(Duration::from_secs(10), found).await;
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a 'batch created' line in time").unwrap().expect("a 'batch created' line");
    let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(entry["level"], "INFO", "{entry}");
    assert_eq!(entry["span"]["request_id"], "trace-me-42", "{entry}");
}
