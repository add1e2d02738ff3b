//! HTTP/2 client connections (over TLS). An HTTP/2 connection cannot be parked the way an
//! HTTP/1.1 one is: its header compression tables and stream counters are shared with the
//! client, so dropping them ends the connection. Instead, a connection with no exchange open
//! for the keep-alive limit (`timeouts.header_read`) is closed with GOAWAY, as Envoy's
//! `idle_timeout` and NGINX's `keepalive_timeout` do; the client opens a new one when it
//! needs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alarm::Alarms;
use super::forward::Gateway;
use super::headers::Peer;
use super::park::{ClientBody, Watched};
use super::server::ServerSettings;
use crate::metrics as m;

/// Open exchanges of one connection and when the last one began or ended.
struct Exchanges {
    /// When the connection began; `last` counts from here.
    epoch: Instant,
    /// Exchanges begun and not yet finished (the response not yet written, or dropped).
    open: AtomicU64,
    /// Milliseconds from `epoch` to the last exchange's beginning or end.
    last: AtomicU64,
}

impl Exchanges {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }

    /// When the connection will have been idle for `limit`, or `None` while an exchange is
    /// open.
    fn idle_at(&self, limit: Duration) -> Option<Instant> {
        (self.open.load(Relaxed) == 0)
            .then(|| self.epoch + Duration::from_millis(self.last.load(Relaxed)) + limit)
    }
}

/// Keeps an exchange open until dropped, with the response written or abandoned.
pub struct Exchange(Arc<Exchanges>);

impl Exchange {
    fn begin(all: &Arc<Exchanges>) -> Exchange {
        all.open.fetch_add(1, Relaxed);
        all.touch();
        Exchange(all.clone())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// What woke a connection's loop.
enum Event {
    /// The connection ended.
    Ended,
    /// The gateway is draining.
    Drain,
    /// The timer fired.
    Timer,
}

/// Where a connection is in its life.
#[derive(PartialEq)]
enum Stage {
    /// Serving requests.
    Serving,
    /// Sent GOAWAY for being idle: waits for the client's ping reply, up to the grace.
    Idled,
    /// Sent GOAWAY for the drain: finishes its exchanges within the drain's grace.
    Draining,
}

/// The longest an idle connection waits for its client to answer the GOAWAY before its socket
/// is closed without it (a client that never answers would otherwise keep it forever).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// Serves an HTTP/2 client connection to its end: closed by the client, by the drain, or with
/// GOAWAY once idle for `timeouts.header_read`.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    s: &ServerSettings,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Peer::new(peer);
    let exchanges = Arc::new(Exchanges {
        epoch: Instant::now(),
        open: AtomicU64::new(0),
        last: AtomicU64::new(0),
    });
    let seen = exchanges.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let open = Exchange::begin(&seen);
        gw.clone()
            .handle(req.map(ClientBody::new), peer.clone())
            .map(move |r| r.map(|resp| resp.map(|inner| Watched::new(inner, open))))
    });
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes as u32);
    let conn = b.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let timer = tokio::time::sleep(s.header_read);
    tokio::pin!(timer);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut alarms = Alarms::new(shutdown, cancelled, timer);
    let mut stage = Stage::Serving;
    loop {
        let event = std::future::poll_fn(|cx| {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Ended);
            }
            if stage == Stage::Serving && alarms.draining(cx) {
                return Poll::Ready(Event::Drain);
            }
            if stage != Stage::Draining && alarms.rung(cx) {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        let now = Instant::now();
        match (event, &stage) {
            (Event::Ended, _) => return,
            (Event::Drain, _) => {
                stage = Stage::Draining;
                conn.as_mut().graceful_shutdown();
            }
            (Event::Timer, Stage::Serving) => match exchanges.idle_at(s.header_read) {
                Some(at) if at <= now => {
                    stage = Stage::Idled;
                    metrics::counter!(m::IDLE_CLOSED, "protocol" => "http2").increment(1);
                    conn.as_mut().graceful_shutdown();
                    alarms.reset(now + s.header_read.min(GOAWAY_GRACE));
                }
                Some(at) => alarms.reset(at),
                // Looked at again a full limit later; by then an exchange that has ended
                // says when it did, so the limit still counts from its end.
                None => alarms.reset(now + s.header_read),
            },
            // The client has not answered the GOAWAY: with nothing open, the socket is closed.
            (Event::Timer, _) if exchanges.open.load(Relaxed) == 0 => return,
            (Event::Timer, _) => alarms.reset(now + s.header_read.min(GOAWAY_GRACE)),
        }
    }
}
