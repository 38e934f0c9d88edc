//! The stream of TLS connections tonic serves from.
//!
//! Every accepted TCP connection gets its own handshake task (bounded by
//! [`HANDSHAKE_TIMEOUT`]), so a slow or silent client never holds up the others. A failed
//! handshake — no client certificate, one from another CA, a client that offers no `h2` —
//! is counted and logged at debug level, and never reaches tonic. Dropping the stream (tonic
//! does when shutdown begins) closes the listening socket and aborts pending handshakes.

use super::TlsServer;
use crate::serve::connections::{Acceptor, ConnInfo, LimitedConn};
use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in flight at once. Beyond it no further connection is accepted until one
/// finishes (they wait in the kernel's backlog), so a flood of silent clients cannot make
/// riskgate hold an unbounded number of half-open TLS sessions.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// TLS connections accepted on the gRPC port.
pub struct TlsIncoming {
    tcp: Acceptor,
    tcp_done: bool,
    server: Arc<TlsServer>,
    handshakes: JoinSet<Option<TlsConn>>,
}

impl TlsIncoming {
    pub(super) fn new(tcp: Acceptor, server: Arc<TlsServer>) -> TlsIncoming {
        TlsIncoming {
            tcp,
            tcp_done: false,
            server,
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, tcp: LimitedConn) {
        let acceptor = TlsAcceptor::from(self.server.current());
        let server = self.server.clone();
        self.handshakes.spawn(async move {
            let peer = tcp.connect_info().tcp.remote_addr;
            let failure = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(stream)) => return Some(TlsConn(stream)),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            server.metrics.handshake_failed();
            tracing::debug!(?peer, error = %failure, "TLS handshake failed");
            None
        });
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            // Take every connection the listener has ready; each one handshakes on its own.
            while !this.tcp_done && this.handshakes.len() < MAX_PENDING_HANDSHAKES {
                match Pin::new(&mut this.tcp).poll_next(cx) {
                    Poll::Ready(Some(Ok(tcp))) => this.start_handshake(tcp),
                    // the acceptor pauses on errors itself and never yields one
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => this.tcp_done = true,
                    Poll::Pending => break,
                }
            }
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(Some(Ok(conn))),
                // a refused handshake (already counted), or a handshake task that panicked
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) if this.tcp_done => return Poll::Ready(None),
                // no handshake in flight: the listener's waker is registered
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One TLS connection; tonic sees the TCP connection's info (addresses, activity).
#[derive(Debug)]
pub struct TlsConn(TlsStream<LimitedConn>);

impl TlsConn {
    /// The TLS session (peer certificates, negotiated protocol).
    pub fn session(&self) -> &rustls::ServerConnection {
        self.0.get_ref().1
    }
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
