//! The client's stream as the HTTP/1.1 server paths see it: one that can wait for the
//! client's next bytes without reading them (to park), with bytes read earlier but not used
//! put back in front, and hyper's own bodiless refusals turned into problem+json on the way
//! out (`refusal`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client stream that can wait for the client's next bytes while no hyper connection
/// holds it: a plain socket, or TLS over one.
pub trait Parkable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once the client has sent something (or closed), without reading it.
    fn ready_to_read(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl Parkable for TcpStream {
    async fn ready_to_read(&mut self) -> std::io::Result<()> {
        self.readable().await
    }
}

impl Parkable for tokio_rustls::server::TlsStream<TcpStream> {
    async fn ready_to_read(&mut self) -> std::io::Result<()> {
        let (tcp, tls) = self.get_mut();
        // Records already received and decrypted but not yet read are ready now.
        let state = tls.process_new_packets().map_err(std::io::Error::other)?;
        if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
            return Ok(());
        }
        tcp.readable().await
    }
}

/// A boxed stream, moved from one serving state to the next as a pointer.
impl<P: Parkable> Parkable for Box<P> {
    fn ready_to_read(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        (**self).ready_to_read()
    }
}

/// The client stream, with bytes a previous hyper connection read but did not use in front,
/// and hyper's own bodiless refusals turned into problem+json on the way out (`refusal`).
pub struct Prefixed<S> {
    /// Bytes read from the client and not yet used.
    pub(super) head: Bytes,
    /// The client stream.
    pub(super) io: S,
    /// A rewritten refusal not yet written whole.
    pending: Bytes,
}

impl<S: Parkable> Prefixed<S> {
    /// The client stream, with nothing read yet.
    pub fn new(io: S) -> Prefixed<S> {
        Prefixed {
            head: Bytes::new(),
            io,
            pending: Bytes::new(),
        }
    }

    /// Writes what is left of a rewritten refusal; ready once none is left.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.pending.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written if it is one of hyper's refusals, sending ours instead.
    fn refused(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<std::io::Result<usize>>> {
        let ours = super::refusal::rewrite(buf)?;
        self.pending = ours;
        Some(match self.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<S: Parkable> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.head.has_remaining() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: Parkable> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let Some(done) = self.refused(cx, buf) {
            return done;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let [one] = bufs
            && let Some(done) = self.refused(cx, one)
        {
            return done;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
