//! A response on its way to the client: its head encoded as hyper's server encodes one
//! (framing from what the body knows, `Date` when none came), and its body written after it,
//! the head and the first piece of the body in one write where both are ready.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::response::Parts;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::gateway::forward::ResponseBody;
use crate::gateway::upstream::{hex, itoa};

/// How a response's body is framed for the client.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Framing {
    /// No body: a response to HEAD, a 204 or 304, or an empty body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked: the length is not known ahead.
    Chunked,
}

/// What `encode` decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Encoded {
    /// How the body goes.
    pub framing: Framing,
    /// The connection closes after this response: asked for, or the response says so.
    pub close: bool,
}

/// Encodes the head of a response to a `method` request into `dst`; `close` adds
/// `Connection: close`.
pub fn encode(
    dst: &mut Vec<u8>,
    parts: &Parts,
    body: &ResponseBody,
    method: &Method,
    close: bool,
) -> Encoded {
    let status = parts.status;
    let no_length = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let head_request = *method == Method::HEAD;
    let can_have_body = !no_length && !head_request;
    dst.clear();
    if status == StatusCode::OK {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let (mut wrote_length, mut wrote_date, mut close_said) = (false, false, false);
    for (name, value) in &parts.headers {
        if *name == TRANSFER_ENCODING {
            // The framing is ours to choose, from the body.
            continue;
        }
        if *name == CONTENT_LENGTH {
            // A response to HEAD keeps the length of what a GET would get; otherwise the
            // body's own length is written below.
            if !head_request || no_length {
                continue;
            }
            wrote_length = true;
        } else if *name == CONNECTION {
            close_said |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if *name == DATE {
            wrote_date = true;
        }
        put_field(dst, name.as_str(), value);
    }
    let framing = if body.is_end_stream() {
        if !no_length && !head_request {
            dst.extend_from_slice(b"content-length: 0\r\n");
        }
        Framing::Empty
    } else {
        match body.size_hint().exact() {
            Some(n) => {
                if !no_length && !wrote_length {
                    dst.extend_from_slice(b"content-length: ");
                    dst.extend_from_slice(itoa(n, &mut [0; 20]));
                    dst.extend_from_slice(b"\r\n");
                }
                Framing::Length(n)
            }
            None if can_have_body => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            None => Framing::Empty,
        }
    };
    if close && !close_said {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        put_date(dst);
    }
    dst.extend_from_slice(b"\r\n");
    Encoded {
        framing: if can_have_body {
            framing
        } else {
            Framing::Empty
        },
        close: close || close_said,
    }
}

fn put_field(dst: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    dst.extend_from_slice(name.as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` field of the current second, made once a second per thread.
    static DATE_FIELD: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

fn put_date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_FIELD.with_borrow_mut(|(at, field)| {
        if *at != second {
            field.clear();
            field.extend_from_slice(b"date: ");
            field.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            field.extend_from_slice(b"\r\n");
            *at = second;
        }
        dst.extend_from_slice(field);
    });
}

/// Writes an encoded `head` and then `body` as `framing` says. An error means the client did
/// not get the whole response as framed (the body failed, or ran short or long, or the write
/// failed): the connection must close.
pub async fn write<S: AsyncWrite + Unpin>(
    io: &mut S,
    head: &[u8],
    mut body: ResponseBody,
    framing: Framing,
) -> io::Result<()> {
    if framing == Framing::Empty {
        write_all(io, &mut [IoSlice::new(head)]).await?;
        return io.flush().await;
    }
    let mut head = head;
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    loop {
        let polled = if head.is_empty() {
            Poll::Ready(body.frame().await)
        } else {
            // The head goes out with the first piece of the body if that is ready now, and
            // alone, so the client is not kept waiting, if it is not.
            poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await
        };
        let frame = match polled {
            Poll::Pending => {
                write_all(io, &mut [IoSlice::new(head)]).await?;
                io.flush().await?;
                head = &[];
                continue;
            }
            Poll::Ready(None) => {
                if framing == Framing::Chunked {
                    write_all(io, &mut [IoSlice::new(head), IoSlice::new(b"0\r\n\r\n")]).await?;
                } else if left > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the response body ended before its length",
                    ));
                } else {
                    write_all(io, &mut [IoSlice::new(head)]).await?;
                }
                return io.flush().await;
            }
            Poll::Ready(Some(Err(e))) => return Err(io::Error::other(e)),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        // Trailers are not forwarded.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let end = body.is_end_stream();
        if framing == Framing::Chunked {
            if data.is_empty() && !end {
                continue;
            }
            let mut digits = [0u8; 16];
            let size: &[u8] = if data.is_empty() {
                &[]
            } else {
                hex(data.len() as u64, &mut digits)
            };
            let (crlf, tail): (&[u8], &[u8]) = match (data.is_empty(), end) {
                (true, _) => (b"", b"0\r\n\r\n"),
                (false, true) => (b"\r\n", b"\r\n0\r\n\r\n"),
                (false, false) => (b"\r\n", b"\r\n"),
            };
            write_all(
                io,
                &mut [
                    IoSlice::new(head),
                    IoSlice::new(size),
                    IoSlice::new(crlf),
                    IoSlice::new(&data),
                    IoSlice::new(tail),
                ],
            )
            .await?;
        } else {
            let n = data.len() as u64;
            if n > left {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the response body is longer than its length",
                ));
            }
            left -= n;
            write_all(io, &mut [IoSlice::new(head), IoSlice::new(&data)]).await?;
            if end && left > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the response body ended before its length",
                ));
            }
        }
        head = &[];
        if end {
            return io.flush().await;
        }
    }
}

/// Writes all of `bufs`, in as few calls as the stream takes.
async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut bufs = bufs;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Response;
    use http_body_util::{Either, Full};

    fn full(body: &'static str) -> ResponseBody {
        Either::Right(Full::new(Bytes::from_static(body.as_bytes())))
    }

    fn head_of(resp: &Response<ResponseBody>, method: Method, close: bool) -> (String, Encoded) {
        let mut dst = Vec::new();
        let mut parts = Response::new(()).into_parts().0;
        parts.status = resp.status();
        parts.headers = resp.headers().clone();
        let done = encode(&mut dst, &parts, resp.body(), &method, close);
        (String::from_utf8(dst).unwrap(), done)
    }

    fn response(
        status: u16,
        fields: &[(&str, &str)],
        body: &'static str,
    ) -> Response<ResponseBody> {
        let mut r = Response::new(full(body));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in fields {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn a_response_gets_its_length_and_a_date() {
        let (head, done) = head_of(&response(200, &[("x-a", "1")], "hello"), Method::GET, false);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: "));
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
        assert_eq!(
            head.len(),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: \r\n\r\n".len() + 29
        );
        assert_eq!(
            done,
            Encoded {
                framing: Framing::Length(5),
                close: false
            }
        );
        // An upstream's Date stands; framing fields are ours.
        let (head, _) = head_of(
            &response(
                404,
                &[
                    ("date", "then"),
                    ("transfer-encoding", "chunked"),
                    ("content-length", "99"),
                ],
                "ab",
            ),
            Method::GET,
            false,
        );
        assert_eq!(
            head,
            "HTTP/1.1 404 Not Found\r\ndate: then\r\ncontent-length: 2\r\n\r\n"
        );
        let (head, _) = head_of(&response(299, &[("date", "d")], ""), Method::GET, false);
        assert_eq!(
            head,
            "HTTP/1.1 299 <none>\r\ndate: d\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn bodiless_responses_are_framed_as_hyper_frames_them() {
        // HEAD keeps the length a GET would get, and sends no body.
        let (head, done) = head_of(
            &response(200, &[("date", "d"), ("content-length", "42")], ""),
            Method::HEAD,
            false,
        );
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 42\r\n\r\n"
        );
        assert_eq!(done.framing, Framing::Empty);
        let (head, done) = head_of(&response(200, &[("date", "d")], "abc"), Method::HEAD, false);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(done.framing, Framing::Empty);
        for status in [204, 304] {
            let (head, done) = head_of(
                &response(status, &[("date", "d"), ("content-length", "7")], ""),
                Method::GET,
                false,
            );
            assert!(!head.contains("content-length"), "{head}");
            assert_eq!(done.framing, Framing::Empty);
        }
    }

    #[test]
    fn closing_is_said_once() {
        let (head, done) = head_of(&response(200, &[("date", "d")], ""), Method::GET, true);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        assert!(done.close);
        let (head, done) = head_of(
            &response(200, &[("date", "d"), ("connection", "Close")], ""),
            Method::GET,
            true,
        );
        assert_eq!(head.matches("onnection").count(), 1, "{head}");
        assert!(done.close);
        let (_, done) = head_of(
            &response(200, &[("date", "d"), ("connection", "close")], ""),
            Method::GET,
            false,
        );
        assert!(done.close, "the response itself may close");
    }

    #[tokio::test]
    async fn head_and_body_are_written_together_and_a_short_body_is_an_error() {
        let mut out = Vec::new();
        write(&mut out, b"HEAD\r\n\r\n", full("body"), Framing::Length(4))
            .await
            .unwrap();
        assert_eq!(out, b"HEAD\r\n\r\nbody");
        let mut out = Vec::new();
        let short = write(&mut out, b"H\r\n\r\n", full("abc"), Framing::Length(4)).await;
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let long = write(&mut Vec::new(), b"H", full("abcde"), Framing::Length(4)).await;
        assert_eq!(long.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut out = Vec::new();
        write(&mut out, b"H|", full("abc"), Framing::Chunked)
            .await
            .unwrap();
        assert_eq!(out, b"H|3\r\nabc\r\n0\r\n\r\n");
        let mut out = Vec::new();
        write(&mut out, b"H|", full(""), Framing::Chunked)
            .await
            .unwrap();
        assert_eq!(out, b"H|0\r\n\r\n");
        let mut out = Vec::new();
        write(&mut out, b"H|", full("ignored"), Framing::Empty)
            .await
            .unwrap();
        assert_eq!(out, b"H|");
    }
}
