//! The gRPC ext_authz service: a thin adapter from Envoy's `Check` to [`Decider::decide`].
//!
//! `CheckRequest` → [`extract`] → `AccessRequest` → `decide()` → `Decision` → [`respond`]
//! → `CheckResponse`. A malformed CheckRequest is denied (403), never an error and never
//! an allow.

pub mod client_ip;
pub mod extract;
pub mod request_id;
pub mod respond;

use crate::audit::AuditSink;
use crate::config::{ClientAddressConfig, LimitsConfig, Mode};
use crate::decide::Decider;
use crate::decision::{Decision, DenyReason, Verdict};
use crate::pb::envoy::service::auth::v3::authorization_server::Authorization;
use crate::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use crate::telemetry::Metrics;
use opentelemetry::trace::TraceContextExt as _;
use respond::AnswerSettings;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The Authorization service.
#[derive(Debug, Clone)]
pub struct AuthzService {
    decider: Arc<Decider>,
    answers: AnswerSettings,
    metrics: Arc<Metrics>,
    audit: AuditSink,
    edge: extract::EdgeRules,
}

impl AuthzService {
    /// A service deciding with `decider`, recording into `metrics` and `audit` as given:
    /// both come fully wired (see [`crate::telemetry::MetricSources`]); nothing is set here.
    pub fn new(decider: Arc<Decider>, metrics: Arc<Metrics>, audit: AuditSink) -> AuthzService {
        let step_up = decider.settings().identity.step_up.as_ref();
        let answers = AnswerSettings {
            step_up_acr: step_up
                .filter(|s| s.claim == "acr")
                .map(|s| s.contains.clone()),
            token_header: Some(decider.settings().token_header.clone()),
            extras: respond::AnswerExtras::from(decider.settings().answer),
        };
        let edge = extract::EdgeRules {
            limits: LimitsConfig::default(),
            single: vec![decider.settings().token_header.clone()],
            xff_trusted_hops: 0,
        };
        AuthzService {
            decider,
            answers,
            metrics,
            audit,
            edge,
        }
    }

    /// Enforces `limits` (`limits` in the config) instead of the defaults.
    pub fn with_limits(mut self, limits: LimitsConfig) -> AuthzService {
        self.edge.limits = limits;
        self
    }

    /// Takes the client address as `client_address` says instead of the TCP peer.
    pub fn with_client_address(mut self, client: ClientAddressConfig) -> AuthzService {
        self.edge.xff_trusted_hops = client.xff_trusted_hops;
        self
    }

    /// A Check refused at the edge, before any decision stage: over a limit, or with the
    /// action token twice. Honours `mode: dry_run` (the request then passes, with the
    /// forgeable headers stripped as on any allow).
    fn refused(&self, check: &CheckRequest, reason: DenyReason) -> Decision {
        tracing::debug!(reason = reason.label(), "check request refused at the edge");
        let settings = self.decider.settings();
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(reason);
        d.enforced = settings.mode == Mode::Enforce;
        if !d.enforced {
            d.strip_headers = strip_list(&settings.strip, check);
        }
        d
    }

    /// Decides one CheckRequest (also used by tests without a port).
    pub async fn decide(
        &self,
        check: &CheckRequest,
        deadline: Option<std::time::Duration>,
    ) -> Decision {
        match extract::access_request_within(check, deadline, &self.edge) {
            Ok(req) => self.decider.decide(&req).await,
            Err(extract::ExtractError::TooLarge(limit)) => {
                self.refused(check, DenyReason::RequestTooLarge(limit))
            }
            Err(extract::ExtractError::Repeated) => {
                self.refused(check, DenyReason::DuplicateActionToken)
            }
            Err(extract::ExtractError::ClientAddress(e)) => {
                tracing::debug!(error = %e, "check request without a trustworthy client address");
                self.refused(check, DenyReason::Malformed("client address"))
            }
            Err(e) => {
                static MALFORMED: crate::log_limit::LogLimit =
                    crate::log_limit::LogLimit::per(1_000);
                if let Some(suppressed) = MALFORMED.admit() {
                    tracing::warn!(error = %e, suppressed, "malformed check request denied");
                }
                let mut d = Decision::new(None);
                d.verdict = Verdict::Deny(DenyReason::Malformed("check request"));
                d
            }
        }
    }
}

/// The exact strip names, plus the Check's header names matching a `prefix*` pattern (the
/// decision core's rule, for a Check that never reached it).
fn strip_list(rules: &crate::decide::strip::StripRules, check: &CheckRequest) -> Vec<String> {
    let http = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let plain = http.into_iter().flat_map(|h| h.headers.keys());
    let raw = http.into_iter().flat_map(|h| {
        h.header_map
            .iter()
            .flat_map(|m| m.headers.iter().map(|h| &h.key))
    });
    rules.for_headers(plain.chain(raw).map(String::as_str))
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = std::time::Instant::now();
        self.metrics.grpc.check_started();
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(extract::parse_grpc_timeout);
        let headers = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|h| &h.headers);
        let remote = headers.and_then(crate::telemetry::trace::remote_parent);
        let span = if crate::telemetry::trace::exporting() {
            tracing::info_span!(
                "check",
                otel.kind = "server",
                route = tracing::field::Empty,
                decision = tracing::field::Empty,
                decision_id = tracing::field::Empty,
            )
        } else {
            tracing::debug_span!(
                "check",
                route = tracing::field::Empty,
                decision = tracing::field::Empty,
                decision_id = tracing::field::Empty,
            )
        };
        if let Some(remote) = &remote {
            let _ = span.set_parent(crate::telemetry::trace::parent_context(remote));
        }
        let mut decision = self
            .decide(request.get_ref(), deadline)
            .instrument(span.clone())
            .await;
        span.record("route", decision.route.as_deref().unwrap_or("none"));
        span.record("decision", decision.verdict.label());
        span.record("decision_id", decision.id.as_str());
        decision.trace_id = remote.map(|r| r.trace_id().to_string()).or_else(|| {
            let id = span.context().span().span_context().trace_id();
            (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
        });
        if !decision.enforced && decision.verdict != Verdict::Allow {
            tracing::info!(decision_id = %decision.id, would = decision.verdict.label(), "dry run: would have denied");
        }
        self.metrics.observe(&decision);
        let response = respond::to_check_response(&decision, &self.answers);
        self.audit.record(decision);
        self.metrics.grpc.check_handled("OK", started.elapsed());
        Ok(Response::new(response))
    }
}
