//! A connection whose first request opens an event stream, answered here rather than by hyper.
//!
//! Why not hyper: its HTTP/1 connection keeps an 8 KiB read buffer and an 8 KiB write buffer
//! for as long as it is open, most of what an open stream costs (17–19 KB of RSS per stream
//! over HTTP/1, 5.3 KB over HTTP/2 where streams share connections; `loadgen --scenario
//! idle`), and no setting makes them smaller. A stream's connection needs neither: it reads
//! nothing after its request and writes one chunk per event. So the head is peeked, parsed with
//! `httparse` (hyper's own parser), answered by the router like any request, and the answer
//! written straight to the socket, with `Connection: close` (the connection ends with its
//! stream): its head, then each frame as a chunk, by the stream's watcher in this connection's
//! task (one task a stream: `live/stream.rs`), or by its batch's writers while the watcher has
//! nothing else to write (`live/parked.rs`).
//!
//! Only the plainest requests are taken ([`stream_request`]): a complete HTTP/1.1 (or 1.0) `GET`
//! head of a stream's route in the first bytes, without a body or an upgrade. Anything else goes to
//! hyper untouched (it was only peeked), and so do a connection's later requests: a browser
//! that opens its stream on a connection it kept alive is served by hyper as before.

use std::{io, sync::Arc, time::SystemTime};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header},
};
use bytes::Bytes;
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::live::{
    socket::{Out, Socket},
    stream::Unstarted,
};

/// A head longer than this goes to hyper, whose limit is larger.
pub const MAX_HEAD: usize = 4096;
/// As many headers as a browser's request carries, and more; a request with more goes to hyper.
const MAX_HEADERS: usize = 48;

/// What a connection's first bytes hold, as far as this module cares.
#[derive(Debug)]
pub enum Head {
    /// A request that opens a stream, and the length of its head.
    Stream(Box<Request<Body>>, usize),
    /// Any other request, or a head that is complete but not taken here: hyper answers it.
    /// `alone`: an HTTP/1.1 request without chunks, an upgrade, an expectation or `Connection:
    /// close`, after whose answer the connection can be taken back from hyper once its body,
    /// if any, was read whole (see `serve::serve_one`).
    Other { alone: bool },
    /// Not all of the head yet.
    Partial,
}

/// Reads a connection's first bytes.
pub fn stream_request(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => match stream_parts(&parsed) {
            Some(request) => Head::Stream(Box::new(request), len),
            None => Head::Other {
                alone: parsed.version == Some(1)
                    && !has_any(&parsed, &["transfer-encoding", "upgrade", "expect"])
                    && !closes(&parsed),
            },
        },
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => Head::Partial,
        // Malformed, or too long for here: hyper answers it.
        _ => Head::Other { alone: false },
    }
}

/// The request, when it is a plain `GET` of a stream's route.
fn stream_parts(parsed: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    let path = parsed.path?;
    let version = match parsed.version? {
        1 => Version::HTTP_11,
        // What nginx speaks to its upstreams unless told otherwise.
        _ => Version::HTTP_10,
    };
    // No body (however framed), upgrade or expectation: hyper knows what to do with those.
    let plain = !has_any(parsed, &["content-length", "transfer-encoding", "upgrade", "expect"]);
    if parsed.method != Some("GET") || !is_stream_route(path) || !plain {
        return None;
    }
    let mut request = Request::builder().method(Method::GET).uri(path).version(version);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        request = request.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    request.body(Body::empty()).ok()
}

/// Whether the request has any of these headers.
fn has_any(parsed: &httparse::Request<'_, '_>, names: &[&str]) -> bool {
    parsed.headers.iter().any(|h| names.iter().any(|name| h.name.eq_ignore_ascii_case(name)))
}

/// Whether the client says this is the connection's last request.
fn closes(parsed: &httparse::Request<'_, '_>) -> bool {
    parsed.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).any(|h| {
        String::from_utf8_lossy(h.value).split(',').any(|token| token.trim().eq_ignore_ascii_case("close"))
    })
}

/// `/api/stream` and `/api/batches/{id}/stream`, with or without a query.
fn is_stream_route(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    path == "/api/stream"
        || path
            .strip_prefix("/api/batches/")
            .and_then(|rest| rest.strip_suffix("/stream"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Answers `request` (its head, `head_len` bytes, still unread on `tcp`) and closes the
/// connection.
pub async fn serve(
    mut tcp: TcpStream,
    request: Request<Body>,
    head_len: usize,
    router: Router,
) -> io::Result<()> {
    // The head was only peeked: take it off the socket (it is there, so this does not wait).
    let mut taken = vec![0; head_len];
    tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut taken).await?;
    drop(taken);
    let http10 = request.version() == Version::HTTP_10;
    let Ok(response) = router.oneshot(request).await;
    let tcp = Arc::new(tcp);
    match watcher(response, &tcp, http10) {
        Ok(watcher) => watcher.await,
        Err(response) => answer(&tcp, response).await?,
    }
    close(&tcp)
}

/// The stream's watcher, writing its answer from the head on (the head leaves with its first
/// frames), when the answer is an opened stream. Made apart from the answer, which is dropped
/// here: what is held while the stream runs is the watcher alone.
fn watcher(
    response: Response<Body>,
    tcp: &Arc<TcpStream>,
    http10: bool,
) -> Result<impl Future<Output = ()> + Send + use<>, Box<Response<Body>>> {
    let Some(unstarted) = response.extensions().get::<Unstarted>().cloned() else {
        return Err(Box::new(response));
    };
    // HTTP/1.0 knows no chunks: its body ends when the connection does.
    let mut out = Out::default();
    out.push(head(
        response.headers(),
        response.status(),
        if http10 { Framing::UntilClose } else { Framing::Chunked },
    ));
    unstarted.run_on(Socket::new(tcp.clone(), !http10), out).ok_or_else(|| Box::new(response))
}

/// Any other answer (a refusal): small, it leaves whole, with its length.
async fn answer(tcp: &Arc<TcpStream>, response: Box<Response<Body>>) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_ANSWER).await.map_err(io::Error::other)?;
    let mut out = Out::default();
    out.push(head(&parts.headers, parts.status, Framing::Length(body.len())));
    out.push(body);
    Socket::new(tcp.clone(), false).write(&mut out).await
}

/// The longest answer other than a stream's that is taken here (they are JSON errors).
const MAX_ANSWER: usize = 64 * 1024;

/// How an answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
    /// With the connection (HTTP/1.0).
    UntilClose,
}

/// The answer's head: its status line and headers, with `Connection: close` (the connection
/// ends with the answer).
fn head(headers: &HeaderMap, status: StatusCode, framing: Framing) -> Bytes {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if [header::CONNECTION, header::TRANSFER_ENCODING, header::CONTENT_LENGTH].contains(name) {
            continue;
        }
        line(&mut head, name.as_str(), value.as_bytes());
    }
    if !headers.contains_key(header::DATE) {
        line(&mut head, "date", httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    }
    match framing {
        Framing::Length(length) => line(&mut head, "content-length", length.to_string().as_bytes()),
        Framing::Chunked => line(&mut head, "transfer-encoding", b"chunked"),
        Framing::UntilClose => {}
    }
    line(&mut head, "connection", b"close");
    head.extend_from_slice(b"\r\n");
    head.into()
}

fn line(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Ends the connection's sending side, as `AsyncWriteExt::shutdown` does (on a socket the hub
/// may still hold a handle on a moment longer).
fn close(tcp: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(head: &str) -> Option<(Request<Body>, usize)> {
        match stream_request(head.as_bytes()) {
            Head::Stream(request, len) => Some((*request, len)),
            _ => None,
        }
    }

    #[test]
    fn takes_a_plain_get_of_a_stream() {
        let head = "GET /api/batches/0b9b2f8e-52a5-4a3b-9d6e-8e2c4f1a7b3c/stream?follow=true HTTP/1.1\r\n\
                    Host: example.com\r\nCookie: a=b\r\nLast-Event-ID: 7\r\n\r\n";
        let (request, len) = taken(&format!("{head}GET / HTTP/1.1\r\n")).expect("taken");
        assert_eq!(len, head.len());
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/batches/0b9b2f8e-52a5-4a3b-9d6e-8e2c4f1a7b3c/stream");
        assert_eq!(request.uri().query(), Some("follow=true"));
        assert_eq!(request.headers()["host"], "example.com");
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(
            taken("GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().0.version(),
            Version::HTTP_11
        );
        assert_eq!(taken("GET /api/stream HTTP/1.0\r\n\r\n").unwrap().0.version(), Version::HTTP_10);
    }

    #[test]
    fn leaves_everything_else_to_hyper() {
        for head in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/batches/x/items HTTP/1.1\r\n\r\n",
            "GET /api/batches//stream HTTP/1.1\r\n\r\n",
            "GET /api/batches/a/b/stream HTTP/1.1\r\n\r\n",
            "GET /api/streams HTTP/1.1\r\n\r\n",
            "POST /api/stream HTTP/1.1\r\n\r\n",
            "HEAD /api/stream HTTP/1.1\r\n\r\n",
            "GET http://x/api/stream HTTP/1.1\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /api/stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(matches!(stream_request(head.as_bytes()), Head::Other { .. }), "{head:?}");
        }
        let many = "a: b\r\n".repeat(MAX_HEADERS + 1);
        assert!(matches!(
            stream_request(format!("GET /api/stream HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Head::Other { alone: false }
        ));
    }

    #[test]
    fn tells_which_requests_hyper_can_answer_alone() {
        let alone = |head: &str| matches!(stream_request(head.as_bytes()), Head::Other { alone: true });
        assert!(alone("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(alone("GET /pkg/a.wasm HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"));
        assert!(alone("DELETE /api/x HTTP/1.1\r\n\r\n"));
        assert!(!alone("GET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n"));
        assert!(!alone("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(alone("POST /api/batches HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"));
        assert!(!alone("POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"));
        assert!(!alone("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(!alone("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
        assert!(!alone("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
        assert!(!alone("NOT HTTP\r\n\r\n"));
    }

    #[test]
    fn waits_for_the_rest_of_a_head_up_to_its_limit() {
        assert!(matches!(stream_request(b"GE"), Head::Partial));
        assert!(matches!(stream_request(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n"), Head::Partial));
        let long = format!("GET /api/stream HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(stream_request(&long.as_bytes()[..MAX_HEAD]), Head::Other { .. }));
    }
}
