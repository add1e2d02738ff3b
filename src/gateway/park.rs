//! Parked keep-alive connections. A served HTTP/1 connection keeps read and write buffers
//! and its request state for as long as the client stays connected, so 10,000 idle
//! keep-alive clients would hold hundreds of megabytes. Here a client connection (plain or
//! TLS) is served by the lean path (`h1`) while requests come, or by one hyper connection
//! while hyper serves what the lean path leaves to it; once it has been quiet for the park
//! delay, with no exchange open, that state is dropped without closing the socket, and the
//! socket waits on its own (a few hundred bytes) until the client sends again, when serving
//! resumes with whatever bytes had been read but not used.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::alarm::Alarms;
use super::forward::{Gateway, ResponseBody};
use super::h1;
use super::headers::Peer;
use super::server::{ServerSettings, http1};
use super::stream::{Parkable, Prefixed};
use crate::metrics as m;

/// What one hyper connection is doing, as far as parking it is concerned.
#[derive(Default)]
struct Activity {
    /// Requests begun.
    started: AtomicU64,
    /// Exchanges not finished: responses whose body hyper still holds, and request bodies
    /// not yet read to their end. A request body dropped before its end stays counted: hyper
    /// then drains or closes the read side itself, and such a connection is never parked.
    open: AtomicU64,
}

/// Counts an exchange open until dropped.
struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// How far a client's request body has come, shared with the request's handler so that a
/// failed exchange can be blamed on the client (a broken or stalled body) or the upstream.
#[derive(Clone)]
pub struct BodyFate(Arc<AtomicU8>);

const STREAMING: u8 = 0;
const COMPLETE: u8 = 1;
const FAILED: u8 = 2;

impl BodyFate {
    /// The client's body broke off: aborted, malformed chunk, or an I/O error.
    pub fn failed(&self) -> bool {
        self.0.load(Relaxed) == FAILED
    }

    /// The client has not yet sent its whole body.
    pub fn unfinished(&self) -> bool {
        self.0.load(Relaxed) == STREAMING
    }
}

/// How an `Incoming` body ended, as seen by the frame that ended it.
enum End {
    /// Read to its end.
    Complete,
    /// Broken off by an error.
    Failed,
}

/// One polled frame of a body.
type Polled = Poll<Option<Result<Frame<Bytes>, hyper::Error>>>;

/// Polls one frame of `body`, saying whether this frame ended it.
fn poll_incoming(body: &mut Incoming, cx: &mut Context<'_>) -> (Polled, Option<End>) {
    let polled = Pin::new(&mut *body).poll_frame(cx);
    let end = match &polled {
        Poll::Ready(None) => Some(End::Complete),
        Poll::Ready(Some(Ok(_))) if body.is_end_stream() => Some(End::Complete),
        Poll::Ready(Some(Err(_))) => Some(End::Failed),
        _ => None,
    };
    (polled, end)
}

/// Where a client's request body comes from.
enum Source {
    /// Streamed by hyper as the client sends it.
    Hyper(Incoming),
    /// Received whole with its head (`h1`); `None` once taken, or when there is none.
    Whole(Option<Bytes>),
}

/// A client's request body; on a parkable connection it reports when it has been read whole.
pub struct ClientBody {
    inner: Source,
    open: Option<Arc<Activity>>,
    /// Only for bodies that have content: a bodiless request allocates nothing.
    fate: Option<BodyFate>,
}

impl ClientBody {
    /// A body whose end nobody waits for (HTTP/2 bodies are not watched: their stream states say when an exchange ends).
    pub fn new(inner: Incoming) -> ClientBody {
        let fate = (!inner.is_end_stream()).then(|| BodyFate(Arc::new(AtomicU8::new(STREAMING))));
        ClientBody {
            inner: Source::Hyper(inner),
            open: None,
            fate,
        }
    }

    /// A body that arrived whole with its head: it cannot fail or stall.
    pub fn whole(bytes: Bytes) -> ClientBody {
        ClientBody {
            inner: Source::Whole((!bytes.is_empty()).then_some(bytes)),
            open: None,
            fate: None,
        }
    }

    fn watched(inner: Incoming, activity: &Arc<Activity>) -> ClientBody {
        let mut body = ClientBody::new(inner);
        if body.fate.is_some() {
            activity.open.fetch_add(1, Relaxed);
            body.open = Some(activity.clone());
        }
        body
    }

    /// What the handler keeps to learn how the body ended; `None` for a bodiless request.
    pub fn fate(&self) -> Option<BodyFate> {
        self.fate.clone()
    }

    fn ended(&mut self) {
        if let Some(a) = self.open.take() {
            a.open.fetch_sub(1, Relaxed);
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let incoming = match &mut self.inner {
            Source::Hyper(incoming) => incoming,
            Source::Whole(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        let (polled, end) = poll_incoming(incoming, cx);
        match end {
            Some(End::Complete) => {
                if let Some(f) = &self.fate {
                    f.0.store(COMPLETE, Relaxed);
                }
                self.ended();
            }
            // A failed body stays open: hyper closes such a connection itself.
            Some(End::Failed) => {
                if let Some(f) = &self.fate {
                    f.0.store(FAILED, Relaxed);
                }
            }
            None => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Hyper(incoming) => incoming.is_end_stream(),
            Source::Whole(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Hyper(incoming) => incoming.size_hint(),
            Source::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A response body that keeps its exchange open (the guard `G`) until hyper has written it
/// and let it go.
pub struct Watched<G> {
    inner: ResponseBody,
    _open: G,
}

impl<G> Watched<G> {
    /// `inner`, holding `open` until dropped.
    pub fn new(inner: ResponseBody, open: G) -> Watched<G> {
        Watched { inner, _open: open }
    }
}

impl<G: Unpin> Body for Watched<G> {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What woke a served connection's loop.
enum Event {
    /// The hyper connection ended.
    Ended(hyper::Result<()>),
    /// The gateway is draining.
    Drain,
    /// The park delay passed.
    Quiet,
}

/// How a hyper connection over a parkable socket ended.
enum Ended<S> {
    /// Parked by us: the socket and the unused bytes, to wait for the next request.
    Parked(Prefixed<S>),
    /// Closed by the client, by an error, by `Connection: close` or by the drain.
    Closed,
}

/// Serves an HTTP/1.1 client connection (plain or TLS) to its end, parking it whenever it is
/// idle.
pub async fn serve<S: Parkable>(
    stream: S,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    s: &ServerSettings,
    shutdown: CancellationToken,
) {
    let mut io = Prefixed::new(stream);
    let peer = Peer::new(peer);
    // A fresh connection may take the head deadline to send its first byte, like a hyper one.
    let mut wait = s.header_read;
    let parked = metrics::gauge!(m::PARKED);
    let mut first = true;
    loop {
        if io.head.is_empty() {
            if !first {
                parked.increment(1.0);
            }
            let woke = tokio::select! {
                biased;
                _ = shutdown.cancelled() => false,
                r = tokio::time::timeout(wait, io.io.ready_to_read()) => match r {
                    Ok(r) => r.is_ok(),
                    Err(_) => {
                        metrics::counter!(m::IDLE_CLOSED, "protocol" => "http1").increment(1);
                        false
                    }
                },
            };
            if !first {
                parked.decrement(1.0);
            }
            if !woke {
                return;
            }
        }
        first = false;
        // Parked only after at least the park delay of quiet, which counts towards the
        // keep-alive limit.
        wait = s.header_read.saturating_sub(s.park);
        // Boxed: while parked, none of the serving state is held.
        io = match Box::pin(h1::serve(io, &peer, &gw, s, &shutdown)).await {
            h1::End::Quiet(io) => io,
            h1::End::Closed => return,
            h1::End::Hyper(io) => {
                match Box::pin(one_hyper_connection(
                    io,
                    peer.clone(),
                    gw.clone(),
                    s,
                    &shutdown,
                ))
                .await
                {
                    Ended::Parked(io) => io,
                    Ended::Closed => return,
                }
            }
        };
    }
}

async fn one_hyper_connection<S: Parkable>(
    io: Prefixed<S>,
    peer: Peer,
    gw: Arc<Gateway>,
    s: &ServerSettings,
    shutdown: &CancellationToken,
) -> Ended<S> {
    let activity = Arc::new(Activity::default());
    let seen_by_service = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let a = &seen_by_service;
        a.started.fetch_add(1, Relaxed);
        a.open.fetch_add(1, Relaxed);
        let open = Open(a.clone());
        let req = req.map(|b| ClientBody::watched(b, a));
        // Boxed because hyper can only hand a connection back when its futures are Unpin;
        // boxed where it is made, so the large future is not moved again on its way in.
        Box::pin(gw.clone().handle(req, peer.clone()))
            .map(move |r| r.map(|resp| resp.map(|inner| Watched::new(inner, open))))
    });
    let mut conn = http1(s).serve_connection(TokioIo::new(io), service);
    let (mut parking, mut draining) = (false, false);
    let mut seen = 0;
    let timer = tokio::time::sleep(s.park);
    tokio::pin!(timer);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut alarms = Alarms::new(shutdown, cancelled, timer);
    let result = loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(Event::Ended(r));
            }
            if !draining && alarms.draining(cx) {
                return Poll::Ready(Event::Drain);
            }
            if !parking && !draining && alarms.rung(cx) {
                return Poll::Ready(Event::Quiet);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Ended(r) => break r,
            Event::Drain => {
                draining = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            Event::Quiet => {
                let started = activity.started.load(Relaxed);
                // hyper is idle between requests only after it has finished one: before
                // that, a graceful shutdown would answer the first request with
                // `Connection: close`.
                if started > 0 && started == seen && activity.open.load(Relaxed) == 0 {
                    parking = true;
                    Pin::new(&mut conn).graceful_shutdown();
                } else {
                    seen = started;
                    alarms.reset(Instant::now() + s.park);
                }
            }
        }
    };
    if result.is_err() {
        return Ended::Closed;
    }
    let parts = conn.into_parts();
    let mut io = parts.io.into_inner();
    if !parking || draining {
        let _ = io.io.shutdown().await;
        return Ended::Closed;
    }
    if !parts.read_buf.is_empty() {
        // What hyper read and left comes before what it never read.
        let mut head = BytesMut::with_capacity(parts.read_buf.len() + io.head.len());
        head.extend_from_slice(&parts.read_buf);
        head.extend_from_slice(&io.head);
        io.head = head.freeze();
    }
    Ended::Parked(io)
}
