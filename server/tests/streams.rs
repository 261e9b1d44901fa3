//! Live progress against the real Redis: one subscription per server, ordered events ending
//! on the terminal state, slow watchers, `Last-Event-ID`, and Redis restarting mid-batch.

mod common;

use std::time::Duration;

use batchwatch_core::{BatchId, BatchStatus, BatchSummary, Counts, StatusReport};
use bytes::Bytes;
use common::{
    eventually,
    server::{LiveServer, Options, PrivateRedis, assert_ends_on, read_to_end},
};
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use server::{
    batches::Access,
    redis_conn::RedisTarget,
    store::{cache::Cache, items::Changes},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_watchers_share_one_subscription_and_end_on_the_terminal_state() {
    let redis = PrivateRedis::start().await;
    let server =
        LiveServer::start(Options { redis_url: redis.url(), workers: 2, ..Options::default() }).await;
    // Wait for the hub's subscription before anything is published.
    server.subscribed().await;
    let batch = server.create(20).await;
    let mut watchers = Vec::new();
    for _ in 0..50 {
        watchers.push(server.stream(&batch, None).await);
    }
    let numpat: i64 = redis.query(redis::cmd("PUBSUB").arg("NUMPAT")).await;
    let clients: String = redis.query(redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub")).await;
    assert_eq!(numpat, 2, "two pattern subscriptions: batches' changes and users'");
    assert_eq!(clients.lines().count(), 1, "one pub/sub connection: {clients}");

    let streams = futures::future::join_all(watchers.into_iter().map(read_to_end)).await;
    let final_state = server.get(&batch).await.summary;
    let final_seq = final_state.seq;
    assert_eq!(final_state.status, BatchStatus::Completed);
    // 20 items, two changes each after the creation at seq 1, some committed together.
    assert!(final_seq <= 41, "{final_seq}");
    for seen in &streams {
        assert_eq!(seen.first().map(|(e, _)| e.as_str()), Some("snapshot"));
        assert_ends_on(seen, final_seq);
    }
    assert_eq!(server.state.batches.hub().watched(), 0, "every ring is released once its watchers leave");
}

#[tokio::test]
async fn last_event_id_skips_the_snapshot_the_client_has() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(1).await;
    server.report(&batch, 0, "processing").await;

    let mut current = server.stream(&batch, Some(2)).await;
    let mut stale = server.stream(&batch, Some(1)).await;
    let first = stale.next().await.unwrap();
    assert_eq!((first.event.as_str(), first.id.as_str()), ("snapshot", "2"));

    server.report(&batch, 0, "done").await;
    let next = current.next().await.unwrap();
    assert_eq!(next.event, "progress", "no duplicate snapshot for a client already at seq 2");
    assert_eq!(next.id, "3");
    let event: serde_json::Value = serde_json::from_str(&next.data).unwrap();
    assert_eq!(event["items"].as_array().unwrap().len(), 1, "an event carries only the changed item");
    assert_eq!(event["status"], "completed");
    assert_eq!(current.next().await.unwrap().event, "complete");
    assert!(current.next().await.is_none(), "the stream closes after complete");

    // A finished batch: a client that has the last state gets `complete` at once.
    let done = read_to_end(server.stream(&batch, Some(3)).await).await;
    assert_eq!(done.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["complete"]);
}

#[tokio::test]
async fn the_manual_reconnect_query_parameter_resumes_too() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(1).await;
    let url =
        format!("{}/api/batches/{}/stream?last_event_id=1", server.url, batch["batch_id"].as_str().unwrap());
    let response = server.http.get(url).send().await.unwrap();
    let mut events = Box::pin(eventsource_stream::Eventsource::eventsource(response.bytes_stream()));
    server.report(&batch, 0, "processing").await;
    let first = events.next().await.unwrap().unwrap();
    assert_eq!((first.event.as_str(), first.id.as_str()), ("progress", "2"));
}

#[tokio::test]
async fn a_watcher_that_stops_reading_skips_ahead_and_gets_the_latest_state() {
    // Every change its own event, at once: far more of them than the ring holds.
    let server = LiveServer::start(Options { event_interval_ms: 0, ..Options::default() }).await;
    // Large events, many changes: far more than the hub's ring, the sockets' buffers and
    // hyper's write buffer together hold.
    let items = 1_000;
    let batch =
        server.create_named((0..items).map(|i| format!("{i:04}-{}", "x".repeat(480))).collect()).await;
    let mut conn = open_unread(&server, &batch, Via::OwnConnection).await;
    for i in 0..items {
        server.report(&batch, i, "processing").await;
        server.report(&batch, i, "done").await;
    }
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8(raw).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let seen: Vec<(String, Option<serde_json::Value>)> = body
        .split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?.to_owned();
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            let data = data
                .filter(|_| event == "snapshot" || event == "progress")
                .map(|d| serde_json::from_str(d).unwrap());
            Some((event, data))
        })
        .collect();

    let published = 2 * items;
    let progress_events = seen.iter().filter(|(e, _)| e == "progress").count();
    let snapshots = seen.iter().filter(|(e, _)| e == "snapshot").count();
    assert!(progress_events < published, "a slow watcher must skip: got all {progress_events} events");
    assert!(snapshots >= 2, "it jumped ahead with a fresh snapshot");
    assert_ends_on(&seen, 1 + published as u64);
}

/// Who answers a stream: the server's own lean path, for a connection whose first request it
/// is (see `serve/stream_connection.rs`), or hyper, for one asked on a connection kept alive
/// from an earlier request.
#[derive(Clone, Copy, Debug)]
enum Via {
    OwnConnection,
    KeptAlive,
}

/// Opens a batch's stream as a client with a tiny receive buffer that reads nothing until the
/// test says so. HTTP/1.0 keeps the body unchunked: the raw bytes are the event stream itself.
async fn open_unread(server: &LiveServer, batch: &serde_json::Value, via: Via) -> tokio::net::TcpStream {
    let addr = server.url.trim_start_matches("http://").to_owned();
    let path = format!("/api/batches/{}/stream", batch["batch_id"].as_str().unwrap());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr.parse().unwrap()).await.unwrap();
    if let Via::KeptAlive = via {
        conn.write_all(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"}") {
            let mut byte = [0];
            assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "{}", String::from_utf8_lossy(&answer));
            answer.push(byte[0]);
        }
    }
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n", server.token);
    conn.write_all(request.as_bytes()).await.unwrap();
    eventually("the stream to open", || async { (server.state.batches.hub().watched() == 1).then_some(()) })
        .await;
    conn
}

/// A batch whose items have long names: its changes make megabytes of events.
async fn batch_too_big_for_the_buffers(server: &LiveServer) -> serde_json::Value {
    let names = |range: std::ops::Range<u32>| range.map(|i| format!("{i:04}-{}", "x".repeat(480))).collect();
    let batch = server.create_named(names(0..1_900)).await;
    // More than a request body may hold at once: the rest is appended.
    let url = format!("{}/api/batches/{}/items", server.url, batch["batch_id"].as_str().unwrap());
    let more: Vec<String> = names(1_900..4_000);
    let appended = server.http.post(url).json(&serde_json::json!({ "items": more })).send().await.unwrap();
    assert_eq!(appended.status(), 200);
    batch
}

/// Moves every item of the batch to processing then done: over 2 MB of events (each item at
/// least once, however the hub joins them), more than the kernel's buffers and hyper's write
/// buffer hold. A client that reads nothing stalls its connection, and hyper stops polling
/// the stream's body.
async fn flood(server: &LiveServer, batch: &serde_json::Value) {
    let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
    let items: Vec<_> = server.get(batch).await.items.iter().map(|item| item.id).collect();
    for status in ["processing", "done"] {
        for chunk in items.chunks(1_000) {
            let report = StatusReport { status: status.parse().unwrap(), error: None };
            let reports = chunk.iter().map(|item| (*item, report.clone())).collect();
            server.state.batches.report_many(Access::Any, id, reports).await.unwrap();
        }
    }
}

async fn released(server: &LiveServer, what: &str) {
    eventually(what, || async { (server.state.batches.hub().watched() == 0).then_some(()) }).await;
}

/// The stream's timers run whether or not its client reads: at its maximum age it ends, lets
/// go of its ring and gives its place back, though its connection is stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_still_ends_at_its_age_and_gives_its_place_back() {
    let server =
        LiveServer::start(Options { max_streams_per_user: 1, max_age_secs: 2, ..Options::default() }).await;
    let batch = batch_too_big_for_the_buffers(&server).await;
    let _unread = open_unread(&server, &batch, Via::KeptAlive).await;
    flood(&server, &batch).await;
    released(&server, "the unread stream to end at its maximum age").await;
    let url = format!("{}/api/batches/{}/stream", server.url, batch["batch_id"].as_str().unwrap());
    let next = eventually("its place to be free", || async {
        Some(server.http.get(&url).send().await.unwrap()).filter(|r| r.status() == 200)
    });
    tokio::time::timeout(Duration::from_secs(3), next).await.expect("the place is free at once");
}

/// A revoked token ends its streams whether or not their clients read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_token_ends_a_stream_nobody_reads() {
    let server = LiveServer::start(Options { keepalive_secs: 1, ..Options::default() }).await;
    let batch = batch_too_big_for_the_buffers(&server).await;
    let _unread = open_unread(&server, &batch, Via::OwnConnection).await;
    flood(&server, &batch).await;
    let who = server.state.accounts.authenticate(&server.token).await.unwrap().unwrap();
    server.state.accounts.revoke(&who.token_id, 1).await.unwrap();
    released(&server, "the unread stream to end once its token is revoked").await;
}

/// A connection whose writes stall past `WRITE_STALL_SECS` is dropped by the kernel, and its
/// stream ends with it: nothing else would end a stream that lives for half an hour. Whoever
/// answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_writes_stall_is_dropped() {
    let server = LiveServer::start(Options { write_stall_secs: 1, ..Options::default() }).await;
    for via in [Via::OwnConnection, Via::KeptAlive] {
        let batch = batch_too_big_for_the_buffers(&server).await;
        let mut unread = open_unread(&server, &batch, via).await;
        flood(&server, &batch).await;
        released(&server, "the stalled connection's stream to end").await;
        // The client reads what reached it, then finds the connection gone.
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), unread.read_to_end(&mut raw)).await;
        assert!(read.is_ok(), "{via:?}: the connection was closed");
        assert!(raw.len() < 2_000_000, "{via:?}: the events never got through: {} bytes", raw.len());
        // Told apart by the head: only the lean path says the connection closes after it.
        let head = String::from_utf8_lossy(&raw[..raw.len().min(512)]).to_ascii_lowercase();
        let own = head.split("\r\n\r\n").next().unwrap().contains("connection: close");
        assert_eq!(own, matches!(via, Via::OwnConnection), "{via:?}: {head}");
    }
}

/// The head of an answer on a stream's own connection (see `serve/stream_connection.rs`), and
/// what follows it, read from a raw connection until `until` shows up (`None`: until the server
/// closes).
async fn raw_get(
    server: &LiveServer,
    path: &str,
    until: Option<&str>,
) -> (tokio::net::TcpStream, String, String) {
    let addr = server.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n", server.token);
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0; 4096];
    while until.is_none_or(|until| !String::from_utf8_lossy(&raw).contains(until)) {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    (conn, head.to_ascii_lowercase(), body.to_owned())
}

/// A connection whose first request opens a stream is answered without hyper: the answer is
/// still HTTP/1.1 as hyper writes it (status, the router's headers, a date, the body chunked),
/// says the connection closes after it, and ends its stream as soon as the client leaves, with
/// no write needed to find out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_s_own_connection_answers_as_hyper_would() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(1).await;
    let path = format!("/api/batches/{}/stream", batch["batch_id"].as_str().unwrap());
    let (conn, head, body) = raw_get(&server, &path, Some("event: snapshot")).await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "transfer-encoding: chunked",
        "connection: close",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(line), "{line} missing: {head}");
    }
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // The first chunk: its size in hex, then exactly that many bytes.
    let (size, rest) = body.split_once("\r\n").unwrap();
    let size = usize::from_str_radix(size, 16).unwrap();
    assert_eq!(&rest[..size], "retry: 1000\n\n");
    assert_eq!(&rest[size..size + 2], "\r\n");
    assert_eq!(server.state.batches.hub().watched(), 1);
    drop(conn);
    // The keep-alive is 15 s away: the stream ends because the server saw the client go.
    released(&server, "the stream of a client that left to end").await;

    // An answer that is not a stream: its length is known, and the connection closes after it.
    let unknown = format!("/api/batches/{}/stream", BatchId::new());
    let (_conn, head, body) = raw_get(&server, &unknown, None).await;
    assert!(head.starts_with("http/1.1 404 not found\r\n"), "{head}");
    assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{body}");
}

/// A connection that sends half a request's head, or nothing more after its answer, is closed
/// after `HEADER_TIMEOUT_SECS`; a stream, which sends nothing either, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_is_closed_but_a_stream_is_not() {
    let server = LiveServer::start(Options { header_timeout_secs: 1, ..Options::default() }).await;
    let batch = server.create(1).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut half = tokio::net::TcpStream::connect(&address).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut stream = server.stream(&batch, None).await;
    let started = std::time::Instant::now();
    for (what, connection) in [("half a head", &mut half), ("an idle connection", &mut idle)] {
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut raw)).await;
        assert!(read.is_ok(), "{what} was never closed");
        let answered = String::from_utf8_lossy(&raw).into_owned();
        assert_eq!(answered.starts_with("HTTP/1.1 200"), what == "an idle connection", "{what}: {answered}");
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before its time");
    assert_eq!(stream.next().await.unwrap().event, "snapshot");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.report(&batch, 0, "processing").await;
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(next.is_ok_and(|event| event.is_some()), "the stream, quiet past the timeout, still delivers");
}

/// Reads from `conn` until `text` holds `until` `times` times.
async fn read_until_text(conn: &mut tokio::net::TcpStream, text: &mut String, until: &str, times: usize) {
    let mut buf = [0; 4096];
    while text.matches(until).count() < times {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before {until:?}: {text}");
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
}

/// Between requests a connection kept alive is the server's again, not hyper's: a stream asked
/// next on it (as a browser asks its streams on the connections that loaded the page) is
/// answered lean; requests sent together (pipelined) are all answered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_kept_alive_is_taken_back_between_requests() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(1).await;
    let addr = server.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut text = String::new();
    for _ in 0..2 {
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        read_until_text(&mut conn, &mut text, "\"ok\"}", 1).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(!text.to_ascii_lowercase().contains("connection: close"), "{text}");
        text.clear();
    }
    let path = format!("/api/batches/{}/stream", batch["batch_id"].as_str().unwrap());
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", server.token);
    conn.write_all(request.as_bytes()).await.unwrap();
    read_until_text(&mut conn, &mut text, "event: snapshot", 1).await;
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok") && head.contains("connection: close"), "{head}");

    let mut pipelined = tokio::net::TcpStream::connect(addr).await.unwrap();
    let two = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2) + &request;
    pipelined.write_all(two.as_bytes()).await.unwrap();
    let mut text = String::new();
    read_until_text(&mut pipelined, &mut text, "event: snapshot", 1).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
    assert_eq!(text.matches("{\"status\":\"ok\"}").count(), 2, "{text}");

    // The next request's first bytes came with the first: hyper holds them when the connection
    // is taken back, and it answers the rest of the connection.
    let mut split = tokio::net::TcpStream::connect(addr).await.unwrap();
    split.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /hea").await.unwrap();
    let mut text = String::new();
    read_until_text(&mut split, &mut text, "\"ok\"}", 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    split.write_all(b"lth HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    read_until_text(&mut split, &mut text, "\"ok\"}", 2).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
}

/// A connection that carried a request with a body read whole (a form's `POST`, a creation)
/// is taken back too, and a stream asked next on it is answered lean. One whose body was not
/// read (refused before it) stays hyper's: what is left of the body is not taken for a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_taken_back_after_a_body_read_whole_only() {
    let server = LiveServer::start(Options::default()).await;
    let addr = server.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The head of a creation whose body, `len` bytes of `content_type`, follows.
    let create = |content_type: &str, len: usize| {
        format!(
            "POST /api/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {len}\r\n\r\n",
            server.token
        )
    };
    let body = r#"{"name":"kept","items":["a.jpg"]}"#;
    conn.write_all((create("application/json", body.len()) + body).as_bytes()).await.unwrap();
    let mut text = String::new();
    read_until_text(&mut conn, &mut text, "\"seq\"", 1).await;
    assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
    let id = text.split("\"batch_id\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    text.clear();
    let stream = format!(
        "GET /api/batches/{id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token
    );
    conn.write_all(stream.as_bytes()).await.unwrap();
    read_until_text(&mut conn, &mut text, "event: snapshot", 1).await;
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok") && head.contains("connection: close"), "{head}");

    // Refused for its type before its body came: hyper, which knows where the body ends, keeps
    // the connection (and closes it: it does not wait for a body nobody reads), so the body's
    // bytes sent after the answer are never taken for a request.
    let mut refused = tokio::net::TcpStream::connect(addr).await.unwrap();
    let junk = "GET /nowhere HTTP/1.1\r\n\r\n";
    refused.write_all(create("text/plain", junk.len()).as_bytes()).await.unwrap();
    let mut text = String::new();
    read_until_text(&mut refused, &mut text, "}}", 1).await;
    assert!(text.starts_with("HTTP/1.1 415 "), "{text}");
    // The connection may be closed already: then the write or the read fails, as it should.
    let _ = refused.write_all(format!("{junk}GET /health HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), refused.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("404"), "the body was taken for a request: {rest}");
}

/// An HTTP/2 connection to `server` with prior knowledge (as a proxy speaking h2c opens one),
/// and its task, which ends when the connection does.
async fn h2c_connection(
    server: &LiveServer,
) -> (hyper::client::conn::http2::SendRequest<Empty<Bytes>>, tokio::task::JoinHandle<hyper::Result<()>>) {
    let tcp = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://")).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    (sender, tokio::spawn(connection))
}

/// A batch's stream, asked for on an HTTP/2 connection.
async fn h2c_stream(
    server: &LiveServer,
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    batch: &Value,
) -> hyper::Response<hyper::body::Incoming> {
    let url = format!("{}/api/batches/{}/stream", server.url, batch["batch_id"].as_str().unwrap());
    let request = axum::http::Request::get(url)
        .header("authorization", format!("Bearer {}", server.token))
        .body(Empty::new())
        .unwrap();
    sender.send_request(request).await.unwrap()
}

/// Reads a body's frames into its text until the text holds `event`.
async fn read_until(body: &mut hyper::body::Incoming, text: &mut String, event: &str) {
    while !text.contains(event) {
        let frame = body.frame().await.unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap_or_default()));
    }
}

/// With `H2C`, a proxy that speaks HTTP/2 to the server (with prior knowledge) carries many
/// streams on one connection: each gets its snapshot and then the batch's changes. An HTTP/1
/// request on another connection is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_h2c_streams_share_one_http2_connection() {
    let server = LiveServer::start(Options { h2c: true, ..Options::default() }).await;
    server.subscribed().await;
    let batch = server.create(1).await;
    let (mut sender, _connection) = h2c_connection(&server).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let response = h2c_stream(&server, &mut sender, &batch).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), axum::http::Version::HTTP_2);
        bodies.push(response.into_body());
    }
    let mut texts = vec![String::new(); bodies.len()];
    for (body, text) in bodies.iter_mut().zip(&mut texts) {
        read_until(body, text, "event: snapshot").await;
    }
    server.report(&batch, 0, "processing").await;
    for (body, text) in bodies.iter_mut().zip(&mut texts) {
        let progress =
            tokio::time::timeout(Duration::from_secs(5), read_until(body, text, "event: progress"));
        assert!(progress.await.is_ok(), "no change event on a shared connection: {text}");
        assert!(text.contains("\"processing\""), "{text}");
    }
    assert_eq!(server.get(&batch).await.summary.counts.processing, 1, "HTTP/1 beside it");
}

/// An HTTP/2 connection that sends no answer for the header timeout is shut down, as an idle
/// HTTP/1 connection is; one carrying a stream is not, however quiet the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_lives_while_it_carries_a_stream() {
    let server = LiveServer::start(Options { h2c: true, header_timeout_secs: 1, ..Options::default() }).await;
    server.subscribed().await;
    let batch = server.create(1).await;
    let (_unused, unused_connection) = h2c_connection(&server).await;
    let (mut sender, connection) = h2c_connection(&server).await;
    let started = std::time::Instant::now();
    let mut body = h2c_stream(&server, &mut sender, &batch).await.into_body();

    let closed = tokio::time::timeout(Duration::from_secs(10), unused_connection).await;
    assert!(closed.is_ok(), "a connection with no request was never closed");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before its time");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!connection.is_finished(), "the stream's connection was closed under it");
    server.report(&batch, 0, "processing").await;
    let mut text = String::new();
    let progress =
        tokio::time::timeout(Duration::from_secs(5), read_until(&mut body, &mut text, "event: progress"));
    assert!(progress.await.is_ok(), "the stream, quiet past the timeout, still delivers: {text}");
    // Its last stream gone, the connection is idle and goes too.
    drop(body);
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(closed.is_ok(), "the connection outlived its last stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_survive_redis_restarting_mid_batch() {
    let mut redis = PrivateRedis::start().await;
    let server = LiveServer::start(Options {
        redis_url: redis.url(),
        workers: 2,
        item_delay: Duration::from_millis(30),
        failure_rate: 0.3,
        ..Options::default()
    })
    .await;
    server.subscribed().await;
    let batch = server.create(40).await;
    let mut watchers = Vec::new();
    for _ in 0..5 {
        watchers.push(tokio::spawn(read_to_end(server.stream(&batch, None).await)));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart().await;

    let mut results = Vec::new();
    for w in watchers {
        results.push(w.await.unwrap());
    }
    let final_state = server.get(&batch).await.summary;
    assert!(server.state.batches.hub().subscriptions() >= 2, "the hub subscribed again");
    assert_eq!(final_state.counts.finished(), 40, "every item went through processing and an outcome");
    for seen in &results {
        assert_ends_on(seen, final_state.seq);
        let last = seen.iter().rev().find_map(|(_, d)| d.as_ref()).unwrap();
        assert_eq!(last["counts"], serde_json::to_value(final_state.counts).unwrap());
        assert_eq!(last["status"], final_state.status.as_str());
    }
}

/// A batch that finished while Redis was away: the summary cached before (which a Redis with
/// its data brings back) must not be answered until it expires.
#[tokio::test]
async fn a_change_redis_missed_replaces_the_older_summary_once_it_answers() {
    let mut redis = PrivateRedis::start().await;
    let cache = Cache::redis(
        RedisTarget::parse(&redis.url()).unwrap().connect().unwrap(),
        "missed:",
        Duration::from_secs(60),
    );
    let id = BatchId::new();
    let summary = |seq| BatchSummary::new(id, "b".into(), Counts::queued(1), seq, 0);
    cache.fill("u", &summary(1)).await;
    redis.stop();
    cache.apply(&summary(2)).await;
    redis.restart().await;
    // What a Redis back with its data holds (unless the change was written again already).
    cache.fill("u", &summary(1)).await;
    eventually("the missed change to replace the older summary", || async {
        (cache.summary(id).await.map(|(_, s)| s.seq) != Some(1)).then_some(())
    })
    .await;
    let seq: String = redis
        .query(redis::cmd("HGET").arg(batchwatch_core::keys::progress_key("missed:", id)).arg("seq"))
        .await;
    assert_eq!(seq, "2");
}

#[tokio::test]
async fn the_subscription_outlives_its_health_checks() {
    let redis = PrivateRedis::start().await;
    let server = LiveServer::start(Options { redis_url: redis.url(), ..Options::default() }).await;
    server.subscribed().await;
    // Longer than the hub's PING interval: an unanswered or misread PING would resubscribe
    // (and drop the events published meanwhile).
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert_eq!(server.state.batches.hub().subscriptions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_during_a_batch_are_served_from_the_cache() {
    let server = LiveServer::start(Options {
        workers: 2,
        item_delay: Duration::from_millis(10),
        ..Options::default()
    })
    .await;
    let batch = server.create(40).await;
    let page = format!("{}/batches/{}", server.url, batch["batch_id"].as_str().unwrap());
    let before = server.state.batches.cache().stats();
    let mut reads = 0;
    loop {
        // A person reloading the page, and a script polling the API.
        let html = server.http.get(&page).send().await.unwrap().text().await.unwrap();
        assert!(html.contains(r#"role="progressbar""#));
        let state = server.get(&batch).await;
        // Each reads the summary twice: for itself, and for its page of items (40 items: one
        // page), which checks the owner and takes its `seq` from it.
        reads += 4;
        if state.summary.status == BatchStatus::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = server.state.batches.cache().stats();
    let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
    assert_eq!(hits + misses, reads, "every read went through the cache");
    assert!(hits * 10 >= (hits + misses) * 9, "{hits} hits, {misses} misses");
}

/// Commits a report straight in the database and announces nothing: what a process that dies
/// between its commit and its publish leaves behind.
async fn commit_unannounced(server: &LiveServer, batch: &serde_json::Value, item: usize, status: &str) {
    let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
    let item = batch["items"][item]["id"].as_str().unwrap().parse().unwrap();
    let report = StatusReport { status: status.parse().unwrap(), error: None };
    let store = server.state.batches.store();
    let changes = Changes { reports: vec![(item, report)], claim: 0 };
    let (uncommitted, _) = store.change(id, changes, batchwatch_core::now()).await.unwrap();
    uncommitted.expect("a change").commit().await.unwrap();
}

/// The next event with a `seq`, within `limit`.
async fn next_seq(
    events: &mut (impl futures::Stream<Item = eventsource_stream::Event> + Unpin),
    limit: Duration,
) -> u64 {
    loop {
        let event = tokio::time::timeout(limit, events.next()).await.expect("caught up in time").unwrap();
        if let Ok(seq) = event.id.parse() {
            return seq;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_never_published_reach_watchers_within_seconds() {
    for postgres in [false, true] {
        let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
        let batch = server.create(1).await;
        let mut events = server.stream(&batch, None).await;
        assert_eq!(next_seq(&mut events, Duration::from_secs(5)).await, 1, "the first snapshot");

        let started = std::time::Instant::now();
        commit_unannounced(&server, &batch, 0, "processing").await;
        assert_eq!(next_seq(&mut events, Duration::from_secs(5)).await, 2, "postgres {postgres}");
        commit_unannounced(&server, &batch, 0, "done").await;
        assert_eq!(next_seq(&mut events, Duration::from_secs(5)).await, 3, "the terminal state");
        assert_eq!(events.next().await.unwrap().event, "complete");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_events_are_lost_each_batch_is_read_once_for_all_its_watchers() {
    let mut redis = PrivateRedis::start().await;
    let server = LiveServer::start(Options { redis_url: redis.url(), ..Options::default() }).await;
    server.subscribed().await;
    let batch = server.create(3).await;
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let mut events = server.stream(&batch, None).await;
        assert_eq!(next_seq(&mut events, Duration::from_secs(5)).await, 1);
        watchers.push(events);
    }
    let reads_before = server.state.batches.database_reads();

    // Redis goes away: the change is committed, its publish fails and is lost.
    redis.stop();
    server.report(&batch, 0, "processing").await;
    for events in &mut watchers {
        assert_eq!(next_seq(events, Duration::from_secs(10)).await, 2);
    }
    redis.restart().await;
    eventually("the hub to subscribe again", || async {
        (server.state.batches.hub().subscriptions() >= 2).then_some(())
    })
    .await;
    server.report(&batch, 0, "done").await;
    for events in &mut watchers {
        assert_eq!(next_seq(events, Duration::from_secs(10)).await, 3);
    }
    let reads = server.state.batches.database_reads() - reads_before;
    assert!(reads <= 3, "{reads} database reads for 20 watchers of one batch");
}

#[tokio::test]
async fn at_shutdown_streams_end_telling_their_pages_to_reconnect_now() {
    let server = LiveServer::start(Options::default()).await;
    let batch = server.create(1).await;
    let events = server.stream(&batch, None).await;
    let reader = tokio::spawn(read_to_end(events));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.state.batches.hub().close_all();
    let seen = tokio::time::timeout(Duration::from_secs(5), reader).await.expect("the stream ended").unwrap();
    let names: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["snapshot", "reconnect"]);

    // One that opens after that (the listener is still up for a moment) is sent away at once,
    // rather than holding the shutdown up.
    let late = server.stream(&batch, None).await;
    let seen =
        tokio::time::timeout(Duration::from_secs(5), read_to_end(late)).await.expect("sent away at once");
    let names: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["snapshot", "reconnect"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_together_do_not_ping_together() {
    let server = LiveServer::start(Options { keepalive_secs: 2, ..Options::default() }).await;
    let batch = server.create(1).await;
    let url = format!("{}/api/batches/{}/stream", server.url, batch["batch_id"].as_str().unwrap());
    let opened = std::time::Instant::now();
    let pings = (0..20).map(|_| {
        let request = server.http.get(&url).send();
        async move {
            let mut body = request.await.unwrap().bytes_stream();
            let mut seen = Vec::new();
            while let Some(chunk) = body.next().await {
                seen.extend_from_slice(&chunk.unwrap());
                if seen.windows(6).any(|w| w == b": ping") {
                    return opened.elapsed();
                }
            }
            panic!("the stream ended before its first ping");
        }
    });
    let mut firsts = futures::future::join_all(pings).await;
    firsts.sort();
    let spread = *firsts.last().unwrap() - firsts[0];
    assert!(firsts[0] >= Duration::from_millis(900), "no ping before half a period: {firsts:?}");
    assert!(spread >= Duration::from_millis(200), "first pings within {spread:?} of each other");
}

/// However fast a batch changes, its watchers get one event per interval (two at most at once), each taking
/// up where the one before left off; a change on a quiet batch goes out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_batch_s_watchers_get_one_event_per_interval() {
    let interval = Duration::from_millis(200);
    let server = LiveServer::start(Options { event_interval_ms: 200, ..Options::default() }).await;
    server.subscribed().await;
    let batch = server.create(60).await;
    let mut events = server.stream(&batch, None).await;
    assert_eq!(events.next().await.unwrap().event, "snapshot");
    let quiet = std::time::Instant::now();
    server.report(&batch, 0, "processing").await;
    let first = events.next().await.unwrap();
    assert_eq!((first.event.as_str(), first.id.as_str()), ("progress", "2"));
    assert!(quiet.elapsed() < interval, "a quiet batch's change waits for nothing: {:?}", quiet.elapsed());

    let watcher = tokio::spawn(read_to_end(events));
    let busy = std::time::Instant::now();
    for i in 0..60 {
        if i > 0 {
            server.report(&batch, i, "processing").await;
        }
        server.report(&batch, i, "done").await;
    }
    let seen = watcher.await.unwrap();
    let took = busy.elapsed();
    let progress = seen.iter().filter(|(e, _)| e == "progress").count();
    // 119 changes, one commit each (one reporter, one at a time).
    let most = (took.as_millis() / interval.as_millis()) as usize + 2;
    assert!(progress <= most, "{progress} events in {took:?}");
    assert!(progress < 119, "changes were joined");
    let mut whole = vec![("snapshot".to_owned(), Some(serde_json::json!({ "seq": 2 })))];
    whole.extend(seen);
    assert_eq!(common::server::assert_unbroken(&whole), 121);
}
