//! Accepted TCP connections for a tonic server, at most a fixed number open at once (issue 16:
//! resource limits on every port). A connection accepted beyond the limit is closed at once, so
//! it is refused quickly rather than left in the backlog, and logged; every accepted one gets
//! TCP_NODELAY (small gRPC responses would otherwise wait for the peer's delayed ACK, tens of
//! milliseconds per request).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::coalesce::Coalesced;

/// The connections `listener` accepts, at most `max` open at once; `server` names the server
/// in the log line of a refused one.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    server: &'static str,
) -> impl tokio_stream::Stream<Item = io::Result<Counted>> {
    accepted(listener, max, server, false)
}

/// [`incoming`], each connection's writes coalesced ([`crate::coalesce`]): for a server
/// answering many concurrent calls per connection (the gRPC proxy).
pub fn incoming_coalesced(
    listener: TcpListener,
    max: usize,
    server: &'static str,
) -> impl tokio_stream::Stream<Item = io::Result<Counted>> {
    accepted(listener, max, server, true)
}

fn accepted(
    listener: TcpListener,
    max: usize,
    server: &'static str,
    coalesce: bool,
) -> impl tokio_stream::Stream<Item = io::Result<Counted>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    tokio_stream::StreamExt::filter_map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |stream| {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    peer = ?stream.peer_addr().ok(),
                    max,
                    server,
                    "connection refused: the server holds its maximum of connections"
                );
                return None;
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
            let stream = if coalesce {
                Coalesced::new(stream)
            } else {
                Coalesced::through(stream)
            };
            Some(Ok(Counted {
                stream,
                _slot: slot,
            }))
        },
    )
}

/// A connection that holds one of its server's connection slots while it is open.
pub struct Counted {
    stream: Coalesced<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.get_ref().connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
