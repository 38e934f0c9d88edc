//! In-process fixtures: the shipped example config, a scripted fake risk source, a real
//! riskgate gRPC server on a loopback port with the risk API simulator behind it, and
//! CheckRequest builders.
#![allow(
    dead_code,
    reason = "each test file uses a different part of the fixture"
)]

use riskgate::audit::AuditSink;
use riskgate::config::Config;
use riskgate::decide::{DecideSettings, Decider};
use riskgate::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use riskgate::pb::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};
use riskgate::request::AccessRequest;
use riskgate::risk::source::{BoxFuture, FetchError, RiskSource};
use riskgate::risk::{Assessor, AssessorSettings, Breaker, Recommendation, RecommendationType};
use riskgate::server::{self, App};
use riskgate::simulator::{self, ScriptedAction, SimConfig, SimHandle};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// Path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A test timing from the environment (ms), so slow machines can stretch them.
pub fn ms(var: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The shipped `deploy/riskgate.yaml`, pointed at `risk_base_url` with a test secret file.
pub fn example_config(risk_base_url: &str) -> Config {
    let mut config = match Config::load(&repo("deploy/riskgate.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("shipped config must load: {e}"),
    };
    let secret = std::env::temp_dir().join(format!("riskgate-test-secret-{}", std::process::id()));
    if let Err(e) = std::fs::write(&secret, "sim-secret\n") {
        panic!("cannot write test secret: {e}");
    }
    if let Some(risk) = config.risk.as_mut() {
        risk.base_url = Some(risk_base_url.to_owned());
        risk.client_id = Some("riskgate-test".into());
        risk.client_secret_file = Some(secret);
    }
    config
}

/// A fake risk source answering per token from a table, counting calls.
#[derive(Default)]
pub struct ScriptedRisk {
    pub answers: Mutex<HashMap<String, Result<Recommendation, FetchError>>>,
    pub calls: AtomicUsize,
    pub delay_ms: std::sync::atomic::AtomicU64,
}

impl ScriptedRisk {
    pub fn set(&self, token: &str, answer: Result<Recommendation, FetchError>) {
        if let Ok(mut a) = self.answers.lock() {
            a.insert(token.to_owned(), answer);
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl RiskSource for ScriptedRisk {
    fn fetch<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            self.answers
                .lock()
                .ok()
                .and_then(|a| a.get(token).cloned())
                .unwrap_or(Err(FetchError::Rejected(400)))
        })
    }
}

/// A recommendation as the API would give it.
pub fn rec(
    score: f64,
    kind: RecommendationType,
    action_type: &str,
    user: Option<&str>,
) -> Recommendation {
    Recommendation {
        id: "rec-1".into(),
        issued_at_ms: now_ms(),
        kind,
        challenge_type: None,
        risk_score: score,
        action_id: format!("act-{action_type}-{score}"),
        action_type: action_type.into(),
        action_performed_at_ms: now_ms(),
        user_id: user.map(String::from),
        reasons: vec!["PROFILE_DEVICE_NEW".into()],
        threats: vec![],
        preview_rule: None,
    }
}

/// A decider over the shipped config and policies with a scripted risk source.
pub fn decider_with(config: &Config, risk: Arc<ScriptedRisk>) -> Decider {
    let snapshot = match server::load_snapshot(config) {
        Ok(s) => s,
        Err(e) => panic!("shipped policies must load: {e}"),
    };
    let settings = config
        .risk
        .as_ref()
        .map(riskgate::risk::settings_from)
        .unwrap_or(AssessorSettings {
            budget: Duration::from_millis(250),
            deadline_reserve: Duration::from_millis(20),
            ttl: Duration::from_secs(60),
            max_age: Duration::from_secs(300),
            max_entries: 1000,
        });
    let assessor = Assessor::new(
        risk,
        Arc::new(Breaker::new(5, Duration::from_secs(10))),
        settings,
    );
    Decider::new(
        DecideSettings::from_config(config),
        snapshot,
        Some(Arc::new(assessor)),
    )
}

/// Verified claims as Envoy's jwt_authn would put them in metadata.
pub fn with_user(mut req: AccessRequest, sub: &str, extra: Value) -> AccessRequest {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    if let Value::Object(extra) = extra {
        claims.extend(extra);
    }
    let mut ns = Map::new();
    ns.insert("jwt_payload".into(), Value::Object(claims));
    req.metadata
        .insert("envoy.filters.http.jwt_authn".into(), ns);
    req
}

/// A request with an action token.
pub fn request(method: &str, path: &str, token: Option<&str>) -> AccessRequest {
    let mut req = AccessRequest::new(method, path);
    req.host = "bank.example".into();
    if let Some(t) = token {
        req.headers.insert("x-action-token".into(), t.into());
    }
    req
}

/// A running riskgate (real gRPC port) with the simulator behind it.
pub struct Running {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub sim: SimHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), std::io::Error>>>,
}

impl Running {
    pub async fn client(&self) -> AuthorizationClient<Channel> {
        match AuthorizationClient::connect(format!("http://{}", self.grpc)).await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to riskgate: {e}"),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Starts the simulator (with `sim`) and riskgate (config tweaked by `tweak`).
pub async fn start(sim: SimConfig, tweak: impl FnOnce(&mut Config)) -> Running {
    let sim = match simulator::start(sim, SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    };
    let mut config = example_config(&sim.base_url());
    tweak(&mut config);
    if let Err(e) = config.validate() {
        panic!("tweaked config invalid: {e}");
    }
    let app = match App::build(&config, AuditSink::disabled()) {
        Ok(a) => a,
        Err(e) => panic!("riskgate build: {e}"),
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let bound = match server::bind(app, loopback, loopback).await {
        Ok(b) => b,
        Err(e) => panic!("riskgate bind: {e}"),
    };
    let (grpc, admin) = (bound.grpc_addr, bound.admin_addr);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Running {
        grpc,
        admin,
        sim,
        stop: Some(tx),
        task: Some(task),
    }
}

/// A script entry.
pub fn scripted(score: f64, kind: &str, action_type: &str, user: Option<&str>) -> ScriptedAction {
    ScriptedAction {
        risk_score: json!(score),
        recommendation: kind.into(),
        action_type: action_type.into(),
        user_id: user.map(String::from),
        reasons: Some(vec!["PROFILE_DEVICE_NEW".into()]),
        ..ScriptedAction::default()
    }
}

/// A CheckRequest as Envoy sends it, with the user's verified JWT payload in metadata.
pub fn check(
    method: &str,
    path: &str,
    user: Option<(&str, Value)>,
    headers: &[(&str, &str)],
) -> CheckRequest {
    let mut all: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert(":authority".into(), "bank.example".into());
    all.insert(":method".into(), method.into());
    all.insert(":path".into(), path.into());
    let http = attribute_context::HttpRequest {
        id: "req-test".into(),
        method: method.into(),
        path: path.into(),
        host: "bank.example".into(),
        headers: all,
        ..Default::default()
    };
    let metadata_context = user.map(|(sub, extra)| {
        let mut claims = json!({ "sub": sub, "iss": "https://issuer.riskgate.test" });
        if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
            c.extend(e);
        }
        riskgate::pb::envoy::config::core::v3::Metadata {
            filter_metadata: [(
                "envoy.filters.http.jwt_authn".to_string(),
                prost_types::Struct {
                    fields: [("jwt_payload".to_string(), json_to_value(&claims))].into(),
                },
            )]
            .into(),
            ..Default::default()
        }
    });
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                time: None,
                http: Some(http),
            }),
            metadata_context,
            ..Default::default()
        }),
    }
}

fn json_to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
