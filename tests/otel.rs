//! A Check exports OpenTelemetry spans over OTLP that continue the trace Envoy forwarded.
//! A small OTLP receiver (the collector's gRPC TraceService) records what riskgate sends.
//! One test per binary: it installs the global tracing subscriber.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use risk_sim::SimConfig;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        if let Ok(mut all) = self.spans.lock() {
            all.extend(spans);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_spans_continue_the_incoming_trace() {
    let receiver = Receiver::default();
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let addr = listener.local_addr().ok();
    let svc = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let Some(addr) = addr else {
        panic!("no receiver address")
    };
    // This binary has one test, which sets the variables before the exporter reads them.
    set_otlp_env(&format!("http://{addr}"));
    riskgate::telemetry::init_logging(riskgate::telemetry::LogFormat::Text);

    let rg = start(SimConfig::default(), |_| {}).await;
    rg.sim
        .script("t", scripted(10.0, "ALLOW", "login", Some("u1")));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_span}-01");
    let mut client = rg.client().await;
    let req = check(
        "GET",
        "/accounts/a1/balance",
        Some(("u1", json!({}))),
        &[("x-action-token", "t"), ("traceparent", &traceparent)],
    );
    assert!(client.check(req).await.is_ok());
    drop(client);

    let deadline = Instant::now() + ms("RISKGATE_TEST_OTLP_WAIT_MS", 5_000);
    let found = loop {
        riskgate::telemetry::trace::flush();
        let spans = receiver.spans.lock().map(|s| s.clone()).unwrap_or_default();
        let check_span = spans.iter().find(|s| s.name == "check").cloned();
        if let Some(span) = check_span {
            break Some((span, spans));
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Some((span, all)) = found else {
        panic!("no `check` span exported");
    };
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent_span);
    let in_trace = all.iter().filter(|s| hex(&s.trace_id) == trace_id).count();
    assert!(in_trace >= 1);
    rg.stop().await;
}

#[allow(
    clippy::disallowed_methods,
    reason = "the OTel SDK reads only the environment; this binary's one test sets it before the exporter starts"
)]
fn set_otlp_env(endpoint: &str) {
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
}
