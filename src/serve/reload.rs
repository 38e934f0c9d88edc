//! Hot reload of policies, schema, entities and routes.
//!
//! ```text
//!  poll tick ─┐                      ┌─ unchanged ─► nothing
//!  SIGHUP ────┴─► fingerprint inputs ┤
//!                                    └─ changed ──► load + validate everything ─► swap (ok)
//!                                                                      └────────► reject (keep last good)
//! ```
//!
//! A new set is built completely — config file (routes, hosts, default, policy paths),
//! schema, entities, live and shadow policies — and validated before one atomic
//! [`Decider::swap_snapshot`]; Checks in flight finish on the snapshot they loaded. An
//! invalid set is rejected with `file:line` messages, logged, counted
//! (`riskgate_policy_reloads_total{result="failure"}`) and the last good set keeps serving.
//! Config fields other than `policies`, `routes`, `hosts` and `default` need a restart; a
//! change to them is logged and otherwise ignored.

pub mod fingerprint;

use crate::config::{Config, ConfigError, PolicyPaths};
use crate::decide::Decider;
use crate::policy::{load_snapshot, LoadError, Snapshot};
use crate::telemetry::Metrics;
use fingerprint::Fingerprint;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument as _;

/// How often a load is retried when the inputs changed while it was reading them.
const SETTLE_ATTEMPTS: usize = 3;

/// Where the reloadable configuration comes from.
#[derive(Debug, Clone)]
pub enum ReloadSource {
    /// Re-read this config file at every reload.
    File(PathBuf),
    /// A config built in memory: only the policy files it names are reloaded.
    Fixed(Box<Config>),
}

/// What one reload attempt did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// Nothing changed since the last attempt.
    Unchanged,
    /// A new snapshot is serving.
    Applied {
        /// Routes in the new table.
        routes: usize,
        /// Live policies.
        policies: usize,
        /// Shadow policies, when a shadow set is configured.
        shadow: Option<usize>,
    },
    /// The new inputs are invalid; the last good snapshot keeps serving.
    Rejected(LoadError),
    /// The inputs kept changing while being read; the next tick tries again.
    Unsettled,
}

/// A consistent load: the config, the snapshot built from it, and the fingerprint of the
/// inputs it was built from.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Routes and policies.
    pub snapshot: Snapshot,
    /// Fingerprint of the inputs (`None` when they would not settle).
    pub fingerprint: Option<Fingerprint>,
}

struct WatchState {
    /// Fingerprint of the inputs of the last attempt (good or rejected).
    fingerprint: Option<Fingerprint>,
    /// Policy paths of the last config that parsed.
    paths: PolicyPaths,
}

/// Watches the inputs and swaps new snapshots into the decider.
pub struct Reloader {
    source: ReloadSource,
    baseline: Config,
    decider: Arc<Decider>,
    metrics: Arc<Metrics>,
    state: Mutex<WatchState>,
    kick: Notify,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ReloadSource {
    /// The config text (when from a file) and the parsed config.
    fn read(&self) -> (Option<Vec<u8>>, Result<Config, LoadError>) {
        match self {
            ReloadSource::Fixed(config) => (None, Ok(config.as_ref().clone())),
            ReloadSource::File(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    let config = std::str::from_utf8(&bytes)
                        .map_err(|e| crate::config::ConfigError::Parse {
                            at: crate::source::SourceLocation::file(path.clone()),
                            message: e.to_string(),
                        })
                        .and_then(|text| Config::load_text(path, text))
                        .map_err(LoadError::from);
                    (Some(bytes), config)
                }
                Err(source) => {
                    let err = crate::config::ConfigError::Read {
                        path: path.clone(),
                        source,
                    };
                    (Some(err.to_string().into_bytes()), Err(err.into()))
                }
            },
        }
    }
}

enum Attempt {
    /// The fingerprint equals the one to skip.
    Unchanged,
    /// The files changed while they were being read.
    Moving,
    /// A consistent attempt: the inputs' fingerprint and what was built from them.
    Done(Fingerprint, Box<Built>),
}

type Built = Result<(Config, Snapshot), LoadError>;

/// One pass: read the config, fingerprint the inputs, build the snapshot, and check that
/// the files did not change while they were read. `known` gives the paths to watch when
/// the config does not parse; `skip` short-cuts when the fingerprint equals it.
fn attempt(
    source: &ReloadSource,
    known: Option<&PolicyPaths>,
    skip: Option<Fingerprint>,
) -> Attempt {
    let (text, config) = source.read();
    let paths = match &config {
        Ok(c) => Some(c.policies.clone()),
        Err(_) => known.cloned(),
    };
    let before = fingerprint::of(text.as_deref(), paths.as_ref());
    if skip == Some(before) {
        return Attempt::Unchanged;
    }
    let built = config.and_then(|c| load_snapshot(&c).map(|s| (c, s)));
    if fingerprint::of(text.as_deref(), paths.as_ref()) != before {
        return Attempt::Moving;
    }
    Attempt::Done(before, Box::new(built))
}

/// The first load, at start-up, retried while the inputs are changing under it.
pub fn load_initial(source: &ReloadSource) -> Result<Loaded, LoadError> {
    for _ in 0..SETTLE_ATTEMPTS {
        if let Attempt::Done(fingerprint, built) = attempt(source, None, None) {
            let (config, snapshot) = (*built)?;
            return Ok(Loaded {
                config,
                snapshot,
                fingerprint: Some(fingerprint),
            });
        }
    }
    // Still changing: serve what loads now; with no fingerprint the watcher reloads at
    // its first tick.
    let (_, config) = source.read();
    let config = config?;
    let snapshot = load_snapshot(&config)?;
    Ok(Loaded {
        config,
        snapshot,
        fingerprint: None,
    })
}

impl Reloader {
    /// A reloader for a decider serving the snapshot built from `config`, whose inputs had
    /// `fingerprint`. `config` is also the baseline for restart-only changes.
    pub fn new(
        source: ReloadSource,
        config: &Config,
        fingerprint: Option<Fingerprint>,
        decider: Arc<Decider>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            source,
            baseline: config.clone(),
            decider,
            metrics,
            state: Mutex::new(WatchState {
                fingerprint,
                paths: config.policies.clone(),
            }),
            kick: Notify::new(),
        }
    }

    /// Asks the watcher to reload now, whether or not the inputs look changed (`SIGHUP`).
    pub fn trigger(&self) {
        self.kick.notify_one();
    }

    fn state(&self) -> MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reloads if the inputs changed (or always, with `force`). Blocking: Cedar parsing
    /// and validation run here; call from a blocking thread.
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let mut state = self.state();
        for _ in 0..SETTLE_ATTEMPTS {
            let skip = if force { None } else { state.fingerprint };
            match attempt(&self.source, Some(&state.paths), skip) {
                Attempt::Unchanged => return ReloadOutcome::Unchanged,
                Attempt::Done(fingerprint, built) => {
                    state.fingerprint = Some(fingerprint);
                    return self.apply(*built, &mut state);
                }
                Attempt::Moving => {
                    tracing::debug!("policy inputs changed while being read; retrying")
                }
            }
        }
        state.fingerprint = None;
        ReloadOutcome::Unsettled
    }

    fn apply(&self, built: Built, state: &mut WatchState) -> ReloadOutcome {
        match built {
            Ok((config, snapshot)) => {
                let restart = config.restart_only_changes(&self.baseline);
                // New routes next to an old risk, identity, strip or mode setting could
                // decide in ways neither file intends (say, routes needing a risk API the
                // running process has no client for): such a change waits for a restart.
                let decisive: Vec<&str> = restart
                    .iter()
                    .copied()
                    .filter(|f| matches!(*f, "mode" | "identity" | "strip_headers" | "risk"))
                    .collect();
                if !decisive.is_empty() {
                    self.metrics.policy_reload(false);
                    tracing::error!(
                        fields = ?decisive,
                        "reload rejected: these fields only change with a restart; the running set keeps serving"
                    );
                    return ReloadOutcome::Rejected(LoadError::Config(ConfigError::field(
                        decisive.join(", "),
                        "changed in the config file: restart riskgate to apply it",
                    )));
                }
                if !restart.is_empty() {
                    tracing::warn!(
                        fields = ?restart,
                        "config fields changed that only take effect after a restart; running with the old values"
                    );
                }
                let routes = snapshot.routes.routes().len();
                let policies = snapshot.policies.policy_count();
                let shadow = snapshot.shadow.as_ref().map(|s| s.policy_count());
                self.decider.swap_snapshot(snapshot);
                state.paths = config.policies;
                self.metrics.policy_reload(true);
                tracing::info!(routes, policies, shadow, "policy set reloaded");
                ReloadOutcome::Applied {
                    routes,
                    policies,
                    shadow,
                }
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                tracing::error!(error = %e, "reload rejected; the last good policy set keeps serving");
                ReloadOutcome::Rejected(e)
            }
        }
    }

    /// [`Reloader::reload`] on a blocking thread.
    pub async fn reload_now(self: &Arc<Self>, force: bool) -> ReloadOutcome {
        let me = Arc::clone(self);
        match tokio::task::spawn_blocking(move || me.reload(force)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "reload task failed");
                ReloadOutcome::Unsettled
            }
        }
    }

    /// Polls every `poll` (when set) and reloads on [`Reloader::trigger`], until `stop`
    /// resolves.
    pub async fn run(
        self: Arc<Self>,
        poll: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let span = tracing::info_span!("reload", poll_ms = poll.map(|p| p.as_millis() as u64));
        async move {
            tokio::pin!(stop);
            loop {
                let force = tokio::select! {
                    () = &mut stop => return,
                    () = self.kick.notified() => true,
                    () = sleep_or_never(poll) => false,
                };
                if force {
                    tracing::info!("reload requested");
                }
                self.reload_now(force).await;
            }
        }
        .instrument(span)
        .await;
    }
}

async fn sleep_or_never(poll: Option<Duration>) {
    match poll {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
