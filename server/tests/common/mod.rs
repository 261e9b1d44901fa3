//! A real server router over a fresh SQLite file per test, driven in-process with `oneshot`,
//! with a user (`alice`) whose token every helper sends unless told otherwise; `live` starts
//! real servers for streams.
#![allow(dead_code)]

pub mod live;

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::Value;
use server::{accounts::Role, config::Config, state::AppState};
use tempfile::TempDir;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub database_url: String,
    /// `alice`'s token, sent by `get`, `post_json` and `post_raw`.
    pub token: String,
    _dir: TempDir,
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

/// Waits while the one-minute write window is about to turn over, so that a test counting
/// writes sees them all in one window.
pub async fn clear_of_window_edge() {
    let into_window = server::batches::now().rem_euclid(60_000);
    if into_window > 58_000 {
        tokio::time::sleep(std::time::Duration::from_millis((60_100 - into_window) as u64)).await;
    }
}

/// Creates a user on a server's database; returns their token.
pub async fn create_user(state: &AppState, name: &str, role: Role) -> String {
    let (_, secret) = state.accounts.create_user(name, role, server::batches::now()).await.unwrap();
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

    /// A test app whose configuration `change` adjusts first.
    pub async fn with(change: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}/test.db", dir.path().display());
        let mut config = Config {
            database_url: database_url.clone(),
            database_max_connections: 4,
            redis_url: "memory://".into(),
            ..Config::from_env()
        };
        change(&mut config);
        let state = server::state(config, leptos_options()).await.unwrap();
        let mut app =
            Self { router: server::app(state.clone()), state, database_url, token: String::new(), _dir: dir };
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
        self.post_raw(uri, Some("application/json"), serde_json::to_vec(body).unwrap()).await
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

    pub async fn report(&self, batch: &Value, item: usize, status: &str) -> Reply {
        let uri = format!(
            "/api/batches/{}/items/{}/status",
            batch["batch_id"].as_str().unwrap(),
            batch["items"][item]["id"].as_str().unwrap()
        );
        self.post_json(&uri, &serde_json::json!({ "status": status })).await
    }

    /// Everything a write could change, to check that a rejected request wrote nothing.
    pub async fn fingerprint(&self) -> (i64, i64, i64, i64) {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&self.database_url).await.unwrap();
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM items), \
             (SELECT COALESCE(SUM(seq), 0) FROM batches), \
             (SELECT COALESCE(SUM(updated_at + attempts), 0) FROM items)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    }
}
