//! No path breaks the server: thousands of odd request targets (slashes, dots, percent-escapes,
//! raw unicode, very long ones), signed in and out, sent as raw HTTP so that no client library
//! tidies them first. Every answer must come, in time, and be no 5xx.

mod common;

use std::time::Duration;

use common::{
    UNKNOWN_ID,
    server::{LiveServer, Options},
};
use leptos::server_fn::ServerFn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one raw `GET` and returns the status line's code.
async fn status_of(addr: &str, target: &str, token: Option<&str>) -> u16 {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut head)).await;
    read.unwrap_or_else(|_| panic!("no answer in time for {target:?}")).unwrap();
    let text = String::from_utf8_lossy(&head);
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok());
    code.unwrap_or_else(|| panic!("the connection dropped for {target:?}: {text:?}"))
}

/// A request target built from pieces that have broken routers before.
fn target(rng: &mut fastrand::Rng, batch: &str) -> String {
    let pieces: Vec<String> = vec![
        "batches".into(),
        batch.into(),
        UNKNOWN_ID.into(),
        String::new(),
        ".".into(),
        "..".into(),
        "%2e%2e".into(),
        "%2F".into(),
        "%00".into(),
        "%".into(),
        "%zz".into(),
        "é".into(),
        "%C3%A9".into(),
        "%FF%FE".into(),
        "api".into(),
        "stream".into(),
        "items".into(),
        "leptos".into(),
        <app::api::GetBatch as ServerFn>::PATH.trim_start_matches('/').into(),
        <app::api::ListBatches as ServerFn>::PATH.trim_start_matches('/').into(),
        "login".into(),
        "pkg".into(),
        "batchwatch.wasm".into(),
        "~".into(),
        ";x=1".into(),
        "*".into(),
        "x".repeat(rng.usize(1..9_000)),
    ];
    let segments = rng.usize(1..7);
    let mut path = String::new();
    if rng.u8(..8) == 0 {
        path.push('/');
    }
    for _ in 0..segments {
        path.push('/');
        path.push_str(&pieces[rng.usize(..pieces.len())]);
    }
    if rng.bool() {
        path.push('/');
    }
    match rng.u8(..6) {
        0 => path.push_str("?id=nope&page[limit]=x"),
        1 => path.push_str(&format!("?id={batch}")),
        2 => path.push_str("?%%%"),
        _ => {}
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_odd_paths_get_an_answer_and_never_a_5xx() {
    let server = LiveServer::start(Options { redis_url: "memory://".into(), ..Options::default() }).await;
    let batch = server.create(2).await;
    let id = batch["batch_id"].as_str().unwrap();
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut rng = fastrand::Rng::with_seed(0x6261_7463_6877);

    let mut known = vec![
        format!("/batches/{id}/"),
        format!("/batches/{id}//"),
        format!("//batches/{id}/"),
        format!("/batches/{id}/."),
        format!("/batches/{id}/.."),
        "/batches/".into(),
        "/batches".into(),
        "/login/".into(),
        "/api/batches/".into(),
        format!("/api/batches/{id}/stream/"),
        "//evil.example/".into(),
        format!("/{}", "a/".repeat(2_000)),
    ];
    known.extend((0..1_500).map(|_| target(&mut rng, id)));
    let mut answered = std::collections::BTreeMap::<u16, usize>::new();
    for path in &known {
        for token in [Some(server.token.as_str()), None] {
            let code = status_of(&addr, path, token).await;
            assert!(code < 500, "{code} for {path:?} (signed in: {})", token.is_some());
            *answered.entry(code).or_default() += 1;
        }
    }
    // The page itself still works afterwards, and a trailing slash leads to it.
    assert_eq!(status_of(&addr, &format!("/batches/{id}"), Some(&server.token)).await, 200);
    assert_eq!(status_of(&addr, &format!("/batches/{id}/"), Some(&server.token)).await, 308);
    assert!(answered.keys().any(|&c| c == 404) && answered.keys().any(|&c| c == 308), "{answered:?}");
}

#[tokio::test]
async fn a_trailing_slash_redirects_to_the_canonical_page() {
    let server = LiveServer::start(Options { redis_url: "memory://".into(), ..Options::default() }).await;
    let batch = server.create(1).await;
    let id = batch["batch_id"].as_str().unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (path, location) in [
        (format!("/batches/{id}/"), format!("/batches/{id}")),
        (format!("/batches/{id}///?x=1"), format!("/batches/{id}?x=1")),
        ("//evil.example/".to_owned(), "/evil.example".to_owned()),
    ] {
        let reply = http.get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(reply.status(), 308, "{path}");
        assert_eq!(reply.headers()["location"], location.as_str(), "{path}");
    }
    // Followed, it lands on the page, signed in.
    let page = server.http.get(format!("{}/batches/{id}/", server.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(r#"role="progressbar""#));
}
