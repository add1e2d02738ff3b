//! HTTP/2 client connections (over TLS). A connection is served by a hyper connection over a
//! stream that accounts for every frame either way (`wire`, `ledger`). Once it has been quiet
//! for the park delay with nothing outstanding — no stream open, settings and pings answered,
//! every frame whole — hyper's connection and its buffers are dropped without a word to the
//! client, and the stream waits on its own, as an HTTP/1.1 one does, until the client sends
//! again; a new hyper connection then takes up where the old one left (`resume`). A
//! connection with no exchange open for the keep-alive limit (`timeouts.header_read`),
//! parked or not, is closed with GOAWAY, as Envoy's `idle_timeout` and NGINX's
//! `keepalive_timeout` do; the client opens a new one when it needs it.

mod frames;
mod ledger;
mod resume;
mod wire;

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
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alarm::Alarms;
use super::forward::Gateway;
use super::headers::Peer;
use super::park::{ClientBody, Watched};
use super::server::ServerSettings;
use super::stream::Parkable;
use crate::metrics as m;
use frames::{frame, kind};
use ledger::{CONN_WINDOW, Memory};
use wire::Wire;

/// Open exchanges of one connection and when the last one began or ended.
struct Exchanges {
    /// When the connection last had an exchange open; `last` counts from here.
    epoch: Instant,
    /// Exchanges begun and not yet finished (the response not yet written, or dropped).
    open: AtomicU64,
    /// Milliseconds from `epoch` to the last exchange's beginning or end.
    last: AtomicU64,
}

impl Exchanges {
    /// A connection whose last exchange ended at `since`.
    fn since(since: Instant) -> Exchanges {
        Exchanges {
            epoch: since,
            open: AtomicU64::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }

    /// When the last exchange ended, or `None` while one is open.
    fn idle_since(&self) -> Option<Instant> {
        (self.open.load(Relaxed) == 0)
            .then(|| self.epoch + Duration::from_millis(self.last.load(Relaxed)))
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

/// How one hyper connection ended.
enum Ended<S> {
    /// Parked: the stream, what the next hyper connection needs, and when the last exchange
    /// ended.
    Parked(S, Memory, Instant),
    /// Closed by the client, by an error, by the drain or for being idle.
    Closed,
}

/// The longest an idle connection waits for its client to answer the GOAWAY before its socket
/// is closed without it (a client that never answers would otherwise keep it forever).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// Serves an HTTP/2 client connection to its end, parking it whenever it is quiet: closed by
/// the client, by the drain, or with GOAWAY once idle for `timeouts.header_read`.
pub async fn serve<S: Parkable>(
    stream: S,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    s: &ServerSettings,
    shutdown: &CancellationToken,
) {
    let peer = Peer::new(peer);
    let parked = metrics::gauge!(m::PARKED);
    let (mut io, mut memory, mut since) = (stream, None, Instant::now());
    loop {
        // Boxed: while parked, none of the serving state is held.
        let served = one_connection(io, memory.take(), since, &peer, &gw, s, shutdown);
        let kept;
        (io, kept, since) = match Box::pin(served).await {
            Ended::Parked(io, kept, since) => (io, kept, since),
            Ended::Closed => return,
        };
        parked.increment(1.0);
        let wait = (since + s.header_read).saturating_duration_since(Instant::now());
        let woke = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            r = tokio::time::timeout(wait, io.ready_to_read()) => match r {
                Ok(r) => Some(r.is_ok()),
                Err(_) => {
                    metrics::counter!(m::IDLE_CLOSED, "protocol" => "http2").increment(1);
                    None
                }
            },
        };
        parked.decrement(1.0);
        match woke {
            Some(true) => memory = Some(kept),
            Some(false) => return,
            None => return goaway(io, kept.last_stream).await,
        }
    }
}

/// Closes a parked connection with GOAWAY (no error), naming the last stream it served.
async fn goaway<S: Parkable>(mut io: S, last_stream: u32) {
    let mut payload = [0; 8];
    payload[..4].copy_from_slice(&last_stream.to_be_bytes());
    let mut goaway = Vec::with_capacity(17);
    frame(&mut goaway, kind::GOAWAY, 0, 0, &payload);
    let _ = tokio::time::timeout(GOAWAY_GRACE, async {
        io.write_all(&goaway).await?;
        io.shutdown().await
    })
    .await;
}

/// The HTTP/2 settings every connection is served with. A decoding table of 0 bytes (the
/// default of `tls.http2_header_table`) keeps the client's requests free of references to
/// earlier ones, which is what lets a connection be parked; it costs request headers their
/// compression against earlier requests (static table and Huffman coding remain), and saves
/// the table each connection would hold.
fn builder(s: &ServerSettings) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes as u32)
        .header_table_size(s.http2_header_table)
        .initial_connection_window_size(CONN_WINDOW);
    b
}

/// Serves one hyper connection, fresh or resumed from `memory`, until it ends or is parked.
async fn one_connection<S: Parkable>(
    io: S,
    memory: Option<Memory>,
    since: Instant,
    peer: &Peer,
    gw: &Arc<Gateway>,
    s: &ServerSettings,
    shutdown: &CancellationToken,
) -> Ended<S> {
    let (wire, lent) = match memory {
        None => Wire::fresh(io),
        Some(m) => Wire::resumed(io, m),
    };
    // Requests that may refer to earlier ones cannot be decoded by a new connection.
    let parks = s.http2_header_table == 0;
    let exchanges = Arc::new(Exchanges::since(since));
    let seen = exchanges.clone();
    let (gw, peer) = (gw.clone(), peer.clone());
    let service = service_fn(move |req: Request<Incoming>| {
        let open = Exchange::begin(&seen);
        gw.clone()
            .handle(req.map(ClientBody::new), peer.clone())
            .map(move |r| r.map(|resp| resp.map(|inner| Watched::new(inner, open))))
    });
    let idle = {
        let conn = builder(s).serve_connection(TokioIo::new(wire), service);
        tokio::pin!(conn);
        let timer = tokio::time::sleep_until(since + s.park);
        tokio::pin!(timer);
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut alarms = Alarms::new(shutdown, cancelled, timer);
        // GOAWAY sent, for being idle or for the drain: the connection waits for the client's
        // ping reply up to the grace, and its open exchanges for the drain's grace.
        let mut closing = false;
        loop {
            let event = std::future::poll_fn(|cx| {
                if conn.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Ended);
                }
                if !closing && alarms.draining(cx) {
                    return Poll::Ready(Event::Drain);
                }
                if alarms.rung(cx) {
                    return Poll::Ready(Event::Timer);
                }
                Poll::Pending
            })
            .await;
            let now = Instant::now();
            match (event, closing) {
                (Event::Ended, _) => return Ended::Closed,
                (Event::Drain, _) => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    alarms.reset(now + s.header_read.min(GOAWAY_GRACE));
                }
                (Event::Timer, false) => match exchanges.idle_since() {
                    Some(idle) if now >= idle + s.header_read => {
                        closing = true;
                        metrics::counter!(m::IDLE_CLOSED, "protocol" => "http2").increment(1);
                        conn.as_mut().graceful_shutdown();
                        alarms.reset(now + s.header_read.min(GOAWAY_GRACE));
                    }
                    Some(idle) if parks && now >= idle + s.park && lent.quiet() => break idle,
                    // Looked at again when the park delay has passed, or a delay later if
                    // something is still outstanding, and at the keep-alive limit.
                    Some(idle) => {
                        let next = if !parks {
                            idle + s.header_read
                        } else if idle + s.park > now {
                            idle + s.park
                        } else {
                            now + s.park.min(s.header_read)
                        };
                        alarms.reset(next.min(idle + s.header_read));
                    }
                    // Looked at again a delay later; by then an exchange that has ended says
                    // when it did, so the limits still count from its end.
                    None => alarms.reset(now + s.park.min(s.header_read)),
                },
                // The client has not answered the GOAWAY (idle or drained): with nothing open,
                // the socket is closed; exchanges still open have the drain's grace.
                (Event::Timer, _) if exchanges.open.load(Relaxed) == 0 => return Ended::Closed,
                (Event::Timer, _) => alarms.reset(now + s.header_read.min(GOAWAY_GRACE)),
            }
        }
    };
    // hyper's connection is gone, and with it the stream it was lent.
    match lent.take() {
        Some((io, memory)) => Ended::Parked(io, memory, idle),
        None => Ended::Closed,
    }
}
