//! Metrics about the risk side of decisions: API calls, scores, recommendations, reasons,
//! binding violations, and live gauges (breaker state, cache size, dropped audit lines)
//! read at scrape time. Every label set is bounded.

use crate::decision::{Decision, DenyReason, OutcomeClass, Verdict};
use crate::risk::breaker::BreakerState;
use crate::risk::reasons::reason_label;
use crate::risk::Assessor;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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

/// Sources read at scrape time.
#[derive(Debug, Default)]
struct Live {
    assessor: OnceLock<Arc<Assessor>>,
    audit_dropped: OnceLock<Arc<AtomicU64>>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(a) = self.assessor.get() {
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
        }
        if let Some(d) = self.audit_dropped.get() {
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
    api_requests: Family<ResultLabel, Counter>,
    api_seconds: Histogram,
    binding_violations: Family<KindLabel, Counter>,
    scores: HistogramFamily<ActionLabel>,
    recommendations: Family<RecommendationLabels, Counter>,
    reasons: Family<ReasonLabels, Counter>,
    live: Arc<Live>,
}

impl RiskMetrics {
    /// Registers the risk metrics in `registry`.
    pub fn register(registry: &mut Registry) -> RiskMetrics {
        let api_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "risk_api_requests",
            "Calls to the risk recommendations API by result (ok or error cause)",
            api_requests.clone(),
        );
        let api_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "risk_api_duration_seconds",
            "Latency of calls to the risk recommendations API",
            api_seconds.clone(),
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
        let live = Arc::new(Live::default());
        registry.register_collector(Box::new(live.clone()));
        RiskMetrics {
            api_requests,
            api_seconds,
            binding_violations,
            scores,
            recommendations,
            reasons,
            live,
        }
    }

    /// Reads breaker state and cache size from `assessor` at every scrape.
    pub fn watch_assessor(&self, assessor: Arc<Assessor>) {
        let _ = self.live.assessor.set(assessor);
    }

    /// Reads the audit sink's drop count at every scrape.
    pub fn watch_audit_drops(&self, dropped: Arc<AtomicU64>) {
        let _ = self.live.audit_dropped.set(dropped);
    }

    /// Records one API call (called by the assessor, once per real call).
    pub fn api_call(&self, result: &'static str, elapsed: Duration) {
        self.api_requests
            .get_or_create(&ResultLabel { result })
            .inc();
        self.api_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records the risk facts of one decision.
    pub fn observe(&self, d: &Decision) {
        if let Verdict::Deny(DenyReason::Binding(kind)) = &d.verdict {
            self.binding_violations
                .get_or_create(&KindLabel { kind: kind.label() })
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
        for reason in &risk.reasons {
            self.reasons
                .get_or_create(&ReasonLabels {
                    reason: reason_label(reason),
                    outcome,
                })
                .inc();
        }
    }
}
