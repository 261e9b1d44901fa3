//! Who may do what: tokens, sessions, ownership, roles, the same-origin rule and the limits.
//! Each rejected request must get its JSON error and change nothing.

mod common;

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use batchwatch_core::{Role, now};
use common::{
    HOST, ORIGIN, Reply, TestApp, UNKNOWN_ID, eventually, report_uri,
    server::{LiveServer, Options, PrivateRedis, client, user},
};
use serde_json::{Value, json};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Every API route, with a batch and an item of `batch` where it needs them.
fn api_routes(batch: &Value) -> Vec<(Method, String, Option<Value>)> {
    let id = batch["batch_id"].as_str().unwrap();
    vec![
        (Method::GET, "/api/batches".into(), None),
        (Method::POST, "/api/batches".into(), Some(json!({ "name": "x", "items": ["a"] }))),
        (Method::GET, format!("/api/batches/{id}"), None),
        (Method::GET, format!("/api/batches/{id}/stream"), None),
        (Method::POST, report_uri(batch, 0), Some(json!({ "status": "processing" }))),
        (
            Method::POST,
            format!("/api/batches/{id}/items/status"),
            Some(json!([{ "item": batch["items"][0]["id"], "status": "processing" }])),
        ),
        (Method::GET, format!("/api/batches/{id}/items"), None),
        (Method::POST, format!("/api/batches/{id}/items"), Some(json!({ "items": ["b"] }))),
        (Method::GET, format!("/api/batches/{id}/export"), None),
    ]
}

async fn call(app: &TestApp, method: &Method, uri: &str, body: &Option<Value>, auth: Option<&str>) -> Reply {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let body = match body {
        Some(v) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(v).unwrap())
        }
        None => Body::empty(),
    };
    app.send(request.body(body).unwrap()).await
}

#[tokio::test]
async fn no_token_a_bad_token_or_a_revoked_token_is_401_and_changes_nothing() {
    let app = TestApp::new().await;
    let batch = app.create("mine", 1).await;
    let revoked = app.user("mallory").await;
    let who = app.state.accounts.authenticate(&revoked).await.unwrap().unwrap();
    app.state.accounts.revoke(&who.token_id, 1).await.unwrap();
    let before = app.fingerprint().await;

    let bad = bearer("bw_0000000000000000000000000000000000000000000000000000000000000000");
    let revoked = bearer(&revoked);
    for (method, uri, body) in api_routes(&batch) {
        for auth in [None, Some(bad.as_str()), Some(revoked.as_str()), Some("Basic YWxpY2U6eA==")] {
            let reply = call(&app, &method, &uri, &body, auth).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {auth:?}: {}",
                reply.text()
            );
            assert_eq!(reply.error_code(), "unauthorized");
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    assert_eq!(app.fingerprint().await, before);
}

#[tokio::test]
async fn another_users_batch_is_404_like_a_missing_one_and_untouched() {
    let app = TestApp::new().await;
    let batch = app.create("alice's", 2).await;
    let bob = app.user("bob").await;
    let id = batch["batch_id"].as_str().unwrap();
    let before = app.fingerprint().await;

    let missing = app.get_as(&format!("/api/batches/{UNKNOWN_ID}"), &bob).await;
    let theirs = app.get_as(&format!("/api/batches/{id}"), &bob).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.body, missing.body, "no existence leak: the same answer as for no batch");

    let stream = app.get_as(&format!("/api/batches/{id}/stream"), &bob).await;
    assert_eq!(stream.status, StatusCode::NOT_FOUND);
    let report = app.report_as(&batch, 0, &json!({ "status": "processing" }), &bob).await;
    assert_eq!(report.status, StatusCode::NOT_FOUND);
    assert_eq!(report.error_code(), "not_found");
    assert_eq!(app.fingerprint().await, before, "bob's report wrote nothing");

    let list = app.get_as("/api/batches", &bob).await;
    assert_eq!(list.json(), json!([]), "bob's list holds only bob's batches");
    app.post_json_as("/api/batches", &json!({ "name": "bob's", "items": ["b"] }), &bob).await;
    let names = |reply: Reply| -> Vec<String> {
        reply.json().as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(app.get_as("/api/batches", &bob).await), ["bob's"]);
    assert_eq!(names(app.get("/api/batches").await), ["alice's"]);

    // The owner still reaches it, cache-first and after the cache is gone.
    assert_eq!(app.get(&format!("/api/batches/{id}")).await.status, StatusCode::OK);
    let page = app.get_as(&format!("/batches/{id}"), &bob).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "the page too");
    assert!(!page.text().contains("alice&#x27;s") && !page.text().contains("alice's"));
}

#[tokio::test]
async fn a_worker_token_reports_for_any_batch_and_does_nothing_else() {
    let app = TestApp::new().await;
    let batch = app.create("alice's", 1).await;
    let worker = app.user_with_role("worker-1", Role::Worker).await;

    let report = app.report_as(&batch, 0, &json!({ "status": "processing" }), &worker).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    assert_eq!(report.json()["counts"]["processing"], 1);

    let before = app.fingerprint().await;
    for (method, uri, body) in
        api_routes(&batch).into_iter().filter(|(m, u, _)| !(m == Method::POST && u.ends_with("/status")))
    {
        let reply = call(&app, &method, &uri, &body, Some(&bearer(&worker))).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {uri}: {}", reply.text());
        assert_eq!(reply.error_code(), "forbidden");
    }
    assert_eq!(app.fingerprint().await, before);
}

/// A form post to `/login` from this site.
fn login_request(token: &str, origin: Option<&str>, forwarded_proto: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/login")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    if let Some(proto) = forwarded_proto {
        request = request.header("x-forwarded-proto", proto);
    }
    let body = serde_urlencoded::to_string([("token", token), ("next", "/batches/x")]).unwrap();
    request.body(Body::from(body)).unwrap()
}

/// The home page's status for a browser sending `cookie`: 200 signed in, 303 to /login not.
async fn home_status(app: &TestApp, cookie: String) -> StatusCode {
    app.send(with_cookie(Method::GET, "/", &cookie).body(Body::empty()).unwrap()).await.status
}

fn with_cookie(method: Method, uri: &str, cookie: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri).header(header::HOST, HOST).header(header::COOKIE, cookie)
}

#[tokio::test]
async fn signing_in_sets_a_strict_cookie_and_the_session_opens_pages() {
    let app = TestApp::new().await;
    let reply = app.send(login_request(&app.token, Some(ORIGIN), None)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers[header::LOCATION], "/batches/x", "back where the browser was sent from");
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(part), "{part} missing from {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: a Secure cookie would never come back");
    assert!(!cookie.contains(&app.token), "the cookie is not the token");

    // Anyone can send X-Forwarded-Proto: from a peer that is not a trusted proxy it changes
    // nothing.
    let https = app.send(login_request(&app.token, Some(ORIGIN), Some("https"))).await;
    assert!(https.headers[header::SET_COOKIE].to_str().unwrap().starts_with("bw_session="));

    let session = cookie.split(';').next().unwrap();
    let home = app.send(with_cookie(Method::GET, "/", session).body(Body::empty()).unwrap()).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.text().contains("alice"), "the header names who is signed in");
}

#[tokio::test]
async fn a_bad_or_worker_token_does_not_sign_in() {
    let app = TestApp::new().await;
    let worker = app.user_with_role("worker-1", Role::Worker).await;
    for (token, reason) in [("bw_nope", "invalid"), (worker.as_str(), "worker")] {
        let reply = app.send(login_request(token, Some(ORIGIN), None)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert!(reply.headers.get(header::SET_COOKIE).is_none());
        let location = reply.headers[header::LOCATION].to_str().unwrap();
        assert_eq!(location, format!("/login?error={reason}&next=%2Fbatches%2Fx"));
        let page = app.send(Request::get(location).body(Body::empty()).unwrap()).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.text().contains("role=\"alert\""));
    }
}

#[tokio::test]
async fn signed_out_pages_go_to_login_and_server_functions_answer_401() {
    let app = TestApp::new().await;
    for (uri, next) in [("/", "%2F"), ("/batches/x?y=1", "%2Fbatches%2Fx%3Fy%3D1")] {
        let reply = app.send(Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(reply.headers[header::LOCATION], format!("/login?next={next}"));
    }
    let login = app.send(Request::get("/login").body(Body::empty()).unwrap()).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.text().contains("action=\"/login\""));

    let before = app.fingerprint().await;
    let reply = app
        .send(
            Request::post(demo_path())
                .header(header::HOST, HOST)
                .header(header::ORIGIN, ORIGIN)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("count=3"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_code(), "unauthorized");
    assert_eq!(app.fingerprint().await, before);
}

fn demo_path() -> &'static str {
    <app::api::CreateDemoBatch as leptos::server_fn::ServerFn>::PATH
}

/// The home page's demo form, posted with the session cookie.
fn demo_post(cookie: &str, origin: Option<(&str, &str)>) -> Request<Body> {
    let mut request = with_cookie(Method::POST, demo_path(), cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some((name, value)) = origin {
        request = request.header(name, value);
    }
    request.body(Body::from("count=2")).unwrap()
}

#[tokio::test]
async fn cookie_writes_must_come_from_this_site() {
    let app = TestApp::new().await;
    let cookie = app.sign_in(&app.token).await;
    let before = app.fingerprint().await;
    for origin in [
        Some(("origin", "https://evil.example")),
        Some(("origin", "null")),
        Some(("referer", "https://evil.example/page")),
        None,
    ] {
        let reply = app.send(demo_post(&cookie, origin)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin:?}: {}", reply.text());
        assert_eq!(reply.error_code(), "forbidden");
    }
    let logout = app
        .send(
            with_cookie(Method::POST, "/logout", &cookie)
                .header(header::ORIGIN, "https://evil.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(logout.status, StatusCode::FORBIDDEN, "a cross-site page cannot sign you out either");
    let login = app.send(login_request(&app.token, Some("https://evil.example"), None)).await;
    assert_eq!(login.status, StatusCode::FORBIDDEN, "nor sign you in to its own account");
    assert_eq!(app.fingerprint().await, before);

    for origin in [("origin", ORIGIN), ("referer", "http://batchwatch.test/")] {
        let batches = app.fingerprint().await.0;
        let reply = app.send(demo_post(&cookie, Some(origin))).await;
        assert_eq!(reply.status, StatusCode::OK, "{origin:?}: {}", reply.text());
        assert_eq!(app.fingerprint().await.0, batches + 1, "the same-site form created its batch");
    }
    // A token is not sent by browsers on their own: no origin needed.
    let reply = app.post_json("/api/batches", &json!({ "name": "api", "items": ["a"] })).await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn logging_out_or_revoking_the_token_ends_the_session() {
    let app = TestApp::new().await;
    let home = |cookie: String| home_status(&app, cookie);
    let cookie = app.sign_in(&app.token).await;
    assert_eq!(home(cookie.clone()).await, StatusCode::OK);
    let out = app
        .send(
            with_cookie(Method::POST, "/logout", &cookie)
                .header(header::ORIGIN, ORIGIN)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(home(cookie).await, StatusCode::SEE_OTHER, "the old cookie no longer signs in");

    let token = app.user("carol").await;
    let (first, second) = (app.sign_in(&token).await, app.sign_in(&token).await);
    assert_eq!(home(first.clone()).await, StatusCode::OK);
    let who = app.state.accounts.authenticate(&token).await.unwrap().unwrap();
    app.state.accounts.revoke(&who.token_id, 1).await.unwrap();
    assert_eq!(home(first).await, StatusCode::SEE_OTHER, "revoking the token ended its sessions");
    assert_eq!(home(second).await, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn writes_over_the_limit_get_429_and_change_nothing() {
    let app = TestApp::with(|c| c.writes_per_minute = 3).await;
    common::clear_of_window_edge().await;
    let body = json!({ "name": "n", "items": ["a"] });
    for _ in 0..3 {
        assert_eq!(app.post_json("/api/batches", &body).await.status, StatusCode::CREATED);
    }
    let before = app.fingerprint().await;
    let reply = app.post_json("/api/batches", &body).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.error_code(), "too_many_requests");
    let retry: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(app.fingerprint().await, before);

    // Per token: another user, and reads, are not held back.
    let bob = app.user("bob").await;
    assert_eq!(app.post_json_as("/api/batches", &body, &bob).await.status, StatusCode::CREATED);
    assert_eq!(app.get("/api/batches").await.status, StatusCode::OK);
}

/// The stream limit, on real Redis: a slot per open stream, given back when the stream ends,
/// and a dead server's slots expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_get_429_until_one_ends() {
    let server = LiveServer::start(Options { max_streams_per_user: 2, ..Options::default() }).await;
    let batch = server.create(3).await;
    let first = server.stream(&batch, None).await;
    let _second = server.stream(&batch, None).await;
    let url = format!("{}/api/batches/{}/stream", server.url, batch["batch_id"].as_str().unwrap());

    let third = server.http.get(&url).send().await.unwrap();
    assert_eq!(third.status(), 429);
    let retry: u64 = third.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");

    // Another user has slots of their own.
    let bob = client(&user(&server.state, "bob").await);
    let bobs = bob
        .post(format!("{}/api/batches", server.url))
        .json(&json!({ "name": "b", "items": ["x"] }))
        .send()
        .await
        .unwrap();
    let bobs: Value = bobs.json().await.unwrap();
    let bob_url = format!("{}/api/batches/{}/stream", server.url, bobs["batch_id"].as_str().unwrap());
    assert_eq!(bob.get(&bob_url).send().await.unwrap().status(), 200);

    // Closing a stream gives its slot back.
    drop(first);
    let reopened = wait_for_status(&server.http, &url, 200).await;
    drop(reopened);

    // A crashed server's slot (never renewed, never removed) counts until it expires.
    let key = batchwatch_core::keys::streams_key(&server.prefix, &server.user_id().await);
    let mut redis = redis::Client::open(server.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let soon = now() + 1_500;
    let _: i64 = redis::cmd("ZADD")
        .arg(&key)
        .arg(soon)
        .arg("crashed-server-slot")
        .query_async(&mut redis)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let full = server.http.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 429, "the dead slot still counts");
    wait_for_status(&server.http, &url, 200).await;
}

/// Opens `url` until it answers `status` (a slot is given back by a task after the drop).
async fn wait_for_status(http: &reqwest::Client, url: &str, status: u16) -> reqwest::Response {
    eventually(&format!("{url} to answer {status}"), || async {
        Some(http.get(url).send().await.unwrap()).filter(|reply| reply.status() == status)
    })
    .await
}

/// A browser of its own, signed in to `server` through the form: the client (redirects not
/// followed) and the session cookie to send.
async fn browser_signed_in(server: &LiveServer) -> (reqwest::Client, String) {
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = browser
        .post(format!("{}/login", server.url))
        .header("origin", &server.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("token", server.token.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    (browser, cookie)
}

/// Signs that browser out.
async fn sign_out(server: &LiveServer, browser: &reqwest::Client, cookie: &str) {
    let logout = browser
        .post(format!("{}/logout", server.url))
        .header("cookie", cookie)
        .header("origin", &server.url)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
}

/// Waits up to `limit` for a stream to end with `signed_out`.
async fn ends_signed_out(response: reqwest::Response, limit: Duration) {
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(limit, response.text()).await.expect("the stream ended in time").unwrap();
    assert!(text.ends_with("event: signed_out\ndata: {}\n\n"), "{text}");
}

/// A stream outlives the request that opened it: revoking its token, or signing out of its
/// session, ends it at the latest at the next keep-alive (here without an announcement for the
/// token: the keep-alive's own check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_token_or_signing_out_ends_open_streams() {
    let server = LiveServer::start(Options { keepalive_secs: 1, ..Options::default() }).await;
    let batch = server.create(2).await;
    let stream_url = format!("{}/api/batches/{}/stream", server.url, batch["batch_id"].as_str().unwrap());

    // A session: sign in as a browser would, open the stream with the cookie, sign out.
    let (browser, cookie) = browser_signed_in(&server).await;
    let stream = browser.get(&stream_url).header("cookie", &cookie).send().await.unwrap();
    sign_out(&server, &browser, &cookie).await;
    ends_signed_out(stream, Duration::from_secs(10)).await;

    // A token: revoke it while its stream is open.
    let stream = server.http.get(&stream_url).send().await.unwrap();
    let who = server.state.accounts.authenticate(&server.token).await.unwrap().unwrap();
    server.state.accounts.revoke(&who.token_id, 1).await.unwrap();
    ends_signed_out(stream, Duration::from_secs(10)).await;
}

/// Redis holds the limits, not the data: with it gone, token requests still create and watch
/// (the limits let them through, the database serves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_away_token_requests_still_work() {
    let mut redis = PrivateRedis::start().await;
    let server = LiveServer::start(Options { redis_url: redis.url(), ..Options::default() }).await;
    redis.stop();
    let batch = server.create(2).await;
    let mut events = server.stream(&batch, None).await;
    let first = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut events)).await;
    assert_eq!(first.unwrap().unwrap().event, "snapshot");
}

/// The same ownership rules on PostgreSQL, the database of shared deployments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_holds_on_postgresql() {
    let server = LiveServer::start(Options { postgres: true, ..Options::default() }).await;
    let batch = server.create(2).await;
    let id = batch["batch_id"].as_str().unwrap();
    let bob = client(&user(&server.state, "bob").await);

    let theirs = bob.get(format!("{}/api/batches/{id}", server.url)).send().await.unwrap();
    assert_eq!(theirs.status(), 404);
    let report = bob
        .post(format!("{}{}", server.url, report_uri(&batch, 0)))
        .json(&json!({ "status": "processing" }))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 404);
    let list: Value =
        bob.get(format!("{}/api/batches", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list, json!([]));

    let mine: Value =
        server.http.get(format!("{}/api/batches", server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine[0]["batch_id"], id);
    assert_eq!(server.get(&batch).await.summary.counts.queued, 2, "bob's report changed nothing");
}

/// A sign-in form post from `client`, carrying `cookie` when given.
fn login_from(client: [u8; 4], token: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = login_request(token, Some(ORIGIN), None);
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from((client, 40_000))));
    if let Some(cookie) = cookie {
        request.headers_mut().insert(header::COOKIE, cookie.parse().unwrap());
    }
    request
}

fn error_of(reply: &Reply) -> String {
    let location = reply.headers[header::LOCATION].to_str().unwrap();
    location.split("error=").nth(1).map_or("", |r| r.split('&').next().unwrap()).to_owned()
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_address_and_per_token() {
    let app = TestApp::with(|c| c.sign_ins_per_minute = 3).await;
    common::clear_of_window_edge().await;
    // One address guessing tokens: the fourth try is refused, even with the right token.
    for guess in ["bw_1", "bw_2", "bw_3"] {
        assert_eq!(error_of(&app.send(login_from([10, 0, 0, 1], guess, None)).await), "invalid");
    }
    let limited = app.send(login_from([10, 0, 0, 1], &app.token, None)).await;
    assert_eq!(error_of(&limited), "limit");
    assert!(limited.headers.get(header::SET_COOKIE).is_none());
    let page = app.send(Request::get("/login?error=limit").body(Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.text().contains("Too many sign-in attempts"));

    // One token tried from many addresses: the fourth address is refused too.
    let target = app.user("target").await;
    for address in 2..=4 {
        app.send(login_from([10, 0, 0, address], &target, None)).await;
    }
    assert_eq!(error_of(&app.send(login_from([10, 0, 0, 9], &target, None)).await), "limit");
    // Someone else, elsewhere, signs in as usual.
    let fresh = app.send(login_from([10, 0, 0, 20], &app.user("bob").await, None)).await;
    assert_eq!(fresh.headers[header::LOCATION], "/batches/x");
}

#[tokio::test]
async fn signing_in_again_replaces_the_browser_s_session() {
    let app = TestApp::new().await;
    let home = |cookie: String| home_status(&app, cookie);
    let first = app.sign_in(&app.token).await;
    let reply = app.send(login_from([10, 0, 0, 1], &app.token, Some(&first))).await;
    let second = reply.headers[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(home(second).await, StatusCode::OK);
    assert_eq!(home(first).await, StatusCode::SEE_OTHER, "the old session key no longer works");
}

/// The sign-in page's question before a click: whose account a link's token opens. Open to
/// signed-out browsers, answering only a user's name, and counted like a sign-in attempt.
#[tokio::test]
async fn a_link_token_is_named_before_anyone_signs_in_with_it() {
    let app = TestApp::with(|c| c.sign_ins_per_minute = 3).await;
    common::clear_of_window_edge().await;
    let worker = app.user_with_role("worker-1", Role::Worker).await;
    let path = <app::api::TokenOwner as leptos::server_fn::ServerFn>::PATH;
    let ask = |token: &str| {
        let body = serde_urlencoded::to_string([("token", token)]).unwrap();
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        app.send(request)
    };
    let named = ask(&app.token).await;
    assert_eq!(named.status, StatusCode::OK, "{}", named.text());
    assert_eq!(named.json(), json!("alice"));
    assert!(named.headers.get(header::SET_COOKIE).is_none(), "asking signs nobody in");
    assert_eq!(ask(&worker).await.json(), Value::Null, "a worker's token signs nobody in");
    assert_eq!(ask("bw_nope").await.json(), Value::Null);
    let limited = ask(&app.token).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text());
    assert!(limited.text().contains("too many sign-in attempts"), "{}", limited.text());
}

/// Behind a proxy: `PUBLIC_URL` fixes the origin (scheme included) and an `https` one makes the
/// cookie `__Host-` and Secure; `X-Forwarded-*` count only from `TRUSTED_PROXIES`.
#[tokio::test]
async fn behind_a_proxy_the_public_url_and_trusted_proxies_decide_the_site() {
    let app = TestApp::with(|c| c.public_url = Some("https://batchwatch.test".into())).await;
    let plain = app.send(login_request(&app.token, Some(ORIGIN), None)).await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN, "http://… is not the public https origin");
    let reply = app.send(login_request(&app.token, Some("https://batchwatch.test"), None)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-bw_session=") && cookie.contains("Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let home = app.send(with_cookie(Method::GET, "/", session).body(Body::empty()).unwrap()).await;
    assert_eq!(home.status, StatusCode::OK);
    let value = session.split_once('=').unwrap().1;
    let shadow = format!("bw_session={value}");
    let home = app.send(with_cookie(Method::GET, "/", &shadow).body(Body::empty()).unwrap()).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER, "over HTTPS only the __Host- cookie counts");

    let proxy: std::net::IpAddr = [10, 0, 0, 2].into();
    let app = TestApp::with(|c| c.trusted_proxies = vec![proxy]).await;
    let via = |peer: [u8; 4]| {
        let mut request = login_request(&app.token, Some("https://watch.example"), Some("https"));
        request.headers_mut().insert("x-forwarded-host", "watch.example".parse().unwrap());
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40_000))));
        app.send(request)
    };
    let trusted = via([10, 0, 0, 2]).await;
    assert_eq!(trusted.status, StatusCode::SEE_OTHER, "{}", trusted.text());
    assert!(trusted.headers[header::SET_COOKIE].to_str().unwrap().starts_with("__Host-bw_session="));
    let untrusted = via([198, 51, 100, 7]).await;
    assert_eq!(untrusted.status, StatusCode::FORBIDDEN, "forwarded headers from anyone are not believed");
}

/// Served over TCP, the server knows each request's peer (`serve.rs`): the forwarded scheme and
/// host of a trusted proxy's request count, the same headers from any other peer do not.
#[tokio::test]
async fn over_tcp_the_peer_decides_whether_forwarded_headers_count() {
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    for (trusted_proxies, expected) in
        [(vec![localhost], StatusCode::SEE_OTHER), (vec![], StatusCode::FORBIDDEN)]
    {
        let server = LiveServer::start(Options { trusted_proxies, ..Options::default() }).await;
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let login = browser
            .post(format!("{}/login", server.url))
            .header("origin", "https://watch.example")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "watch.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string([("token", server.token.as_str())]).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), expected);
        if expected == StatusCode::SEE_OTHER {
            let cookie = login.headers()["set-cookie"].to_str().unwrap();
            assert!(cookie.starts_with("__Host-bw_session=") && cookie.contains("Secure"), "{cookie}");
        }
    }
}

/// Revoking a token (through the CLI) or signing out ends the streams it opened at once, on
/// every server, though their keep-alive is 15 s away: both are announced on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_sign_out_end_open_streams_within_a_second() {
    let server = LiveServer::start(Options::default()).await;
    server.subscribed().await;
    let batch = server.create(1).await;
    let url = format!("{}/api/batches/{}/stream", server.url, batch["batch_id"].as_str().unwrap());
    let (browser, cookie) = browser_signed_in(&server).await;
    let by_session = browser.get(&url).header("cookie", &cookie).send().await.unwrap();
    let by_token = server.http.get(&url).send().await.unwrap();
    sign_out(&server, &browser, &cookie).await;
    ends_signed_out(by_session, Duration::from_secs(2)).await;

    let token_id = server.state.accounts.authenticate(&server.token).await.unwrap().unwrap().token_id;
    let revoke = std::process::Command::new(env!("CARGO_BIN_EXE_batchwatch"))
        .args(["user", "revoke", &token_id])
        .env("DATABASE_URL", &server.database_url)
        .env("REDIS_URL", &server.redis_url)
        .env("REDIS_PREFIX", &server.prefix)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    ends_signed_out(by_token, Duration::from_secs(2)).await;
}
