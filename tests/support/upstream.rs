//! An in-process recording upstream: the application behind Envoy in the e2e tests.
//!
//! It answers every request with `200 upstream ok` and records its method, path (with query),
//! headers and body, so tests can assert what did — or did not — reach the upstream (for example
//! that a forged `x-user-id` was stripped, or that a denied request never arrived).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;
use tokio::sync::oneshot;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent on the request line.
    pub path: String,
    /// Header names lower-cased, in arrival order; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

fn lock(log: &Log) -> MutexGuard<'_, Vec<Recorded>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running upstream; stops when dropped.
pub struct Upstream {
    port: u16,
    log: Log,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Upstream {
    /// Starts on a free loopback port (bound here, so there is no race for the port).
    /// Needs a Tokio runtime (any flavour).
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recording upstream on 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("the upstream's local address")
            .port();
        let log: Log = Arc::default();
        let app = Router::new().fallback({
            let log = Arc::clone(&log);
            move |req: Request| record(Arc::clone(&log), req)
        });
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // a dropped sender ends the server too
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("recording upstream stopped with an error: {e}");
            }
        });
        Upstream {
            port,
            log,
            shutdown: Some(tx),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log).clone()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        lock(&self.log).len()
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<Recorded> {
        lock(&self.log).last().cloned()
    }

    /// Returns the requests received so far and forgets them.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *lock(&self.log))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn record(log: Log, req: Request) -> (StatusCode, &'static str) {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    lock(&log).push(recorded);
    (StatusCode::OK, "upstream ok")
}
