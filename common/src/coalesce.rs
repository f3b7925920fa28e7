//! Fewer writes for HTTP/2 connections.
//!
//! h2 (under hyper and tonic) writes the frames one poll of a connection produced and flushes
//! them at once. A proxy answering many concurrent calls on one connection, or a client sending
//! them, polls the connection once per call, so each call costs its own `writev`: a third of
//! a gRPC client's CPU and a tenth of the proxy's in a release profile of `bench proxy`.
//! [`Coalesced`] keeps what is written until a flush, and a flush first yields to the
//! scheduler once, so the tasks about to queue frames on the same connection do so and one
//! write carries them all. The Remoting connection writer does the same; grpc-java's
//! `WriteQueue` flushes once per run of its event loop.
//!
//! Nothing waits on a timer: the yield lets the runnable tasks run once, then everything
//! written is sent. At most [`LIMIT`] bytes are held; larger writes go straight through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before they are written without waiting for a flush.
pub const LIMIT: usize = 64 * 1024;

type Yield = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A stream whose writes are held until a flush (see the module docs).
pub struct Coalesced<T> {
    inner: T,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
    /// The flush's yield, once started.
    yielding: Option<Yield>,
    /// Off: every call goes straight to `inner` ([`Coalesced::through`]).
    on: bool,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T) -> Coalesced<T> {
        Coalesced {
            inner,
            buf: Vec::new(),
            sent: 0,
            yielding: None,
            on: true,
        }
    }

    /// A stream that holds nothing: every call goes straight to `inner`.
    pub fn through(inner: T) -> Coalesced<T> {
        Coalesced {
            on: false,
            ..Coalesced::new(inner)
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn held(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Appends `data` after what is held, first dropping what a partial drain already wrote
    /// (so a peer that reads slowly cannot make the buffer grow past what is held).
    fn hold(&mut self, data: &[u8]) {
        if self.sent > 0 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        self.buf.extend_from_slice(data);
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        // An idle connection keeps no large buffer (a proxy may hold thousands of them).
        if self.buf.capacity() > LIMIT / 2 {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.on {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.held() + data.len() > LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        if data.len() >= LIMIT {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.hold(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.on {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.held() + total > LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        if total >= LIMIT {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.hold(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        self.on || self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.held() > 0 {
            // Once per flush: the runnable tasks run (and queue their frames) before the write.
            let yielding = this
                .yielding
                .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
            ready!(yielding.as_mut().poll(cx));
            ready!(this.poll_drain(cx))?;
            this.yielding = None;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        this.yielding = None;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn writes_are_held_until_a_flush_and_then_all_arrive_in_order() {
        let (a, mut b) = pair().await;
        let mut a = Coalesced::new(a);
        a.write_all(b"one ").await.expect("write");
        let two = [io::IoSlice::new(b"two "), io::IoSlice::new(b"three")];
        let n = a.write_vectored(&two).await.expect("write");
        assert_eq!(n, 9);
        // Nothing was sent yet.
        let mut probe = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut probe)).await;
        assert!(early.is_err(), "bytes arrived before the flush");
        a.flush().await.expect("flush");
        let mut got = vec![0u8; 13];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"one two three");
    }

    #[tokio::test]
    async fn large_writes_go_through_and_shutdown_sends_what_is_held() {
        let (a, mut b) = pair().await;
        let mut a = Coalesced::new(a);
        let big: Vec<u8> = (0..3 * LIMIT + 17).map(|i| (i % 251) as u8).collect();
        let write = async {
            a.write_all(b"head").await.expect("write");
            a.write_all(&big).await.expect("write");
            a.write_all(b"tail").await.expect("write");
            a.shutdown().await.expect("shutdown");
        };
        // Read while writing: the socket buffers may be smaller than what is written.
        let mut got = Vec::new();
        let read = b.read_to_end(&mut got);
        let ((), read) = tokio::join!(write, read);
        read.expect("read");
        let mut want = b"head".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"tail");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes reordered or lost");
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (a, mut b) = pair().await;
        let mut a = Coalesced::new(a);
        b.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        a.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        assert!(a.get_ref().peer_addr().is_ok());
    }
}
