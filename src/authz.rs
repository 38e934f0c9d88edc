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
use respond::AnswerSettings;
use std::sync::Arc;
use tonic::{Request, Response, Status};

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
        };
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
        let decision = self.decide(request.get_ref(), deadline).await;
        if !decision.enforced && decision.verdict != Verdict::Allow {
            tracing::info!(decision_id = %decision.id, would = decision.verdict.label(), "dry run: would have denied");
        }
        self.metrics.observe(&decision);
        self.audit.record(&decision);
        Ok(Response::new(respond::to_check_response(
            &decision,
            &self.answers,
        )))
    }
}
