//! The real process (issue 6): `riskgate serve` as the built binary, driven by signals.
//! SIGTERM drains (not ready, gRPC health NOT_SERVING, in-flight Checks finish) and exits
//! within `shutdown.drain_ms + grace_ms`; SIGHUP reloads; an invalid policy set at start
//! exits non-zero with `file:line` and never listens.
//!
//! Timings (ms, environment): `RISKGATE_TEST_DRAIN_MS` (300), `RISKGATE_TEST_GRACE_MS`
//! (3000), `RISKGATE_TEST_SLOW_MS` (the slow risk answer, 1200), `RISKGATE_TEST_START_MS`
//! (how long start-up may take, 5000), `RISKGATE_TEST_EXIT_SLACK_MS` (exit margin, 1000).

mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use risk_sim::{ScriptedAction, SimConfig, SimHandle};
use riskgate::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A `riskgate serve` child process with its stderr (JSON logs) collected.
struct Serve {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Serve {
    fn spawn(config: &Path) -> Serve {
        let mut child = match Command::new(env!("CARGO_BIN_EXE_riskgate"))
            .args(["serve", "--log-format", "json", "--audit", "false", "-c"])
            .arg(config)
            .env("RISKGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot start riskgate: {e}"),
        };
        let (tx, lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|stderr| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if let Ok(mut l) = log.lock() {
                        l.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            })
        });
        Serve {
            child,
            lines,
            log,
            reader,
        }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Waits for the "riskgate listening" line: (gRPC, admin) addresses.
    async fn listening(&mut self) -> (SocketAddr, SocketAddr) {
        let found = tokio::time::timeout(ms("RISKGATE_TEST_START_MS", 5_000), async {
            while let Some(line) = self.lines.recv().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["message"] == "riskgate listening" {
                    let addr = |k: &str| v[k].as_str().and_then(|s| s.parse().ok());
                    return addr("grpc").zip(addr("admin"));
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(addrs)) => addrs,
            _ => panic!("riskgate never listened:\n{}", self.log()),
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.id().and_then(|p| i32::try_from(p).ok());
        match pid.map(|p| kill(Pid::from_raw(p), signal)) {
            Some(Ok(())) => {}
            other => panic!("cannot send {signal}: {other:?}"),
        }
    }

    /// Waits for the exit, then for the last log lines.
    async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => {
                if let Some(reader) = self.reader.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
                }
                status
            }
            Ok(Err(e)) => panic!("wait: {e}"),
            Err(_) => panic!("riskgate did not exit within {within:?}:\n{}", self.log()),
        }
    }
}

async fn sim(script: &[(&str, ScriptedAction)]) -> SimHandle {
    let config = SimConfig {
        script: script
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..SimConfig::default()
    };
    match risk_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    }
}

async fn client(grpc: SocketAddr) -> AuthorizationClient<tonic::transport::Channel> {
    match AuthorizationClient::connect(format!("http://{grpc}")).await {
        Ok(c) => c,
        Err(e) => panic!("connect: {e}"),
    }
}

/// HTTP status answered, or `None` for a failed Check.
async fn status_of(grpc: SocketAddr, req: CheckRequest) -> Option<u16> {
    let mut c = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .ok()?;
    match c.check(req).await.ok()?.into_inner().http_response? {
        HttpResponse::OkResponse(_) => Some(200),
        HttpResponse::DeniedResponse(d) => d.status.map(|s| s.code as u16),
        HttpResponse::ErrorResponse(_) => None,
    }
}

async fn health(grpc: SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut c = HealthClient::new(channel);
    let resp = c
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(resp.into_inner().status).ok()
}

fn balance() -> CheckRequest {
    check("GET", "/accounts/a1/balance", Some(("u1", json!({}))), &[])
}

fn withdraw(token: &str) -> CheckRequest {
    check(
        "POST",
        "/accounts/a1/withdraw",
        Some(("u1", json!({}))),
        &[("x-action-token", token)],
    )
}

fn slow_action(delay: Duration) -> ScriptedAction {
    ScriptedAction {
        delay_ms: delay.as_millis() as u64,
        ..scripted(12.5, "ALLOW", "withdraw", Some("u1"))
    }
}

const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

#[tokio::test]
async fn sigterm_drains_a_slow_in_flight_check_then_exits() {
    let (drain, grace) = (
        ms("RISKGATE_TEST_DRAIN_MS", 300),
        ms("RISKGATE_TEST_GRACE_MS", 3_000),
    );
    let slow = ms("RISKGATE_TEST_SLOW_MS", 1_200);
    let sim = sim(&[("slow", slow_action(slow))]).await;
    let ws = Workspace::new(
        &sim.base_url(),
        &format!(
            "shutdown: {{ drain_ms: {}, grace_ms: {} }}\nreload: {{ poll_ms: 0 }}",
            drain.as_millis(),
            grace.as_millis()
        ),
    );
    let mut rg = Serve::spawn(&ws.config);
    let (grpc, admin) = rg.listening().await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            http_get(admin, "/readyz").await.0 == 200
        })
        .await,
        "never ready:\n{}",
        rg.log()
    );
    assert_eq!(health(grpc, "").await, Some(ServingStatus::Serving));
    assert_eq!(
        health(grpc, AUTHZ_SERVICE).await,
        Some(ServingStatus::Serving)
    );

    // A Check waiting on the slow risk answer.
    let mut c = client(grpc).await;
    let in_flight = tokio::spawn(async move { c.check(withdraw("slow")).await });
    assert!(
        eventually(Duration::from_secs(2), || async {
            sim.stats().per_token.get("slow").copied() == Some(1)
        })
        .await,
        "the slow Check never reached the risk API"
    );

    let sent = Instant::now();
    rg.signal(Signal::SIGTERM);
    // Draining: not ready, NOT_SERVING, but still answering new Checks.
    assert!(
        eventually(drain, || async {
            http_get(admin, "/readyz").await.0 == 503
        })
        .await,
        "readyz still ready while draining:\n{}",
        rg.log()
    );
    assert_eq!(health(grpc, "").await, Some(ServingStatus::NotServing));
    assert_eq!(
        health(grpc, AUTHZ_SERVICE).await,
        Some(ServingStatus::NotServing)
    );
    if sent.elapsed() + Duration::from_millis(100) < drain {
        assert_eq!(
            status_of(grpc, balance()).await,
            Some(200),
            "answers while draining"
        );
    }

    // After the drain: no new connections, but the in-flight Check completes normally.
    tokio::time::sleep(drain.saturating_sub(sent.elapsed()) + Duration::from_millis(100)).await;
    if sent.elapsed() < slow {
        assert!(
            tokio::net::TcpStream::connect(grpc).await.is_err(),
            "still accepting connections after the drain"
        );
    }
    let answer = match in_flight.await {
        Ok(Ok(r)) => r.into_inner(),
        other => panic!("the in-flight Check failed: {other:?}\n{}", rg.log()),
    };
    assert!(
        matches!(answer.http_response, Some(HttpResponse::OkResponse(_))),
        "{answer:?}"
    );

    let bound = drain + grace + ms("RISKGATE_TEST_EXIT_SLACK_MS", 1_000);
    let status = rg.exit_within(bound.saturating_sub(sent.elapsed())).await;
    assert!(status.success(), "exit status {status}:\n{}", rg.log());
    assert!(
        sent.elapsed() < drain + grace,
        "exited only after {:?}",
        sent.elapsed()
    );
    assert!(rg.log().contains("riskgate stopped"), "{}", rg.log());
}

#[tokio::test]
async fn sigterm_exits_within_the_bound_when_a_check_outlives_the_grace() {
    let (drain, grace) = (Duration::from_millis(100), Duration::from_millis(300));
    // Longer than drain + grace, shorter than the 3000 ms risk budget.
    let sim = sim(&[("stuck", slow_action(Duration::from_millis(2_500)))]).await;
    let ws = Workspace::new(
        &sim.base_url(),
        &format!(
            "shutdown: {{ drain_ms: {}, grace_ms: {} }}\nreload: {{ poll_ms: 0 }}",
            drain.as_millis(),
            grace.as_millis()
        ),
    );
    let mut rg = Serve::spawn(&ws.config);
    let (grpc, _) = rg.listening().await;
    let mut c = client(grpc).await;
    let in_flight = tokio::spawn(async move { c.check(withdraw("stuck")).await });
    assert!(
        eventually(Duration::from_secs(2), || async {
            sim.stats().per_token.get("stuck").copied() == Some(1)
        })
        .await
    );
    let sent = Instant::now();
    rg.signal(Signal::SIGTERM);
    let status = rg
        .exit_within(drain + grace + ms("RISKGATE_TEST_EXIT_SLACK_MS", 1_000))
        .await;
    assert!(status.success(), "exit status {status}:\n{}", rg.log());
    assert!(
        sent.elapsed() >= drain + grace,
        "exited before the grace period"
    );
    assert!(
        matches!(in_flight.await, Ok(Err(_))),
        "the cut-off Check fails (Envoy answers its own 503)"
    );
    assert!(rg.log().contains("grace period over"), "{}", rg.log());
}

#[tokio::test]
async fn sighup_reloads_the_policies() {
    let sim = sim(&[]).await;
    let mut ws = Workspace::new(&sim.base_url(), "reload: { poll_ms: 0 }");
    let mut rg = Serve::spawn(&ws.config);
    let (grpc, _) = rg.listening().await;
    assert_eq!(status_of(grpc, balance()).await, Some(200));

    let mut files = example_policies();
    files.insert(
        "forbid-balance.cedar".into(),
        lifecycle_data("forbid-balance.cedar"),
    );
    assert!(ws.policies.swap(&files).is_ok());
    rg.signal(Signal::SIGHUP);
    assert!(
        eventually(ms("RISKGATE_TEST_RELOAD_WAIT_MS", 3_000), || async {
            status_of(grpc, balance()).await == Some(403)
        })
        .await,
        "SIGHUP did not reload:\n{}",
        rg.log()
    );
    rg.signal(Signal::SIGTERM);
    let status = rg.exit_within(Duration::from_secs(3)).await;
    assert!(status.success());
}

#[tokio::test]
async fn an_invalid_policy_set_at_start_exits_non_zero_and_never_listens() {
    let mut ws = Workspace::new("http://127.0.0.1:9", "");
    let mut files = example_policies();
    files.insert("broken.cedar".into(), lifecycle_data("broken.cedar"));
    assert!(ws.policies.swap(&files).is_ok());
    let mut rg = Serve::spawn(&ws.config);
    let status = rg.exit_within(ms("RISKGATE_TEST_START_MS", 5_000)).await;
    let log = rg.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("broken.cedar:3:"), "{log}");
    assert!(!log.contains("riskgate listening"), "{log}");
}
