//! Metrics about the risk side of decisions: API calls, scores, recommendations, reasons,
//! binding violations, and live gauges (breaker state, cache size, dropped audit lines)
//! read at scrape time. Every label set is bounded.

use crate::decision::{Decision, DenyReason, OutcomeClass, Verdict};
use crate::risk::breaker::BreakerState;
use crate::risk::credentials::CredentialStatus;
use crate::risk::reasons::reason_label;
use crate::risk::{Assessor, RiskObserver};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecommendationLabels {
    recommendation: &'static str,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn score_histogram() -> Histogram {
    Histogram::new(linear_buckets(10.0, 10.0, 9))
}

/// What the metrics read from the running process, handed over when they are built.
#[derive(Debug, Default)]
pub struct MetricSources {
    /// The counters the assessor reports its API calls to (it was built with a clone).
    pub risk_api: RiskApiMetrics,
    /// Read at every scrape for the breaker state and the cache size.
    pub assessor: Option<Arc<Assessor>>,
    /// The audit sink's drop count, read at every scrape.
    pub audit_dropped: Option<Arc<AtomicU64>>,
    /// The counters the state store reports its operations to (it was built with a clone).
    pub state: crate::telemetry::StateMetrics,
    /// The risk API client secret's state, read at every scrape.
    pub credentials: Option<Arc<CredentialStatus>>,
}

/// Calls to the risk API by result, and their latency: the assessor's observer. Clones
/// count into the same series, so it can be built before the assessor and the registry.
#[derive(Debug, Clone)]
pub struct RiskApiMetrics {
    requests: Family<ResultLabel, Counter>,
    seconds: Histogram,
    shared_hits: Counter,
}

impl Default for RiskApiMetrics {
    fn default() -> Self {
        RiskApiMetrics {
            requests: Family::default(),
            seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            shared_hits: Counter::default(),
        }
    }
}

impl RiskObserver for RiskApiMetrics {
    fn api_call(&self, result: &'static str, elapsed: Duration) {
        self.requests.get_or_create(&ResultLabel { result }).inc();
        self.seconds.observe(elapsed.as_secs_f64());
    }

    fn shared_cache_hit(&self) {
        self.shared_hits.inc();
    }
}

/// Sources read at scrape time.
#[derive(Debug, Default)]
struct Live {
    assessor: Option<Arc<Assessor>>,
    audit_dropped: Option<Arc<AtomicU64>>,
    credentials: Option<Arc<CredentialStatus>>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(a) = &self.assessor {
            let state = match a.breaker().state() {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            let g = ConstGauge::new(state);
            g.encode(encoder.encode_descriptor(
                "risk_breaker_state",
                "Risk API circuit breaker: 0 closed, 1 half-open, 2 open",
                None,
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(a.cached_entries() as i64);
            g.encode(encoder.encode_descriptor(
                "risk_cache_entries",
                "Recommendations in the per-action cache",
                None,
                g.metric_type(),
            )?)?;
            let c = ConstCounter::new(a.negative_cache_hits());
            c.encode(encoder.encode_descriptor(
                "risk_negative_cache_hits",
                "Checks answered from the negative cache (a token the API called bogus) without an API call",
                None,
                c.metric_type(),
            )?)?;
        }
        if let Some(c) = &self.credentials {
            let g = ConstGauge::new(i64::from(c.ok()));
            g.encode(encoder.encode_descriptor(
                "risk_credentials_ok",
                "1 when the risk API client secret was readable at the last read, 0 when not",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(d) = &self.audit_dropped {
            let c = ConstCounter::new(d.load(Ordering::Relaxed));
            c.encode(encoder.encode_descriptor(
                "audit_dropped_lines",
                "Audit lines dropped because the sink could not keep up",
                None,
                c.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Risk metrics, registered in the main registry.
#[derive(Debug)]
pub struct RiskMetrics {
    binding_violations: Family<KindLabel, Counter>,
    scores: HistogramFamily<ActionLabel>,
    recommendations: Family<RecommendationLabels, Counter>,
    reasons: Family<ReasonLabels, Counter>,
    calls_refused: Family<CauseLabel, Counter>,
}

impl RiskMetrics {
    /// Registers the risk metrics in `registry`, reading the live gauges from `sources`.
    pub fn register(registry: &mut Registry, sources: MetricSources) -> RiskMetrics {
        registry.register(
            "risk_api_requests",
            "Calls to the risk recommendations API by result (ok or error cause)",
            sources.risk_api.requests.clone(),
        );
        registry.register(
            "risk_api_duration_seconds",
            "Latency of calls to the risk recommendations API",
            sources.risk_api.seconds.clone(),
        );
        registry.register(
            "risk_shared_cache_hits",
            "Fetches answered by the recommendation cache shared between replicas (no API call)",
            sources.risk_api.shared_hits.clone(),
        );
        let binding_violations = Family::<KindLabel, Counter>::default();
        registry.register(
            "binding_violations",
            "Recommendations refused because they do not fit the request, by kind",
            binding_violations.clone(),
        );
        let scores: HistogramFamily<ActionLabel> = Family::new_with_constructor(score_histogram);
        registry.register(
            "risk_score",
            "Risk scores of assessed requests, by action",
            scores.clone(),
        );
        let recommendations = Family::<RecommendationLabels, Counter>::default();
        registry.register(
            "recommendations",
            "Recommendations received, by type and action",
            recommendations.clone(),
        );
        let reasons = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "risk_reasons",
            "Reason codes on denied or challenged requests (undocumented codes count as OTHER)",
            reasons.clone(),
        );
        let calls_refused = Family::<CauseLabel, Counter>::default();
        registry.register(
            "risk_calls_refused",
            "Checks answered without the risk API call they needed: source over its call budget (budget), \
             risk.max_concurrent_calls reached (concurrency), the API answered 429 (api_throttled), \
             or the budget could not be counted (budget_store)",
            calls_refused.clone(),
        );
        // Known label values start at zero so dashboards and alerts have data from start-up.
        for result in [
            "ok",
            "timeout",
            "connect",
            "throttled",
            "status_5xx",
            "unauthorized",
            "no_oauth_token",
            "garbage",
            "rejected",
        ] {
            let _ = sources
                .risk_api
                .requests
                .get_or_create(&ResultLabel { result });
        }
        for kind in [
            "action_type",
            "user_mismatch",
            "missing_user",
            "stale",
            "future",
            "used_up",
            "ledger_full",
            "transaction_missing",
            "transaction_mismatch",
        ] {
            let _ = binding_violations.get_or_create(&KindLabel { kind });
        }
        for cause in ["budget", "concurrency", "api_throttled", "budget_store"] {
            let _ = calls_refused.get_or_create(&CauseLabel { cause });
        }
        for outcome in ["deny", "challenge"] {
            let documented = crate::risk::reasons::DOCUMENTED_REASONS.iter().copied();
            for reason in documented.chain(["OTHER"]) {
                let _ = reasons.get_or_create(&ReasonLabels { reason, outcome });
            }
        }
        registry.register_collector(Box::new(Live {
            assessor: sources.assessor,
            audit_dropped: sources.audit_dropped,
            credentials: sources.credentials,
        }));
        RiskMetrics {
            binding_violations,
            scores,
            recommendations,
            reasons,
            calls_refused,
        }
    }

    /// Creates the per-action series (score histogram, recommendations by type) at zero.
    pub fn prime_action(&self, action: &str) {
        let _ = self.scores.get_or_create(&ActionLabel {
            action: action.to_owned(),
        });
        for recommendation in ["TRUST", "ALLOW", "CHALLENGE", "DENY"] {
            let _ = self.recommendations.get_or_create(&RecommendationLabels {
                recommendation,
                action: action.to_owned(),
            });
        }
    }

    /// Records the risk facts of one decision.
    pub fn observe(&self, d: &Decision) {
        if let Verdict::Deny(DenyReason::Binding(kind)) = &d.verdict {
            self.binding_violations
                .get_or_create(&KindLabel { kind: kind.label() })
                .inc();
        }
        let refused = match &d.verdict {
            Verdict::Deny(DenyReason::RiskBudgetExceeded { .. }) => Some("budget"),
            Verdict::Deny(DenyReason::RiskApiBusy { .. }) => Some("concurrency"),
            Verdict::Deny(DenyReason::RiskApiThrottled { .. }) => Some("api_throttled"),
            // the uses stage also answers state_unavailable, but only after a recommendation
            Verdict::Deny(DenyReason::StateUnavailable { .. }) if d.risk.is_none() => {
                Some("budget_store")
            }
            _ => None,
        };
        if let Some(cause) = refused {
            self.calls_refused
                .get_or_create(&CauseLabel { cause })
                .inc();
        }
        let Some(risk) = &d.risk else { return };
        let action = d.action.clone().unwrap_or_default();
        self.scores
            .get_or_create(&ActionLabel {
                action: action.clone(),
            })
            .observe(risk.score);
        self.recommendations
            .get_or_create(&RecommendationLabels {
                recommendation: risk.recommendation,
                action,
            })
            .inc();
        let outcome = match d.verdict.class() {
            OutcomeClass::Deny => "deny",
            OutcomeClass::Challenge => "challenge",
            _ => return,
        };
        for reason in risk.reasons.iter() {
            self.reasons
                .get_or_create(&ReasonLabels {
                    reason: reason_label(reason),
                    outcome,
                })
                .inc();
        }
    }
}
