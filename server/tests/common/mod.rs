//! A real server router over a fresh SQLite file per test, driven in-process with `oneshot`,
//! with a user (`alice`) whose token every helper sends unless told otherwise; `server` starts
//! real servers on loopback ports for streams. Helpers every test file shares live here.
#![allow(dead_code)]

pub mod server;

use std::time::Duration;

use ::server::{config::Config, state::AppState};
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use batchwatch_core::{Role, now};
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub database_url: String,
    /// `alice`'s token, sent by `get`, `post_json` and `post_raw`.
    pub token: String,
    _dir: TempDir,
    _postgres: Option<OwnDatabase>,
}

/// A PostgreSQL database of one test's own, dropped with it.
pub struct OwnDatabase(pub String);

impl OwnDatabase {
    pub fn create(name: &str) -> Self {
        server::psql(&format!("CREATE DATABASE {name}"));
        Self(name.to_owned())
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        server::psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}

/// The host the in-process requests are addressed to, and the origin of its pages.
pub const HOST: &str = "batchwatch.test";
pub const ORIGIN: &str = "http://batchwatch.test";

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks the error shape and returns its code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {v}");
        v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {v}")).to_owned()
    }
}

/// A well-formed id that names no batch and no item.
pub const UNKNOWN_ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

/// Polls `probe` every 20 ms until it gives a value; panics naming `what` after 10 s.
pub async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes every key under a test's prefix from a shared Redis: tests leave nothing behind.
pub fn clean_redis_prefix(redis_url: &str, prefix: &str) {
    let Ok(mut conn) = redis::Client::open(redis_url).and_then(|c| c.get_connection()) else { return };
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut conn).unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
    }
}

/// One row of a table of requests that must be rejected.
pub struct Rejected<'a> {
    pub what: &'a str,
    pub uri: String,
    pub content_type: Option<&'a str>,
    pub body: Vec<u8>,
    pub status: StatusCode,
    pub code: &'a str,
}

/// Posts every case: each gets its status and error code, and none writes anything.
pub async fn assert_rejected(app: &TestApp, cases: Vec<Rejected<'_>>) {
    let before = app.fingerprint().await;
    for case in cases {
        let reply = app.post_raw(&case.uri, case.content_type, case.body).await;
        assert_eq!(reply.status, case.status, "{}: {}", case.what, reply.text());
        assert_eq!(reply.error_code(), case.code, "{}", case.what);
        assert_eq!(app.fingerprint().await, before, "{} wrote to the database", case.what);
    }
}

/// The report route of an item of a batch's JSON.
pub fn report_uri(batch: &Value, item: usize) -> String {
    format!(
        "/api/batches/{}/items/{}/status",
        batch["batch_id"].as_str().unwrap(),
        batch["items"][item]["id"].as_str().unwrap()
    )
}

/// Waits while the one-minute write window is about to turn over, so that a test counting
/// writes sees them all in one window.
pub async fn clear_of_window_edge() {
    let into_window = now().rem_euclid(60_000);
    if into_window > 58_000 {
        tokio::time::sleep(std::time::Duration::from_millis((60_100 - into_window) as u64)).await;
    }
}

/// Creates a user on a server's database; returns their token.
pub async fn create_user(state: &AppState, name: &str, role: Role) -> String {
    let (_, secret) = state.accounts.create_user(name, role, now()).await.unwrap();
    secret.0
}

pub fn leptos_options() -> leptos::config::LeptosOptions {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Leptos.toml");
    leptos_config::get_configuration(Some(path)).unwrap().leptos_options
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A test app whose configuration `change` adjusts first. With `TEST_DATABASE=postgres`
    /// it runs on a fresh PostgreSQL database of its own (dropped with it) instead of a SQLite
    /// file: `./dev.sh test` runs the in-process suites both ways.
    pub async fn with(change: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let postgres = (std::env::var("TEST_DATABASE").as_deref() == Ok("postgres"))
            .then(|| OwnDatabase::create(&format!("bw_test_{}", uuid::Uuid::new_v4().simple())));
        let database_url = match &postgres {
            Some(db) => format!("{}/{}", server::postgres_server_url(), db.0),
            None => format!("sqlite://{}/test.db", dir.path().display()),
        };
        let mut config = Config {
            database_url: database_url.clone(),
            database_max_connections: 4,
            redis_url: "memory://".into(),
            ..Config::from_env()
        };
        change(&mut config);
        let state = ::server::state(config, leptos_options()).await.unwrap();
        let mut app = Self {
            router: ::server::app(state.clone()),
            state,
            database_url,
            token: String::new(),
            _dir: dir,
            _postgres: postgres,
        };
        app.token = app.user("alice").await;
        app
    }

    /// Creates a user and returns their token.
    pub async fn user(&self, name: &str) -> String {
        self.user_with_role(name, Role::User).await
    }

    pub async fn user_with_role(&self, name: &str, role: Role) -> String {
        create_user(&self.state, name, role).await
    }

    /// Signs `token` in through the form, as a browser on this site does; returns the cookie
    /// to send (`bw_session=...`).
    pub async fn sign_in(&self, token: &str) -> String {
        let body = serde_urlencoded::to_string([("token", token), ("next", "/")]).unwrap();
        let reply = self
            .send(
                Request::post("/login")
                    .header(header::HOST, HOST)
                    .header(header::ORIGIN, ORIGIN)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
        let set_cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.get_as(uri, &self.token).await
    }

    pub async fn get_as(&self, uri: &str, token: &str) -> Reply {
        self.send(
            Request::get(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.post_json_as(uri, body, &self.token).await
    }

    pub async fn post_json_as(&self, uri: &str, body: &Value, token: &str) -> Reply {
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        self.send(request.body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()).await
    }

    pub async fn post_raw(&self, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// Creates a batch of `n` items through the API and returns its JSON.
    pub async fn create(&self, name: &str, n: usize) -> Value {
        let items: Vec<String> = (0..n).map(|i| format!("item-{i}.jpg")).collect();
        let reply =
            self.post_json("/api/batches", &serde_json::json!({ "name": name, "items": items })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        reply.json()
    }

    /// Reports an item's status with alice's token.
    pub async fn report(&self, batch: &Value, item: usize, status: &str) -> Reply {
        self.report_as(batch, item, &serde_json::json!({ "status": status }), &self.token).await
    }

    /// Posts a report body for an item of `batch` with `token`.
    pub async fn report_as(&self, batch: &Value, item: usize, body: &Value, token: &str) -> Reply {
        self.post_json_as(&report_uri(batch, item), body, token).await
    }

    /// Everything a write could change, to check that a rejected request wrote nothing.
    pub async fn fingerprint(&self) -> (i64, i64, i64, i64) {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&self.database_url).await.unwrap();
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM items), \
             (SELECT CAST(COALESCE(SUM(seq), 0) AS BIGINT) FROM batches), \
             (SELECT CAST(COALESCE(SUM(updated_at + attempts), 0) AS BIGINT) FROM items)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    }
}
