//! A faithful simulator of the Transmit Security Detection & Response "Recommendations" API.
//!
//! riskgate's tests need a risk service that behaves like the real one, including its failures,
//! without a network or an account. The simulator serves the two endpoints riskgate calls, under
//! one base URL (`http://127.0.0.1:PORT`):
//!
//! - `POST /oidc/token`: OAuth2 client credentials (form-encoded `grant_type=client_credentials`,
//!   `client_id`, `client_secret`, optional `resource`) → `{access_token, token_type, expires_in}`.
//!   Tokens are opaque and really expire after [`SimConfig::token_lifetime_ms`].
//! - `GET /risk/v1/recommendation?action_token=…` with `Authorization: Bearer …` → the documented
//!   recommendation body, driven per action token by a [`Script`] of [`ScriptedAction`]s, which can
//!   also delay, fail, return garbage or drop fields.
//!
//! Test controls, not part of the real API, live under `/_sim/`: `GET /_sim/stats`,
//! `PUT /_sim/script`, `POST /_sim/revoke`, `POST /_sim/fail`. In-process tests use [`start`] and
//! the same controls on [`SimHandle`]; the `risk-sim` binary wraps this crate for the demo and
//! end-to-end tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use risk_sim::{start, ScriptedAction, SimConfig};
//! let sim = start(SimConfig::default(), "127.0.0.1:0".parse().map_err(std::io::Error::other)?).await?;
//! sim.script("tok-deny", ScriptedAction { recommendation: "DENY".into(), ..Default::default() });
//! let base = sim.base_url(); // point the risk client here
//! # let _ = base;
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod body;
mod handlers;
mod script;
mod state;
mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

pub use script::{load_script, Script, ScriptError, ScriptedAction};
pub use state::SimStats;

use state::SimState;

/// How long [`SimHandle::shutdown`] waits for in-flight requests before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Simulator settings. The credentials are what `POST /oidc/token` accepts.
#[derive(Clone)]
pub struct SimConfig {
    /// The accepted `client_id`.
    pub client_id: String,
    /// The accepted `client_secret`.
    pub client_secret: String,
    /// How long an issued bearer token is honoured, in milliseconds (`expires_in` is this rounded
    /// up to whole seconds, but expiry is enforced at the millisecond).
    pub token_lifetime_ms: u64,
    /// The initial script: action token → behaviour.
    pub script: HashMap<String, ScriptedAction>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            client_id: "riskgate-test".to_owned(),
            client_secret: "sim-secret".to_owned(),
            token_lifetime_ms: 3_600_000,
            script: HashMap::new(),
        }
    }
}

/// Hand-written so the client secret never appears in debug output.
impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_lifetime_ms", &self.token_lifetime_ms)
            .field("script", &self.script)
            .finish()
    }
}

/// Binds `addr` (port 0 picks a free port) and serves the simulator in a background task.
///
/// Fails if the address cannot be bound or the script has a `status` that is not an HTTP status.
pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    script::validate(&config.script)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState::new(
        &config.client_id,
        &config.client_secret,
        config.token_lifetime_ms,
        config.script,
    ));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = handlers::router(Arc::clone(&state));
    let task = tokio::spawn(
        async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender means the handle is gone: stop as well.
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(error = %err, "risk simulator stopped with an error");
            }
        }
        .instrument(tracing::info_span!("risk_sim", %addr)),
    );
    Ok(SimHandle {
        addr,
        state,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// A running simulator. Dropping it stops the server (in the background); [`SimHandle::shutdown`]
/// stops it and waits.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: the base URL for both `/oidc/token` and `/risk/v1/recommendation`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts (or re-scripts) one action token.
    pub fn script(&self, token: &str, action: ScriptedAction) {
        self.state.lock().script.insert(token.to_owned(), action);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.state.lock().stats.clone()
    }

    /// Invalidates every issued bearer token: the next recommendation call gets a 401.
    pub fn revoke_tokens(&self) {
        self.state.lock().tokens.revoke_all();
    }

    /// `Some(status)`: every recommendation call answers `status` (an outage); `None`: back to
    /// normal. A value that is not an HTTP status answers 500.
    pub fn set_outage(&self, status: Option<u16>) {
        self.state.lock().outage = status;
    }

    /// Stops accepting connections, lets in-flight requests finish (for a few seconds at most)
    /// and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
