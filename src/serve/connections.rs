//! Connection limits on the gRPC port (issue 14 item 1): at most `listen.max_connections`
//! open (a connection beyond it is closed at once and counted), a back-off instead of a
//! busy loop when accepting fails (out of file descriptors), and a reserve of descriptors
//! the gRPC port never takes, so the admin port (`/readyz`), the state store and the risk
//! API keep working when a flood of connections arrives.
//!
//! Each accepted connection is a [`LimitedConn`]: it holds its slot until closed, and is
//! closed by riskgate when no Check is in flight for `listen.idle_timeout`, or when its first
//! request has not arrived within `listen.header_read_timeout` (see [`conn`]). HTTP/2
//! keepalive, and the limit of concurrent streams per connection, are tonic's settings.

pub mod conn;

pub use conn::{ConnInfo, LimitedConn, TrackChecks};

use crate::config::Listen;
use crate::log_limit::LogLimit;
use crate::telemetry::ConnMetrics;
use futures_util::Stream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// First pause after a failed accept; it doubles up to [`MAX_BACKOFF`] while accepts fail.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between accepts while they fail.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The connection limits in force (from `listen`, the cap lowered to fit the open-files
/// limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// A connection with no Check in flight this long is closed.
    pub idle_timeout: Duration,
    /// A new connection must deliver its first request within this.
    pub header_read_timeout: Duration,
}

impl ConnLimits {
    /// The limits of `listen`, with `max_connections` lowered (and a warning logged) when
    /// the process's open-files limit minus `listen.fd_reserve` is smaller.
    pub fn from_listen(listen: &Listen) -> ConnLimits {
        let max = effective_max(
            listen.max_connections,
            listen.fd_reserve,
            open_files_limit(),
        );
        if max < listen.max_connections {
            tracing::warn!(
                configured = listen.max_connections,
                effective = max,
                fd_reserve = listen.fd_reserve,
                "listen.max_connections lowered to fit the open-files limit (ulimit -n) minus listen.fd_reserve"
            );
        }
        ConnLimits {
            max_connections: max,
            idle_timeout: listen.idle_timeout,
            header_read_timeout: listen.header_read_timeout,
        }
    }
}

/// `configured`, or fewer when the open-files limit minus `reserve` is smaller (at least 1).
fn effective_max(configured: usize, reserve: usize, open_files: Option<u64>) -> usize {
    let fit = open_files
        .map(|n| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .saturating_sub(reserve)
        })
        .unwrap_or(usize::MAX);
    configured.min(fit).max(1)
}

/// The soft open-files limit (`Max open files` in `/proc/self/limits`); `None` when
/// unlimited or unknown.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Where connections come from: the listener, or a fake in tests.
pub trait Accept: Send + Unpin + 'static {
    /// The next connection, as [`TcpListener::poll_accept`].
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>>;
}

impl Accept for TcpListener {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        TcpListener::poll_accept(self, cx).map_ok(|(tcp, _)| tcp)
    }
}

/// The gRPC port's connections, within the limits; it never yields an error (tonic would
/// retry at once), it backs off instead.
pub struct Acceptor<A = TcpListener> {
    listener: A,
    slots: Arc<Semaphore>,
    limits: ConnLimits,
    metrics: ConnMetrics,
    pause: Pin<Box<Sleep>>,
    pausing: bool,
    next_pause: Duration,
    /// Failed accepts since the last good one (an episode is logged once).
    failures: u64,
}

impl<A: Accept> Acceptor<A> {
    /// Accepts from `listener` within `limits`, counting into `metrics`.
    pub fn new(listener: A, limits: ConnLimits, metrics: ConnMetrics) -> Acceptor<A> {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            metrics,
            pause: Box::pin(tokio::time::sleep(Duration::ZERO)),
            pausing: false,
            next_pause: FIRST_BACKOFF,
            failures: 0,
        }
    }

    /// A slot for `tcp`, or closes it at once when every slot is taken.
    fn admit(&self, tcp: TcpStream) -> Option<LimitedConn> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.refused();
            static FULL: LogLimit = LogLimit::per(10_000);
            if let Some(suppressed) = FULL.admit() {
                tracing::warn!(
                    max_connections = self.limits.max_connections,
                    suppressed,
                    "gRPC connection refused: listen.max_connections are open"
                );
            }
            return None;
        };
        let _ = tcp.set_nodelay(true);
        Some(LimitedConn::new(
            tcp,
            slot,
            self.limits,
            self.metrics.clone(),
        ))
    }

    /// Counts a failed accept and pauses before the next; logs the first of an episode.
    fn failed(&mut self, e: &io::Error) {
        self.metrics.accept_error();
        if self.failures == 0 {
            tracing::warn!(
                error = %e,
                "cannot accept gRPC connections (out of file descriptors?); pausing between attempts, open connections and the admin port go on"
            );
        }
        self.failures += 1;
        self.pause.as_mut().reset(Instant::now() + self.next_pause);
        self.pausing = true;
        self.next_pause = (self.next_pause * 2).min(MAX_BACKOFF);
    }

    fn accepted(&mut self) {
        if self.failures > 0 {
            tracing::info!(failed = self.failures, "accepting gRPC connections again");
            self.failures = 0;
            self.next_pause = FIRST_BACKOFF;
        }
    }
}

impl<A: Accept> Stream for Acceptor<A> {
    type Item = io::Result<LimitedConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.pausing {
                ready!(this.pause.as_mut().poll(cx));
                this.pausing = false;
            }
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(tcp)) => {
                    this.accepted();
                    if let Some(conn) = this.admit(tcp) {
                        return Poll::Ready(Some(Ok(conn)));
                    }
                }
                // the peer gave up before the accept: nothing is wrong here
                Poll::Ready(Err(e)) if is_connection_error(&e) => {}
                Poll::Ready(Err(e)) => this.failed(&e),
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        assert_eq!(effective_max(1024, 64, Some(1_048_576)), 1024);
        assert_eq!(effective_max(1024, 64, Some(256)), 192);
        assert_eq!(effective_max(1024, 64, None), 1024);
        assert_eq!(effective_max(1024, 64, Some(10)), 1);
    }

    /// Out of file descriptors for `failures` accepts, then a real listener.
    struct Exhausted {
        failures: u64,
        attempts: Arc<std::sync::atomic::AtomicU64>,
        real: TcpListener,
    }

    impl Accept for Exhausted {
        fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
            let n = self
                .attempts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < self.failures {
                return Poll::Ready(Err(io::Error::from_raw_os_error(24))); // EMFILE
            }
            Accept::poll_accept(&mut self.real, cx)
        }
    }

    /// Issue 14 item 1: at the fd limit the accept loop paused (tonic's own retried at
    /// once: 100 % CPU); attempts grow with the back-off, not with the CPU, and it recovers.
    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_backs_off_then_recovers() -> io::Result<()> {
        let real = TcpListener::bind("127.0.0.1:0").await?;
        let addr = real.local_addr()?;
        let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let limits = ConnLimits {
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(60),
        };
        let metrics = ConnMetrics::default();
        let fake = Exhausted {
            failures: u64::MAX,
            attempts: attempts.clone(),
            real,
        };
        let mut acceptor = Acceptor::new(fake, limits, metrics);
        let ten_seconds = tokio::time::timeout(Duration::from_secs(10), acceptor.next()).await;
        assert!(
            ten_seconds.is_err(),
            "no connection while out of descriptors"
        );
        let tried = attempts.load(std::sync::atomic::Ordering::Relaxed);
        // 10 ms doubling to 1 s: 7 attempts in the first 1.27 s, then one per second
        assert!((10..=20).contains(&tried), "{tried} accepts in 10 s");
        // descriptors come back: the next accept goes through
        acceptor.listener.failures = 0;
        acceptor
            .listener
            .attempts
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let _client = TcpStream::connect(addr).await?;
        let conn = tokio::time::timeout(Duration::from_secs(5), acceptor.next()).await;
        assert!(matches!(conn, Ok(Some(Ok(_)))), "accepts again");
        assert_eq!(acceptor.failures, 0);
        Ok(())
    }
}
