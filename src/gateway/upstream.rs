//! One HTTP/1.1 exchange with an upstream, driven inside the client request's own task: the
//! request head and body are written, the response head is parsed with httparse and the
//! response body is framed by RFC 9112 §6.3 and read as the client takes it. No connection
//! task, channel or per-request timer stands between a request and the upstream socket.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, VIA};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use hyper::body::Body as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::forward::ProxyBody;
use super::headers::{self, Added, is_hop_by_hop};

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
    seen: Seen,
}

/// The header fields of a connection's last response head.
#[derive(Default)]
struct Seen {
    /// Their names, in order, with the bytes each was sent as. An upstream sends the same
    /// names in the same order, and comparing bytes costs far less than parsing a name again.
    names: Vec<(Box<[u8]>, HeaderName)>,
    /// Where their values sit in the head.
    values: Vec<(u32, u32)>,
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
    /// A fresh connection.
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            reused: false,
            seen: Seen::default(),
        }
    }

    /// Marks the connection as having served an exchange.
    pub fn served(&mut self) {
        self.reused = true;
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
    fn closed(&mut self, e: ReadError, out: &Outgoing, w: &Written) -> ExchangeError {
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
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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
fn hex(mut n: u64, buf: &mut [u8; 16]) -> &[u8] {
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

/// What the framing fields of a response say.
#[derive(Default)]
struct FramingFields {
    length: Option<u64>,
    bad_length: bool,
    coded: bool,
    chunked_last: bool,
    close: bool,
    keep_alive: bool,
    /// `Connection` names fields other than its usual tokens.
    names_others: bool,
    /// A `Via` field is present.
    via: bool,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == CONTENT_LENGTH {
            for part in value.split(|b| *b == b',') {
                let part = part.trim_ascii();
                let n =
                    (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                        .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
                match (n, self.length) {
                    (Some(n), None) => self.length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => self.bad_length = true,
                }
            }
        } else if *name == TRANSFER_ENCODING {
            self.coded = true;
            if let Some(last) = value.rsplit(|b| *b == b',').next() {
                let last = last.trim_ascii();
                if !last.is_empty() {
                    self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
                }
            }
        } else if *name == CONNECTION {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                self.names_others |= !close && !keep_alive && !token.is_empty();
            }
        } else if *name == VIA {
            self.via = true;
        }
    }
}

/// Parses a response head at the front of `buf` into the head the client gets (hop-by-hop
/// fields gone, our `Via` added): `None` until it is complete. Informational responses are
/// dropped from `buf`. `names` holds the names of the connection's previous response.
fn parse_head(
    buf: &mut BytesMut,
    seen: &mut Seen,
    head_request: bool,
) -> Result<Option<(Parts, Framed)>, String> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let mut fields = FramingFields::default();
        let base = buf.as_ptr() as usize;
        let (len, code, minor) = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
        {
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("the upstream sent a malformed response head: {e}")),
            Ok(httparse::Status::Complete(len)) => {
                (len, res.code.unwrap_or(0), res.version.unwrap_or(1))
            }
        };
        let status = StatusCode::from_u16(code)
            .map_err(|_| format!("the upstream sent status code {code}"))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(
                    "the upstream switched protocols, which the gateway does not proxy".into(),
                );
            }
            buf.advance(len);
            continue;
        }
        seen.values.clear();
        for (i, h) in res.headers.iter().enumerate() {
            let raw = h.name.as_bytes();
            // A name equal (ignoring case) to a valid one is that name.
            let name = match seen.names.get(i) {
                Some((sent, n)) if **sent == *raw => n,
                _ => {
                    let n = HeaderName::from_bytes(raw)
                        .map_err(|_| "the upstream sent an invalid header name".to_string())?;
                    seen.names.truncate(i);
                    seen.names.push((raw.into(), n));
                    &seen.names[i].1
                }
            };
            fields.note(name, h.value);
            let at = h.value.as_ptr() as usize - base;
            seen.values.push((at as u32, h.value.len() as u32));
        }
        let count = seen.values.len();
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count + 1);
        for ((_, name), &(at, n)) in seen.names.iter().zip(&seen.values) {
            // Hop-by-hop fields end here; when `Connection` names other fields it stays, for
            // `headers::to_client` to remove them with it.
            if is_hop_by_hop(name) && !(fields.names_others && name == CONNECTION) {
                continue;
            }
            // With a transfer coding, Content-Length does not frame the message and must not
            // be forwarded (RFC 9112 §6.3).
            if fields.coded && name == CONTENT_LENGTH {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(at as usize..(at + n) as usize))
                .map_err(|_| "the upstream sent an invalid header value".to_string())?;
            headers.append(name.clone(), value);
        }
        if fields.names_others || fields.via {
            headers::to_client(&mut headers);
        } else {
            headers.append(VIA, HeaderValue::from_static(headers::VIA_VALUE));
        }
        let mut keep_alive = if minor == 0 {
            fields.keep_alive && !fields.close
        } else {
            !fields.close
        };
        let body = if head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Rest::Length(0)
        } else if fields.coded {
            // Transfer-Encoding overrides Content-Length; a message carrying both may be an
            // attempt at smuggling, so its connection is not used again (RFC 9112 §6.3).
            keep_alive &= fields.length.is_none() && !fields.bad_length;
            if fields.chunked_last {
                Rest::Chunked(Chunk::Size)
            } else {
                keep_alive = false;
                Rest::ToClose
            }
        } else if fields.bad_length {
            return Err("the upstream sent an invalid Content-Length".into());
        } else if let Some(n) = fields.length {
            Rest::Length(n)
        } else {
            keep_alive = false;
            Rest::ToClose
        };
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = Version::HTTP_11;
        *response.headers_mut() = headers;
        let (parts, ()) = response.into_parts();
        return Ok(Some((parts, Framed { body, keep_alive })));
    }
}

/// How far a chunked body has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line comes next.
    Size,
    /// This many bytes of chunk data come next.
    Data(u64),
    /// The CRLF after a chunk's data comes next.
    DataEnd,
    /// The trailer section comes next.
    Trailers,
}

/// How a response body is delimited, and how much of it is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rest {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point.
    Chunked(Chunk),
    /// Everything until the upstream closes.
    ToClose,
    /// Read to its end.
    Done,
}

/// How a response's body is framed, from its head.
pub struct Framed {
    body: Rest,
    keep_alive: bool,
}

/// A response body being read from its connection.
pub struct Reader {
    conn: Option<Conn>,
    body: Rest,
    keep_alive: bool,
}

impl Reader {
    /// Reads the body framed by `framed` from `conn`.
    pub fn new(conn: Conn, framed: Framed) -> Reader {
        Reader {
            conn: Some(conn),
            body: framed.body,
            keep_alive: framed.keep_alive,
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_end(&self) -> bool {
        matches!(self.body, Rest::Length(0) | Rest::Done)
    }

    /// Bytes left, when the framing tells.
    pub fn remaining(&self) -> Option<u64> {
        match self.body {
            Rest::Length(n) => Some(n),
            Rest::Done => Some(0),
            _ => None,
        }
    }

    /// The connection, once the body has been read to its end and the connection can carry
    /// another exchange.
    pub fn reusable(&mut self) -> Option<Conn> {
        if !self.is_end() || !self.keep_alive {
            return None;
        }
        let conn = self.conn.take()?;
        // Bytes after the response that nobody asked for: the connection is not trusted.
        conn.rbuf.is_empty().then_some(conn)
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut self.body, &mut conn.rbuf) {
                Step::Data(d) => return Poll::Ready(Some(Ok(d))),
                Step::End => return Poll::Ready(None),
                Step::Bad(m) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, m))));
                }
                Step::More => {}
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if self.body == Rest::ToClose => {
                    self.body = Rest::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the response body ended",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

/// What one decoding step found.
enum Step {
    Data(Bytes),
    End,
    More,
    Bad(&'static str),
}

/// Decodes what `buf` holds of the body.
fn step(body: &mut Rest, buf: &mut BytesMut) -> Step {
    loop {
        match body {
            Rest::Done | Rest::Length(0) => return Step::End,
            Rest::Length(left) => {
                if buf.is_empty() {
                    return Step::More;
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                return Step::Data(buf.split_to(n).freeze());
            }
            Rest::ToClose => {
                if buf.is_empty() {
                    return Step::More;
                }
                return Step::Data(buf.split().freeze());
            }
            Rest::Chunked(Chunk::Data(left)) => {
                if buf.is_empty() {
                    return Step::More;
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    *body = Rest::Chunked(Chunk::DataEnd);
                }
                return Step::Data(buf.split_to(n).freeze());
            }
            Rest::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Step::More;
                }
                if &buf[..2] != b"\r\n" {
                    return Step::Bad("a chunk's data is not followed by CRLF");
                }
                buf.advance(2);
                *body = Rest::Chunked(Chunk::Size);
            }
            Rest::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    *body = Rest::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                    return Step::Bad("a chunk-size line is too long");
                }
                Ok(httparse::Status::Partial) => return Step::More,
                Err(_) => return Step::Bad("a chunk-size line is malformed"),
            },
            Rest::Chunked(Chunk::Trailers) => {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((used, _))) => {
                        // Trailer fields are dropped: HTTP/1.1 clients must ask for them.
                        buf.advance(used);
                        *body = Rest::Done;
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Step::Bad("the trailer section is too long");
                    }
                    Ok(httparse::Status::Partial) => return Step::More,
                    Err(_) => return Step::Bad("the trailer section is malformed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &[u8], head_request: bool) -> Result<Option<(Parts, Framed)>, String> {
        parse_head(
            &mut BytesMut::from(text),
            &mut Seen::default(),
            head_request,
        )
    }

    fn framing(text: &[u8]) -> (Rest, bool) {
        let (_, f) = head(text, false).unwrap().unwrap();
        (f.body, f.keep_alive)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            (Rest::Length(5), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
            (Rest::Length(5), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (Rest::Chunked(Chunk::Size), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"),
            (Rest::Chunked(Chunk::Size), false)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            (Rest::ToClose, false)
        );
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n"), (Rest::ToClose, false));
        assert_eq!(
            framing(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
            (Rest::Length(0), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"),
            (Rest::Length(1), false)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            (Rest::Length(1), false)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n"),
            (Rest::Length(1), true)
        );
        let (_, f) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(f.body, Rest::Length(0), "a HEAD response has no body");
    }

    #[test]
    fn bad_heads_are_errors_and_partial_ones_wait() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(
                head(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            head(b"HTTP/1.1 200 OK\r\nContent-", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn informational_responses_are_skipped() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..]);
        let (parts, f) = parse_head(&mut buf, &mut Seen::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(parts.status, StatusCode::CREATED);
        assert!(parts.headers.get("link").is_none());
        assert_eq!(f.body, Rest::Length(0));
        assert!(buf.is_empty());
    }

    #[test]
    fn names_are_taken_from_the_last_head_only_when_bytes_match() {
        let mut seen = Seen::default();
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"[..]);
        parse_head(&mut buf, &mut seen, false).unwrap().unwrap();
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-B: 2\r\ncontent-length: 0\r\nX-C: 3\r\n\r\n"[..],
        );
        let (parts, _) = parse_head(&mut buf, &mut seen, false).unwrap().unwrap();
        let names: Vec<&str> = parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-b", "content-length", "x-c", "via"]);
        assert_eq!(parts.headers["x-b"], "2");
        assert_eq!(seen.names.len(), 3);
    }

    fn decode(mut body: Rest, wire: &[u8]) -> Result<(Vec<u8>, Rest, usize), &'static str> {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        loop {
            match step(&mut body, &mut buf) {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End | Step::More => return Ok((out, body, buf.len())),
                Step::Bad(m) => return Err(m),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let wire = b"5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n";
        let (out, rest, left) = decode(Rest::Chunked(Chunk::Size), wire).unwrap();
        assert_eq!((&out[..], rest, left), (&b"hello!"[..], Rest::Done, 0));
        // Byte by byte, the same.
        let mut body = Rest::Chunked(Chunk::Size);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            buf.put_u8(*b);
            while let Step::Data(d) = step(&mut body, &mut buf) {
                out.extend_from_slice(&d);
            }
        }
        assert_eq!((&out[..], body), (&b"hello!"[..], Rest::Done));
        for bad in [
            &b"5\r\nhelloXX"[..],
            b"zz\r\n",
            b"0\r\nBad Trailer\r\n\r\n",
            b"12345678901234567\r\n",
        ] {
            assert!(decode(Rest::Chunked(Chunk::Size), bad).is_err());
        }
        assert!(decode(Rest::Chunked(Chunk::Size), &[b'1'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn length_and_close_bodies_take_only_what_is_theirs() {
        let (out, rest, left) = decode(Rest::Length(3), b"abcdef").unwrap();
        assert_eq!((&out[..], rest, left), (&b"abc"[..], Rest::Length(0), 3));
        let (out, rest, _) = decode(Rest::ToClose, b"all").unwrap();
        assert_eq!((&out[..], rest), (&b"all"[..], Rest::ToClose));
    }

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
