//! The accept loop: connection limit, `TCP_NODELAY`, HTTP/1.1 (and HTTP/2 under TLS), and
//! a graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::Gateway;
use super::h2;
use super::park;
use crate::metrics as m;

/// Settings of the listener.
#[derive(Clone)]
pub struct ServerSettings {
    /// Request head deadline, also the keep-alive idle limit.
    pub header_read: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Most open client connections.
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// How long a drain may take.
    pub drain_grace: Duration,
    /// Quiet time after which an idle client connection drops its HTTP state.
    pub park: Duration,
    /// HPACK decoding table for HTTP/2 requests; HTTP/2 connections park only with 0.
    pub http2_header_table: u32,
}

/// Accepts and serves until `shutdown`, then drains in-flight requests for up to the grace
/// period. Returns whether everything finished in time.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> bool {
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let tracker = TaskTracker::new();
    let open = metrics::gauge!(m::CONNECTIONS);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (gw, settings, shutdown, open) =
            (gw.clone(), settings.clone(), shutdown.clone(), open.clone());
        tracker.spawn(async move {
            open.increment(1.0);
            connection(stream, peer, gw, &settings, shutdown).await;
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tokio::time::timeout(settings.drain_grace, tracker.wait())
        .await
        .is_ok()
}

pub(super) fn http1(s: &ServerSettings) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(s.header_read)
        .max_buf_size(s.max_header_bytes);
    b
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    s: &ServerSettings,
    shutdown: CancellationToken,
) {
    let Some(acceptor) = &s.tls else {
        return park::serve(stream, peer, gw, s, shutdown).await;
    };
    // Boxed: inline, the TLS and HTTP/2 states would size every plain connection's task.
    Box::pin(secure(stream, acceptor, peer, gw, s, shutdown)).await;
}

async fn secure(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    s: &ServerSettings,
    shutdown: CancellationToken,
) {
    // Boxed: the stream (1.2 KB) moves from the handshake to serving and parking as a
    // pointer; inline, each state that may hold it would reserve its own room for it in the
    // connection's task, parked or not.
    let tls = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(s.header_read, acceptor.accept(stream)) => match r {
            Ok(Ok(tls)) => Box::new(tls),
            _ => return,
        },
    };
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        // HTTP/1.1 over TLS parks like plain HTTP/1.1: hyper's buffers go while it is idle.
        return park::serve(tls, peer, gw, s, shutdown).await;
    }
    h2::serve(tls, peer, gw, s, &shutdown).await;
}
