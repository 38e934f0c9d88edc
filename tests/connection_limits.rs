//! Connection limits on the gRPC port (issue 14 item 1): at most `listen.max_connections`
//! open — the extra ones are closed while Checks go on over the others and `/readyz`
//! answers —, idle connections and silent ones closed after their timeouts.
//!
//! Timings (ms, environment): `RISKGATE_TEST_IDLE_MS` (`listen.idle_timeout`, 200),
//! `RISKGATE_TEST_HEADER_READ_MS` (`listen.header_read_timeout`, 200),
//! `RISKGATE_TEST_CLOSE_WAIT_MS` (how long a close may take to be seen, 5000).

mod common;

use common::*;
use risk_sim::SimConfig;
use riskgate::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt as _;
use tonic::transport::{Channel, Endpoint};

/// One new HTTP/2 connection (a channel that never reconnects on its own: each
/// `Endpoint::connect` is one TCP connection).
async fn connect(
    addr: SocketAddr,
) -> Result<AuthorizationClient<Channel>, tonic::transport::Error> {
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).unwrap_or_else(|e| panic!("endpoint: {e}"));
    Ok(AuthorizationClient::new(endpoint.connect().await?))
}

/// A Check any riskgate answers without the risk API (no route: 403).
fn any_check() -> riskgate::pb::envoy::service::auth::v3::CheckRequest {
    check("GET", "/no/such/route", None, &[])
}

async fn metrics(r: &Running) -> String {
    http_get(r.admin, "/metrics").await.1
}

#[tokio::test]
async fn extra_connections_are_closed_while_checks_go_on() {
    let r = start(SimConfig::default(), |c| c.listen.max_connections = 3).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut client = match connect(r.grpc).await {
            Ok(c) => c,
            Err(e) => panic!("connection {i}: {e}"),
        };
        assert!(client.check(any_check()).await.is_ok(), "connection {i}");
        held.push(client);
    }
    for i in 0..4 {
        // The TCP handshake may complete (the kernel's backlog), but riskgate closes the
        // connection: no Check is answered on it.
        let answered = match connect(r.grpc).await {
            Ok(mut c) => c.check(any_check()).await.is_ok(),
            Err(_) => false,
        };
        assert!(!answered, "extra connection {i} was served");
    }
    for (i, client) in held.iter_mut().enumerate() {
        assert!(
            client.check(any_check()).await.is_ok(),
            "held connection {i} after the flood"
        );
    }
    assert_eq!(http_get(r.admin, "/readyz").await.0, 200);
    let text = metrics(&r).await;
    assert_eq!(
        metric(&text, "riskgate_grpc_connections_open "),
        3.0,
        "{text}"
    );
    assert!(
        metric(&text, "riskgate_grpc_connections_refused_total ") >= 4.0,
        "{text}"
    );
    // a closed connection frees its slot
    held.pop();
    let freed = eventually(ms("RISKGATE_TEST_CLOSE_WAIT_MS", 5_000), || async {
        match connect(r.grpc).await {
            Ok(mut c) => c.check(any_check()).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(freed, "a slot freed by a closed connection is taken again");
    r.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    let idle = ms("RISKGATE_TEST_IDLE_MS", 200);
    let r = start(SimConfig::default(), |c| c.listen.idle_timeout = idle).await;
    let mut client = match connect(r.grpc).await {
        Ok(c) => c,
        Err(e) => panic!("connect: {e}"),
    };
    assert!(client.check(any_check()).await.is_ok());
    let text = metrics(&r).await;
    assert_eq!(
        metric(&text, "riskgate_grpc_connections_open "),
        1.0,
        "{text}"
    );
    let closed = eventually(idle + ms("RISKGATE_TEST_CLOSE_WAIT_MS", 5_000), || async {
        let text = metrics(&r).await;
        metric(&text, "riskgate_grpc_connections_open ") == 0.0
            && metric(
                &text,
                r#"riskgate_grpc_connections_closed_total{reason="idle"} "#,
            ) == 1.0
    })
    .await;
    assert!(closed, "idle connection still open: {}", metrics(&r).await);
    r.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_header_read_timeout() {
    let header = ms("RISKGATE_TEST_HEADER_READ_MS", 200);
    let r = start(SimConfig::default(), |c| {
        c.listen.header_read_timeout = header
    })
    .await;
    let mut silent = match tokio::net::TcpStream::connect(r.grpc).await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    let mut buf = [0u8; 64];
    let wait = header + ms("RISKGATE_TEST_CLOSE_WAIT_MS", 5_000);
    // riskgate sends its SETTINGS, then closes: read until the end of the stream
    let ended = tokio::time::timeout(wait, async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a connection that sent nothing is still open"
    );
    let text = metrics(&r).await;
    assert_eq!(
        metric(
            &text,
            r#"riskgate_grpc_connections_closed_total{reason="header_read_timeout"} "#
        ),
        1.0,
        "{text}"
    );
    r.stop().await;
}
