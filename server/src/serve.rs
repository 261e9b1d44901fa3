//! The accept loop: each connection served by hyper, HTTP/1 (or HTTP/2 with prior knowledge,
//! h2c, as a proxy can speak it to its upstream, when `H2C` is set), with the router.
//!
//! Why not `axum::serve`: it hands every connection to hyper-util's `auto` builder, which first
//! reads up to 24 bytes to tell HTTP/2's preface from an HTTP/1 request and gives them back
//! through a rewind. hyper's HTTP/1 reader then gets those bytes alone as its first read, and
//! growing its 8 KiB buffer for the rest of the head doubles it: 16 KiB on every connection
//! for as long as it is open, 163 of the 181 MB of heap at 10,000 open streams (heaptrack).
//! Here HTTP/1 is served at once (and with `H2C` the first bytes are peeked, not read): hyper's
//! HTTP/1 reader takes the whole head into 8 KiB. The rest is what `axum::serve` does (the
//! peer's address for `ConnectInfo`, accept errors that do not stop the loop, a graceful
//! shutdown) and a timeout on reading a request's head, which `axum::serve` does not set.
//!
//! HTTP/2 lets a proxy carry many streams on one connection: what a stream costs is then its
//! HTTP/2 stream and its task, not a connection with hyper's two 8 KiB buffers, and the events
//! of many streams leave in one write.

use std::{future::Future, io, net::SocketAddr, pin::pin, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{
    Request,
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

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
    let graceful = GracefulShutdown::new();
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
        tokio::spawn(serve_connection(tcp, peer, router.clone(), protocols.clone(), graceful.watcher()));
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    protocols: Arc<Protocols>,
    watcher: Watcher,
) {
    let http2 = match &protocols.http2 {
        None => None,
        Some(http2) => match tokio::time::timeout(protocols.header_timeout, is_http2(&tcp)).await {
            Ok(Ok(Some(true))) => Some(http2),
            Ok(Ok(Some(false))) => None,
            // Closed, failed or silent before its first bytes.
            _ => return,
        },
    };
    let io = TokioIo::new(tcp);
    let service = TowerToHyperService::new(with_peer(router, peer));
    let served = if let Some(http2) = http2 {
        // Boxed: inline, HTTP/2's larger connection would size every HTTP/1 connection's task.
        Box::pin(watcher.watch(http2.serve_connection(io, service))).await
    } else {
        watcher.watch(protocols.http1.serve_connection(io, service)).await
    };
    if let Err(error) = served {
        tracing::trace!(%error, "connection ended with an error");
    }
}

/// Whether a connection speaks HTTP/2 (`None`: it closed first), from its first bytes, peeked.
async fn is_http2(tcp: &TcpStream) -> io::Result<Option<bool>> {
    let mut first = [0; H2_PREFACE.len()];
    loop {
        let peeked = tcp.peek(&mut first).await?;
        if peeked == 0 {
            return Ok(None);
        }
        if !H2_PREFACE.starts_with(&first[..peeked]) {
            return Ok(Some(false));
        }
        if peeked == first.len() {
            return Ok(Some(true));
        }
        // Fewer bytes than it takes to tell ("P" may be "POST"): peeking again returns at once,
        // so wait a little for the rest (within the header timeout).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The router, for one connection: its requests carry the peer's address. A clone of a
/// `Router` is a handle on the same routes (its layers are not copied).
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    router.map_request(move |mut request: Request<Incoming>| {
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
