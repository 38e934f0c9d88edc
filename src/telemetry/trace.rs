//! OpenTelemetry tracing: OTLP export when configured by the standard
//! `OTEL_EXPORTER_OTLP_*` variables, and continuation of the trace that Envoy forwards in
//! the checked request's headers (W3C `traceparent`, or B3 single or multi header).

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::OnceLock;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether the environment asks for OTLP trace export.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
        && std::env::var("OTEL_SDK_DISABLED").map_or(true, |v| v != "true")
}

/// Builds the OTLP (gRPC) tracer provider from the `OTEL_EXPORTER_OTLP_*` variables and
/// keeps it for [`shutdown`]. Returns a `tracing` layer feeding it.
pub fn otlp_layer<S>() -> Result<
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    opentelemetry_otlp::ExporterBuildError,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("riskgate").build())
        .build();
    let tracer = provider.tracer("riskgate");
    let _ = PROVIDER.set(provider);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Whether spans are exported. Without an exporter the per-Check span is created at debug
/// level, so it costs nothing at the default `info` filter (nobody would read it).
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Flushes and stops the exporter (call before exit).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
        let _ = p.shutdown();
    }
}

/// Flushes pending spans (tests).
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// The remote parent carried by request headers, if any, as an OpenTelemetry context.
pub fn remote_parent(headers: &HashMap<String, String>) -> Option<SpanContext> {
    traceparent(headers).or_else(|| b3(headers))
}

/// A context whose parent is the remote span.
pub fn parent_context(remote: &SpanContext) -> Context {
    Context::new().with_remote_span_context(remote.clone())
}

/// W3C `traceparent` and `tracestate`, read by OpenTelemetry's own propagator (which keeps
/// `tracestate` for the exported span and checks the format as the spec says). Costs one map
/// lookup on a Check without the header.
fn traceparent(headers: &HashMap<String, String>) -> Option<SpanContext> {
    use opentelemetry::propagation::TextMapPropagator as _;
    headers.get("traceparent")?;
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(headers);
    let remote = context.span().span_context().clone();
    remote.is_valid().then_some(remote)
}

/// B3: single `b3: <trace>-<span>[-<sampled>]` or `x-b3-traceid` / `x-b3-spanid` / `x-b3-sampled`.
fn b3(headers: &HashMap<String, String>) -> Option<SpanContext> {
    if let Some(single) = headers.get("b3") {
        let mut parts = single.trim().split('-');
        let (trace, span) = (parts.next()?, parts.next()?);
        let sampled = parts.next().is_none_or(|s| s == "1" || s == "d");
        return context(&pad_trace(trace), span, sampled);
    }
    let trace = headers.get("x-b3-traceid")?;
    let span = headers.get("x-b3-spanid")?;
    let sampled = headers
        .get("x-b3-sampled")
        .is_none_or(|s| s == "1" || s == "true");
    context(&pad_trace(trace), span, sampled)
}

/// 64-bit B3 trace ids are left-padded to 128 bits.
fn pad_trace(trace: &str) -> String {
    if trace.len() == 16 {
        format!("{trace:0>32}")
    } else {
        trace.to_owned()
    }
}

fn context(trace: &str, span: &str, sampled: bool) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn w3c_traceparent_is_continued() {
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let sc = remote_parent(&h);
        assert_eq!(
            sc.map(|s| s.trace_id().to_string()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn w3c_tracestate_and_sampling_are_kept() {
        let h = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ]);
        let sc = remote_parent(&h).unwrap_or_else(|| panic!("no parent"));
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(sc.trace_state().get("rojo"), Some("00f067aa0ba902b7"));
        let unsampled = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        assert!(remote_parent(&unsampled).is_some_and(|s| !s.is_sampled()));
    }

    #[test]
    fn b3_single_and_multi_are_continued() {
        let single = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        assert_eq!(
            remote_parent(&single)
                .map(|s| s.span_id().to_string())
                .as_deref(),
            Some("e457b5a2e4d86bd1")
        );
        let multi = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        assert_eq!(
            remote_parent(&multi)
                .map(|s| s.trace_id().to_string())
                .as_deref(),
            Some("0000000000000000463ac35c9f6413ad")
        );
    }

    #[test]
    fn malformed_or_zero_ids_are_ignored() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-zz-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(
                remote_parent(&headers(&[("traceparent", bad)])).is_none(),
                "{bad}"
            );
        }
    }
}
