//! The response body, read from its connection as the client takes it: by length, chunked
//! or until the upstream closes.

use std::io;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};

use super::head::{Chunk, Framed, Rest};
use super::{Conn, MAX_LINE};

/// A response body being read from its connection.
pub struct Reader {
    conn: Option<Box<Conn>>,
    body: Rest,
    keep_alive: bool,
}

impl Reader {
    /// Reads the body framed by `framed` from `conn`.
    pub fn new(conn: Box<Conn>, framed: Framed) -> Reader {
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
    pub fn reusable(&mut self) -> Option<Box<Conn>> {
        if !self.is_end() || !self.keep_alive {
            return None;
        }
        let mut conn = self.conn.take()?;
        conn.reused = true;
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
    use bytes::BufMut;

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
}
