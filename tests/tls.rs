//! `listen.tls`: riskgate's gRPC port over TLS with client certificates (mTLS), in process.
//!
//! Certificates are made at test time (rcgen). A tonic client with mTLS stands in for Envoy;
//! a bare tokio-rustls client looks at the certificate the server presents. Shown: a Check
//! with a trusted client certificate is answered; no client certificate, one from another
//! CA, or plaintext is refused at the handshake (and counted); replaced certificate and CA
//! files are picked up without a restart; a bad replacement is rejected, counted, and the
//! old certificate keeps serving; bad files at start-up stop riskgate naming the field.
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

#[path = "support/certs.rs"]
mod certs;
mod common;

use certs::{Ca, Leaf};
use common::*;
use risk_sim::SimConfig;
use riskgate::audit::AuditSink;
use riskgate::config::TlsConfig;
use riskgate::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::serve::server::{self, App, StartError};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The certificates of one test, written into its own directory.
struct Pki {
    dir: TempDir,
    ca: Ca,
    server: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("riskgate test CA");
        let server = ca.server(&["localhost", "127.0.0.1"]);
        server.write(dir.path(), "server");
        ca.write(&dir.path().join("ca.crt"));
        Pki { dir, ca, server }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn settings(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.path("server.crt"),
            key_file: self.path("server.key"),
            client_ca_file: Some(self.path("ca.crt")),
            require_client_cert: None,
            reload_poll: Duration::from_millis(50),
        }
    }
}

async fn start_tls(pki: &Pki) -> Running {
    let settings = pki.settings();
    start(sim_config(), move |c: &mut riskgate::config::Config| {
        c.listen.tls = Some(settings)
    })
    .await
}

fn sim_config() -> SimConfig {
    SimConfig {
        script: [(
            "tok".to_string(),
            scripted(10.0, "ALLOW", "login", Some("u1")),
        )]
        .into(),
        ..SimConfig::default()
    }
}

fn timeout() -> Duration {
    ms("RISKGATE_TEST_READY_TIMEOUT_MS", 10_000)
}

/// A Check (u1 reads u1's balance) over TLS trusting `ca`, presenting `client` if any:
/// the HTTP status riskgate answered, or why there was no answer.
async fn check_over_tls(rg: &Running, ca: &Ca, client: Option<&Leaf>) -> Result<u16, String> {
    check_path_over_tls(rg, ca, client, "/accounts/a1/balance").await
}

async fn check_path_over_tls(
    rg: &Running,
    ca: &Ca,
    client: Option<&Leaf>,
    path: &str,
) -> Result<u16, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert_pem))
        .domain_name("localhost");
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", rg.grpc.port()))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(5));
    let channel: Channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let request = check(
        "GET",
        path,
        Some(("u1", json!({}))),
        &[("x-action-token", "tok")],
    );
    let answer = AuthorizationClient::new(channel)
        .check(request)
        .await
        .map_err(|e| format!("{e:?}"))?
        .into_inner();
    match answer.http_response {
        Some(HttpResponse::OkResponse(_)) => Ok(200),
        Some(HttpResponse::DeniedResponse(d)) => Ok(d.status.map_or(0, |s| s.code as u16)),
        _ => Err("an answer without an HTTP response".into()),
    }
}

/// The leaf certificate the server presents to a client trusting `ca` with `client`'s
/// certificate (a bare TLS handshake, no HTTP/2).
async fn presented_certificate(rg: &Running, ca: &Ca, client: &Leaf) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("CA PEM"))
        .expect("CA into the root store");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("cert PEM")],
            PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("key PEM"),
        )
        .expect("client config");
    let tcp = tokio::net::TcpStream::connect(rg.grpc)
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .expect("the server presented a certificate")
}

/// The value of an unlabelled counter (or one series, `name{labels}`) on `/metrics`.
async fn metric(rg: &Running, series: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", rg.admin))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Polls `probe` until it returns `Some`, at most [`timeout`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Replaces a file the way an editor or a `kubectl cp` would: write aside, rename over.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write replacement");
    std::fs::rename(&tmp, path).expect("rename replacement");
}

const FAILED_HANDSHAKES: &str = "riskgate_tls_handshake_failures_total";

/// No answer, because the server refused the handshake with `alert` (or, when the client's
/// first HTTP/2 bytes were still unread as the server closed, a connection reset).
fn assert_refused(result: &Result<u16, String>, alert: &str) {
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.contains(alert) || e.contains("onnection reset")),
        "expected the handshake refused with {alert}: {result:?}"
    );
}

#[tokio::test]
async fn check_with_a_trusted_client_certificate_is_answered() {
    let pki = Pki::new();
    let rg = start_tls(&pki).await;
    let client = pki.ca.client("envoy");
    assert_eq!(check_over_tls(&rg, &pki.ca, Some(&client)).await, Ok(200));
    // a decision, not a blanket allow: another user's account is still denied
    assert_eq!(
        check_path_over_tls(&rg, &pki.ca, Some(&client), "/accounts/a2/balance").await,
        Ok(403)
    );
    assert_eq!(metric(&rg, FAILED_HANDSHAKES).await, 0);
    rg.stop().await;
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let pki = Pki::new();
    let rg = start_tls(&pki).await;
    let refused = check_over_tls(&rg, &pki.ca, None).await;
    assert_refused(&refused, "CertificateRequired");
    assert!(metric(&rg, FAILED_HANDSHAKES).await >= 1);
    rg.stop().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let rg = start_tls(&pki).await;
    let stranger = Ca::new("some other CA").client("envoy");
    let refused = check_over_tls(&rg, &pki.ca, Some(&stranger)).await;
    assert_refused(&refused, "UnknownCA");
    assert!(metric(&rg, FAILED_HANDSHAKES).await >= 1);
    rg.stop().await;
}

#[tokio::test]
async fn plaintext_is_refused_on_a_tls_port() {
    let pki = Pki::new();
    let rg = start_tls(&pki).await;
    let plain = AuthorizationClient::connect(format!("http://{}", rg.grpc)).await;
    let answered = match plain {
        Ok(mut c) => c
            .check(check("GET", "/accounts/a1/balance", None, &[]))
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a plaintext Check was answered on the TLS port");
    // the TLS port is still healthy for a proper client
    let client = pki.ca.client("envoy");
    assert_eq!(check_over_tls(&rg, &pki.ca, Some(&client)).await, Ok(200));
    rg.stop().await;
}

#[tokio::test]
async fn replaced_server_certificate_is_served_without_restart() {
    let pki = Pki::new();
    let rg = start_tls(&pki).await;
    let client = pki.ca.client("envoy");
    assert_eq!(
        presented_certificate(&rg, &pki.ca, &client).await,
        pki.server.der
    );

    let renewed = pki.ca.server(&["localhost", "127.0.0.1"]);
    // key first, then certificate: in between the pair does not match and is rejected
    replace(&pki.path("server.key"), &renewed.key_pem);
    replace(&pki.path("server.crt"), &renewed.cert_pem);
    eventually("the renewed certificate", || async {
        (presented_certificate(&rg, &pki.ca, &client).await == renewed.der).then_some(())
    })
    .await;
    assert!(metric(&rg, r#"riskgate_tls_reloads_total{result="success"}"#).await >= 1);
    assert_eq!(check_over_tls(&rg, &pki.ca, Some(&client)).await, Ok(200));
    rg.stop().await;
}

#[tokio::test]
async fn invalid_replacement_is_rejected_and_the_old_certificate_keeps_serving() {
    let pki = Pki::new();
    let rg = start_tls(&pki).await;
    let client = pki.ca.client("envoy");

    // a certificate whose key is not the one in key_file
    let other = pki.ca.server(&["localhost", "127.0.0.1"]);
    replace(&pki.path("server.crt"), &other.cert_pem);
    let failures = r#"riskgate_tls_reloads_total{result="failure"}"#;
    eventually("the rejected reload to be counted", || async {
        (metric(&rg, failures).await >= 1).then_some(())
    })
    .await;
    assert_eq!(
        presented_certificate(&rg, &pki.ca, &client).await,
        pki.server.der
    );
    assert_eq!(check_over_tls(&rg, &pki.ca, Some(&client)).await, Ok(200));

    // garbage is rejected too, and counted once (the content did not change after that)
    replace(&pki.path("server.crt"), "not a certificate\n");
    eventually("the second rejected reload", || async {
        (metric(&rg, failures).await >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&rg, failures).await, 2);
    assert_eq!(
        metric(&rg, r#"riskgate_tls_reloads_total{result="success"}"#).await,
        0
    );
    assert_eq!(check_over_tls(&rg, &pki.ca, Some(&client)).await, Ok(200));

    // a good pair again is applied
    pki.server.write(pki.dir.path(), "server");
    eventually("the good pair to be applied again", || async {
        (metric(&rg, r#"riskgate_tls_reloads_total{result="success"}"#).await >= 1).then_some(())
    })
    .await;
    rg.stop().await;
}

#[tokio::test]
async fn replaced_client_ca_is_used_for_new_connections() {
    let pki = Pki::new();
    let rg = start_tls(&pki).await;
    let old_client = pki.ca.client("envoy");
    assert_eq!(
        check_over_tls(&rg, &pki.ca, Some(&old_client)).await,
        Ok(200)
    );

    let next_ca = Ca::new("next client CA");
    replace(&pki.path("ca.crt"), &next_ca.cert_pem);
    let new_client = next_ca.client("envoy");
    // the server certificate still chains to the first CA, which the client trusts
    eventually("the new client CA", || async {
        check_over_tls(&rg, &pki.ca, Some(&new_client)).await.ok()
    })
    .await;
    let refused = check_over_tls(&rg, &pki.ca, Some(&old_client)).await;
    assert_refused(&refused, "UnknownCA");
    rg.stop().await;
}

// --- start-up: bad files stop riskgate before it binds, naming the field ---

async fn bind_error(settings: TlsConfig) -> String {
    let mut config = example_config("http://127.0.0.1:9");
    config.listen.tls = Some(settings);
    config.validate().expect("the config itself is valid");
    let app = App::build(&config, AuditSink::disabled())
        .await
        .expect("build");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    match server::bind(app, loopback, loopback).await {
        Ok(_) => panic!("bound with bad TLS files"),
        Err(e @ StartError::Tls(_)) => riskgate::serve::tls::error_chain(&e),
        Err(e) => panic!("not a TLS error: {e}"),
    }
}

#[tokio::test]
async fn missing_certificate_file_is_named() {
    let pki = Pki::new();
    let mut s = pki.settings();
    s.cert_file = pki.path("nope.crt");
    let msg = bind_error(s).await;
    assert!(msg.contains("`listen.tls.cert_file`"), "{msg}");
    assert!(msg.contains("nope.crt"), "{msg}");
}

#[tokio::test]
async fn key_that_does_not_match_the_certificate_is_named() {
    let pki = Pki::new();
    let other = pki.ca.server(&["localhost"]);
    std::fs::write(pki.path("server.key"), &other.key_pem).expect("write key");
    let msg = bind_error(pki.settings()).await;
    assert!(msg.contains("`listen.tls.key_file`"), "{msg}");
}

#[tokio::test]
async fn key_file_without_a_key_is_named() {
    let pki = Pki::new();
    std::fs::write(pki.path("server.key"), &pki.server.cert_pem).expect("write key");
    let msg = bind_error(pki.settings()).await;
    assert!(msg.contains("`listen.tls.key_file`"), "{msg}");
    assert!(msg.contains("private key"), "{msg}");
}

#[tokio::test]
async fn client_ca_file_without_a_certificate_is_named() {
    let pki = Pki::new();
    std::fs::write(pki.path("ca.crt"), "garbage\n").expect("write CA");
    let msg = bind_error(pki.settings()).await;
    assert!(msg.contains("`listen.tls.client_ca_file`"), "{msg}");
}

#[test]
fn load_accepts_good_files_and_negotiates_h2() {
    let pki = Pki::new();
    let config = riskgate::serve::tls::load(&pki.settings()).expect("good files load");
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
}

#[test]
fn validate_checks_the_tls_files() {
    let pki = Pki::new();
    let policies = repo("policies");
    let config = pki.path("riskgate.yaml");
    let write = |key: &str| {
        let yaml = format!(
            "listen:\n  tls: {{ cert_file: server.crt, key_file: {key}, client_ca_file: ca.crt }}\n\
             policies: {{ dir: {p}, schema: {p}/schema.cedarschema, entities: {p}/entities.json }}\n",
            p = policies.display()
        );
        std::fs::write(&config, yaml).expect("write config");
    };
    let files = riskgate::offline::ProxyFiles {
        envoy: vec![],
        istio: vec![],
    };
    // relative paths resolve against the config file's directory
    write("server.key");
    let report = riskgate::offline::validate(&config, &files);
    assert!(report.ok(), "{:?}", report.problems);
    assert!(
        report.checked.iter().any(|c| c.contains("TLS")),
        "{:?}",
        report.checked
    );
    write("missing.key");
    let report = riskgate::offline::validate(&config, &files);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("`listen.tls.key_file`") && p.contains("missing.key")),
        "{:?}",
        report.problems
    );
}
