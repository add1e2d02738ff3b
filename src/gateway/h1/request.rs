//! A client's request head, read for the lean path: a request it serves whole, or word that
//! hyper must take the connection over.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};

use crate::gateway::fields::Fields;
use crate::gateway::park::ClientBody;

/// Most header fields the lean path reads; a head with more goes to hyper, which takes up
/// to 100 and refuses more.
const MAX_FIELDS: usize = 64;
/// Largest head the lean path waits for; a larger one goes to hyper, which applies the
/// configured limit.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body the lean path takes, and only when it arrived whole with its head.
const MAX_BODY: usize = 64 * 1024;

/// What the bytes at the front of a client's buffer are.
// Matched as soon as it is returned: boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A request to serve, with whether the client asked to close the connection after it.
    Request(Request<ClientBody>, bool),
    /// The start of a head: more bytes are needed.
    Partial,
    /// A request the lean path leaves to hyper, which then gets every byte still unread: a
    /// version other than HTTP/1.1, a target not in origin form, `CONNECT`, a transfer
    /// coding, `Expect`, `Upgrade`, an odd `Content-Length`, a body not yet received whole,
    /// a head too large, or one that does not parse (hyper refuses those).
    Hyper,
    /// A head taken from the buffer whose target or a field value http does not take (hyper
    /// refuses the same heads with 400); the connection cannot go on.
    Bad,
}

/// Reads the request at the front of `buf`, taking its head and body out of `buf` only when
/// it is served here. `fields` holds the names of the connection's previous head.
pub fn parse(buf: &mut BytesMut, fields: &mut Fields) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Hyper,
    };
    let (Some(1), Some(method), Some(path)) = (req.version, req.method, req.path) else {
        return Parsed::Hyper;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Hyper;
    };
    if !path.starts_with('/') || method == Method::CONNECT {
        return Parsed::Hyper;
    }
    let path = path.as_ptr() as usize - base..path.as_ptr() as usize - base + path.len();
    let mut length = None;
    let mut close = false;
    fields.clear();
    for (i, h) in req.headers.iter().enumerate() {
        let at = h.value.as_ptr() as usize - base;
        let Some(name) = fields.push(i, h.name.as_bytes(), at, h.value.len()) else {
            return Parsed::Hyper;
        };
        if *name == CONTENT_LENGTH {
            let v = h.value;
            if length.is_some() || v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit)
            {
                return Parsed::Hyper;
            }
            length = Some(v.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0')));
        } else if *name == TRANSFER_ENCODING || *name == EXPECT || *name == UPGRADE {
            return Parsed::Hyper;
        } else if *name == CONNECTION {
            close |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let body_len = length.unwrap_or(0);
    if body_len > MAX_BODY || buf.len() - len < body_len {
        return Parsed::Hyper;
    }
    let head = buf.split_to(len).freeze();
    let body = buf.split_to(body_len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, at) in fields.iter() {
        // httparse has checked the value's bytes; this checks them again, as hyper does not.
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(at)) else {
            return Parsed::Bad;
        };
        headers.append(name.clone(), value);
    }
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path)) else {
        return Parsed::Bad;
    };
    let mut req = Request::new(ClientBody::whole(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Parsed::Request(req, close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    fn parse_all(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse(&mut buf, &mut Fields::default());
        (parsed, buf)
    }

    fn served(bytes: &[u8]) -> (Request<ClientBody>, bool, BytesMut) {
        match parse_all(bytes) {
            (Parsed::Request(r, close), rest) => (r, close, rest),
            _ => panic!("not served: {}", String::from_utf8_lossy(bytes)),
        }
    }

    fn left_to_hyper(bytes: &[u8]) {
        let (parsed, rest) = parse_all(bytes);
        assert!(
            matches!(parsed, Parsed::Hyper),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(&rest[..], bytes, "nothing taken");
    }

    #[test]
    fn a_plain_request_is_read_and_the_next_left_in_the_buffer() {
        let (req, close, rest) =
            served(b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
        assert!(!close);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a/b?x=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "h");
        let two: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert!(req.body().is_end_stream());
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn a_small_body_that_came_whole_is_taken_with_its_head() {
        let (req, close, rest) = served(
            b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive, Close\r\n\r\nhelloGET",
        );
        assert!(close, "Connection: close asks to close");
        assert_eq!(req.body().size_hint().exact(), Some(5));
        assert!(!req.body().is_end_stream());
        assert_eq!(&rest[..], b"GET");
        let (req, _, rest) = served(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        assert!(req.body().is_end_stream());
        assert!(rest.is_empty());
    }

    #[test]
    fn a_head_not_yet_complete_waits_for_more() {
        for partial in [&b""[..], b"GE", b"GET / HTTP/1.1\r\nHost: h\r\n"] {
            let (parsed, rest) = parse_all(partial);
            assert!(matches!(parsed, Parsed::Partial));
            assert_eq!(&rest[..], partial);
        }
        // Too much of a head without its end: hyper applies the configured limit.
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD, b'x');
        left_to_hyper(&big);
    }

    #[test]
    fn what_only_hyper_serves_is_left_untouched() {
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("x-{i}: v\r\n"))
            .collect();
        for head in [
            "GET / HTTP/1.0\r\nHost: h\r\n\r\n".to_string(),
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
                .into(),
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab".into(),
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nab".into(),
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1234567890\r\n\r\n".into(),
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nnot all".into(),
            format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n"),
            "BLAH\x01 / HTTP/1.1\r\n\r\n".into(),
            "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n".into(),
        ] {
            left_to_hyper(head.as_bytes());
        }
        let mut large = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65537\r\n\r\n".to_vec();
        large.resize(large.len() + 65_537, b'x');
        left_to_hyper(&large);
    }

    #[test]
    fn a_target_http_does_not_take_is_bad() {
        let (parsed, rest) = parse_all(b"GET /a<b HTTP/1.1\r\nHost: h\r\n\r\nGET / ");
        assert!(matches!(parsed, Parsed::Bad));
        assert_eq!(&rest[..], b"GET / ", "the bad head was taken");
    }

    #[test]
    fn names_of_the_previous_head_are_used_again() {
        let mut fields = Fields::default();
        let mut buf = BytesMut::from(
            &b"GET /1 HTTP/1.1\r\nHost: h\r\nX-Custom: 1\r\n\r\nGET /2 HTTP/1.1\r\nHost: g\r\nX-Custom: 2\r\n\r\n"[..],
        );
        for (path, host) in [("/1", "h"), ("/2", "g")] {
            let Parsed::Request(req, _) = parse(&mut buf, &mut fields) else {
                panic!("served");
            };
            assert_eq!(req.uri(), path);
            assert_eq!(req.headers()["host"], host);
            assert_eq!(req.headers()["x-custom"], &path[1..]);
        }
        assert!(buf.is_empty());
    }
}
