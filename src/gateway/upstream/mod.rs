//! One HTTP/1.1 exchange with an upstream, driven inside the client request's own task: the
//! request head and body are written, the response head is parsed with httparse and the
//! response body is framed by RFC 9112 §6.3 and read as the client takes it. No connection
//! task, channel or per-request timer stands between a request and the upstream socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use http::response::Parts;
use http::{HeaderName, HeaderValue, Method};
use hyper::body::Body as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::forward::ProxyBody;
use super::headers::Added;

mod body;
mod head;

use crate::gateway::fields::Fields;
pub use body::Reader;
pub use head::Framed;
use head::parse_head;

/// Most header fields accepted in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size line (with extensions) or trailer section accepted.
const MAX_LINE: usize = 16 * 1024;
/// Request body bytes gathered before they are written.
const MAX_GATHER: usize = 64 * 1024;
/// Read capacity kept free before each read.
const READ_SPARE: usize = 4 * 1024;
/// Read capacity added when too little is free.
const READ_CHUNK: usize = 16 * 1024;

/// One connection to an upstream.
pub struct Conn {
    io: TcpStream,
    /// Bytes read from the upstream and not yet used.
    rbuf: BytesMut,
    /// The request being written: head and gathered body bytes.
    wbuf: BytesMut,
    /// The response deadline, moved for each exchange: moving a timer later costs far less
    /// than arming a new one.
    timer: Pin<Box<Sleep>>,
    /// Whether it has served an exchange before (only such a connection can be stale).
    reused: bool,
    /// What the last response head held, kept to parse the next one.
    seen: Fields,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The connection proved closed before the upstream could have acted on the request:
    /// send it again on another connection.
    Retry,
    /// The exchange broke after the request was (possibly) sent.
    Broken(String),
    /// The request body failed (the client's fault, not the upstream's).
    Body(String),
    /// No response head before the deadline.
    Timeout,
}

/// How the request body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    /// No body, or a length the head already states.
    Fixed,
    /// Chunked transfer coding.
    Chunked,
}

/// What must be remembered of the request while it is exchanged.
pub struct Outgoing {
    framing: Framing,
    /// A HEAD request: the response has no body whatever its head says.
    head_request: bool,
    /// Safe to send again when a reused connection closed without answering.
    replayable: bool,
}

/// Progress of writing the request.
#[derive(Default)]
struct Written {
    /// Bytes of `wbuf` already written.
    at: usize,
    /// The body has been read to its end (and its end encoded).
    body_done: bool,
    /// Some body bytes were taken from the client and written.
    body_sent: bool,
    /// Head and body are all written.
    finished: bool,
}

impl Conn {
    /// A fresh connection; boxed, so that a response body holding it is cheap to move.
    pub fn new(io: TcpStream) -> Box<Conn> {
        Box::new(Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            reused: false,
            seen: Fields::default(),
        })
    }

    /// Takes the connection's write buffer (to encode a request into, or to move the request
    /// to another connection for a retry).
    pub fn take_request(&mut self) -> BytesMut {
        std::mem::take(&mut self.wbuf)
    }

    /// Gives the connection the encoded request to write.
    pub fn set_request(&mut self, wbuf: BytesMut) {
        self.wbuf = wbuf;
    }
}

/// Encodes a request head for an upstream into `w`.
pub fn encode(
    w: &mut BytesMut,
    parts: &http::request::Parts,
    added: &Added,
    body: &ProxyBody,
) -> Outgoing {
    {
        let (framing, length) = if body.is_end_stream() {
            (Framing::Fixed, None)
        } else {
            match body.size_hint().exact() {
                Some(n) => (Framing::Fixed, Some(n)),
                None => (Framing::Chunked, None),
            }
        };
        w.clear();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        w.reserve(256);
        w.put_slice(parts.method.as_str().as_bytes());
        w.put_u8(b' ');
        w.put_slice(target.as_bytes());
        w.put_slice(b" HTTP/1.1\r\n");
        let own_length = length.is_some() || framing == Framing::Chunked;
        for (name, value) in &parts.headers {
            if Added::replaces(name) || (own_length && name == http::header::CONTENT_LENGTH) {
                continue;
            }
            put_field(w, name, value);
        }
        for (name, value) in added.iter() {
            put_field(w, name, value);
        }
        if let Some(n) = length {
            w.put_slice(b"content-length: ");
            w.put_slice(itoa(n, &mut [0; 20]));
            w.put_slice(b"\r\n");
        } else if framing == Framing::Chunked {
            w.put_slice(b"transfer-encoding: chunked\r\n");
        }
        w.put_slice(b"\r\n");
        let bodiless = body.is_end_stream();
        Outgoing {
            framing,
            head_request: parts.method == Method::HEAD,
            replayable: bodiless && idempotent(&parts.method),
        }
    }
}

impl Conn {
    /// Writes the encoded request and its body, and reads the response head, until `deadline`.
    pub async fn exchange(
        &mut self,
        body: &mut ProxyBody,
        out: &Outgoing,
        deadline: Instant,
    ) -> Result<(Parts, Framed), ExchangeError> {
        self.timer.as_mut().reset(deadline);
        let mut w = Written::default();
        let mut checked = !self.reused;
        std::future::poll_fn(|cx| {
            if !checked {
                checked = true;
                // Anything readable on an idle connection is its close (or bytes nobody
                // asked for): it cannot carry this request. Tokio knows without a system call.
                if self.io.poll_read_ready(cx).is_ready() {
                    return Poll::Ready(Err(ExchangeError::Retry));
                }
            }
            if !w.finished
                && let Poll::Ready(Err(e)) = self.poll_write_request(cx, body, out, &mut w)
            {
                return Poll::Ready(Err(e));
            }
            match self.poll_head(cx, out) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(self.closed(e, out, &w))),
                Poll::Ready(Ok(mut head)) => {
                    // A response that came before the whole request was written leaves the
                    // connection unusable for another.
                    head.1.keep_alive &= w.finished;
                    Poll::Ready(Ok(head))
                }
                Poll::Pending => match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(ExchangeError::Timeout)),
                    Poll::Pending => Poll::Pending,
                },
            }
        })
        .await
    }

    /// A connection that closed without one byte of answer may be retried if the request can
    /// be sent again and the connection was a reused one (the usual keep-alive race).
    fn closed(&self, e: ReadError, out: &Outgoing, w: &Written) -> ExchangeError {
        match e {
            ReadError::Nothing(_) if self.reused && out.replayable && !w.body_sent => {
                ExchangeError::Retry
            }
            ReadError::Nothing(m) | ReadError::Broken(m) => ExchangeError::Broken(m),
        }
    }

    fn poll_write_request(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut ProxyBody,
        out: &Outgoing,
        w: &mut Written,
    ) -> Poll<Result<(), ExchangeError>> {
        loop {
            // Gather what the body has ready, so that head and a small body go out together.
            while !w.body_done && self.wbuf.len() - w.at < MAX_GATHER {
                if body.is_end_stream() {
                    self.end_body(out, w);
                    break;
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => self.end_body(out, w),
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(ExchangeError::Body(e.to_string())));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            w.body_sent = true;
                            if out.framing == Framing::Chunked {
                                self.wbuf.put_slice(hex(data.len() as u64, &mut [0; 16]));
                                self.wbuf.put_slice(b"\r\n");
                                self.wbuf.put_slice(&data);
                                self.wbuf.put_slice(b"\r\n");
                            } else {
                                self.wbuf.put_slice(&data);
                            }
                        }
                    }
                }
            }
            if w.at == self.wbuf.len() {
                if w.body_done {
                    w.finished = true;
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[w.at..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ExchangeError::Broken(
                        "the upstream connection accepts no more bytes".into(),
                    )));
                }
                Poll::Ready(Ok(n)) => {
                    w.at += n;
                    // Keep a bodiless request's head whole: it may be sent again.
                    if w.at == self.wbuf.len() && !w.body_done {
                        self.wbuf.clear();
                        w.at = 0;
                    }
                }
                Poll::Ready(Err(e)) => {
                    // A write that failed sent nothing: on a reused connection, before any
                    // byte went out, the request is intact.
                    return Poll::Ready(Err(if self.reused && w.at == 0 && !w.body_sent {
                        ExchangeError::Retry
                    } else {
                        ExchangeError::Broken(format!("writing to the upstream: {e}"))
                    }));
                }
            }
        }
    }

    fn end_body(&mut self, out: &Outgoing, w: &mut Written) {
        if out.framing == Framing::Chunked {
            self.wbuf.put_slice(b"0\r\n\r\n");
        }
        w.body_done = true;
    }

    /// Reads until a final response head is parsed (informational ones are skipped).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        out: &Outgoing,
    ) -> Poll<Result<(Parts, Framed), ReadError>> {
        loop {
            if !self.rbuf.is_empty() {
                match parse_head(&mut self.rbuf, &mut self.seen, out.head_request) {
                    Err(m) => return Poll::Ready(Err(ReadError::Broken(m))),
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) if self.rbuf.len() >= MAX_HEAD => {
                        return Poll::Ready(Err(ReadError::Broken(format!(
                            "the upstream's response head is larger than {MAX_HEAD} bytes"
                        ))));
                    }
                    Ok(None) => {}
                }
            }
            let empty = self.rbuf.is_empty();
            match self.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if empty => {
                    return Poll::Ready(Err(ReadError::Nothing(
                        "the upstream closed the connection without a response".into(),
                    )));
                }
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ReadError::Broken(
                        "the upstream closed the connection inside a response head".into(),
                    )));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) if empty => {
                    return Poll::Ready(Err(ReadError::Nothing(format!(
                        "reading from the upstream: {e}"
                    ))));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(ReadError::Broken(format!(
                        "reading from the upstream: {e}"
                    ))));
                }
            }
        }
    }

    /// Reads what the socket has into `rbuf`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_SPARE {
            self.rbuf.reserve(READ_CHUNK);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }
}

/// Why reading a response head failed.
enum ReadError {
    /// Nothing at all was received.
    Nothing(String),
    /// Something was received, then the exchange broke.
    Broken(String),
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn put_field(w: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    w.put_slice(name.as_str().as_bytes());
    w.put_slice(b": ");
    w.put_slice(value.as_bytes());
    w.put_slice(b"\r\n");
}

/// Decimal digits of `n`.
pub(crate) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Upper-case hex digits of `n`.
pub(crate) fn hex(mut n: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789ABCDEF"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn encoded(req: http::Request<ProxyBody>) -> (String, Outgoing) {
        let (parts, body) = req.into_parts();
        let mut w = BytesMut::new();
        let out = encode(&mut w, &parts, &Added::default(), &body);
        (String::from_utf8(w.to_vec()).unwrap(), out)
    }

    #[test]
    fn request_heads_state_their_framing() {
        use http_body_util::{Either, Full};
        let full = |s: &'static str| Either::Right(Full::new(Bytes::from(s)));
        let (text, out) = encoded(
            http::Request::post("/a?b=1")
                .header("content-length", "99")
                .header("x-y", "z")
                .body(full("four"))
                .unwrap(),
        );
        assert_eq!(
            text,
            "POST /a?b=1 HTTP/1.1\r\nx-y: z\r\ncontent-length: 4\r\n\r\n"
        );
        assert_eq!(out.framing, Framing::Fixed);
        assert!(!out.replayable);
        let (text, out) = encoded(
            http::Request::get("/")
                .header("host", "client.example")
                .body(full(""))
                .unwrap(),
        );
        assert_eq!(text, "GET / HTTP/1.1\r\n\r\n", "Host comes from `Added`");
        assert!(out.replayable);
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(u64::MAX, &mut [0; 20]), b"18446744073709551615");
        assert_eq!(hex(0, &mut [0; 16]), b"0");
        assert_eq!(hex(0xABC, &mut [0; 16]), b"ABC");
    }
}
