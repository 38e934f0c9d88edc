//! Deterministic cost of observability: the same Checks handled bare (extract, decide,
//! respond) or by the full handler (metrics, audit line written by its task, tracing with a
//! subscriber installed, exporter off), run N times. `scripts/observability-cost.sh` runs it
//! under callgrind, which counts instructions (all threads, the audit writer included)
//! independently of machine load, and prints the per-Check ratio.
//!
//!     observability_cost bare|full ITERATIONS
use riskgate::audit::AuditSink;
use riskgate::config::Config;
use std::sync::Arc;
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(run());
}
async fn run() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000);
    let mut config = Config::load(std::path::Path::new("deploy/riskgate.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(r) = config.risk.as_mut() {
        r.base_url = Some("http://127.0.0.1:9".into());
        r.client_id = Some("x".into());
    }
    let mut off = config.routes[1].clone();
    off.path = "/core/{account_id}/balance".into();
    off.risk = riskgate::config::RiskMode::Off;
    config.routes.push(off);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let app = riskgate::server::App::build(&config, AuditSink::disabled())
        .unwrap_or_else(|e| panic!("{e}"));
    let decider = app.decider.clone();
    let audit = AuditSink::spawn(tokio::io::sink(), 100_000);
    let metrics = Arc::new(riskgate::telemetry::Metrics::new());
    let service = riskgate::authz::AuthzService::new(decider.clone(), metrics, audit.clone());
    let req = {
        use prost_types::value::Kind;
        use riskgate::pb::envoy::service::auth::v3::{
            attribute_context, AttributeContext, CheckRequest,
        };
        let payload = prost_types::Struct {
            fields: [(
                "sub".to_owned(),
                prost_types::Value {
                    kind: Some(Kind::StringValue("u1".into())),
                },
            )]
            .into(),
        };
        let ns = prost_types::Struct {
            fields: [(
                "jwt_payload".to_owned(),
                prost_types::Value {
                    kind: Some(Kind::StructValue(payload)),
                },
            )]
            .into(),
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    time: None,
                    http: Some(attribute_context::HttpRequest {
                        id: "b".into(),
                        method: "GET".into(),
                        path: "/core/a1/balance".into(),
                        host: "bank.example".into(),
                        headers: [(
                            "traceparent".to_owned(),
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
                        )]
                        .into(),
                        ..Default::default()
                    }),
                }),
                metadata_context: Some(riskgate::pb::envoy::config::core::v3::Metadata {
                    filter_metadata: [("envoy.filters.http.jwt_authn".to_owned(), ns)].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    };
    let answers = riskgate::authz::respond::AnswerSettings::default();
    for _ in 0..n {
        if mode == "full" {
            use riskgate::pb::envoy::service::auth::v3::authorization_server::Authorization as _;
            let _ = std::hint::black_box(service.check(tonic::Request::new(req.clone())).await);
        } else {
            let owned = req.clone();
            let access = riskgate::authz::extract::access_request(&owned, None)
                .unwrap_or_else(|e| panic!("{e}"));
            let d = decider.decide(&access).await;
            std::hint::black_box(riskgate::authz::respond::to_check_response(&d, &answers));
        }
    }
    audit.shutdown().await;
}
