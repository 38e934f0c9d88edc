//! Waiting for things to come up, with every timing in milliseconds and overridable by env vars.
//!
//! | variable                          | default | used for                                  |
//! |-----------------------------------|---------|-------------------------------------------|
//! | `RISKGATE_TEST_READY_TIMEOUT_MS`  | 30000   | a process or server to become ready       |
//! | `RISKGATE_TEST_POLL_MS`           | 50      | the pause between two readiness probes    |
//!
//! The waits return `Err(message)` instead of panicking, so the caller can print the logs of the
//! process it was waiting for before failing the test.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A duration in milliseconds from env var `var`, or `default_ms` when unset.
/// A value that is set but not a whole number of milliseconds is a mistake: panic naming it.
pub fn env_ms(var: &str, default_ms: u64) -> Duration {
    match std::env::var(var) {
        Ok(v) => Duration::from_millis(
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={v:?} is not a number of milliseconds")),
        ),
        Err(_) => Duration::from_millis(default_ms),
    }
}

/// How long a process or server may take to become ready (`RISKGATE_TEST_READY_TIMEOUT_MS`).
pub fn ready_timeout() -> Duration {
    env_ms("RISKGATE_TEST_READY_TIMEOUT_MS", 30_000)
}

/// The pause between two probes (`RISKGATE_TEST_POLL_MS`).
pub fn poll_interval() -> Duration {
    env_ms("RISKGATE_TEST_POLL_MS", 50)
}

/// What one probe found.
pub enum Probe<T> {
    /// Ready, with a value.
    Ready(T),
    /// Not yet; the text says what was seen (kept for the timeout message).
    NotYet(String),
    /// It will never be ready (say, the process exited): stop waiting now.
    Fatal(String),
}

/// Probes until ready, fatal, or `timeout` has passed. `what` names the thing in messages.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Probe<T>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Probe::Ready(v) => return Ok(v),
            Probe::Fatal(why) => return Err(format!("{what}: {why}")),
            Probe::NotYet(why) => why,
        };
        if start.elapsed() >= timeout {
            return Err(format!(
                "{what}: not ready after {} ms (last: {last}); raise RISKGATE_TEST_READY_TIMEOUT_MS if the machine is slow",
                timeout.as_millis()
            ));
        }
        tokio::time::sleep(poll_interval()).await;
    }
}

/// Waits until a TCP connection to `addr` succeeds.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    until(&format!("tcp {addr}"), timeout, || async move {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => Probe::Ready(()),
            Err(e) => Probe::NotYet(e.to_string()),
        }
    })
    .await
}

/// Waits until `GET url` answers with a status that `accept` takes; returns that status.
pub async fn http(
    url: &str,
    timeout: Duration,
    accept: impl Fn(reqwest::StatusCode) -> bool,
) -> Result<reqwest::StatusCode, String> {
    let client = super::http::client();
    let accept = &accept;
    let client = &client;
    until(&format!("GET {url}"), timeout, || async move {
        match client.get(url).send().await {
            Ok(resp) if accept(resp.status()) => Probe::Ready(resp.status()),
            Ok(resp) => Probe::NotYet(format!("status {}", resp.status())),
            Err(e) => Probe::NotYet(e.to_string()),
        }
    })
    .await
}

/// Waits until `GET url` answers 2xx.
pub async fn http_ok(url: &str, timeout: Duration) -> Result<(), String> {
    http(url, timeout, |s| s.is_success()).await.map(|_| ())
}
