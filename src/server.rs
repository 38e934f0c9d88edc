//! Wiring: builds the decider from the config, binds the gRPC and admin listeners, and runs
//! until shutdown, draining in-flight Checks.

use crate::admin::{self, AdminState};
use crate::audit::AuditSink;
use crate::authz::AuthzService;
use crate::config::{Config, ConfigError};
use crate::decide::{DecideSettings, Decider, Snapshot};
use crate::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
use crate::policy::{PolicyError, PolicySnapshot};
use crate::risk::{self, token::TokenManager};
use crate::routes::RouteTable;
use crate::telemetry::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tonic::transport::server::TcpIncoming;

/// Why riskgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad policies, schema, entities or routes.
    #[error("policy set rejected:\n{0}")]
    Policy(#[from] PolicyError),
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

/// Compiles routes and loads the policy set named by the config.
pub fn load_snapshot(config: &Config) -> Result<Snapshot, StartError> {
    let routes = RouteTable::build(&config.routes, &config.hosts, config.default)?;
    let policies = PolicySnapshot::load(
        &config.policies.dir,
        &config.policies.schema,
        config.policies.entities.as_deref(),
        routes.routes(),
    )?;
    Ok(Snapshot { routes, policies })
}

/// A built riskgate, ready to bind.
pub struct App {
    /// The decision engine.
    pub decider: Arc<Decider>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness flag.
    pub ready: Arc<AtomicBool>,
    /// Audit sink.
    pub audit: AuditSink,
    /// The OAuth token manager (kept alive for its refresher).
    pub tokens: Option<Arc<TokenManager>>,
}

impl App {
    /// Builds everything from a validated config (no listener bound yet).
    pub fn build(config: &Config, audit: AuditSink) -> Result<App, StartError> {
        let snapshot = load_snapshot(config)?;
        let (assessor, tokens) = match &config.risk {
            Some(risk) => {
                let (a, t) = risk::build_assessor(risk)?;
                (Some(Arc::new(a)), Some(t))
            }
            None => (None, None),
        };
        let decider = Arc::new(Decider::new(
            DecideSettings::from_config(config),
            snapshot,
            assessor,
        ));
        Ok(App {
            decider,
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            audit,
            tokens,
        })
    }
}

/// Bound listeners, before serving.
pub struct Bound {
    app: App,
    grpc: TcpIncoming,
    admin: tokio::net::TcpListener,
    /// Actual gRPC address (port 0 resolved).
    pub grpc_addr: SocketAddr,
    /// Actual admin address.
    pub admin_addr: SocketAddr,
}

/// Binds both listeners.
pub async fn bind(app: App, grpc: SocketAddr, admin: SocketAddr) -> Result<Bound, StartError> {
    let grpc_incoming = TcpIncoming::bind(grpc)
        .map_err(|source| StartError::Bind { addr: grpc, source })?
        .with_nodelay(Some(true));
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
        admin: admin_listener,
        grpc_addr,
        admin_addr,
    })
}

impl Bound {
    /// Serves until `shutdown` resolves, then reports not-ready and drains in-flight Checks.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), std::io::Error> {
        let Bound {
            app, grpc, admin, ..
        } = self;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AuthorizationServer<AuthzService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(std::io::Error::other)?;
        let service =
            AuthzService::new(app.decider.clone(), app.metrics.clone(), app.audit.clone());

        let ready = app.ready.clone();
        let metrics = app.metrics.clone();
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            shutdown.await;
            ready.store(false, Ordering::Release);
            metrics.ready.set(0);
            reporter
                .set_not_serving::<AuthorizationServer<AuthzService>>()
                .await;
            let _ = drain_tx.send(true);
        });

        let admin_state = AdminState {
            metrics: app.metrics.clone(),
            ready: app.ready.clone(),
        };
        let mut admin_drain = drain_rx.clone();
        let admin_task = tokio::spawn(async move {
            axum::serve(admin, admin::router(admin_state))
                .with_graceful_shutdown(async move {
                    let _ = admin_drain.wait_for(|d| *d).await;
                })
                .await
        });

        app.ready.store(true, Ordering::Release);
        app.metrics.ready.set(1);
        tracing::info!(
            policies = app.decider.snapshot().policies.policy_count(),
            "riskgate ready"
        );

        let mut grpc_drain = drain_rx;
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(AuthorizationServer::new(service))
            .serve_with_incoming_shutdown(grpc, async move {
                let _ = grpc_drain.wait_for(|d| *d).await;
            })
            .await;
        let _ = admin_task.await;
        result.map_err(std::io::Error::other)
    }
}
