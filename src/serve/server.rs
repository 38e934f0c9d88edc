//! Wiring: builds the decider from the config, binds the gRPC and admin listeners, and runs
//! until shutdown, watching the policy inputs and draining in-flight Checks at the end.
//!
//! A process whose config, routes, schema, entities or policies are invalid at start-up
//! never binds: [`App::build`] fails with `file:line` messages and `riskgate serve` exits
//! non-zero, so it never becomes ready (Kubernetes restarts it with back-off while the old
//! replicas keep serving).

use crate::audit::AuditSink;
use crate::authz::AuthzService;
use crate::config::{Config, ConfigError};
use crate::decide::{DecideSettings, Decider};
use crate::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use crate::policy::LoadError;
use crate::risk::{self, token::TokenManager};
use crate::serve::admin::{self, AdminState};
use crate::serve::connections::{Acceptor, ConnLimits, TrackChecks};
use crate::serve::reload::{self, ReloadSource, Reloader};
use crate::serve::shutdown::{reached, Phase};
use crate::serve::tls::{TlsError, TlsServer};
use crate::state::{self, StoreError};
use crate::telemetry::{MetricSources, Metrics, RiskApiMetrics, StateMetrics};
use futures_util::future::Either;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::Instrument as _;

/// Why riskgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad config, routes, policies, schema or entities.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Bad risk settings (the risk API client could not be built).
    #[error(transparent)]
    Risk(#[from] ConfigError),
    /// Bad TLS certificate, key or client CA (`listen.tls`).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The state store could not be built or reached, or may evict keys (`state`).
    #[error(transparent)]
    State(#[from] StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A built riskgate, ready to bind.
pub struct App {
    /// The decision engine.
    pub decider: Arc<Decider>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness flag: config, policies and entities loaded, and not draining.
    pub ready: Arc<AtomicBool>,
    /// Audit sink.
    pub audit: AuditSink,
    /// The OAuth token manager (kept alive for its refresher).
    pub tokens: Option<Arc<TokenManager>>,
    /// Hot reload of policies and routes (file watch, [`Reloader::trigger`] on SIGHUP).
    pub reloader: Arc<Reloader>,
    /// The configuration the process started with.
    pub config: Config,
}

impl App {
    /// Builds everything from a validated in-memory config (no listener bound yet). The
    /// policy files it names are watched; its routes are fixed.
    pub async fn build(config: &Config, audit: AuditSink) -> Result<App, StartError> {
        App::from_source(ReloadSource::Fixed(Box::new(config.clone())), audit).await
    }

    /// Loads the config file and builds everything from it; the file itself is watched too,
    /// so routes, hosts and the default answer reload with the policies.
    pub async fn from_file(path: &Path, audit: AuditSink) -> Result<App, StartError> {
        App::from_source(ReloadSource::File(path.to_owned()), audit).await
    }

    async fn from_source(source: ReloadSource, audit: AuditSink) -> Result<App, StartError> {
        let reload::Loaded {
            config,
            snapshot,
            fingerprint,
        } = reload::load_initial(&source)?;
        // Observers first, then what they observe: the assessor reports API calls to
        // `risk_api`; the metrics read the assessor and the audit sink at every scrape.
        let risk_api = RiskApiMetrics::default();
        let state_metrics = StateMetrics::default();
        let store = state::build_with_history(
            &config.state,
            &config.history,
            Arc::new(state_metrics.clone()),
        )
        .await?;
        let (assessor, tokens) = match &config.risk {
            Some(risk) => {
                let (mut a, t) = risk::build_assessor(risk, Some(Arc::new(risk_api.clone())))?;
                if config.state.share_recommendations {
                    a = a.with_shared_cache(store.clone());
                }
                (Some(Arc::new(a)), Some(t))
            }
            None => (None, None),
        };
        let metrics = Arc::new(Metrics::with_sources(MetricSources {
            risk_api,
            assessor: assessor.clone(),
            audit_dropped: Some(audit.dropped_counter()),
            state: state_metrics,
            credentials: tokens.as_ref().map(|t| t.credentials()),
        }));
        metrics.prime_routes(
            snapshot.routes.routes(),
            config.mode == crate::config::Mode::Enforce,
        );
        let decider = Arc::new(Decider::new(
            DecideSettings::from_config(&config),
            snapshot,
            assessor,
            store,
        ));
        let reloader = Arc::new(Reloader::new(
            source,
            &config,
            fingerprint,
            decider.clone(),
            metrics.clone(),
        ));
        Ok(App {
            decider,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            audit,
            tokens,
            reloader,
            config,
        })
    }
}

/// Bound listeners, before serving.
pub struct Bound {
    app: App,
    grpc: tokio::net::TcpListener,
    /// TLS for the gRPC listener (`listen.tls`), loaded and checked before binding.
    tls: Option<Arc<TlsServer>>,
    admin: tokio::net::TcpListener,
    /// Actual gRPC address (port 0 resolved).
    pub grpc_addr: SocketAddr,
    /// Actual admin address.
    pub admin_addr: SocketAddr,
}

/// Loads the TLS files (when `listen.tls` is set), then binds both listeners.
pub async fn bind(app: App, grpc: SocketAddr, admin: SocketAddr) -> Result<Bound, StartError> {
    let tls = app
        .config
        .listen
        .tls
        .as_ref()
        .map(|settings| TlsServer::load(settings, app.metrics.tls.clone()))
        .transpose()?;
    let grpc_incoming = tokio::net::TcpListener::bind(grpc)
        .await
        .map_err(|source| StartError::Bind { addr: grpc, source })?;
    let grpc_addr = grpc_incoming
        .local_addr()
        .map_err(|source| StartError::Bind { addr: grpc, source })?;
    let admin_listener = tokio::net::TcpListener::bind(admin)
        .await
        .map_err(|source| StartError::Bind {
            addr: admin,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: admin,
            source,
        })?;
    Ok(Bound {
        app,
        grpc: grpc_incoming,
        tls,
        admin: admin_listener,
        grpc_addr,
        admin_addr,
    })
}

type Authz = AuthorizationServer<AuthzService>;

impl Bound {
    /// Serves until `shutdown` resolves, then stops gracefully (see [`crate::serve::shutdown`]):
    /// not ready and gRPC health NOT_SERVING at once, still answering for
    /// `shutdown.drain_ms`, then no new connections and up to `shutdown.grace_ms` for
    /// in-flight Checks. Watches the policy inputs meanwhile.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let Bound {
            app,
            grpc,
            tls,
            admin,
            ..
        } = self;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<Authz>().await;
        // reflection lists the services to any caller: only when configured
        let reflection = if app.config.listen.reflection {
            let service = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .map_err(std::io::Error::other)?;
            Some(service)
        } else {
            None
        };
        let limits = app.config.limits.clone();
        let max_message = limits.max_message_bytes;
        let service =
            AuthzService::new(app.decider.clone(), app.metrics.clone(), app.audit.clone())
                .with_limits(limits)
                .with_client_address(app.config.client_address);
        let (phase_tx, phase) = watch::channel(Phase::Serving);
        let grace = app.config.shutdown.grace();

        let stopper = tokio::spawn(
            stop_sequence(
                shutdown,
                phase_tx,
                app.ready.clone(),
                app.metrics.clone(),
                health_reporter,
                app.config.shutdown.drain(),
            )
            .instrument(tracing::info_span!("shutdown")),
        );
        let watcher = tokio::spawn(app.reloader.clone().run(
            app.config.reload.poll(),
            reached(phase.clone(), Phase::Draining),
        ));
        let admin_state = AdminState {
            metrics: app.metrics.clone(),
            ready: app.ready.clone(),
            credentials: app.tokens.as_ref().map(|t| t.credentials()),
        };
        let admin_stop = reached(phase.clone(), Phase::Stopping);
        let admin_task = tokio::spawn(async move {
            axum::serve(admin, admin::router(admin_state))
                .with_graceful_shutdown(admin_stop)
                .await
        });

        app.ready.store(true, Ordering::Release);
        app.metrics.ready.set(1);
        tracing::info!(
            policies = app.decider.snapshot().policies.policy_count(),
            "riskgate ready"
        );

        let listen = &app.config.listen;
        let grpc = Acceptor::new(
            grpc,
            ConnLimits::from_listen(listen),
            app.metrics.conns.clone(),
        );
        let router = tonic::transport::Server::builder()
            .max_concurrent_streams(listen.max_concurrent_streams)
            .http2_keepalive_interval(Some(listen.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(listen.http2_keepalive_timeout))
            .layer(TrackChecks)
            .add_service(health_service)
            .add_optional_service(reflection)
            .add_service(AuthorizationServer::new(service).max_decoding_message_size(max_message));
        let stop = reached(phase.clone(), Phase::Stopping);
        let (server, tls_watcher) = match tls {
            None => (
                Either::Left(router.serve_with_incoming_shutdown(grpc, stop)),
                None,
            ),
            Some(tls) => {
                tracing::info!(
                    client_certs = tls.settings().requires_client_cert(),
                    "gRPC listener serves TLS"
                );
                let watcher = tokio::spawn(tls.clone().watch());
                let incoming = tls.incoming(grpc);
                let serve = router.serve_with_incoming_shutdown(incoming, stop);
                (Either::Right(serve), Some(watcher))
            }
        };
        let grace_over = async {
            reached(phase.clone(), Phase::Stopping).await;
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            r = server => r.map_err(std::io::Error::other),
            () = grace_over => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over with Checks still in flight; exiting anyway");
                Ok(())
            }
        };
        watcher.abort();
        stopper.abort();
        if let Some(tls_watcher) = tls_watcher {
            tls_watcher.abort();
        }
        // The admin port closes with the gRPC port; do not wait on idle keep-alive clients.
        if tokio::time::timeout(Duration::from_millis(200), &mut Box::pin(admin_task))
            .await
            .is_err()
        {
            tracing::debug!("admin server did not stop in time; dropped");
        }
        tracing::info!("riskgate stopped");
        result
    }
}

/// Waits for `shutdown`, reports not ready, drains, then lets the servers stop.
async fn stop_sequence(
    shutdown: impl Future<Output = ()>,
    phase: watch::Sender<Phase>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    health: HealthReporter,
    drain: Duration,
) {
    shutdown.await;
    ready.store(false, Ordering::Release);
    metrics.ready.set(0);
    health.set_not_serving::<Authz>().await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = phase.send(Phase::Draining);
    tracing::info!(
        drain_ms = drain.as_millis() as u64,
        "shutting down: not ready, still answering while load balancers notice"
    );
    tokio::time::sleep(drain).await;
    tracing::info!("drain over: no new connections; finishing in-flight Checks");
    let _ = phase.send(Phase::Stopping);
}
