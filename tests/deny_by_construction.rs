//! Deny by construction, proved by property (issue 14, item 6): generated CheckRequests
//! (routes, non-canonical paths, unknown routes, users, tokens, client-sent protected
//! headers) meet generated recommendations and faults (timeouts, 4xx/5xx, garbage,
//! breaker open, OAuth failures, aborted fetches, short Check deadlines), through the real
//! `AuthzService::check` adapter over the shipped config and policies. Asserted for every
//! case:
//!
//! 1. an OK answer only when an independent oracle says every stage could pass: a route of
//!    the config matched exactly, no method override, and on a risk route a recommendation
//!    that is not DENY, not high, bound to the route's action types and to the user (a
//!    CHALLENGE only with step-up done) — or an outage under a fail mode that allows;
//!    faults and rejections under `fail_mode: closed` never answer OK;
//! 2. the gRPC code agrees with the oneof (0 ⇔ OkResponse, 7 ⇔ DeniedResponse), never an
//!    error status;
//! 3. a deny body is exactly `{"error", "decision_id"}` with a generic error word, and no
//!    deny header carries the token, a reason, a score or the user's own headers;
//! 4. on OK, every protected header the client sent (the strip list: `x-user-id`,
//!    `x-jwt-payload`, `x-risk-*`, `x-riskgate-*`, the token header) is removed or
//!    overwritten before the upstream sees it.
//!
//! Case count: `RISKGATE_PROPTEST_CASES` (default 256). Timings in ms:
//! `RISKGATE_PROPTEST_BUDGET_MS` (risk budget, default 40); a "slow" API answers after
//! twice the budget.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use riskgate::audit::AuditSink;
use riskgate::authz::AuthzService;
use riskgate::config::{Config, FailMode, RiskMode, RouteConfig};
use riskgate::decide::{DecideSettings, Decider};
use riskgate::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use riskgate::pb::envoy::service::auth::v3::authorization_server::Authorization;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use riskgate::risk::source::{BoxFuture, FetchError, RiskSource};
use riskgate::risk::{Assessor, Breaker, Recommendation, RecommendationType};
use riskgate::telemetry::Metrics;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the fake risk API does for one token.
#[derive(Debug, Clone)]
enum Outcome {
    /// A recommendation, possibly unfit for the request.
    Rec {
        score: f64,
        kind: RecommendationType,
        action_type: String,
        user: Option<String>,
        challenge: Option<String>,
    },
    /// A good recommendation, but after twice the budget (the Check sees a timeout).
    Slow,
    /// An error straight from the source.
    Fault(FetchError),
}

impl Outcome {
    /// Whether the assessor sees an outage (fail mode applies) rather than a rejection.
    fn is_outage(&self) -> bool {
        match self {
            Outcome::Rec { .. } => false,
            Outcome::Slow => true,
            Outcome::Fault(e) => e.is_outage(),
        }
    }
}

/// A risk source answering per token, as scripted for the case.
struct FaultyRisk {
    answers: Mutex<HashMap<String, Outcome>>,
    slow: Duration,
}

impl RiskSource for FaultyRisk {
    fn fetch<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(async move {
            let outcome = self.answers.lock().ok().and_then(|a| a.get(token).cloned());
            match outcome {
                Some(Outcome::Rec {
                    score,
                    kind,
                    action_type,
                    user,
                    challenge,
                }) => {
                    let mut r = rec(score, kind, &action_type, user.as_deref());
                    r.challenge_type = challenge;
                    Ok(r)
                }
                Some(Outcome::Slow) => {
                    tokio::time::sleep(self.slow).await;
                    Ok(rec(1.0, RecommendationType::Allow, "login", Some("u1")))
                }
                Some(Outcome::Fault(e)) => Err(e),
                None => Err(FetchError::Rejected(400)),
            }
        })
    }
}

/// One service under test: a fail mode, its risk source and the config it was built from.
struct Service {
    authz: AuthzService,
    risk: Arc<FaultyRisk>,
    config: Config,
    fail_mode: FailMode,
}

fn service(fail_mode: FailMode, budget: Duration) -> Service {
    let mut config = example_config("http://127.0.0.1:9");
    if let Some(risk) = config.risk.as_mut() {
        risk.fail_mode = fail_mode;
        risk.budget = budget;
        // every case is a fresh token: the per-source call budget (tests/api_budget.rs)
        // would turn later cases into 429s and hide the paths under test
        risk.call_budget.calls = 0;
    }
    let snapshot = match riskgate::policy::load_snapshot(&config) {
        Ok(s) => s,
        Err(e) => panic!("shipped policies must load: {e}"),
    };
    let settings = match config.risk.as_ref() {
        Some(r) => riskgate::risk::settings_from(r),
        None => panic!("the shipped config has risk"),
    };
    let risk = Arc::new(FaultyRisk {
        answers: Mutex::new(HashMap::new()),
        slow: budget * 2,
    });
    // The breaker never opens by itself here (cases are independent); its open state is
    // injected as a fault instead.
    let assessor = Assessor::new(
        risk.clone(),
        Arc::new(Breaker::new(u32::MAX, Duration::from_millis(1))),
        settings,
        None,
    );
    let decider = Decider::new(
        DecideSettings::from_config(&config),
        snapshot,
        Some(Arc::new(assessor)),
        Arc::new(riskgate::state::MemoryStore::new(config.state.max_entries)),
    );
    let authz = AuthzService::new(
        Arc::new(decider),
        Arc::new(Metrics::new()),
        AuditSink::disabled(),
    );
    Service {
        authz,
        risk,
        config,
        fail_mode,
    }
}

/// How the request path is built.
#[derive(Debug, Clone)]
enum PathShape {
    /// A configured route's template with `id` in its parameter.
    Route { route: usize, id: String },
    /// The same, made non-canonical by one of [`MUTATIONS`].
    NonCanonical {
        route: usize,
        id: String,
        mutation: usize,
    },
    /// Anything else.
    Unknown(String),
}

/// Ways to make a canonical path non-canonical; each must be denied.
const MUTATIONS: [(&str, &str); 9] = [
    ("/", "/../"),
    ("/", "/./"),
    ("/", "//"),
    ("/", "/%2e%2e/"),
    ("/", "/%2E/"),
    ("/", "%2F"),
    ("/", "/%2f"),
    ("/", "\\"),
    ("/", ";x/"),
];

#[derive(Debug, Clone)]
enum TokenShape {
    None,
    Blank,
    /// A token the source answers with the case's outcome.
    Valid,
    /// Not ASCII-graphic: rejected before the API is asked.
    Unprintable,
}

#[derive(Debug, Clone)]
struct Case {
    open: bool,
    method_other: Option<String>,
    path: PathShape,
    query: Option<String>,
    user: Option<(String, bool)>,
    token: TokenShape,
    outcome: Outcome,
    protected: Vec<(String, String, bool)>,
    method_override: bool,
    grpc_timeout_ms: Option<u64>,
}

fn fault() -> impl Strategy<Value = FetchError> {
    prop_oneof![
        Just(FetchError::Timeout),
        Just(FetchError::Connect("connection refused".into())),
        (500u16..600).prop_map(FetchError::Unavailable),
        Just(FetchError::Throttled {
            retry_after_s: Some(1)
        }),
        Just(FetchError::Busy),
        Just(FetchError::Unauthorized),
        Just(FetchError::NoToken("oauth 503".into())),
        Just(FetchError::Garbage("expected value at line 1".into())),
        Just(FetchError::BreakerOpen),
        (400u16..500).prop_map(FetchError::Rejected),
        Just(FetchError::CallerDeadline),
        Just(FetchError::Aborted),
    ]
}

fn kind() -> impl Strategy<Value = RecommendationType> {
    prop_oneof![
        Just(RecommendationType::Trust),
        Just(RecommendationType::Allow),
        Just(RecommendationType::Challenge),
        Just(RecommendationType::Deny),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    let action_type = prop_oneof![
        Just("login"),
        Just("withdraw"),
        Just("transaction"),
        Just("account_details_change"),
        Just("register"),
    ];
    let user = prop_oneof![Just(None), Just(Some("u1")), Just(Some("u2"))];
    let challenge = prop_oneof![Just(None), Just(Some("email_otp")), Just(Some("sms otp!"))];
    prop_oneof![
        4 => (0.0f64..=100.0, kind(), action_type, user, challenge).prop_map(
            |(score, kind, action_type, user, challenge)| Outcome::Rec {
                score,
                kind,
                action_type: action_type.into(),
                user: user.map(String::from),
                challenge: challenge.map(String::from),
            }
        ),
        1 => Just(Outcome::Slow),
        3 => fault().prop_map(Outcome::Fault),
    ]
}

fn protected_header() -> impl Strategy<Value = (String, String, bool)> {
    let name = prop_oneof![
        Just("x-user-id"),
        Just("x-jwt-payload"),
        Just("x-risk-band"),
        Just("x-risk-score"),
        Just("x-risk-recommendation"),
        Just("x-risk-outage"),
        Just("x-riskgate-principal"),
        Just("x-riskgate-decision-id"),
        Just("x-riskgate-anything"),
        Just("x-action-token"),
    ];
    (name, "[ -~]{0,16}", any::<bool>(), any::<bool>()).prop_map(
        |(name, value, upper, in_header_map)| {
            let name = if upper {
                name.to_ascii_uppercase()
            } else {
                name.to_owned()
            };
            (name, value, in_header_map)
        },
    )
}

fn case(routes: usize) -> impl Strategy<Value = Case> {
    let id = prop_oneof![
        Just("a1".to_owned()),
        Just("a2".to_owned()),
        Just("u1".to_owned()),
        Just("u2".to_owned()),
        Just("bank".to_owned()),
        "[a-z0-9]{1,6}",
    ];
    let path = prop_oneof![
        6 => (0..routes, id.clone()).prop_map(|(route, id)| PathShape::Route { route, id }),
        2 => (0..routes, id, 0..MUTATIONS.len())
            .prop_map(|(route, id, mutation)| PathShape::NonCanonical { route, id, mutation }),
        1 => "/[a-z/%.;]{0,24}".prop_map(PathShape::Unknown),
    ];
    let method_other = prop_oneof![
        8 => Just(None),
        1 => prop_oneof![
            Just("DELETE"),
            Just("PATCH"),
            Just("OPTIONS"),
            Just("get"),
            Just("HEAD")
        ]
        .prop_map(|m| Some(m.to_owned())),
    ];
    let user = prop_oneof![
        1 => Just(None),
        4 => (prop_oneof![Just("u1"), Just("u2"), Just("u3")], any::<bool>())
            .prop_map(|(u, mfa)| Some((u.to_owned(), mfa))),
    ];
    let token = prop_oneof![
        1 => Just(TokenShape::None),
        1 => Just(TokenShape::Blank),
        6 => Just(TokenShape::Valid),
        1 => Just(TokenShape::Unprintable),
    ];
    let query = prop_oneof![3 => Just(None), 1 => "[a-z=&]{0,12}".prop_map(Some)];
    let grpc_timeout =
        prop_oneof![4 => Just(None), 1 => Just(Some(1u64)), 1 => Just(Some(5000u64))];
    (
        any::<bool>(),
        method_other,
        path,
        query,
        user,
        token,
        outcome(),
        proptest::collection::vec(protected_header(), 0..4),
        proptest::bool::weighted(0.05),
        grpc_timeout,
    )
        .prop_map(
            |(
                open,
                method_other,
                path,
                query,
                user,
                token,
                outcome,
                protected,
                method_override,
                grpc_timeout_ms,
            )| Case {
                open,
                method_other,
                path,
                query,
                user,
                token,
                outcome,
                protected,
                method_override,
                grpc_timeout_ms,
            },
        )
}

/// The route's template with its `{param}` replaced by `id`.
fn fill(route: &RouteConfig, id: &str) -> String {
    route
        .path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                id.to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The request path of `c`, and the route it must match exactly (if any).
fn request_path<'a>(c: &Case, routes: &'a [RouteConfig]) -> (String, Option<&'a RouteConfig>) {
    match &c.path {
        PathShape::Route { route, id } => {
            let r = &routes[*route];
            let method_fits = c.method_other.is_none();
            (fill(r, id), method_fits.then_some(r))
        }
        PathShape::NonCanonical {
            route,
            id,
            mutation,
        } => {
            let (from, to) = MUTATIONS[*mutation];
            let path = fill(&routes[*route], id);
            // Mutate the last separator, so the prefix still looks like the route.
            let mutated = match path.rfind(from) {
                Some(at) if at > 0 => format!("{}{}{}", &path[..at], to, &path[at + 1..]),
                _ => format!("{path}{to}x"),
            };
            (mutated, None)
        }
        PathShape::Unknown(p) => (p.clone(), None),
    }
}

/// Why an OK answer to `c` would be wrong, or `None` when every stage could pass.
fn ok_would_be_wrong(c: &Case, route: Option<&RouteConfig>, svc: &Service) -> Option<String> {
    let Some(route) = route else {
        return Some("no route matched exactly (unknown, non-canonical or other method)".into());
    };
    if c.method_override {
        return Some("method override header".into());
    }
    if route.risk == RiskMode::Off {
        return None;
    }
    match c.token {
        TokenShape::None | TokenShape::Blank => {
            return (route.risk == RiskMode::Required)
                .then(|| "risk required but no action token".into());
        }
        TokenShape::Unprintable => return Some("unprintable action token".into()),
        TokenShape::Valid => {}
    }
    match &c.outcome {
        Outcome::Rec {
            score,
            kind,
            action_type,
            user,
            ..
        } => {
            if *kind == RecommendationType::Deny {
                return Some("DENY recommendation".into());
            }
            if *score >= 80.0 {
                return Some(format!("high score {score}"));
            }
            if !route.accepted_action_types().contains(action_type) {
                return Some(format!("action type {action_type} not accepted"));
            }
            if let Some((sub, mfa)) = &c.user {
                if user.as_deref() != Some(sub.as_str()) {
                    return Some("recommendation bound to another user".into());
                }
                if *kind == RecommendationType::Challenge && !mfa {
                    return Some("CHALLENGE without step-up".into());
                }
            }
            None
        }
        outage if outage.is_outage() => {
            let mode = route.fail_mode.unwrap_or(svc.fail_mode);
            (mode == FailMode::Closed).then(|| format!("outage {outage:?} under fail_mode closed"))
        }
        rejection => Some(format!("rejection {rejection:?}")),
    }
}

fn check_request(c: &Case, method: &str, path: &str, token: &str) -> CheckRequest {
    let target = match &c.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    match c.token {
        TokenShape::None => {}
        TokenShape::Blank => headers.push(("x-action-token".into(), "  ".into())),
        TokenShape::Valid => headers.push(("x-action-token".into(), token.into())),
        TokenShape::Unprintable => {
            headers.push(("x-action-token".into(), format!("{token}\u{7f}")))
        }
    }
    if c.method_override {
        headers.push(("x-http-method-override".into(), "GET".into()));
    }
    let mut raw = Vec::new();
    for (name, value, in_header_map) in &c.protected {
        if *in_header_map {
            raw.push(HeaderValue {
                key: name.clone(),
                value: value.clone(),
                ..Default::default()
            });
        } else if !name.eq_ignore_ascii_case("x-action-token") {
            headers.push((name.clone(), value.clone()));
        }
    }
    let user = c.user.as_ref().map(|(sub, mfa)| {
        let amr = if *mfa {
            json!(["pwd", "mfa"])
        } else {
            json!(["pwd"])
        };
        (sub.as_str(), json!({ "amr": amr }))
    });
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut req = check(method, &target, user, &refs);
    if !raw.is_empty() {
        if let Some(http) = req
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.header_map = Some(HeaderMap { headers: raw });
        }
    }
    req
}

fn keys(headers: &[HeaderValueOption]) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| h.key.to_ascii_lowercase())
        .collect()
}

/// The properties that hold for every answer, whatever the oracle says.
fn check_answer(
    c: &Case,
    token: &str,
    wrong_ok: Option<String>,
    svc: &Service,
    r: &CheckResponse,
) -> Result<bool, TestCaseError> {
    let code = r.status.as_ref().map_or(-1, |s| s.code);
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            prop_assert_eq!(code, 0, "OkResponse with gRPC code {}", code);
            if let Some(why) = wrong_ok {
                return Err(TestCaseError::fail(format!("OK although {why}")));
            }
            let removed: Vec<String> = ok
                .headers_to_remove
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            let set = keys(&ok.headers);
            let strip = svc.config.effective_strip_headers();
            let mut sent: Vec<String> = c
                .protected
                .iter()
                .map(|(n, _, _)| n.to_ascii_lowercase())
                .collect();
            if !matches!(c.token, TokenShape::None) {
                sent.push("x-action-token".into());
            }
            for name in sent {
                let protected = strip.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => *p == name,
                });
                prop_assert!(protected, "{} is not on the strip list {:?}", name, strip);
                prop_assert!(
                    removed.contains(&name) || set.contains(&name),
                    "client-sent {} reaches the upstream (removed {:?}, set {:?})",
                    name,
                    removed,
                    set
                );
            }
            Ok(true)
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            prop_assert_eq!(code, 7, "DeniedResponse with gRPC code {}", code);
            let body: serde_json::Value = serde_json::from_str(&d.body)
                .map_err(|e| TestCaseError::fail(format!("deny body not JSON: {e}")))?;
            let mut fields: Vec<&String> = body
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            fields.sort();
            prop_assert_eq!(fields, vec!["decision_id", "error"], "deny body {}", d.body);
            let error = body["error"].as_str().unwrap_or("");
            prop_assert!(
                [
                    "forbidden",
                    "unauthorized",
                    "too_many_requests",
                    "unavailable"
                ]
                .contains(&error),
                "deny error word {}",
                error
            );
            let allowed = [
                "content-type",
                "x-riskgate-decision-id",
                "cache-control",
                "x-risk-challenge",
                "www-authenticate",
                "retry-after",
            ];
            for h in d.headers.iter().filter_map(|h| h.header.as_ref()) {
                let key = h.key.to_ascii_lowercase();
                prop_assert!(allowed.contains(&key.as_str()), "deny header {}", key);
                prop_assert!(
                    !h.value.contains(token) && !h.value.contains("PROFILE_DEVICE_NEW"),
                    "deny header {} leaks: {}",
                    key,
                    h.value
                );
            }
            for leak in [token, "PROFILE_DEVICE_NEW", "rec-1", "act-"] {
                prop_assert!(
                    !d.body.contains(leak),
                    "deny body leaks {}: {}",
                    leak,
                    d.body
                );
            }
            Ok(false)
        }
        _ => Err(TestCaseError::fail("no ok or denied http_response")),
    }
}

static TOKENS: AtomicU64 = AtomicU64::new(0);

#[test]
fn no_error_path_answers_ok_and_nothing_leaks() {
    let cases: u32 = std::env::var("RISKGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let budget = ms("RISKGATE_PROPTEST_BUDGET_MS", 40);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (closed, open) = rt.block_on(async {
        (
            service(FailMode::Closed, budget),
            service(FailMode::Open, budget),
        )
    });
    let routes = closed.config.routes.clone();
    let oks = AtomicU64::new(0);
    let config = RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    // Deterministic by default, so CI runs the same cases every time (a random draw of 256
    // cases sometimes reached no allow at all, failing the guard below);
    // RISKGATE_PROPTEST_RANDOM=1 explores fresh cases.
    let mut runner = if std::env::var("RISKGATE_PROPTEST_RANDOM").is_ok_and(|v| v == "1") {
        TestRunner::new(config)
    } else {
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    };
    let result = runner.run(&case(routes.len()), |c| {
        let svc = if c.open { &open } else { &closed };
        let n = TOKENS.fetch_add(1, Ordering::SeqCst);
        let token = format!("tok-{n}");
        if let Ok(mut answers) = svc.risk.answers.lock() {
            answers.insert(token.clone(), c.outcome.clone());
        }
        let (path, exact) = request_path(&c, &routes);
        let method = match (&c.method_other, &c.path) {
            (Some(m), _) => m.clone(),
            (None, PathShape::Route { route, .. } | PathShape::NonCanonical { route, .. }) => {
                routes[*route].method.clone()
            }
            (None, PathShape::Unknown(_)) => "GET".to_owned(),
        };
        let req = check_request(&c, &method, &path, &token);
        let wrong_ok = ok_would_be_wrong(&c, exact, svc);
        let mut request = tonic::Request::new(req);
        if let Some(t) = c.grpc_timeout_ms {
            if let Ok(v) = format!("{t}m").parse() {
                request.metadata_mut().insert("grpc-timeout", v);
            }
        }
        let answer = rt.block_on(svc.authz.check(request));
        let response = match answer {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Err(TestCaseError::fail(format!(
                    "Check answered a gRPC error: {status}"
                )))
            }
        };
        if check_answer(&c, &token, wrong_ok, svc, &response)? {
            oks.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("{} of {cases} cases allowed", oks.load(Ordering::SeqCst));
    // The generators must reach the allow path, or the properties above prove little.
    if cases >= 128 {
        assert!(
            oks.load(Ordering::SeqCst) > 0,
            "no case was allowed in {cases}: the generators never reach the allow path"
        );
    }
}
