//! The upstream connection pool of one I/O thread: HTTP/1.1 connections over
//! `hyper::client::conn`, handed back when the response body ends (no task per request), and
//! a request that a stale pooled connection never sent is sent again on a fresh one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::forward::ProxyBody;

/// Why a request could not be exchanged.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(String),
    /// The exchange broke after the request was (possibly) sent.
    Upstream(String),
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// Pooled HTTP/1.1 connections to upstreams, by authority.
pub struct Pool {
    /// Keyed by the authority's text: `Authority` hashes byte by byte, case-folded.
    idle: Mutex<HashMap<Box<str>, Vec<Idle>, ahash::RandomState>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_host: usize,
}

impl Pool {
    /// An empty pool.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle_per_host: usize,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::default()),
            connect_timeout,
            idle_timeout,
            max_idle_per_host,
        })
    }

    fn checkout(&self, key: &Authority) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key.as_str())?;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < self.idle_timeout && entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn checkin(&self, key: &Authority, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = match idle.get_mut(key.as_str()) {
                Some(list) => list,
                None => idle.entry(key.as_str().into()).or_default(),
            };
            if list.len() < self.max_idle_per_host {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    async fn connect(&self, key: &Authority) -> Result<SendRequest<ProxyBody>, SendError> {
        let addr = key.as_str();
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(format!("tcp connect to {addr}: {e}"))),
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "tcp connect to {addr}: timed out"
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(format!("handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends a request to `key` on a pooled or new connection.
    pub async fn send(
        self: &Arc<Self>,
        key: &Authority,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        // A pooled connection the upstream already closed gives the request back unsent:
        // one more try on a fresh connection is then always safe.
        for _ in 0..2 {
            let mut sender = match self.checkout(key) {
                Some(s) => s,
                // Boxed: the connect path is rare, and inline it would make every
                // connection's in-flight request future several times larger.
                None => Box::pin(self.connect(key)).await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let mut pooled = PooledBody {
                        inner: body,
                        release: Some((self.clone(), key.clone(), sender)),
                    };
                    if pooled.inner.is_end_stream() {
                        pooled.release();
                    }
                    return Ok(Response::from_parts(parts, pooled));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::Upstream(e.into_error().to_string())),
                },
            }
        }
        Err(SendError::Upstream(
            "upstream closed the connection before the request was sent".into(),
        ))
    }
}

/// How an `Incoming` body ended, as seen by the frame that ended it.
pub(super) enum End {
    /// Read to its end.
    Complete,
    /// Broken off by an error.
    Failed,
}

/// One polled frame of a body.
pub(super) type Polled = Poll<Option<Result<Frame<Bytes>, hyper::Error>>>;

/// Polls one frame of `body`, saying whether this frame ended it.
pub(super) fn poll_incoming(body: &mut Incoming, cx: &mut Context<'_>) -> (Polled, Option<End>) {
    let polled = Pin::new(&mut *body).poll_frame(cx);
    let end = match &polled {
        Poll::Ready(None) => Some(End::Complete),
        Poll::Ready(Some(Ok(_))) if body.is_end_stream() => Some(End::Complete),
        Poll::Ready(Some(Err(_))) => Some(End::Failed),
        _ => None,
    };
    (polled, end)
}

/// A response body that returns its connection to the pool once it has been read to the end.
pub struct PooledBody {
    inner: Incoming,
    release: Option<(Arc<Pool>, Authority, SendRequest<ProxyBody>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((pool, key, sender)) = self.release.take() {
            pool.checkin(&key, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let (polled, end) = poll_incoming(&mut self.inner, cx);
        match end {
            Some(End::Complete) => self.release(),
            Some(End::Failed) => self.release = None,
            None => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
