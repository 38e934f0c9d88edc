//! gRPC server metrics in the conventional (go-grpc-prometheus) shape, unprefixed:
//! `grpc_server_started_total`, `grpc_server_handled_total{grpc_code}` and the
//! `grpc_server_handling_seconds` histogram, each labelled `grpc_type`, `grpc_service`,
//! `grpc_method`. Recorded by the ext_authz `Check` handler, so they count the Checks that
//! reached riskgate's code (a call tonic refuses before that, e.g. over the message size
//! limit, is not counted); the handler answers every Check with `OK` (a deny is an OK
//! reply carrying a 403), so `OK` is the code a healthy server reports.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The ext_authz service's full name.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn handling_histogram() -> Histogram {
    // go-grpc-prometheus's default buckets are too coarse for a sub-ms service: 50 µs … ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Started / handled counters and the handling-time histogram of unary gRPC calls.
#[derive(Debug, Clone)]
pub struct GrpcServerMetrics {
    started: Family<CallLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    seconds: HistogramFamily<CallLabels>,
}

impl GrpcServerMetrics {
    /// Registers the three families in `registry` (the unprefixed one), with the `Check`
    /// series created at zero.
    pub fn register(registry: &mut Registry) -> GrpcServerMetrics {
        let m = GrpcServerMetrics {
            started: Family::default(),
            handled: Family::default(),
            seconds: Family::new_with_constructor(handling_histogram),
        };
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            m.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC status code",
            m.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server",
            m.seconds.clone(),
        );
        let call = check_call();
        let _ = m.started.get_or_create(&call);
        let _ = m.seconds.get_or_create(&call);
        let _ = m.handled.get_or_create(&handled(&call, "OK"));
        m
    }

    /// Counts a `Check` as started.
    pub fn check_started(&self) {
        self.started.get_or_create(&check_call()).inc();
    }

    /// Counts a `Check` as handled with `code` (e.g. `OK`) after `elapsed`.
    pub fn check_handled(&self, code: &'static str, elapsed: Duration) {
        let call = check_call();
        self.handled.get_or_create(&handled(&call, code)).inc();
        self.seconds
            .get_or_create(&call)
            .observe(elapsed.as_secs_f64());
    }
}

fn check_call() -> CallLabels {
    CallLabels {
        grpc_type: "unary",
        grpc_service: AUTHZ_SERVICE,
        grpc_method: "Check",
    }
}

fn handled(call: &CallLabels, grpc_code: &'static str) -> HandledLabels {
    HandledLabels {
        grpc_type: call.grpc_type,
        grpc_service: call.grpc_service,
        grpc_method: call.grpc_method,
        grpc_code,
    }
}
