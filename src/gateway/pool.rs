//! The upstream connection pool of one I/O thread: HTTP/1.1 connections (`upstream`), each
//! exchange driven by the request's own task and the connection handed back when the response
//! body ends; a request that a stale pooled connection never carried goes out on another.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::forward::ProxyBody;
use super::headers::Added;
use super::upstream::{self, Conn, ExchangeError, Outgoing, Reader};

/// Why a request could not be exchanged.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(String),
    /// The exchange broke after the request was (possibly) sent, or the request body failed.
    Upstream(String),
    /// No response head within the response timeout.
    Timeout,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Pooled HTTP/1.1 connections to upstreams, by authority.
pub struct Pool {
    /// Keyed by the authority's text: `Authority` hashes byte by byte, case-folded. Newest
    /// last: taken from the back, expired ones dropped from the front.
    idle: Mutex<HashMap<Box<str>, VecDeque<Idle>, ahash::RandomState>>,
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

    fn checkout(&self, key: &Authority, now: Instant) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key.as_str())?;
        while let Some(entry) = list.pop_back() {
            if now.saturating_duration_since(entry.since) < self.idle_timeout {
                return Some(entry.conn);
            }
        }
        None
    }

    fn checkin(&self, key: &Authority, conn: Box<Conn>) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = match idle.get_mut(key.as_str()) {
                Some(list) => list,
                None => idle.entry(key.as_str().into()).or_default(),
            };
            let now = Instant::now();
            while list
                .front()
                .is_some_and(|e| now.duration_since(e.since) >= self.idle_timeout)
            {
                list.pop_front();
            }
            if list.len() < self.max_idle_per_host {
                list.push_back(Idle { conn, since: now });
            }
        }
    }

    async fn connect(&self, key: &Authority) -> Result<Box<Conn>, SendError> {
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
        Ok(Conn::new(stream))
    }

    /// A new connection to `key`. Boxed: the connect path is rare, and inline it would make
    /// every connection's in-flight request future larger.
    async fn connect_boxed(&self, key: &Authority) -> Result<Box<Conn>, SendError> {
        Box::pin(self.connect(key)).await
    }

    /// Sends a request to `key` on a pooled or new connection; the response head must come
    /// within `timeout` of `now`.
    pub fn send<'a>(
        self: &'a Arc<Self>,
        key: &'a Authority,
        req: Request<ProxyBody>,
        added: &Added,
        now: Instant,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<PooledBody>, SendError>> + Send + use<'a> {
        let deadline = tokio::time::Instant::from_std(now) + timeout;
        // The head is encoded before the exchange's future is made, so the request's parts
        // are not kept in its state: a smaller future is cheaper to move.
        let mut pooled = self.checkout(key, now);
        let mut wbuf = pooled
            .as_mut()
            .map(|c| c.take_request())
            .unwrap_or_default();
        let (parts, body) = req.into_parts();
        let out = upstream::encode(&mut wbuf, &parts, added, &body);
        drop(parts);
        self.exchange(key, pooled, wbuf, body, out, deadline)
    }

    async fn exchange(
        self: &Arc<Self>,
        key: &Authority,
        pooled: Option<Box<Conn>>,
        wbuf: BytesMut,
        mut body: ProxyBody,
        out: Outgoing,
        deadline: tokio::time::Instant,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect_boxed(key).await?,
        };
        conn.set_request(wbuf);
        // Only a reused connection asks for a retry, and each retry takes another pooled
        // connection or a new one: this ends.
        loop {
            match conn.exchange(&mut body, &out, deadline).await {
                Ok((parts, framed)) => {
                    let mut pooled = PooledBody {
                        inner: Reader::new(conn, framed),
                        release: Some((self.clone(), key.clone())),
                    };
                    if pooled.inner.is_end() {
                        pooled.release();
                    }
                    return Ok(Response::from_parts(parts, pooled));
                }
                Err(ExchangeError::Retry) => {
                    let wbuf = conn.take_request();
                    conn = match self.checkout(key, Instant::now()) {
                        Some(c) => c,
                        None => self.connect_boxed(key).await?,
                    };
                    conn.set_request(wbuf);
                }
                Err(ExchangeError::Broken(m)) => return Err(SendError::Upstream(m)),
                Err(ExchangeError::Body(m)) => {
                    return Err(SendError::Upstream(format!("the request body failed: {m}")));
                }
                Err(ExchangeError::Timeout) => return Err(SendError::Timeout),
            }
        }
    }
}

/// A response body that returns its connection to the pool once it has been read to the end.
pub struct PooledBody {
    inner: Reader,
    release: Option<(Arc<Pool>, Authority)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((pool, key)) = self.release.take()
            && let Some(conn) = self.inner.reusable()
        {
            pool.checkin(&key, conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = self.inner.poll_data(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end() => self.release(),
            Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled.map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.inner.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
