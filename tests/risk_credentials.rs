//! Readiness tells the truth about the risk API client secret (issue 17): with risk
//! configured, a replica whose secret file is missing is not ready until the first
//! successful read; losing the file later (a Kubernetes Secret swap briefly removes it)
//! sets `riskgate_risk_credentials_ok` to 0 but keeps the replica ready on the last good
//! secret.
//!
//! Timings (ms, environment): `RISKGATE_TEST_SECRET_RETRY_MS` (token refresh retry and
//! minimum interval, 20), `RISKGATE_TEST_READY_MS` (how long a change may take to show, 5000).

mod common;

use common::*;
use risk_sim::SimConfig;
use std::net::SocketAddr;

async fn scrape(admin: SocketAddr) -> String {
    http_get(admin, "/metrics").await.1
}

async fn credentials_ok(admin: SocketAddr) -> f64 {
    metric(&scrape(admin).await, "riskgate_risk_credentials_ok")
}

#[tokio::test]
async fn a_missing_secret_keeps_the_replica_not_ready_until_it_is_read() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let secret = dir.path().join("client-secret");
    let retry = ms("RISKGATE_TEST_SECRET_RETRY_MS", 20);
    let within = ms("RISKGATE_TEST_READY_MS", 5_000);
    let sim = SimConfig {
        token_lifetime_ms: 1_000,
        ..SimConfig::default()
    };
    let rg = start(sim, |c| {
        if let Some(risk) = c.risk.as_mut() {
            risk.client_secret_file = Some(secret.clone());
            risk.token_refresh.retry = retry;
            risk.token_refresh.min_interval = retry;
            risk.token_refresh.at_percent = 10;
        }
    })
    .await;

    assert_eq!(http_get(rg.admin, "/readyz").await.0, 503);
    let text = scrape(rg.admin).await;
    assert!(
        text.contains("riskgate_risk_credentials_ok 0"),
        "the gauge exists at 0 before the first read:\n{text}"
    );

    if let Err(e) = std::fs::write(&secret, "sim-secret\n") {
        panic!("write secret: {e}");
    }
    assert!(
        eventually(within, || async {
            http_get(rg.admin, "/readyz").await.0 == 200
        })
        .await,
        "not ready after the secret appeared"
    );
    assert_eq!(credentials_ok(rg.admin).await, 1.0);

    // A Secret swap removes the file for a moment: the gauge says so, readiness holds,
    // and Checks still get tokens from the last good secret.
    if let Err(e) = std::fs::remove_file(&secret) {
        panic!("remove secret: {e}");
    }
    assert!(
        eventually(within, || async { credentials_ok(rg.admin).await == 0.0 }).await,
        "the gauge never showed the lost secret"
    );
    assert_eq!(http_get(rg.admin, "/readyz").await.0, 200);
    rg.sim
        .script("ok", scripted(10.0, "ALLOW", "login", Some("u1")));
    let allowed = rg
        .status(check(
            "GET",
            "/accounts/a1/balance",
            Some(("u1", serde_json::json!({}))),
            &[("x-action-token", "ok")],
        ))
        .await;
    assert_eq!(allowed, 200, "a Check needing a token still passes");

    if let Err(e) = std::fs::write(&secret, "sim-secret\n") {
        panic!("write secret: {e}");
    }
    assert!(
        eventually(within, || async { credentials_ok(rg.admin).await == 1.0 }).await,
        "the gauge never recovered"
    );
    rg.stop().await;
}
