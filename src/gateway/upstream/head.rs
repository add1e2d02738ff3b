//! The response head: parsed with httparse into the head the client gets, and what its
//! framing fields say about the body (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, VIA};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};

use super::MAX_HEADERS;
use crate::gateway::fields::Fields;
use crate::gateway::headers::{self, is_hop_by_hop};

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
pub(super) fn parse_head(
    buf: &mut BytesMut,
    seen: &mut Fields,
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
        seen.clear();
        for (i, h) in res.headers.iter().enumerate() {
            let at = h.value.as_ptr() as usize - base;
            let name = seen
                .push(i, h.name.as_bytes(), at, h.value.len())
                .ok_or("the upstream sent an invalid header name")?;
            fields.note(name, h.value);
        }
        let count = seen.len();
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count + 1);
        for (name, at) in seen.iter() {
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
            let value = HeaderValue::from_maybe_shared(head.slice(at))
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
pub(super) enum Chunk {
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
pub(super) enum Rest {
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
    pub(super) body: Rest,
    pub(super) keep_alive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &[u8], head_request: bool) -> Result<Option<(Parts, Framed)>, String> {
        parse_head(
            &mut BytesMut::from(text),
            &mut Fields::default(),
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
        let (parts, f) = parse_head(&mut buf, &mut Fields::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(parts.status, StatusCode::CREATED);
        assert!(parts.headers.get("link").is_none());
        assert_eq!(f.body, Rest::Length(0));
        assert!(buf.is_empty());
    }

    #[test]
    fn names_are_taken_from_the_last_head_only_when_bytes_match() {
        let mut seen = Fields::default();
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
        assert_eq!(seen.names_kept(), 3);
    }
}
