//! hyper answers a request head it cannot take — unparseable (400), too large or with too
//! many fields (431), a target too long (414), an unsupported version (505) — by itself,
//! with an empty body, before our service ever sees the request. This turns those replies,
//! on their way to the socket, into the same problem+json answer as every other error of
//! ours. They are told apart from every other response by what they lack: a response that
//! passed through the gateway carries `Via`, and our own problem responses have a body.

use bytes::Bytes;

use crate::metrics as m;

/// hyper's own reply to a head it refused, if `out` is one: what to send instead.
pub fn rewrite(out: &[u8]) -> Option<Bytes> {
    // hyper's error replies are about 100 bytes; anything longer is not one of them.
    if out.len() > 256 || !out.starts_with(b"HTTP/1.") || !out.ends_with(b"\r\n\r\n") {
        return None;
    }
    let (code, kind, detail) = match out.get(9..12)? {
        b"400" => (400, "bad-request", "the request head could not be parsed"),
        b"414" => (414, "uri-too-long", "the request target is too long"),
        b"431" => (
            431,
            "header-too-large",
            "the request head is larger than the limit, or has more than 100 header fields",
        ),
        b"505" => (505, "http-version", "the HTTP version is not supported"),
        _ => return None,
    };
    let head = std::str::from_utf8(out).ok()?.to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0\r\n") || head.contains("\r\nvia:") {
        return None;
    }
    metrics::counter!(m::CLIENT_ERRORS, "route" => "", "reason" => kind).increment(1);
    let status = http::StatusCode::from_u16(code).ok()?;
    let body = super::forward::problem_body(status, kind, detail);
    Some(Bytes::from(format!(
        "HTTP/1.1 {code} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.canonical_reason().unwrap_or("error"),
        body.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_replies_get_a_problem_body() {
        let out = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 13:31:12 GMT\r\n\r\n";
        let new = rewrite(out).expect("rewritten");
        let text = std::str::from_utf8(&new).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("application/problem+json"));
        let body: serde_json::Value =
            serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["status"], 431);
        assert_eq!(body["type"], "urn:strangler:problem:header-too-large");
        for code in [
            "400 Bad Request",
            "414 URI Too Long",
            "505 HTTP Version Not Supported",
        ] {
            let out = format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n");
            assert!(rewrite(out.as_bytes()).is_some(), "{code}");
        }
    }

    #[test]
    fn other_responses_pass_untouched() {
        for out in [
            // An upstream's empty 400 went through the gateway: it carries Via.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nvia: 1.1 strangler\r\n\r\n",
            // Ours have a body.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 120\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        ] {
            assert!(rewrite(out.as_bytes()).is_none(), "{out}");
        }
    }
}
