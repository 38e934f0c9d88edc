//! One gRPC connection within the limits: it holds a slot of `listen.max_connections`
//! until dropped, and ends itself (its reads report end of stream, so the HTTP/2 server
//! closes it) when its first request has not arrived within `listen.header_read_timeout`,
//! or when no Check has been in flight for `listen.idle_timeout`.
//!
//! Whether a Check is in flight is told by [`TrackChecks`], a layer around the gRPC
//! services: the connection's [`Activity`] reaches it in the request's extensions (tonic
//! puts each connection's [`ConnInfo`] there). HTTP/2 PINGs are not Checks: a connection
//! that only answers keepalives is idle.

use super::ConnLimits;
use crate::telemetry::conn_metrics::CloseReason;
use crate::telemetry::ConnMetrics;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tonic::codegen::{http, Service};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What one connection is doing: Checks in flight, and since when it is idle.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    served: AtomicBool,
    /// Milliseconds after `opened` when the last Check finished.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// A Check starts; it is over when the guard drops.
    fn check(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection is due to close and why, or (`None`) when it is busy and
    /// should look again at the returned instant.
    fn deadline(&self, limits: &ConnLimits, now: Instant) -> (Instant, Option<CloseReason>) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return (now + limits.idle_timeout, None);
        }
        if !self.served.load(Ordering::SeqCst) {
            return (
                self.opened + limits.header_read_timeout,
                Some(CloseReason::HeaderTimeout),
            );
        }
        let idle_since = self.opened
            + std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        (idle_since + limits.idle_timeout, Some(CloseReason::Idle))
    }
}

/// A Check in flight on a connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection info tonic puts in each request's extensions: the addresses, and the
/// connection's [`Activity`] for [`TrackChecks`].
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Local and peer addresses.
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

/// An accepted gRPC connection holding one slot of `listen.max_connections`.
#[derive(Debug)]
pub struct LimitedConn {
    tcp: TcpStream,
    activity: Arc<Activity>,
    limits: ConnLimits,
    metrics: ConnMetrics,
    timer: Pin<Box<Sleep>>,
    ended: bool,
    _slot: OwnedSemaphorePermit,
}

impl LimitedConn {
    pub(super) fn new(
        tcp: TcpStream,
        slot: OwnedSemaphorePermit,
        limits: ConnLimits,
        metrics: ConnMetrics,
    ) -> LimitedConn {
        metrics.open.inc();
        let activity = Arc::new(Activity::new());
        let first = activity.opened + limits.header_read_timeout;
        LimitedConn {
            tcp,
            activity,
            limits,
            metrics,
            timer: Box::pin(tokio::time::sleep_until(first)),
            ended: false,
            _slot: slot,
        }
    }

    /// Whether the connection is due to close; otherwise the timer is armed for the next look.
    fn due(&mut self, cx: &mut Context<'_>) -> bool {
        if self.ended {
            return true;
        }
        loop {
            let now = Instant::now();
            let (at, reason) = self.activity.deadline(&self.limits, now);
            match reason {
                Some(reason) if at <= now => {
                    self.metrics.closed(reason);
                    tracing::debug!(?reason, "closing gRPC connection");
                    self.ended = true;
                    return true;
                }
                // busy: keep the armed look-again unless it has passed
                None if !self.timer.is_elapsed() => {}
                _ if self.timer.deadline() != at => self.timer.as_mut().reset(at),
                _ => {}
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if reason.is_none() {
                self.timer.as_mut().reset(now + self.limits.idle_timeout);
            }
        }
    }
}

impl Drop for LimitedConn {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl Connected for LimitedConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.tcp.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.due(cx) {
            // end of stream: the HTTP/2 server closes the connection
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The layer around the gRPC services that tells each connection when a Check is in flight.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackChecks;

impl<S> tower_layer::Layer<S> for TrackChecks {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner }
    }
}

/// A service whose requests count as in flight on their connection until answered.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Tracked<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let in_flight = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.activity.check());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let out = answer.await;
            drop(in_flight);
            out
        })
    }
}
