//! The accept loop: each connection served by hyper's HTTP/1 server, with the router.
//!
//! Why not `axum::serve`: it hands every connection to hyper-util's `auto` builder, which first
//! reads up to 24 bytes to tell HTTP/2's preface from an HTTP/1 request and gives them back
//! through a rewind (even with HTTP/2 compiled out, as it is here). hyper's reader then gets
//! those bytes alone as its first read, and growing its 8 KiB buffer for the rest of the head
//! doubles it: 16 KiB on every connection for as long as it is open, 163 of the 181 MB of heap
//! at 10,000 open streams (heaptrack). Served by hyper's HTTP/1 builder directly, the first read
//! takes the whole head into 8 KiB. The rest is what `axum::serve` does (the peer's address
//! for `ConnectInfo`, accept errors that do not stop the loop, a graceful shutdown) and a
//! timeout on reading a request's head, which `axum::serve` does not set.

use std::{future::Future, io, net::SocketAddr, pin::pin, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{Request, body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` completes, then waits for the connections
/// to finish what they are answering. `tune` sets each accepted socket's options; a request's
/// head (and an idle connection's next one) must arrive within `header_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tune: impl Fn(&TcpStream),
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
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
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(with_peer(&router, peer)));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The router, for one connection: its requests carry the peer's address. A clone of a
/// `Router` is a handle on the same routes (its layers are not copied).
fn with_peer(
    router: &Router,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ 'static {
    router.clone().map_request(move |mut request: Request<Incoming>| {
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
