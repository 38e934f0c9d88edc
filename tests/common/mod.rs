//! In-process fixtures: the shipped example config, a scripted fake risk source, a real
//! riskgate gRPC server on a loopback port with the risk API simulator behind it, and
//! CheckRequest builders.
#![allow(
    dead_code,
    reason = "each test file uses a different part of the fixture"
)]

use risk_sim::{ScriptedAction, SimConfig, SimHandle};
use riskgate::audit::AuditSink;
use riskgate::config::Config;
use riskgate::decide::{DecideSettings, Decider};
use riskgate::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use riskgate::pb::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};
use riskgate::request::AccessRequest;
use riskgate::risk::source::{BoxFuture, FetchError, RiskSource};
use riskgate::risk::{Assessor, AssessorSettings, Breaker, Recommendation, RecommendationType};
use riskgate::serve::server::{self, App};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// The wall clock riskgate reads (epoch ms), so tests and stages agree.
pub use riskgate::clock::now_ms;

/// The shipped `deploy/riskgate.yaml`, pointed at `risk_base_url` with a test secret file,
/// without its routes' body mappings (issue #16): tests of other stages send withdrawals
/// without a JSON body; `tests/transaction_binding.rs` uses [`shipped_config`].
pub fn example_config(risk_base_url: &str) -> Config {
    let mut config = shipped_config(risk_base_url);
    for route in &mut config.routes {
        route.body = None;
    }
    config
}

/// The shipped `deploy/riskgate.yaml` as it is, pointed at `risk_base_url` with a test
/// secret file.
pub fn shipped_config(risk_base_url: &str) -> Config {
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
        action_id: format!("act-{action_type}-{score}").into(),
        action_type: action_type.into(),
        action_performed_at_ms: now_ms(),
        user_id: user.map(String::from),
        reasons: std::sync::Arc::from([std::sync::Arc::from("PROFILE_DEVICE_NEW")]),
        threats: Box::default(),
        transaction: None,
    }
}

/// A decider over the shipped config and policies with a scripted risk source.
pub fn decider_with(config: &Config, risk: Arc<ScriptedRisk>) -> Decider {
    let snapshot = match riskgate::policy::load_snapshot(config) {
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
            negative_ttl: Duration::from_secs(30),
            negative_max_entries: 1000,
        });
    let assessor = Assessor::new(
        risk,
        Arc::new(Breaker::new(5, Duration::from_secs(10))),
        settings,
        None,
    );
    Decider::new(
        DecideSettings::from_config(config),
        snapshot,
        Some(Arc::new(assessor)),
        Arc::new(riskgate::state::MemoryStore::new(config.state.max_entries)),
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

    /// The HTTP status riskgate answers `req` with (200 for OK, the denied status
    /// otherwise); panics on a gRPC error or an answer without one.
    pub async fn status(&self, req: CheckRequest) -> u16 {
        use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
        let mut client = self.client().await;
        match client
            .check(req)
            .await
            .map(|r| r.into_inner().http_response)
        {
            Ok(Some(HttpResponse::OkResponse(_))) => 200,
            Ok(Some(HttpResponse::DeniedResponse(d))) => {
                d.status.map_or(0, |s| u16::try_from(s.code).unwrap_or(0))
            }
            other => panic!("unexpected answer: {other:?}"),
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
    let sim = match risk_sim::start(sim, SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    };
    let mut config = example_config(&sim.base_url());
    config.shutdown.drain = Duration::ZERO; // stop() at once; lifecycle tests set their own
    tweak(&mut config);
    if let Err(e) = config.validate() {
        panic!("tweaked config invalid: {e}");
    }
    let app = match App::build(&config, AuditSink::disabled()).await {
        Ok(a) => a,
        Err(e) => panic!("riskgate build: {e}"),
    };
    serve_app(app, sim).await
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

// --- Lifecycle fixtures (issue 6): apps from config files, ConfigMap-style mounts ---

/// Binds `app` on loopback ports and serves it until [`Running::stop`].
pub async fn serve_app(app: App, sim: SimHandle) -> Running {
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

/// A directory mounted the way the kubelet mounts a ConfigMap: `NAME → ..data/NAME`,
/// `..data → ..vN/`, and an update is one atomic rename of `..data`.
pub struct ConfigMapDir {
    pub path: PathBuf,
    version: usize,
}

pub type Files = std::collections::BTreeMap<String, Vec<u8>>;

impl ConfigMapDir {
    pub fn create(path: &std::path::Path, files: &Files) -> std::io::Result<ConfigMapDir> {
        std::fs::create_dir_all(path)?;
        let mut dir = ConfigMapDir {
            path: path.to_owned(),
            version: 0,
        };
        dir.swap(files)?;
        Ok(dir)
    }

    /// Publishes `files` as the new content, atomically (like kubelet's AtomicWriter).
    pub fn swap(&mut self, files: &Files) -> std::io::Result<()> {
        use std::os::unix::fs::symlink;
        let old = format!("..v{}", self.version);
        self.version += 1;
        let new = format!("..v{}", self.version);
        std::fs::create_dir(self.path.join(&new))?;
        for (name, content) in files {
            std::fs::write(self.path.join(&new).join(name), content)?;
        }
        let tmp = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&new, &tmp)?;
        std::fs::rename(&tmp, self.path.join("..data"))?;
        for name in files.keys() {
            let link = self.path.join(name);
            if link.symlink_metadata().is_err() {
                symlink(format!("..data/{name}"), link)?;
            }
        }
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !files.contains_key(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        if self.version > 1 {
            std::fs::remove_dir_all(self.path.join(old))?;
        }
        Ok(())
    }
}

/// The shipped example policies (`policies/`), by file name.
pub fn example_policies() -> Files {
    let mut files = Files::new();
    let entries = match std::fs::read_dir(repo("policies")) {
        Ok(e) => e,
        Err(e) => panic!("read policies/: {e}"),
    };
    for entry in entries.flatten() {
        if let Ok(content) = std::fs::read(entry.path()) {
            files.insert(entry.file_name().to_string_lossy().into_owned(), content);
        }
    }
    files
}

/// A lifecycle test fixture file (`tests/data/lifecycle/NAME`).
pub fn lifecycle_data(name: &str) -> Vec<u8> {
    match std::fs::read(repo("tests/data/lifecycle").join(name)) {
        Ok(c) => c,
        Err(e) => panic!("read tests/data/lifecycle/{name}: {e}"),
    }
}

/// The workspace's `policies:` value: the ConfigMap-mounted copy of the example policies.
pub const DEFAULT_POLICIES: &str =
    "{ dir: policies, schema: policies/schema.cedarschema, entities: policies/entities.json }";

/// A temp dir with `riskgate.yaml` (from `tests/data/lifecycle/riskgate.yaml`) and the
/// example policies under `policies/` as a ConfigMap mount.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub policies: ConfigMapDir,
    pub config: PathBuf,
    sim_url: String,
}

impl Workspace {
    /// `extra` is YAML appended to the config (e.g. `reload: { poll_ms: 20 }`); without a
    /// `shutdown:` of its own the config gets `shutdown: { drain_ms: 0 }`.
    pub fn new(sim_url: &str, extra: &str) -> Workspace {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let policies = match ConfigMapDir::create(&dir.path().join("policies"), &example_policies())
        {
            Ok(p) => p,
            Err(e) => panic!("configmap dir: {e}"),
        };
        let ws = Workspace {
            config: dir.path().join("riskgate.yaml"),
            dir,
            policies,
            sim_url: sim_url.to_owned(),
        };
        ws.write_config(extra);
        ws
    }

    /// Rewrites the config with `extra` appended to the template.
    pub fn write_config(&self, extra: &str) {
        self.write_config_with(DEFAULT_POLICIES, extra);
    }

    /// Rewrites the config with `policies` (a YAML flow mapping) and `extra`.
    pub fn write_config_with(&self, policies: &str, extra: &str) {
        let secret = self.dir.path().join("client-secret");
        let template = String::from_utf8_lossy(&lifecycle_data("riskgate.yaml")).into_owned();
        let text = template
            .replace("POLICIES", policies)
            .replace("SIM_URL", &self.sim_url)
            .replace("SECRET_FILE", &secret.to_string_lossy());
        // No drain unless the test asks for one, so stop() is immediate.
        let shutdown = if extra.contains("shutdown:") {
            ""
        } else {
            "shutdown: { drain_ms: 0 }"
        };
        let written = std::fs::write(&secret, "sim-secret\n")
            .and_then(|()| std::fs::write(&self.config, format!("{text}\n{extra}\n{shutdown}\n")));
        if let Err(e) = written {
            panic!("write config: {e}");
        }
    }

    /// Writes a plain (non-ConfigMap) policy directory `name` with `files`; returns its path.
    pub fn plain_dir(&self, name: &str, files: &Files) -> PathBuf {
        let path = self.dir.path().join(name);
        let written = std::fs::create_dir_all(&path).and_then(|()| {
            files
                .iter()
                .try_for_each(|(n, c)| std::fs::write(path.join(n), c))
        });
        if let Err(e) = written {
            panic!("write {name}: {e}");
        }
        path
    }
}

/// `GET http://addr/path` → (status, body), over a raw HTTP/1.0 exchange.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: riskgate\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = match exchange.await {
        Ok(r) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample in a Prometheus text exposition (0 when absent).
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Polls `check` every 10 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
