//! Issue 11, item 3: no caller can trip the risk API breaker for everyone, nor cut a shared fetch.
//!
//! * Through a real Envoy (the shipped `deploy/envoy/envoy.yaml`, riskgate as a process): clients
//!   that hang up while riskgate waits for a slow risk API cost no breaker count; afterwards a
//!   DENY token is still 403 under `fail_mode: open` and `read_only`, and a normal token is 200
//!   (not 503) under `closed`. The abandoned fetches still finish and fill the cache.
//! * Straight to riskgate's gRPC port (in process, tonic client as the caller): a Check whose
//!   `grpc-timeout` leaves ~1 ms beyond the reserve gets 503 whatever the fail mode (never 200
//!   under `open`), five of them leave the breaker closed, and the shared fetch still completes
//!   (a later Check is a cache hit: one API call in all).
//! * Single flight holds when the API is slower than the budget: 5 Checks → 1 API call.
//!
//! Every timing is in milliseconds and can be overridden (defaults in brackets):
//! `RISKGATE_TEST_HANGUP_API_DELAY_MS` (150, the simulator's delay in the hang-up and deadline
//! tests; below the budget, so the fetch itself succeeds), `RISKGATE_TEST_HANGUP_REACH_MS` (3000,
//! the longest a client waits for its Check to reach the API before hanging up; it hangs up
//! as soon as the simulator sees the call), `RISKGATE_TEST_HANGUP_BUDGET_MS` (600,
//! riskgate's `risk.budget` there; below Envoy's 1 s ext_authz timeout),
//! `RISKGATE_TEST_HANGUP_RESERVE_MS` (250, `risk.deadline_reserve` for the short-deadline Checks,
//! which are sent with `grpc-timeout` = reserve + 1 ms), `RISKGATE_TEST_SLOW_API_DELAY_MS` (600)
//! and `RISKGATE_TEST_SLOW_API_BUDGET_MS` (200, the single-flight test: the API slower than the
//! budget), `RISKGATE_TEST_SLOW_API_STAGGER_MS` (20, between two of its Checks), plus the
//! harness's `RISKGATE_TEST_READY_TIMEOUT_MS` (how long to wait for fetches to finish).
//!
//! The Envoy test needs Envoy from `scripts/python-env.sh`; without it, it prints a skip line
//! (and fails instead under `RISKGATE_REQUIRE_ENVOY=1`). The gRPC tests need no Envoy.
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod common;
mod support;

use std::time::Duration;

use common::{check, scripted};
use reqwest::Method;
use risk_sim::{ScriptedAction, SimConfig, SimHandle};
use riskgate::config::FailMode;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_yaml_ng::Value as Yaml;
use support::envoy::{self, Envoy, Ports};
use support::jwt;
use support::procs::TestDir;
use support::riskgate::Riskgate;
use support::upstream::Upstream;
use support::wait::{self, env_ms, Probe};

const BREAKER_STATE: &str = "riskgate_risk_breaker_state ";
const API_OK: &str = "riskgate_risk_api_requests_total{result=\"ok\"} ";
const API_TIMEOUT: &str = "riskgate_risk_api_requests_total{result=\"timeout\"} ";

fn api_delay() -> Duration {
    env_ms("RISKGATE_TEST_HANGUP_API_DELAY_MS", 150)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("a test timing fits in u64 ms")
}

/// A recommendation for `user` on `action_type`, answered after `delay`.
fn slow(score: f64, kind: &str, action_type: &str, delay: Duration) -> ScriptedAction {
    ScriptedAction {
        delay_ms: ms(delay),
        ..scripted(score, kind, action_type, Some("u1"))
    }
}

/// Recommendation calls the simulator received for `token`.
fn calls(sim: &SimHandle, token: &str) -> u64 {
    sim.stats().per_token.get(token).copied().unwrap_or(0)
}

/// Waits until the simulator has received `n` recommendation calls in all.
async fn wait_for_api_calls(sim: &SimHandle, n: u64) {
    wait::until(
        &format!("{n} risk API calls"),
        wait::ready_timeout(),
        || async move {
            let got = sim.stats().recommendation_requests;
            if got >= n {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{got} calls"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Polls `/metrics` (via `scrape`) until `sample` reaches `n`, or the ready timeout passes;
/// returns the last scrape either way, so the caller's assertions say what was wrong.
async fn scrape_when<F, Fut>(scrape: F, sample: &str, n: f64) -> String
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let deadline = tokio::time::Instant::now() + wait::ready_timeout();
    loop {
        let text = scrape().await;
        if common::metric(&text, sample) >= n || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(wait::poll_interval()).await;
    }
}

// ---- through a real Envoy ----

/// Envoy, riskgate (a process), the simulator and a recording upstream. Drop order: Envoy,
/// riskgate, upstream, simulator, dir.
struct Stack {
    envoy: Envoy,
    riskgate: Riskgate,
    _upstream: Upstream,
    sim: SimHandle,
    _dir: TestDir,
}

impl Stack {
    async fn start(test: &str, tweak: impl FnOnce(&mut Yaml)) -> Option<Stack> {
        let bin = envoy::binary()?;
        let dir = TestDir::new(test);
        let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the risk API simulator");
        let upstream = Upstream::start().await;
        let riskgate = Riskgate::start(&dir, &sim.base_url(), tweak).await;
        let envoy = Envoy::start(&dir, &bin, Ports::new(riskgate.grpc_port, upstream.port())).await;
        Some(Stack {
            envoy,
            riskgate,
            _upstream: upstream,
            sim,
            _dir: dir,
        })
    }

    /// `method path` through Envoy as u1 with action token `token`; the answer's status.
    async fn status(&self, method: Method, path: &str, token: &str) -> u16 {
        let mut req = support::http::client()
            .request(method.clone(), self.envoy.url(path))
            .bearer_auth(jwt::valid("u1"))
            .header("x-action-token", token);
        if method == Method::POST {
            req = req.header("content-type", "application/json").body("{}");
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} through Envoy: {e}"))
            .status()
            .as_u16()
    }

    /// riskgate's `/metrics` text.
    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.riskgate.admin_port);
        support::http::client()
            .get(url)
            .send()
            .await
            .expect("GET riskgate /metrics")
            .text()
            .await
            .expect("riskgate /metrics body")
    }
}

/// Sets `fail_mode` on the shipped route whose action is `action`.
fn route_fail_mode(config: &mut Yaml, action: &str, mode: &str) {
    let route = config["routes"]
        .as_sequence_mut()
        .expect("routes is a list")
        .iter_mut()
        .find(|r| r["action"].as_str() == Some(action))
        .unwrap_or_else(|| panic!("a shipped route for action {action}"));
    route["fail_mode"] = Yaml::from(mode);
}

/// The reproduction of issue 11 item 3 (there with `curl -m 0.03`): ten clients hang up while
/// riskgate waits for a slow API, each on a fresh token. Before the fix each cancelled Check
/// counted as an API failure, the breaker opened, and then a DENY token got 200 under `open`,
/// band medium (200 on a read) under `read_only`, and everyone 503 under `closed`.
#[tokio::test]
async fn clients_hanging_up_mid_fetch_do_not_open_the_breaker() {
    const HANGUPS: usize = 10;
    let delay = api_delay();
    let reach_max = env_ms("RISKGATE_TEST_HANGUP_REACH_MS", 3000);
    let budget = env_ms("RISKGATE_TEST_HANGUP_BUDGET_MS", 600);
    assert!(
        delay < budget,
        "the fetch must fit the budget: API delay {delay:?} < budget {budget:?}"
    );
    // one riskgate, three fail modes: withdraw fails open, balance read-only (shipped),
    // transfer closed
    let Some(s) = Stack::start("hangups_through_envoy", |v| {
        v["risk"]["budget"] = Yaml::from(format!("{}ms", ms(budget)));
        route_fail_mode(v, "withdraw", "open");
        route_fail_mode(v, "transfer", "closed");
        let balance = v["routes"]
            .as_sequence()
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r["action"].as_str() == Some("view_balance"))
            })
            .expect("the shipped balance route");
        assert_eq!(
            balance["fail_mode"].as_str(),
            Some("read_only"),
            "shipped balance route"
        );
    })
    .await
    else {
        return;
    };
    let tokens: Vec<String> = (0..HANGUPS).map(|i| format!("hangup-{i}")).collect();
    for t in &tokens {
        s.sim.script(t, slow(10.0, "ALLOW", "withdraw", delay));
    }
    s.sim
        .script("deny-w", scripted(5.0, "DENY", "withdraw", Some("u1")));
    s.sim
        .script("deny-r", scripted(5.0, "DENY", "login", Some("u1")));
    s.sim
        .script("ok-t", scripted(10.0, "ALLOW", "transaction", Some("u1")));

    s.sim
        .script("warm-up", scripted(10.0, "ALLOW", "withdraw", Some("u1")));
    // connections Envoy → riskgate → API and riskgate's OAuth token, so that a Check reaches
    // the API within the hang-up time
    assert_eq!(
        s.status(Method::POST, "/accounts/a1/withdraw", "warm-up")
            .await,
        200,
        "warm-up"
    );

    // One after another, each client hangs up mid-fetch: as soon as the simulator has seen
    // its API call (a fixed client timeout flaked on a loaded machine: the request had not
    // always reached the API, or even Envoy, when the client gave up). `reach_max` is the
    // longest a client waits for that.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build the client");
    // answers that came back before the client hung up (before the fix: fail-open 200s
    // once the hang-ups had opened the breaker)
    let mut answered = Vec::new();
    for t in &tokens {
        let request = client
            .post(s.envoy.url("/accounts/a1/withdraw"))
            .bearer_auth(jwt::valid("u1"))
            .header("x-action-token", t)
            .header("content-type", "application/json")
            .body("{}")
            .send();
        let mut request = Box::pin(request);
        let seen = async {
            while s.sim.stats().per_token.get(t).copied().unwrap_or(0) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let wait = tokio::time::timeout(reach_max, seen);
        tokio::select! {
            result = &mut request => match result {
                Ok(resp) => answered.push((t.clone(), resp.status().as_u16())),
                Err(e) => panic!("{t}: {e}"),
            },
            reached = wait => {
                assert!(reached.is_ok(), "{t}: the Check never reached the API");
                // dropping the in-flight request closes its connection: the hang-up
                drop(request);
            }
        }
    }
    let text = s.metrics().await;
    assert_eq!(
        common::metric(&text, BREAKER_STATE),
        0.0,
        "breaker closed (0) after {HANGUPS} hang-ups (answered before the hang-up: \
         {answered:?}):\n{text}"
    );

    assert_eq!(
        s.status(Method::POST, "/accounts/a1/withdraw", "deny-w")
            .await,
        403,
        "fail_mode open: a DENY token is still refused"
    );
    assert_eq!(
        s.status(Method::GET, "/accounts/a1/balance", "deny-r")
            .await,
        403,
        "fail_mode read_only: a DENY token is still refused"
    );
    assert_eq!(
        s.status(Method::POST, "/accounts/a1/transfer", "ok-t")
            .await,
        200,
        "fail_mode closed: a normal token is served, not 503"
    );

    assert!(
        answered.is_empty(),
        "every client must hang up before riskgate answers (raise \
         RISKGATE_TEST_HANGUP_API_DELAY_MS?): {answered:?}"
    );
    // every Check reached the API before its client hung up
    wait_for_api_calls(&s.sim, HANGUPS as u64 + 1).await;
    assert!(
        s.envoy
            .stat("http.ingress_http.downstream_cx_destroy_remote_active_rq")
            .await
            >= HANGUPS as u64,
        "Envoy saw the clients hang up with their requests active"
    );
    // the abandoned fetches ran on and succeeded (the breaker heard a success from each)
    scrape_when(|| s.metrics(), API_OK, (1 + HANGUPS + 3) as f64).await;
    // one API call per hung-up token, each completed: the cache answers the retry
    let text = s.metrics().await;
    assert_eq!(
        common::metric(&text, API_OK),
        (1 + HANGUPS + 3) as f64,
        "{text}"
    );
    assert_eq!(
        common::metric(&text, BREAKER_STATE),
        0.0,
        "breaker closed:\n{text}"
    );
    assert_eq!(
        s.status(Method::POST, "/accounts/a1/withdraw", &tokens[0])
            .await,
        200,
        "the client retries with the same token"
    );
    for t in &tokens {
        assert_eq!(calls(&s.sim, t), 1, "API calls for {t}");
    }
    assert!(
        !s.riskgate.output().contains("FAILING OPEN"),
        "riskgate never failed open"
    );
}

// ---- straight to the gRPC port (in process) ----

/// The HTTP status of a Check answer.
fn status(answer: &riskgate::pb::envoy::service::auth::v3::CheckResponse) -> u16 {
    match &answer.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(0, |s| s.code as u16),
        _ => panic!("a Check answer without an OK or denied response: {answer:?}"),
    }
}

/// Sends `req` to riskgate's gRPC port with `grpc-timeout: timeout` when given.
async fn ask(rg: &common::Running, req: CheckRequest, timeout: Option<Duration>) -> u16 {
    let mut request = tonic::Request::new(req);
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    match rg.client().await.check(request).await {
        Ok(r) => status(r.get_ref()),
        Err(e) => panic!("Check returned a gRPC error instead of an answer: {e}"),
    }
}

async fn metrics(rg: &common::Running) -> String {
    common::http_get(rg.admin, "/metrics").await.1
}

fn withdraw(token: &str) -> CheckRequest {
    check(
        "POST",
        "/accounts/a1/withdraw",
        Some(("u1", serde_json::json!({}))),
        &[("x-action-token", token)],
    )
}

/// A Check whose `grpc-timeout` leaves only ~1 ms beyond the reserve cannot wait for the API:
/// 503 whatever the fail mode — never 200 under `open`, which a 1 ms "timeout" used to become.
/// Five of them leave the breaker closed, and the fetch each started runs with the full budget,
/// so the token's next Check is a cache hit: one API call in all.
#[tokio::test]
async fn a_deadline_just_above_the_reserve_gets_503_and_spends_no_breaker_count() {
    const CHECKS: usize = 5;
    let delay = api_delay();
    let reserve = env_ms("RISKGATE_TEST_HANGUP_RESERVE_MS", 250);
    let budget = env_ms("RISKGATE_TEST_HANGUP_BUDGET_MS", 600);
    assert!(delay < budget, "the fetch must fit the budget");
    for mode in [FailMode::Open, FailMode::ReadOnly, FailMode::Closed] {
        let tokens: Vec<String> = (0..CHECKS).map(|i| format!("short-{i}")).collect();
        let sim = SimConfig {
            script: tokens
                .iter()
                .map(|t| (t.clone(), slow(10.0, "ALLOW", "withdraw", delay)))
                .collect(),
            ..SimConfig::default()
        };
        let rg = common::start(sim, |c| {
            if let Some(r) = c.risk.as_mut() {
                r.fail_mode = mode;
                r.budget = budget;
                r.deadline_reserve = reserve;
            }
        })
        .await;
        for t in &tokens {
            assert_eq!(
                ask(&rg, withdraw(t), Some(reserve + Duration::from_millis(1))).await,
                503,
                "{mode:?}: a Check that cannot wait for the API"
            );
        }
        let text = metrics(&rg).await;
        assert_eq!(
            common::metric(&text, BREAKER_STATE),
            0.0,
            "{mode:?}: breaker closed after {CHECKS} short-deadline Checks:\n{text}"
        );
        // the fetches finish with the full budget and fill the cache
        let text = scrape_when(|| metrics(&rg), API_OK, CHECKS as f64).await;
        assert_eq!(
            common::metric(&text, API_OK),
            CHECKS as f64,
            "{mode:?}: {text}"
        );
        assert_eq!(
            ask(&rg, withdraw(&tokens[0]), None).await,
            200,
            "{mode:?}: the same token with a normal deadline"
        );
        assert_eq!(
            calls(&rg.sim, &tokens[0]),
            1,
            "{mode:?}: the later Check is a cache hit"
        );
        assert_eq!(
            rg.sim.stats().recommendation_requests,
            CHECKS as u64,
            "{mode:?}: one API call per token"
        );
        rg.stop().await;
    }
}

/// Checks for one token arriving while the API, slower than the budget, is being asked share
/// that one call (the fetch is not restarted when the first Check's wait ends), and all get the
/// outage answer of the fail mode.
#[tokio::test]
async fn single_flight_holds_when_the_api_is_slower_than_the_budget() {
    const CHECKS: usize = 5;
    let delay = env_ms("RISKGATE_TEST_SLOW_API_DELAY_MS", 600);
    let budget = env_ms("RISKGATE_TEST_SLOW_API_BUDGET_MS", 200);
    let stagger = env_ms("RISKGATE_TEST_SLOW_API_STAGGER_MS", 20);
    assert!(
        budget < delay && stagger * CHECKS as u32 <= budget,
        "the API must be slower than the budget, and every Check must start within it"
    );
    let sim = SimConfig {
        script: [("slow".to_owned(), slow(10.0, "ALLOW", "withdraw", delay))].into(),
        ..SimConfig::default()
    };
    let rg = common::start(sim, |c| {
        if let Some(r) = c.risk.as_mut() {
            r.fail_mode = FailMode::Closed;
            r.budget = budget;
        }
    })
    .await;
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..CHECKS {
        let client = rg.client().await;
        checks.spawn(async move {
            let mut client = client;
            client
                .check(withdraw("slow"))
                .await
                .map(|r| status(r.get_ref()))
        });
        tokio::time::sleep(stagger).await;
    }
    for answer in checks.join_all().await {
        match answer {
            Ok(code) => assert_eq!(code, 503, "the API timed out: fail closed"),
            Err(e) => panic!("Check returned a gRPC error instead of an answer: {e}"),
        }
    }
    assert_eq!(calls(&rg.sim, "slow"), 1, "{CHECKS} Checks, one API call");
    let text = metrics(&rg).await;
    assert_eq!(common::metric(&text, API_TIMEOUT), 1.0, "{text}");
    rg.stop().await;
}
