//! The client stream as a hyper HTTP/2 connection sees it: every byte each way is accounted
//! in the connection's ledger, a resumed connection is greeted and filtered (`resume`), and
//! when hyper's connection is dropped the stream and what it must remember come back to the
//! serving loop, which can then park the stream.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frames::{Frames, PREFACE};
use super::ledger::{Ledger, Memory};
use super::resume::{Filter, Forget, greeting};

/// What the serving loop shares with the stream it lent to hyper.
pub(super) struct Lent<S> {
    /// Whether the connection could be parked now: nothing in flight either way, every
    /// frame whole, and the ledger settled.
    quiet: AtomicBool,
    /// The stream and the ledger's memory, put back when hyper drops the connection.
    back: Mutex<Option<(S, Memory)>>,
}

impl<S> Lent<S> {
    /// Whether the connection could be parked now.
    pub fn quiet(&self) -> bool {
        self.quiet.load(Relaxed)
    }

    /// The stream and memory, once hyper's connection has been dropped.
    pub fn take(&self) -> Option<(S, Memory)> {
        self.back.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The client stream lent to one hyper HTTP/2 connection.
pub(super) struct Wire<S: AsyncRead + AsyncWrite + Unpin> {
    /// Taken only when dropped.
    io: Option<S>,
    lent: Arc<Lent<S>>,
    ledger: Ledger,
    read: Frames,
    write: Frames,
    /// Bytes of the client's preface still to come.
    preface: usize,
    /// What a resumed connection reads before the client's bytes.
    greeting: Bytes,
    /// Takes what the client has heard out of a resumed connection's first writes.
    filter: Option<Filter>,
    /// Filtered bytes not yet written.
    out: Vec<u8>,
    /// Takes late frames on the parked connection's streams out of the client's bytes.
    forget: Option<Forget>,
    /// The client's bytes, sifted, not yet read.
    inbox: BytesMut,
    /// A read held back until the filter stops holding.
    held: Option<Waker>,
    /// The last read found nothing to read.
    reading: bool,
    /// The last write or flush could not finish.
    writing: bool,
    /// Bytes written since the last finished flush.
    unflushed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// A new client connection, from its preface on.
    pub fn fresh(io: S) -> (Wire<S>, Arc<Lent<S>>) {
        Wire::new(
            io,
            Ledger::default(),
            PREFACE.len(),
            Bytes::new(),
            None,
            None,
        )
    }

    /// A parked connection taken up again where `memory` left it.
    pub fn resumed(io: S, memory: Memory) -> (Wire<S>, Arc<Lent<S>>) {
        let greeting = greeting(&memory);
        let filter = Filter::new(memory.recv_window);
        let forget = Forget::new(memory.last_stream);
        Wire::new(
            io,
            Ledger::resumed(memory),
            0,
            greeting,
            Some(filter),
            Some(forget),
        )
    }

    fn new(
        io: S,
        ledger: Ledger,
        preface: usize,
        greeting: Bytes,
        filter: Option<Filter>,
        forget: Option<Forget>,
    ) -> (Wire<S>, Arc<Lent<S>>) {
        let lent = Arc::new(Lent {
            quiet: AtomicBool::new(false),
            back: Mutex::new(None),
        });
        let wire = Wire {
            io: Some(io),
            lent: lent.clone(),
            ledger,
            read: Frames::default(),
            write: Frames::default(),
            preface,
            greeting,
            filter,
            out: Vec::new(),
            forget,
            inbox: BytesMut::new(),
            held: None,
            reading: false,
            writing: false,
            unflushed: false,
        };
        (wire, lent)
    }

    fn io(&mut self) -> Pin<&mut S> {
        Pin::new(
            self.io
                .as_mut()
                .expect("the stream is taken only when dropped"),
        )
    }

    /// Publishes whether the connection could be parked now.
    fn note(&self) {
        let quiet = self.reading
            && !self.writing
            && !self.unflushed
            && self.preface == 0
            && self.greeting.is_empty()
            && self.filter.is_none()
            && self.out.is_empty()
            && self.inbox.is_empty()
            && self.read.at_boundary()
            && self.write.at_boundary()
            && self.ledger.settled();
        self.lent.quiet.store(quiet, Relaxed);
    }

    fn received(&mut self, mut got: &[u8]) {
        if self.preface > 0 {
            let n = self.preface.min(got.len());
            self.preface -= n;
            got = &got[n..];
        }
        let ledger = &mut self.ledger;
        self.read.feed(got, |h, p| ledger.received(h, p));
    }

    /// Accounts for the first `n` bytes of `bufs`, written.
    fn sent(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        self.unflushed |= n > 0;
        let ledger = &mut self.ledger;
        for b in bufs {
            if n == 0 {
                break;
            }
            let take = n.min(b.len());
            self.write.feed(&b[..take], |h, p| ledger.sent(h, p));
            n -= take;
        }
    }

    /// Writes the filtered bytes not yet written; ready once none are left.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let stream = self
                .io
                .as_mut()
                .expect("the stream is taken only when dropped");
            match Pin::new(stream).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.unflushed = true;
                    let ledger = &mut self.ledger;
                    self.write.feed(&self.out[..n], |h, p| ledger.sent(h, p));
                    self.out.drain(..n);
                }
                Poll::Ready(Err(e)) => {
                    self.ledger.close();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    self.writing = true;
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    fn write(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = self.write_inner(cx, bufs);
        match &r {
            Poll::Ready(Ok(_)) => self.writing = false,
            Poll::Ready(Err(_)) => self.ledger.close(),
            Poll::Pending => self.writing = true,
        }
        self.note();
        r
    }

    fn write_inner(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(filter) = &mut self.filter {
            let mut taken = 0;
            for b in bufs {
                filter.pass(b, &mut self.out);
                taken += b.len();
            }
            if !filter.holding()
                && let Some(w) = self.held.take()
            {
                w.wake();
            }
            if filter.done() {
                self.filter = None;
            }
            // Taken whole; what is left unwritten goes with the next write or flush.
            if let Poll::Ready(Err(e)) = self.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(taken));
        }
        let r = match bufs {
            [one] => self.io().poll_write(cx, one),
            _ => self.io().poll_write_vectored(cx, bufs),
        };
        if let Poll::Ready(Ok(n)) = r {
            self.sent(bufs, n);
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Drop for Wire<S> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            let mut back = self.lent.back.lock().unwrap_or_else(|e| e.into_inner());
            *back = Some((io, self.ledger.memory.clone()));
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.greeting.is_empty() {
            let n = this.greeting.len().min(buf.remaining());
            buf.put_slice(&this.greeting[..n]);
            this.greeting.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.filter.as_ref().is_some_and(Filter::holding) {
            this.held = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if this.forget.is_some() {
            return this.sifted(cx, buf);
        }
        let before = buf.filled().len();
        let r = this.io().poll_read(cx, buf);
        this.read_done(&r, &buf.filled()[before..]);
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Accounts for a read that returned `got`.
    fn read_done(&mut self, r: &Poll<io::Result<()>>, got: &[u8]) {
        match r {
            Poll::Ready(Ok(())) => {
                self.reading = false;
                match got {
                    [] => self.ledger.close(),
                    got => self.received(got),
                }
            }
            Poll::Ready(Err(_)) => self.ledger.close(),
            Poll::Pending => self.reading = true,
        }
        self.note();
    }

    /// Reads the client's bytes through `forget`, on a resumed connection.
    fn sifted(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        while self.inbox.is_empty() {
            let mut raw = [0u8; 8192];
            let mut chunk = ReadBuf::new(&mut raw);
            let r = self.io().poll_read(cx, &mut chunk);
            match (&r, chunk.filled()) {
                (Poll::Ready(Ok(())), got) if !got.is_empty() => {
                    if let Some(f) = &mut self.forget {
                        f.pass(got, &mut self.inbox);
                    }
                }
                _ => {
                    self.read_done(&r, &[]);
                    return r;
                }
            }
        }
        let n = self.inbox.len().min(buf.remaining());
        let given = self.inbox.split_to(n);
        buf.put_slice(&given);
        self.read_done(&Poll::Ready(Ok(())), &given);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = match this.drain(cx) {
            Poll::Ready(Ok(())) => this.io().poll_flush(cx),
            other => other,
        };
        match &r {
            Poll::Ready(Ok(())) => {
                this.writing = false;
                this.unflushed = false;
            }
            Poll::Ready(Err(_)) => this.ledger.close(),
            Poll::Pending => this.writing = true,
        }
        this.note();
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.ledger.close();
        this.note();
        ready!(this.drain(cx))?;
        this.io().poll_shutdown(cx)
    }
}
