//! The gRPC ext_authz service: a thin adapter from Envoy's `Check` to [`Decider::decide`].
//!
//! `CheckRequest` → [`extract`] → `AccessRequest` → `decide()` → `Decision` → [`respond`]
//! → `CheckResponse`. A malformed CheckRequest is denied (403), never an error and never
//! an allow.

pub mod extract;
pub mod respond;

use crate::audit::AuditSink;
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
}

impl AuthzService {
    /// A service deciding with `decider`.
    pub fn new(decider: Arc<Decider>, metrics: Arc<Metrics>, audit: AuditSink) -> AuthzService {
        let step_up = decider.settings().identity.step_up.as_ref();
        let answers = AnswerSettings {
            step_up_acr: step_up
                .filter(|s| s.claim == "acr")
                .map(|s| s.contains.clone()),
            ..AnswerSettings::default()
        };
        if let Some(assessor) = decider.assessor() {
            assessor.set_observer(metrics.clone());
            metrics.risk.watch_assessor(assessor.clone());
        }
        metrics.risk.watch_audit_drops(audit.dropped_counter());
        AuthzService {
            decider,
            answers,
            metrics,
            audit,
        }
    }

    /// Decides one CheckRequest (also used by tests without a port).
    pub async fn decide(
        &self,
        check: &CheckRequest,
        deadline: Option<std::time::Duration>,
    ) -> Decision {
        match extract::access_request(check, deadline) {
            Ok(req) => self.decider.decide(&req).await,
            Err(e) => {
                tracing::warn!(error = %e, "malformed check request denied");
                let mut d = Decision::new(None);
                d.verdict = Verdict::Deny(DenyReason::Malformed("check request"));
                d
            }
        }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
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
        Ok(Response::new(response))
    }
}
