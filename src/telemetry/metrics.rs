//! Prometheus metrics. Label sets are bounded: outcome and reason come from fixed enums,
//! routes from the configured table.

use super::exposition::Format;
use super::risk_metrics::MetricSources;
use crate::decision::{Decision, DenyReason, LedgerScope, Verdict};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    reason: &'static str,
    route: String,
    enforced: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailModeLabels {
    mode: &'static str,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// All riskgate metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Unprefixed series in their conventional names: `process_*`, `grpc_server_*`.
    plain: Registry,
    decisions: Family<DecisionLabels, Counter>,
    check_seconds: Histogram,
    cedar_seconds: Histogram,
    risk_seconds: Histogram,
    cache: Family<ResultLabels, Counter>,
    fail_mode: Family<FailModeLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    shadow_disagreements: Family<ShadowLabels, Counter>,
    risk_skipped: Family<RouteLabels, Counter>,
    ledger_full: Family<ScopeLabels, Counter>,
    /// 1 while policies and config are loaded and the server is not draining.
    pub ready: Gauge,
    /// Risk-side metrics (API calls, scores, reasons, live gauges).
    pub risk: super::risk_metrics::RiskMetrics,
    /// TLS on the gRPC port: certificate reloads, refused handshakes.
    pub tls: super::tls_metrics::TlsMetrics,
    /// gRPC server metrics of the ext_authz service.
    pub grpc: super::grpc_metrics::GrpcServerMetrics,
    /// Connections on the gRPC port: open, refused, accept errors, closed by riskgate.
    pub conns: super::conn_metrics::ConnMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// Registers every metric, with no process to read live gauges from (tests, tools).
    pub fn new() -> Metrics {
        Metrics::with_sources(MetricSources::default())
    }

    /// Registers every metric; the live gauges (breaker, cache size, dropped audit lines)
    /// and the risk-API series come from `sources`, all given here, none set later.
    pub fn with_sources(sources: MetricSources) -> Metrics {
        let mut registry = Registry::with_prefix("riskgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Check decisions by outcome, reason and route",
            decisions.clone(),
        );
        let check_seconds = latency_histogram();
        registry.register(
            "check_duration_seconds",
            "Server-side Check handling time",
            check_seconds.clone(),
        );
        let cedar_seconds = latency_histogram();
        registry.register(
            "cedar_evaluation_duration_seconds",
            "Cedar evaluation time",
            cedar_seconds.clone(),
        );
        let risk_seconds = latency_histogram();
        registry.register(
            "risk_lookup_duration_seconds",
            "Time spent obtaining a recommendation (cache or API)",
            risk_seconds.clone(),
        );
        let cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "risk_cache_lookups",
            "Recommendation cache lookups by result (hit, miss)",
            cache.clone(),
        );
        let fail_mode = Family::<FailModeLabels, Counter>::default();
        registry.register(
            "fail_mode_activations",
            "Risk API outages answered by a fail mode",
            fail_mode.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reload attempts by result",
            policy_reloads.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when ready to serve Checks", ready.clone());
        sources.state.register(&mut registry);
        let risk = super::risk_metrics::RiskMetrics::register(&mut registry, sources);
        let tls = super::tls_metrics::TlsMetrics::register(&mut registry);
        super::process_metrics::register_build_info(&mut registry);
        let mut plain = Registry::default();
        plain.register_collector(Box::new(super::process_metrics::ProcessCollector));
        let grpc = super::grpc_metrics::GrpcServerMetrics::register(&mut plain);
        let conns = super::conn_metrics::ConnMetrics::register(&mut registry);
        // Known label values start at zero so rate() and increase() work from the first event.
        for result in ["success", "failure"] {
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
        }
        for result in ["hit", "miss"] {
            let _ = cache.get_or_create(&ResultLabels { result });
        }
        let shadow_disagreements = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_disagreements",
            "Checks where the shadow policy set answered differently from the live set",
            shadow_disagreements.clone(),
        );
        let risk_skipped = Family::<RouteLabels, Counter>::default();
        registry.register(
            "risk_skipped",
            "Checks denied without asking the risk API: Cedar denies them whatever the risk",
            risk_skipped.clone(),
        );
        prime_fail_modes(&fail_mode);
        let ledger_full = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "use_ledger_full",
            "Writes refused with 503 because the use ledger (scope=store) or a principal's share of it (scope=principal) is full",
            ledger_full.clone(),
        );
        for scope in [LedgerScope::Store, LedgerScope::Principal] {
            let _ = ledger_full.get_or_create(&ScopeLabels {
                scope: scope.as_str(),
            });
        }
        Metrics {
            risk_skipped,
            registry,
            plain,
            ledger_full,
            decisions,
            check_seconds,
            cedar_seconds,
            risk_seconds,
            cache,
            fail_mode,
            policy_reloads,
            shadow_disagreements,
            ready,
            risk,
            tls,
            grpc,
            conns,
        }
    }

    /// Records one decision.
    pub fn observe(&self, d: &Decision) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: if d.enforced {
                    d.verdict.class().as_str()
                } else {
                    "dry_run"
                },
                reason: d.verdict.label(),
                route: d.route.clone().unwrap_or_else(|| "none".into()),
                enforced: if d.enforced { "true" } else { "false" },
            })
            .inc();
        self.check_seconds.observe(d.timings.total.as_secs_f64());
        if !d.timings.cedar.is_zero() {
            self.cedar_seconds.observe(d.timings.cedar.as_secs_f64());
        }
        if let Some(r) = &d.risk {
            self.risk_seconds.observe(d.timings.risk.as_secs_f64());
            let result = if r.cache_hit { "hit" } else { "miss" };
            self.cache.get_or_create(&ResultLabels { result }).inc();
        }
        if let Some((mode, cause)) = d.fail_mode {
            self.fail_mode
                .get_or_create(&FailModeLabels { mode, cause })
                .inc();
        }
        if let Verdict::Deny(DenyReason::LedgerFull { scope, .. }) = &d.verdict {
            self.ledger_full
                .get_or_create(&ScopeLabels {
                    scope: scope.as_str(),
                })
                .inc();
        }
        self.observe_shadow(d);
        self.observe_skip(d);
        self.risk.observe(d);
    }

    /// Records a policy reload attempt.
    pub fn policy_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The OpenMetrics text exposition (what prometheus-client writes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let written = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.plain))
            .and_then(|()| encode_eof(&mut out));
        if written.is_err() {
            out.clear();
        }
        out
    }

    /// The exposition in `format` (see [`super::exposition`]).
    pub fn render_as(&self, format: Format) -> String {
        format.render(self.render())
    }

    /// Creates at zero the series whose label values come from the route table (decisions
    /// and shadow disagreements by route, risk scores and recommendations by action), so
    /// dashboards and alerts have data from start-up. `enforce` is the global mode.
    pub fn prime_routes(&self, routes: &[crate::routes::Route], enforce: bool) {
        let no_route = if enforce { "deny" } else { "dry_run" };
        let _ = self.decisions.get_or_create(&DecisionLabels {
            outcome: no_route,
            reason: "no_route",
            route: "none".into(),
            enforced: if enforce { "true" } else { "false" },
        });
        for r in routes {
            let enforced = enforce && !r.dry_run;
            let outcomes: &[(&str, &str)] = if enforced {
                &[("allow", "allow"), ("deny", "policy_deny")]
            } else {
                &[("dry_run", "allow"), ("dry_run", "policy_deny")]
            };
            for &(outcome, reason) in outcomes {
                let _ = self.decisions.get_or_create(&DecisionLabels {
                    outcome,
                    reason,
                    route: r.name.clone(),
                    enforced: if enforced { "true" } else { "false" },
                });
            }
            for (live, shadow) in [("allow", "deny"), ("deny", "allow")] {
                let _ = self.shadow_disagreements.get_or_create(&ShadowLabels {
                    route: r.name.clone(),
                    live,
                    shadow,
                });
            }
            if r.risk != crate::config::RiskMode::Off {
                self.risk.prime_action(&r.action);
                let _ = self.risk_skipped.get_or_create(&RouteLabels {
                    route: r.name.clone(),
                });
            }
        }
    }
}

/// Every fail mode × every outage cause, at zero.
fn prime_fail_modes(fail_mode: &Family<FailModeLabels, Counter>) {
    use crate::risk::FetchError;
    let causes = [
        FetchError::Timeout,
        FetchError::Connect(String::new()),
        FetchError::Unavailable(503),
        FetchError::Unauthorized,
        FetchError::NoToken(String::new()),
        FetchError::Garbage(String::new()),
        FetchError::BreakerOpen,
    ];
    for mode in ["closed", "read_only", "open"] {
        for cause in &causes {
            let _ = fail_mode.get_or_create(&FailModeLabels {
                mode,
                cause: cause.label(),
            });
        }
    }
}

// --- Shadow policies (issue 6) ---

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    route: String,
    live: &'static str,
    shadow: &'static str,
}

impl Metrics {
    /// Counts a shadow disagreement carried by the decision, if any.
    fn observe_shadow(&self, d: &Decision) {
        let Some(shadow) = d.shadow.as_ref().filter(|s| s.disagrees()) else {
            return;
        };
        let word = |allowed: bool| if allowed { "allow" } else { "deny" };
        self.shadow_disagreements
            .get_or_create(&ShadowLabels {
                route: d.route.clone().unwrap_or_else(|| "none".into()),
                live: word(shadow.live_allowed),
                shadow: word(shadow.shadow_allowed),
            })
            .inc();
    }
}

// --- Risk calls skipped (issue 13, item 4) ---

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

impl Metrics {
    /// Counts a Check denied without a risk-API call because risk could not matter.
    fn observe_skip(&self, d: &Decision) {
        if d.risk_skipped {
            self.risk_skipped
                .get_or_create(&RouteLabels {
                    route: d.route.clone().unwrap_or_else(|| "none".into()),
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_counted_by_outcome_and_reason() {
        let m = Metrics::new();
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::PolicyDeny);
        d.route = Some("GET /a".into());
        m.observe(&d);
        let text = m.render();
        assert!(
            text.contains(r#"riskgate_decisions_total{outcome="deny",reason="policy_deny",route="GET /a",enforced="true"} 1"#),
            "{text}"
        );
        assert!(text.contains("riskgate_check_duration_seconds_count 1"));
    }

    /// Issue 14 item 3: a full ledger is counted by scope, for the alert.
    #[test]
    fn full_ledger_refusals_are_counted_by_scope() {
        let m = Metrics::new();
        assert!(m
            .render()
            .contains(r#"riskgate_use_ledger_full_total{scope="principal"} 0"#));
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::LedgerFull {
            scope: LedgerScope::Store,
            retry_after_s: 1,
        });
        m.observe(&d);
        let text = m.render();
        assert!(
            text.contains(r#"riskgate_use_ledger_full_total{scope="store"} 1"#),
            "{text}"
        );
    }
}
