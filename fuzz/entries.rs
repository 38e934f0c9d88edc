//! The fuzz entry functions, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and
//! by `tests/fuzz_corpus.rs`, which replays the committed corpora and every crashing
//! input as an ordinary test. Each takes the repository root (for the shipped config and
//! policies) and the input bytes, and panics when a property does not hold:
//!
//! - [`check_request`]: bytes → prost `CheckRequest` → the real `AuthzService::check` over
//!   the shipped config, with a risk source scripted by the token's bytes. The gRPC code
//!   agrees with the answer, a deny body is generic, a client-sent protected header never
//!   reaches the upstream, and a rejected/high/DENY token or (on a write, all of which are
//!   `risk: required` under `fail_mode: closed`) an outage is never allowed.
//! - [`path_route`]: first byte → method, rest → path; canonical check and route lookup.
//!   An accepted path has no empty, dot or encoded-separator segment; a matched resource
//!   id is non-empty and has no `/`.
//! - [`recommendation`]: bytes → `Recommendation::from_json`. An accepted recommendation
//!   has a finite score in 0–100 and a challenge type safe for a response header.

#![allow(
    dead_code,
    reason = "each fuzz target uses one entry; the replay test uses all"
)]

use riskgate::audit::AuditSink;
use riskgate::authz::AuthzService;
use riskgate::config::Config;
use riskgate::decide::{DecideSettings, Decider};
use riskgate::pb::envoy::service::auth::v3::authorization_server::Authorization;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use riskgate::risk::source::{BoxFuture, FetchError, RiskSource};
use riskgate::risk::{Assessor, Breaker, Recommendation, RecommendationType};
use riskgate::routes::{Lookup, RouteTable};
use riskgate::telemetry::Metrics;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The shipped config (`deploy/riskgate.yaml`) under `root`.
fn shipped_config(root: &str) -> Config {
    match Config::load(&Path::new(root).join("deploy/riskgate.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("shipped config must load: {e}"),
    }
}

/// What the scripted risk source answers for a token: chosen by the sum of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Script {
    /// A fitting low-risk recommendation for `action_type`.
    Low(&'static str),
    /// Score 95: high band, never allowed.
    High,
    /// DENY: never allowed.
    Deny,
    /// 404: a rejected token, never allowed.
    Rejected,
    /// 503 or a timeout: an outage, allowed only on reads (`fail_mode: read_only` routes).
    Outage(FetchError),
}

fn script(token: &str) -> Script {
    let sum: u32 = token.bytes().map(u32::from).sum();
    match sum % 9 {
        0 => Script::Low("login"),
        1 => Script::Low("withdraw"),
        2 => Script::Low("transaction"),
        3 => Script::Low("account_details_change"),
        4 => Script::High,
        5 => Script::Deny,
        6 => Script::Rejected,
        7 => Script::Outage(FetchError::Unavailable(503)),
        _ => Script::Outage(FetchError::Timeout),
    }
}

use riskgate::clock::now_ms;

fn recommendation_for(score: f64, kind: RecommendationType, action_type: &str) -> Recommendation {
    Recommendation {
        id: "rec-fuzz".into(),
        issued_at_ms: now_ms(),
        kind,
        challenge_type: None,
        risk_score: score,
        action_id: "act-fuzz".into(),
        action_type: action_type.into(),
        action_performed_at_ms: now_ms(),
        user_id: Some("u1".into()),
        reasons: std::sync::Arc::from([std::sync::Arc::from("PROFILE_DEVICE_NEW")]),
        threats: Box::default(),
        transaction: None,
    }
}

struct Scripted;

impl RiskSource for Scripted {
    fn fetch<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(async move {
            match script(token) {
                Script::Low(t) => Ok(recommendation_for(10.0, RecommendationType::Allow, t)),
                Script::High => Ok(recommendation_for(
                    95.0,
                    RecommendationType::Allow,
                    "withdraw",
                )),
                Script::Deny => Ok(recommendation_for(
                    5.0,
                    RecommendationType::Deny,
                    "withdraw",
                )),
                Script::Rejected => Err(FetchError::Rejected(404)),
                Script::Outage(e) => Err(e),
            }
        })
    }
}

struct CheckHarness {
    rt: tokio::runtime::Runtime,
    authz: AuthzService,
    strip: Vec<String>,
    token_header: String,
}

fn check_harness(root: &str) -> &'static CheckHarness {
    static HARNESS: OnceLock<CheckHarness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let config = shipped_config(root);
        let snapshot = match riskgate::policy::load_snapshot(&config) {
            Ok(s) => s,
            Err(e) => panic!("shipped policies must load: {e}"),
        };
        let Some(risk) = config.risk.as_ref() else {
            panic!("the shipped config has risk");
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        let authz = rt.block_on(async {
            let assessor = Assessor::new(
                Arc::new(Scripted),
                // Never opens: every input is judged on its own script.
                Arc::new(Breaker::new(u32::MAX, Duration::from_millis(1))),
                riskgate::risk::settings_from(risk),
                None,
            );
            let decider = Decider::new(
                DecideSettings::from_config(&config),
                snapshot,
                Some(Arc::new(assessor)),
                Arc::new(riskgate::state::MemoryStore::new(config.state.max_entries)),
            );
            AuthzService::new(
                Arc::new(decider),
                Arc::new(Metrics::new()),
                AuditSink::disabled(),
            )
        });
        CheckHarness {
            rt,
            authz,
            strip: config.effective_strip_headers(),
            token_header: risk.token_header.to_ascii_lowercase(),
        }
    })
}

/// CheckRequest bytes → decision; see the module docs for the properties. Returns
/// whether the request was allowed (`None`: the bytes are not a CheckRequest).
pub fn check_request(root: &str, data: &[u8]) -> Option<bool> {
    let Ok(req) = <CheckRequest as prost::Message>::decode(data) else {
        return None;
    };
    let h = check_harness(root);
    // The request as riskgate reads it (lower-cased names, header_map merged).
    let access = riskgate::authz::extract::access_request(&req, None).ok();
    let token = access
        .as_ref()
        .and_then(|a| a.headers.get(&h.token_header))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let method = access
        .as_ref()
        .map(|a| a.method.clone())
        .unwrap_or_default();
    let sent: Vec<String> = access
        .as_ref()
        .map(|a| {
            a.headers
                .keys()
                .filter(|name| {
                    h.strip.iter().any(|p| match p.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix),
                        None => p == *name,
                    })
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let answer = match h.rt.block_on(h.authz.check(tonic::Request::new(req))) {
        Ok(r) => r.into_inner(),
        Err(status) => panic!("Check answered a gRPC error: {status}"),
    };
    let code = answer.status.as_ref().map_or(-1, |s| s.code);
    match &answer.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, 0, "OkResponse with gRPC code {code}");
            if let Some(token) = &token {
                match script(token) {
                    Script::High | Script::Deny | Script::Rejected => {
                        panic!("allowed with a {:?} token", script(token))
                    }
                    Script::Outage(e) if method != "GET" => {
                        panic!("write `{method}` allowed during an outage ({e:?})")
                    }
                    _ => {}
                }
            }
            let set: Vec<String> = ok
                .headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .map(|o| o.key.to_ascii_lowercase())
                .collect();
            for name in sent {
                assert!(
                    ok.headers_to_remove.contains(&name) || set.contains(&name),
                    "client-sent `{name}` reaches the upstream"
                );
            }
            Some(true)
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(code, 7, "DeniedResponse with gRPC code {code}");
            let body: serde_json::Value = match serde_json::from_str(&d.body) {
                Ok(b) => b,
                Err(e) => panic!("deny body is not JSON: {e}"),
            };
            let mut fields: Vec<&String> = body
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            fields.sort();
            assert_eq!(fields, ["decision_id", "error"], "deny body {}", d.body);
            for leak in ["PROFILE_DEVICE_NEW", "rec-fuzz", "act-fuzz"] {
                assert!(!d.body.contains(leak), "deny body leaks `{leak}`");
            }
            // (Short tokens are letters of the body's own words.)
            if let Some(token) = token.as_ref().filter(|t| t.len() >= 8) {
                assert!(
                    !d.body.contains(token.as_str()),
                    "deny body leaks the token"
                );
            }
            Some(false)
        }
        _ => panic!("neither an OK nor a denied answer"),
    }
}

fn route_table(root: &str) -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = shipped_config(root);
        match RouteTable::build(&config.routes, &config.hosts, config.default) {
            Ok(t) => t,
            Err(e) => panic!("shipped routes must compile: {e}"),
        }
    })
}

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "get"];

/// Method byte + path → canonical check → route lookup; see the module docs.
pub fn path_route(root: &str, data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let method = METHODS[usize::from(*first) % METHODS.len()];
    if riskgate::canonical::check_path(path).is_err() {
        return;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            !segment.is_empty() || i + 1 == segments.len(),
            "accepted an empty segment in {path:?}"
        );
        let decoded = match riskgate::canonical::decode_segment(segment) {
            Ok(d) => d,
            Err(e) => panic!("accepted {path:?} but its segment does not decode: {e}"),
        };
        assert!(
            decoded != "." && decoded != "..",
            "accepted a dot segment in {path:?}"
        );
        assert!(
            !decoded.contains(['/', '\\', ';']),
            "accepted an encoded separator in {path:?}"
        );
    }
    let lookup = route_table(root).lookup("bank.example", method, path, method == "OPTIONS");
    if let Ok(Lookup::Matched { resource_id, .. }) = lookup {
        assert!(!resource_id.is_empty(), "empty resource id for {path:?}");
        assert!(
            !resource_id.contains('/'),
            "resource id {resource_id:?} has a `/` for {path:?}"
        );
    }
}

/// Response body bytes → recommendation; see the module docs.
pub fn recommendation(_root: &str, data: &[u8]) {
    let Ok(rec) = Recommendation::from_json(data) else {
        return;
    };
    assert!(
        rec.risk_score.is_finite() && (0.0..=100.0).contains(&rec.risk_score),
        "accepted score {}",
        rec.risk_score
    );
    if let Some(c) = &rec.challenge_type {
        assert!(
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "challenge type {c:?} is not header-safe"
        );
    }
    assert!(
        rec.user_id.as_deref() != Some(""),
        "accepted an empty user id"
    );
}
