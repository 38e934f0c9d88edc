//! State store operations by outcome, and per-replica fallbacks: the store's observer.
//! Clones count into the same series, so it is built before the store and the registry.

use crate::state::StateObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Counters and latency of the shared state store.
#[derive(Debug, Clone)]
pub struct StateMetrics {
    operations: Family<OpLabels, Counter>,
    seconds: Histogram,
    local_fallbacks: Family<OpLabel, Counter>,
}

impl Default for StateMetrics {
    fn default() -> Self {
        StateMetrics {
            operations: Family::default(),
            seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 14)),
            local_fallbacks: Family::default(),
        }
    }
}

impl StateMetrics {
    /// Registers the series (created at zero for the use ledger's outcomes, so alerts have
    /// data from start-up).
    pub fn register(&self, registry: &mut Registry) {
        for outcome in ["ok", "timeout", "unavailable", "breaker_open"] {
            let _ = self.operations.get_or_create(&OpLabels {
                op: "consume_use",
                outcome,
            });
        }
        let _ = self
            .local_fallbacks
            .get_or_create(&OpLabel { op: "consume_use" });
        registry.register(
            "state_operations",
            "Operations against the shared state store (redis) by operation and outcome",
            self.operations.clone(),
        );
        registry.register(
            "state_operation_duration_seconds",
            "Latency of operations against the shared state store",
            self.seconds.clone(),
        );
        registry.register(
            "state_local_fallbacks",
            "Operations served by the per-replica fallback (state.on_failure: local)",
            self.local_fallbacks.clone(),
        );
    }
}

impl StateObserver for StateMetrics {
    fn store_call(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        self.operations
            .get_or_create(&OpLabels { op, outcome })
            .inc();
        self.seconds.observe(elapsed.as_secs_f64());
    }

    fn local_fallback(&self, op: &'static str) {
        self.local_fallbacks.get_or_create(&OpLabel { op }).inc();
    }
}
