//! Several riskgate replicas sharing one Redis state store (issue 12, item 6): single use must
//! hold across replicas, and a store outage must fail writes closed without ever letting a used
//! token through again.
//!
//! Each test starts one standalone `redis-server` (append-only file, fsync always, so a restart
//! keeps the use records), the in-process risk API simulator, and real `riskgate` processes with
//! `state: {store: redis, on_failure: closed}`; the Envoy tests put one Envoy in front with the
//! ext_authz cluster load-balanced `ROUND_ROBIN` over every replica (generated from the shipped
//! `deploy/envoy/envoy.yaml`).
//!
//! Needs Envoy (`scripts/python-env.sh`) and Redis (`scripts/redis-env.sh`); without them each
//! test prints a skip line, and fails instead under `RISKGATE_REQUIRE_ENVOY=1`.
//!
//! Timings (ms, all optional): `RISKGATE_TEST_STATE_TIMEOUT_MS` (1000, riskgate's store
//! operation timeout), `RISKGATE_TEST_STATE_BREAKER_OPEN_MS` (200), `RISKGATE_TEST_OUTAGE_LOAD_MS`
//! (600, each load phase: before the kill, across it, during the outage, after the restart),
//! `RISKGATE_TEST_OUTAGE_KILL_AFTER_MS` (200, when in its phase the store is stopped).
//! Sizes: `RISKGATE_TEST_REPLICAS` (3), `RISKGATE_TEST_RACE_TRIALS` (50).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod common;
mod support;

use reqwest::Method;
use risk_sim::{SimConfig, SimHandle};
use riskgate::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::json;
use std::time::{Duration, Instant};
use support::envoy::{self, Envoy, Ports};
use support::http::client;
use support::jwt;
use support::procs::TestDir;
use support::redis::{self, Redis};
use support::riskgate::Riskgate;
use support::upstream::Upstream;
use support::wait::{self, env_ms};

fn env_count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Replicas, store, simulator, and (optionally) Envoy. Drop order: Envoy, replicas, upstream,
/// simulator, Redis, dirs.
struct Replicas {
    envoy: Option<Envoy>,
    rgs: Vec<Riskgate>,
    _upstream: Upstream,
    sim: SimHandle,
    /// Behind a lock so a test can stop it while a load borrows the rest.
    redis: tokio::sync::Mutex<Redis>,
    dir: TestDir,
    _rg_dirs: Vec<TestDir>,
}

/// The `state:` section every replica runs with.
fn state_section(url: &str, share: bool) -> serde_yaml_ng::Value {
    let timeout = env_ms("RISKGATE_TEST_STATE_TIMEOUT_MS", 1000).as_millis();
    let open = env_ms("RISKGATE_TEST_STATE_BREAKER_OPEN_MS", 200).as_millis();
    serde_yaml_ng::to_value(json!({
        "store": "redis",
        "on_failure": "closed",
        "timeout": format!("{timeout}ms"),
        "breaker": { "failure_threshold": 1, "open": format!("{open}ms") },
        "redis": { "url": url },
        "share_recommendations": share,
    }))
    .expect("state section as YAML")
}

/// The shipped Envoy config with the `riskgate` cluster spread over `grpc_ports`, round robin.
fn render_round_robin(template: &str, ports: &Ports, grpc_ports: &[u16]) -> String {
    let text = envoy::render(template, ports);
    let one = |p: u16| format!("socket_address: {{ address: 127.0.0.1, port_value: {p} }}");
    let endpoints = grpc_ports
        .iter()
        .map(|&p| one(p))
        .collect::<Vec<_>>()
        .join("\n        - endpoint:\n            address:\n              ");
    let text = envoy::replace_exactly_once(envoy::CONFIG, &text, &one(ports.riskgate), &endpoints);
    envoy::replace_exactly_once(
        envoy::CONFIG,
        &text,
        "- name: riskgate\n    type: STATIC\n",
        "- name: riskgate\n    type: STATIC\n    lb_policy: ROUND_ROBIN\n",
    )
}

impl Replicas {
    async fn start(test: &str, n: usize, with_envoy: bool) -> Option<Replicas> {
        Replicas::start_sharing(test, n, with_envoy, false).await
    }

    /// [`Replicas::start`], with `state.share_recommendations` set to `share`.
    async fn start_sharing(
        test: &str,
        n: usize,
        with_envoy: bool,
        share: bool,
    ) -> Option<Replicas> {
        let bins = redis::binaries()?;
        let envoy_bin = if with_envoy {
            Some(envoy::binary()?)
        } else {
            None
        };
        let dir = TestDir::new(test);
        // persistence on: every write fsynced to the AOF before it is acknowledged
        let redis = Redis::start(
            &bins,
            &dir,
            "state",
            &["--appendonly", "yes", "--appendfsync", "always"],
        )
        .await;
        let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the risk API simulator");
        let upstream = Upstream::start().await;
        let mut rgs = Vec::new();
        let mut rg_dirs = Vec::new();
        for i in 0..n {
            let rg_dir = TestDir::new(&format!("{test}-rg{i}"));
            let state = state_section(&redis.url(), share);
            rgs.push(
                Riskgate::start(&rg_dir, &sim.base_url(), move |v| {
                    let config = v.as_mapping_mut().expect("config mapping");
                    config.insert("state".into(), state);
                    // every trial is a fresh token from u1 at each replica: the shared
                    // per-source call budget (tests/api_budget.rs) would refuse the later ones
                    let risk = config
                        .get_mut("risk")
                        .and_then(|r| r.as_mapping_mut())
                        .expect("risk mapping");
                    let off: serde_yaml_ng::Value =
                        serde_yaml_ng::from_str("{ calls: 0 }").expect("budget yaml");
                    risk.insert("call_budget".into(), off);
                })
                .await,
            );
            rg_dirs.push(rg_dir);
        }
        let envoy = match envoy_bin {
            Some(bin) => {
                let template = std::fs::read_to_string(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(envoy::CONFIG),
                )
                .expect("read the shipped Envoy config");
                let grpc: Vec<u16> = rgs.iter().map(|r| r.grpc_port).collect();
                let ports = Ports::new(grpc[0], upstream.port());
                Some(
                    Envoy::start_with(&dir, &bin, ports, "envoy-rr.yaml", |p| {
                        render_round_robin(&template, p, &grpc)
                    })
                    .await,
                )
            }
            None => None,
        };
        Some(Replicas {
            envoy,
            rgs,
            _upstream: upstream,
            sim,
            redis: tokio::sync::Mutex::new(redis),
            dir,
            _rg_dirs: rg_dirs,
        })
    }

    fn script(&self, token: &str, action_type: &str) {
        self.sim.script(
            token,
            common::scripted(12.5, "ALLOW", action_type, Some("u1")),
        );
    }

    /// One request through Envoy: (status, retry-after header).
    async fn send(&self, method: Method, path: &str, jwt: &str, token: &str) -> (u16, bool) {
        let envoy = self.envoy.as_ref().expect("this test runs Envoy");
        let mut req = client()
            .request(method.clone(), envoy.url(path))
            .bearer_auth(jwt)
            .header("x-action-token", token);
        if method != Method::GET {
            req = req.header("content-type", "application/json").body("{}");
        }
        let resp = req.send().await.expect("request through Envoy");
        (
            resp.status().as_u16(),
            resp.headers().contains_key("retry-after"),
        )
    }

    async fn write(&self, jwt: &str, token: &str) -> (u16, bool) {
        self.send(Method::POST, "/accounts/a1/withdraw", jwt, token)
            .await
    }

    async fn read(&self, jwt: &str, token: &str) -> u16 {
        self.send(Method::GET, "/accounts/a1/balance", jwt, token)
            .await
            .0
    }

    /// Sum of `riskgate_decisions_total` samples with `reason="<reason>"` on replica `i`.
    async fn decisions(&self, i: usize, reason: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.rgs[i].admin_port);
        let text = client()
            .get(url)
            .send()
            .await
            .expect("GET riskgate /metrics")
            .text()
            .await
            .expect("metrics text");
        let label = format!("reason=\"{reason}\"");
        text.lines()
            .filter(|l| l.starts_with("riskgate_decisions_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn dump(&self) {
        for (i, rg) in self.rgs.iter().enumerate() {
            eprintln!("--- replica {i} ---\n{}", rg.output());
        }
    }
}

#[tokio::test]
async fn single_use_holds_on_every_replica_behind_envoy() {
    let n = env_count("RISKGATE_TEST_REPLICAS", 3);
    let Some(s) = Replicas::start("single_use_holds_on_every_replica", n, true).await else {
        return;
    };
    let u1 = jwt::valid("u1");
    s.script("once", "withdraw");
    assert_eq!(s.write(&u1, "once").await.0, 200, "first use");
    let replays = 3 * n;
    for k in 0..replays {
        let (status, _) = s.write(&u1, "once").await;
        if status != 403 {
            s.dump();
        }
        assert_eq!(status, 403, "replay {k} of a single-use token");
    }
    // round robin spread the replays over every replica, and each refused them as used up
    let mut total = 0.0;
    for i in 0..n {
        let used_up = s.decisions(i, "binding_used_up").await;
        assert!(
            used_up >= 1.0,
            "replica {i} refused no replay as binding_used_up (round robin should reach it)"
        );
        total += used_up;
    }
    assert_eq!(total, replays as f64, "every replay is binding_used_up");
}

#[tokio::test]
async fn concurrent_use_on_two_replicas_lets_exactly_one_through() {
    let trials = env_count("RISKGATE_TEST_RACE_TRIALS", 50);
    let Some(s) = Replicas::start("concurrent_use_on_two_replicas", 2, false).await else {
        return;
    };
    let connect = |port: u16| async move {
        AuthorizationClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect to a replica")
    };
    let a = connect(s.rgs[0].grpc_port).await;
    let b = connect(s.rgs[1].grpc_port).await;
    let ok = |r: Result<tonic::Response<_>, tonic::Status>| -> bool {
        let r: riskgate::pb::envoy::service::auth::v3::CheckResponse =
            r.expect("Check answers").into_inner();
        matches!(r.http_response, Some(HttpResponse::OkResponse(_)))
    };
    let mut bad = Vec::new();
    for t in 0..trials {
        let token = format!("race-{t}");
        s.script(&token, "withdraw");
        let req = common::check(
            "POST",
            "/accounts/a1/withdraw",
            Some(("u1", json!({}))),
            &[("x-action-token", &token)],
        );
        let (mut ca, mut cb) = (a.clone(), b.clone());
        let (ra, rb) = tokio::join!(ca.check(req.clone()), cb.check(req));
        let oks = usize::from(ok(ra)) + usize::from(ok(rb));
        if oks != 1 {
            bad.push((t, oks));
        }
    }
    if !bad.is_empty() {
        s.dump();
    }
    assert!(
        bad.is_empty(),
        "(trial, OK answers) with not exactly one OK: {bad:?}"
    );
    let used_up = s.decisions(0, "binding_used_up").await + s.decisions(1, "binding_used_up").await;
    assert_eq!(
        used_up, trials as f64,
        "each trial's loser is binding_used_up"
    );
}

/// What the load loop saw for one request.
#[derive(Debug, Clone)]
struct Sent {
    phase: &'static str,
    token: String,
    write: bool,
    status: u16,
    retry_after: bool,
}

/// Writes (each fresh token used, then replayed once) and reads through Envoy until `until`.
async fn load(
    s: &Replicas,
    u1: &str,
    phase: &'static str,
    next: &mut usize,
    for_: Duration,
    out: &mut Vec<Sent>,
) {
    let end = Instant::now() + for_;
    while Instant::now() < end {
        let token = format!("load-{next}");
        *next += 1;
        s.script(&token, "withdraw");
        for _ in 0..2 {
            let (status, retry_after) = s.write(u1, &token).await;
            out.push(Sent {
                phase,
                token: token.clone(),
                write: true,
                status,
                retry_after,
            });
        }
        let status = s.read(u1, "reader").await;
        out.push(Sent {
            phase,
            token: "reader".into(),
            write: false,
            status,
            retry_after: false,
        });
    }
}

#[tokio::test]
async fn store_outage_fails_writes_closed_and_recovers_on_restart() {
    let n = env_count("RISKGATE_TEST_REPLICAS", 3);
    let Some(s) = Replicas::start("store_outage_fails_closed", n, true).await else {
        return;
    };
    let phase_len = env_ms("RISKGATE_TEST_OUTAGE_LOAD_MS", 600);
    let u1 = jwt::valid("u1");
    s.script("reader", "login");
    s.script("before", "withdraw");
    assert_eq!(s.write(&u1, "before").await.0, 200, "use before the outage");
    assert_eq!(s.read(&u1, "reader").await, 200, "read before the outage");

    let mut sent = Vec::new();
    let mut next = 0;
    load(&s, &u1, "before", &mut next, phase_len, &mut sent).await;

    // stopped while writes and reads are in flight: each answer is whatever the store gave
    let kill_after = env_ms("RISKGATE_TEST_OUTAGE_KILL_AFTER_MS", 200);
    let mut during = Vec::new();
    tokio::join!(
        load(&s, &u1, "kill", &mut next, phase_len, &mut during),
        async {
            tokio::time::sleep(kill_after).await;
            s.redis.lock().await.kill();
        }
    );
    sent.extend(during);
    load(&s, &u1, "outage", &mut next, phase_len, &mut sent).await;
    for _ in 0..n {
        let (status, retry_after) = s.write(&u1, "before").await;
        assert_eq!(status, 503, "a used token during the outage");
        assert!(retry_after, "503 carries retry-after");
    }

    s.redis.lock().await.restart(&s.dir).await;
    // writes work again without restarting riskgate (after the store breaker's open period),
    // on every replica: round robin must see twice as many 200s in a row as there are replicas
    let in_a_row = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let needed = 2 * s.rgs.len();
    let recovered = wait::until("writes after the restart", wait::ready_timeout(), || {
        let token = format!("probe-{next}");
        next += 1;
        s.script(&token, "withdraw");
        let s = &s;
        let u1 = &u1;
        let in_a_row = in_a_row.clone();
        async move {
            use std::sync::atomic::Ordering;
            match s.write(u1, &token).await.0 {
                200 if in_a_row.fetch_add(1, Ordering::SeqCst) + 1 >= needed => {
                    wait::Probe::Ready(())
                }
                200 => wait::Probe::NotYet("not yet on every replica".into()),
                other => {
                    in_a_row.store(0, Ordering::SeqCst);
                    wait::Probe::NotYet(format!("status {other}"))
                }
            }
        }
    })
    .await;
    if let Err(e) = recovered {
        s.dump();
        panic!("{e}");
    }
    load(&s, &u1, "after", &mut next, phase_len, &mut sent).await;

    // the use made before the kill survived the restart (AOF): refused on every replica
    for _ in 0..n {
        assert_eq!(
            s.write(&u1, "before").await.0,
            403,
            "used before the outage"
        );
    }
    // so did every use acknowledged during the load
    let used: Vec<String> = sent
        .iter()
        .filter(|x| x.write && x.status == 200)
        .map(|x| x.token.clone())
        .collect();
    for token in &used {
        assert_eq!(
            s.write(&u1, token).await.0,
            403,
            "replay of {token} after the restart"
        );
    }

    let count = |phase: &str, write: bool, status: u16| {
        sent.iter()
            .filter(|x| x.phase == phase && x.write == write && x.status == status)
            .count()
    };
    let summary = format!(
        "{:?}",
        sent.iter()
            .map(|x| (x.phase, x.write, x.status))
            .collect::<Vec<_>>()
    );
    // never a second 200 for one token
    let mut tokens: Vec<&String> = used.iter().collect();
    tokens.sort();
    let before_dedup = tokens.len();
    tokens.dedup();
    assert_eq!(
        before_dedup,
        tokens.len(),
        "a token got two 200s: {summary}"
    );
    // reads never depend on the store
    assert!(
        sent.iter().filter(|x| !x.write).all(|x| x.status == 200),
        "a read failed: {summary}"
    );
    // during the outage writes are 503 + retry-after, nothing else
    for x in sent.iter().filter(|x| x.phase == "outage" && x.write) {
        assert!(x.status == 503 && x.retry_after, "outage write {x:?}");
    }
    assert!(
        count("outage", true, 503) > 0,
        "the outage phase sent writes"
    );
    // before and after: first use 200, replay 403
    for phase in ["before", "after"] {
        assert!(
            count(phase, true, 200) > 0,
            "{phase}: some write went through: {summary}"
        );
        assert_eq!(
            count(phase, true, 200),
            count(phase, true, 403),
            "{phase}: each use is 200 then 403: {summary}"
        );
    }
    let unavailable: f64 = {
        let mut t = 0.0;
        for i in 0..n {
            t += s.decisions(i, "state_unavailable").await;
        }
        t
    };
    assert!(unavailable >= 1.0, "state_unavailable is counted");
}

/// Issue 12 item 4: with `state.share_recommendations`, a token assessed on one replica is not
/// fetched again on another. Each of `RISKGATE_TEST_SHARED_TOKENS` tokens (10) is read once per
/// replica through Envoy's round robin; the simulator counts the API calls with and without
/// sharing, and the saving is printed.
#[tokio::test]
async fn a_shared_recommendation_cache_saves_api_calls_across_replicas() {
    let n = env_count("RISKGATE_TEST_REPLICAS", 3);
    let tokens = env_count("RISKGATE_TEST_SHARED_TOKENS", 10);
    // The share is written in the background after the first answer: before the next
    // replica reads, wait until it is visible in Redis (a fixed gap flaked under load).
    let wait_max = env_ms("RISKGATE_TEST_SHARED_WAIT_MS", 5000);
    let mut calls = Vec::new();
    for share in [false, true] {
        let Some(s) = Replicas::start_sharing("shared_recommendations", n, true, share).await
        else {
            return;
        };
        let u1 = jwt::valid("u1");
        for t in 0..tokens {
            let token = format!("shared-{t}");
            s.script(&token, "login");
            let key = riskgate::state::reccache::key_for_token(&token).render("riskgate");
            for hit in 0..n {
                assert_eq!(s.read(&u1, &token).await, 200, "{token} read {hit}");
                if share && hit == 0 {
                    let until = Instant::now() + wait_max;
                    while s.redis.lock().await.cli(&["EXISTS", &key]).trim() != "1" {
                        assert!(
                            Instant::now() < until,
                            "{token}: the share never reached Redis"
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        calls.push(s.sim.stats().recommendation_requests);
    }
    eprintln!(
        "{n} replicas, {tokens} tokens each read once per replica: {} API calls unshared, {} shared",
        calls[0], calls[1]
    );
    assert_eq!(
        calls[0],
        (n * tokens) as u64,
        "without sharing each replica asks"
    );
    assert_eq!(calls[1], tokens as u64, "with sharing one call per token");
}
