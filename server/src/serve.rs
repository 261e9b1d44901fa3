//! The accept loop: each connection served by hyper, HTTP/1 (or HTTP/2 with prior knowledge,
//! h2c, as a proxy can speak it to its upstream, when `H2C` is set), with the router. Each
//! HTTP/1 request's head is peeked first: one that opens an event stream is answered without
//! hyper, leaner ([`stream_connection`]); another request is answered by hyper alone, and the
//! connection taken back for its next request once its body (if any) was read whole
//! ([`serve_one`]); anything else is hyper's for the rest of the connection.
//!
//! Why not `axum::serve`: it hands every connection to hyper-util's `auto` builder, which first
//! reads up to 24 bytes to tell HTTP/2's preface from an HTTP/1 request and gives them back
//! through a rewind. hyper's HTTP/1 reader then gets those bytes alone as its first read, and
//! growing its 8 KiB buffer for the rest of the head doubles it: 16 KiB on every connection
//! for as long as it is open, 163 of the 181 MB of heap at 10,000 open streams (heaptrack).
//! Here the head is peeked, not read: hyper's HTTP/1 reader then takes it whole into 8 KiB.
//! The rest is what `axum::serve` does (the peer's address for `ConnectInfo`, accept errors
//! that do not stop the loop, a graceful shutdown) and a timeout on reading a request's head
//! (and on waiting for a kept-alive connection's next one), which `axum::serve` does not set.
//!
//! HTTP/2 lets a proxy carry many streams on one connection: what a stream costs is then its
//! HTTP/2 stream and its task, not a connection with hyper's two 8 KiB buffers, and the events
//! of many streams leave in one write. hyper closes no idle HTTP/2 connection (the header
//! timeout is HTTP/1's): here one sending no answer for the header timeout is shut down,
//! as an idle HTTP/1 connection is, so a client cannot hold connections it does not use.

use std::{
    future::{Future, pending, poll_fn},
    io,
    net::SocketAddr,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo, http, response::Response};
use bytes::Bytes;
use hyper::{
    Request,
    body::{Frame, Incoming, SizeHint},
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
};
use tower::ServiceExt;

use self::stream_connection::Head;

mod stream_connection;

/// How HTTP/2 with prior knowledge starts (RFC 9113, 3.4). Its first four bytes, `PRI `, are
/// no HTTP/1 request's.
const H2_PREFACE: &[u8; 4] = b"PRI ";

/// The protocols' settings, shared by every connection.
pub struct Protocols {
    http1: http1::Builder,
    /// HTTP/2 too (`H2C`), when the connection starts with its preface.
    http2: Option<http2::Builder<TokioExecutor>>,
    header_timeout: Duration,
}

impl Protocols {
    /// A request's head (and an idle HTTP/1 connection's next one) must arrive within
    /// `header_timeout`.
    pub fn new(header_timeout: Duration, h2c: bool) -> Self {
        let mut http1 = http1::Builder::new();
        http1.timer(TokioTimer::new()).header_read_timeout(header_timeout);
        let http2 = h2c.then(|| {
            let mut http2 = http2::Builder::new(TokioExecutor::new());
            // Pings find a proxy's connection that died without a word.
            http2.timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(20));
            http2
        });
        Self { http1, http2, header_timeout }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the connections
/// to finish what they are answering. `tune` sets each accepted socket's options.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tune: impl Fn(&TcpStream),
    protocols: Protocols,
    shutdown: impl Future<Output = ()>,
) {
    let protocols = Arc::new(protocols);
    // hyper-util's `GracefulShutdown` does the same, but a connection it watches cannot also
    // be shut down when idle (its connection trait is sealed): every connection holds a
    // receiver, told when the server stops; the server waits until all are dropped.
    let (stop, stopping) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tune(&tcp);
        tokio::spawn(serve_connection(tcp, peer, router.clone(), protocols.clone(), stopping.clone()));
    }
    drop(listener);
    drop(stopping);
    stop.send_replace(());
    stop.closed().await;
}

async fn serve_connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    protocols: Arc<Protocols>,
    mut stopping: watch::Receiver<()>,
) {
    // Only a connection's first bytes can be HTTP/2's preface.
    let mut h2c = protocols.http2.is_some();
    loop {
        let next = tokio::time::timeout(protocols.header_timeout, first_request(&tcp, h2c));
        let first = tokio::select! {
            next = next => match next {
                Ok(Ok(Some(first))) => first,
                // Closed, failed or silent before its request's head (a connection kept alive
                // waits for its next one no longer either).
                _ => return,
            },
            // The server is stopping: a connection between requests is closed at once.
            _ = stopping.changed() => return,
        };
        h2c = false;
        // Each branch's connection is boxed: inline, the largest would size every connection's
        // task, a stream's lean one too.
        let served = match first {
            First::Stream(mut request, head_len) => {
                request.extensions_mut().insert(ConnectInfo(peer));
                // `stopping` lives as long as this: the stream ends when the server stops (its
                // watcher is told to reconnect), and the server waits for that.
                let served = Box::pin(stream_connection::serve(tcp, *request, head_len, router)).await;
                if let Err(error) = served {
                    tracing::trace!(%error, "stream connection ended with an error");
                }
                return;
            }
            First::Http1 { alone: true } => {
                match Box::pin(serve_one(tcp, peer, router.clone(), &protocols.http1, &mut stopping)).await {
                    Some(back) => {
                        tcp = back;
                        continue;
                    }
                    None => return,
                }
            }
            First::Http2 => {
                let http2 = protocols.http2.as_ref().expect("HTTP/2 is only told apart when served");
                let (open, answers) = watch::channel(0);
                let open = Arc::new(open);
                let service =
                    TowerToHyperService::new(guarding_answers(with_peer(router, peer), move || {
                        Open::new(open.clone())
                    }));
                let mut connection = Box::pin(http2.serve_connection(TokioIo::new(tcp), service));
                Box::pin(drive(connection.as_mut(), stopping, idle(answers, protocols.header_timeout))).await
            }
            First::Http1 { alone: false } => {
                let service = TowerToHyperService::new(with_peer(router, peer));
                let mut connection = Box::pin(protocols.http1.serve_connection(TokioIo::new(tcp), service));
                Box::pin(drive(connection.as_mut(), stopping, pending())).await
            }
        };
        if let Err(error) = served {
            tracing::trace!(%error, "connection ended with an error");
        }
        return;
    }
}

/// Answers one HTTP/1 request with hyper, then takes the connection back (`None`: it is
/// over). Between requests a connection kept alive then waits without hyper's two 8 KiB
/// buffers, and a stream asked next on it is answered lean (browsers ask theirs on the
/// connections that loaded the page, and that carried its forms). Only once the request's
/// body, if it had one, was read to its end: otherwise what is left of it is on the socket,
/// and hyper, which knows where it ends, keeps the connection.
async fn serve_one(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    http1: &http1::Builder,
    stopping: &mut watch::Receiver<()>,
) -> Option<TcpStream> {
    let answered = Arc::new(Notify::new());
    let done = answered.clone();
    let read_whole = Arc::new(AtomicBool::new(false));
    let tracked = read_whole.clone();
    let service = with_peer(router.clone(), peer).map_request(move |request: Request<Incoming>| {
        request.map(|body| Body::new(ReadWhole { body, told: tracked.clone() }.told_if_over()))
    });
    let service = guarding_answers(service, move || Answered(done.clone()))
        // Boxed: hyper hands a connection back only with a service whose futures are `Unpin`.
        .map_future(|future| Box::pin(future) as Pin<Box<dyn Future<Output = _> + Send>>);
    let mut connection = http1.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
    let stop = tokio::select! {
        // The answer first: once it is sent, hyper must not start reading the next request.
        biased;
        () = answered.notified() => false,
        _ = stopping.changed() => true,
        served = poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
            // Over before its answer was sent: closed or failed.
            if let Err(error) = served {
                tracing::trace!(%error, "connection ended with an error");
            }
            return None;
        }
    };
    if !stop && !read_whole.load(Ordering::Acquire) {
        if let Err(error) = drive(Pin::new(&mut connection), stopping.clone(), pending()).await {
            tracing::trace!(%error, "connection ended with an error");
        }
        return None;
    }
    // Ends the connection once what is in flight is written, without closing the socket.
    Pin::new(&mut connection).graceful_shutdown();
    if let Err(error) = poll_fn(|cx| connection.poll_without_shutdown(cx)).await {
        tracing::trace!(%error, "connection ended with an error");
        return None;
    }
    if stop {
        return None;
    }
    let parts = connection.into_parts();
    let tcp = parts.io.into_inner();
    if parts.read_buf.is_empty() {
        return Some(tcp);
    }
    // The client sent more before hyper stopped (requests pipelined): hyper read it, and
    // serves the connection from there on.
    let io = TokioIo::new(Rewind { first: parts.read_buf, tcp });
    let mut connection =
        Box::pin(http1.serve_connection(io, TowerToHyperService::new(with_peer(router, peer))));
    if let Err(error) = drive(connection.as_mut(), stopping.clone(), pending()).await {
        tracing::trace!(%error, "connection ended with an error");
    }
    None
}

/// A request's body that tells when it was read to its end (or had nothing to read).
struct ReadWhole {
    body: Incoming,
    told: Arc<AtomicBool>,
}

impl ReadWhole {
    fn told_if_over(self) -> Self {
        if hyper::body::Body::is_end_stream(&self.body) {
            self.told.store(true, Ordering::Release);
        }
        self
    }
}

impl hyper::body::Body for ReadWhole {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) || this.body.is_end_stream() {
            this.told.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Told when its answer's body is done or dropped.
struct Answered(Arc<Notify>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// A connection whose first bytes were read already: they are read again first.
struct Rewind {
    first: Bytes,
    tcp: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.first.is_empty() {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        let n = this.first.len().min(buf.remaining());
        buf.put_slice(&this.first.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// How a connection's next request starts.
enum First {
    /// HTTP/2's preface (only told apart with `H2C`, on a connection's first bytes).
    Http2,
    /// An HTTP/1 request that opens an event stream, answered without hyper (see
    /// [`stream_connection`]), and its head's length.
    Stream(Box<Request<Body>>, usize),
    /// Any other HTTP/1 request, for hyper; `alone`: hyper answers this one only (see
    /// [`serve_one`]).
    Http1 { alone: bool },
}

/// What a connection's next bytes start, peeked (`None`: it closed first). Waits for a whole
/// head (up to [`stream_connection::MAX_HEAD`]); the caller bounds the wait.
async fn first_request(tcp: &TcpStream, h2c: bool) -> io::Result<Option<First>> {
    // Nothing is held while a connection waits for its first bytes.
    tcp.readable().await?;
    let mut bytes = vec![0; stream_connection::MAX_HEAD];
    loop {
        let peeked = tcp.peek(&mut bytes).await?;
        if peeked == 0 {
            return Ok(None);
        }
        let first = &bytes[..peeked];
        let preface = &first[..peeked.min(H2_PREFACE.len())];
        if h2c && H2_PREFACE.starts_with(preface) {
            if preface.len() == H2_PREFACE.len() {
                return Ok(Some(First::Http2));
            }
        } else {
            match stream_connection::stream_request(first) {
                Head::Stream(request, head_len) => return Ok(Some(First::Stream(request, head_len))),
                Head::Other { alone } => return Ok(Some(First::Http1 { alone })),
                Head::Partial => {}
            }
        }
        // Not enough to tell ("P" may be "POST"): peeking again returns at once, so wait a
        // little for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves `connection` until it ends, shutting it down gracefully (what it is answering
/// finishes, nothing new is taken) when the server stops or `idle` completes.
async fn drive<C: GracefulConnection>(
    mut connection: Pin<&mut C>,
    mut stopping: watch::Receiver<()>,
    idle: impl Future<Output = ()>,
) -> Result<(), C::Error> {
    tokio::select! {
        served = connection.as_mut() => return served,
        // Changed, or the server dropped its sender: stopping either way.
        _ = stopping.changed() => {}
        () = idle => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Completes once no answer has been open on the connection for `timeout`.
async fn idle(mut answers: watch::Receiver<usize>, timeout: Duration) {
    loop {
        if answers.wait_for(|&open| open == 0).await.is_err() {
            return;
        }
        if tokio::time::timeout(timeout, answers.changed()).await.is_err() {
            return;
        }
    }
}

/// The router, each answer's body holding a guard from `guard` until it is done or dropped (a
/// stream's body lives as long as the stream): the guard tells when the answer is over. A
/// request still in its handler holds none: a graceful shutdown lets it finish anyway. Guarded
/// from the call, every stream's task would hold a larger future (measured: 0.4 KB more per
/// idle stream).
fn guarding_answers<G: Send + 'static>(
    router: impl tower::Service<
        Request<Incoming>,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static,
    guard: impl Fn() -> G + Clone + Send + 'static,
) -> impl tower::Service<
    Request<Incoming>,
    Response = http::Response<GuardedBody<G>>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    router.map_response(move |response: Response| response.map(|body| GuardedBody { body, _guard: guard() }))
}

/// One answer open on a connection, counted for as long as this lives.
struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn new(open: Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n += 1);
        Self(open)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response's body, and what must live until it is done or dropped.
struct GuardedBody<G> {
    body: Body,
    _guard: G,
}

impl<G: Unpin> hyper::body::Body for GuardedBody<G> {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The router, for one connection: its requests carry the peer's address. A clone of a
/// `Router` is a handle on the same routes (its layers are not copied).
fn with_peer<B: hyper::body::Body<Data = Bytes, Error: Into<axum::BoxError>> + Send + 'static>(
    router: Router,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<B>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    router.map_request(move |mut request: Request<B>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    })
}

/// As `axum::serve`: a connection that failed before it was accepted is the peer's business;
/// anything else (out of file descriptors, say) is logged and the loop waits a second rather
/// than spinning on it.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A connection kept alive between requests does not hold the server's stop up: it is
    /// closed at once, not after the header timeout.
    #[tokio::test]
    async fn stopping_closes_a_connection_between_requests_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "hi" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let protocols = Protocols::new(Duration::from_secs(60), false);
        let server = tokio::spawn(serve(listener, router, |_| {}, protocols, async move {
            let _ = stopped.await;
        }));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"hi") {
            let mut byte = [0];
            assert_eq!(conn.read(&mut byte).await.unwrap(), 1);
            answer.push(byte[0]);
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("the server stopped").unwrap();
        assert_eq!(conn.read(&mut [0; 16]).await.unwrap(), 0, "the connection was closed");
    }
}
