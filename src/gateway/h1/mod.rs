//! The lean path of an HTTP/1.1 client connection. Plain requests — HTTP/1.1, a target in
//! origin form, no body or a small one that came whole with its head — are read, handed to
//! the gateway and answered right here, in the connection's own task, with one reused read
//! buffer, one reused head buffer and one timer for the whole connection. Anything else (a
//! streamed or chunked body, `Expect`, `Upgrade`, another version, a head too large or one
//! that does not parse) goes, with every unread byte, to a hyper connection, which serves
//! until the client is quiet again (`park`).

mod request;
mod response;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use super::alarm::Alarms;
use super::fields::Fields;
use super::forward::{Gateway, refuse};
use super::headers::Peer;
use super::server::ServerSettings;
use super::stream::{Parkable, Prefixed};
use request::{MAX_HEAD, Parsed};

/// Read capacity kept free before each read.
const READ_SPARE: usize = 2 * 1024;
/// Read capacity added when too little is free.
const READ_CHUNK: usize = 8 * 1024;
/// Free read capacity needed to read ahead while a request is served; none is added then,
/// since the request being served may still hold the buffer's memory.
const READ_AHEAD: usize = 512;

/// How the lean path let go of a connection.
pub(super) enum End<S> {
    /// Quiet for the park delay, with nothing unread: the connection can be parked.
    Quiet(Prefixed<S>),
    /// A request only hyper serves: the connection, with every byte not yet used in front.
    Hyper(Prefixed<S>),
    /// Closed: by the client, by an error, by `Connection: close`, by the drain, or because
    /// a head did not arrive whole within the head deadline.
    Closed,
}

/// What ended a wait for the client's next bytes.
enum Woke {
    Read(io::Result<usize>),
    Drain,
    Timer,
}

/// Serves requests on `io` until it is quiet, closed, or needs hyper. The wait for each head
/// starts when the previous response has been written: while nothing of the next head has
/// come, the park delay ends it; once some has, the head deadline (`header_read`) does.
pub(super) async fn serve<S: Parkable>(
    mut io: Prefixed<S>,
    peer: &Peer,
    gw: &Arc<Gateway>,
    s: &ServerSettings,
    shutdown: &CancellationToken,
) -> End<S> {
    let mut rbuf = BytesMut::from(&std::mem::take(&mut io.head)[..]);
    let mut wbuf = Vec::new();
    let mut fields = Fields::default();
    let mut since = Instant::now();
    let timer = tokio::time::sleep_until(since + s.park);
    tokio::pin!(timer);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut alarms = Alarms::new(shutdown, cancelled, timer);
    loop {
        match request::parse(&mut rbuf, &mut fields) {
            Parsed::Request(req, asked_close) => {
                let method = req.method().clone();
                let handling = gw.clone().handle(req, peer.clone());
                tokio::pin!(handling);
                // While the request is served, the client's next bytes are read as they come
                // (a pipelined request), so that a client that goes away is seen at once and
                // its request dropped, as hyper does.
                let served = poll_fn(|cx| {
                    if let Poll::Ready(Ok(resp)) = handling.as_mut().poll(cx) {
                        return Poll::Ready(Some(resp));
                    }
                    while rbuf.capacity() - rbuf.len() >= READ_AHEAD && rbuf.len() < MAX_HEAD {
                        match poll_read_buf(Pin::new(&mut io.io), cx, &mut rbuf) {
                            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                            Poll::Ready(Ok(_)) => {}
                            Poll::Pending => break,
                        }
                    }
                    Poll::Pending
                })
                .await;
                let Some(resp) = served else {
                    return close_after(io).await;
                };
                let (parts, body) = resp.into_parts();
                let close = asked_close || shutdown.is_cancelled();
                let done = response::encode(&mut wbuf, &parts, &body, &method, close);
                drop(parts);
                let wrote = response::write(&mut io.io, &wbuf, body, done.framing).await;
                if wrote.is_err() || done.close {
                    return close_after(io).await;
                }
                since = Instant::now();
                continue;
            }
            Parsed::Bad => {
                let (parts, body) = refuse(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "the request head could not be parsed",
                )
                .into_parts();
                let done = response::encode(&mut wbuf, &parts, &body, &http::Method::GET, true);
                let _ = response::write(&mut io.io, &wbuf, body, done.framing).await;
                return close_after(io).await;
            }
            Parsed::Hyper => {
                io.head = rbuf.freeze();
                return End::Hyper(io);
            }
            Parsed::Partial => {}
        }
        let idle = rbuf.is_empty();
        let deadline = since + if idle { s.park } else { s.header_read };
        // The timer is moved only when it must fire sooner; one that fires before the
        // deadline is moved then. So a busy connection does not touch it per request.
        if deadline < alarms.deadline() {
            alarms.reset(deadline);
        }
        if rbuf.capacity() - rbuf.len() < READ_SPARE {
            rbuf.reserve(READ_CHUNK);
        }
        let woke = poll_fn(|cx| {
            if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut io.io), cx, &mut rbuf) {
                return Poll::Ready(Woke::Read(r));
            }
            if alarms.draining(cx) {
                return Poll::Ready(Woke::Drain);
            }
            loop {
                if !alarms.rung(cx) {
                    return Poll::Pending;
                }
                if Instant::now() >= deadline {
                    return Poll::Ready(Woke::Timer);
                }
                alarms.reset(deadline);
            }
        })
        .await;
        match woke {
            Woke::Read(Ok(n)) if n > 0 => {}
            Woke::Timer if idle => {
                io.head = Bytes::new();
                return End::Quiet(io);
            }
            Woke::Read(_) | Woke::Drain | Woke::Timer => return close_after(io).await,
        }
    }
}

/// Closes the client's connection.
async fn close_after<S: Parkable>(mut io: Prefixed<S>) -> End<S> {
    let _ = io.io.shutdown().await;
    End::Closed
}
