//! End-to-end, through a real Envoy running the shipped `deploy/envoy/envoy.yaml`: the answers
//! Envoy gives on its own, before or without riskgate.
//!
//! Set-up per test: a recording upstream, and Envoy with its ext_authz cluster pointing at a free
//! loopback port whose every connection is closed at once (riskgate is down). So:
//! * a JWT that is present but bad (expired, wrong issuer, forged signature, garbage) → 401 from
//!   `jwt_authn` (a wrong audience → 403, Envoy's choice), and ext_authz is never consulted;
//! * a valid JWT, or none (anonymous) → 503 from ext_authz's `status_on_error`: riskgate down is
//!   never a 200;
//! * paths with encoded slashes and headers with underscores → 400 from the connection manager;
//! * in every case the upstream receives nothing.
//!
//! Needs the Envoy binary from `scripts/python-env.sh`; without it each test prints a skip line
//! (and fails instead under `RISKGATE_REQUIRE_ENVOY=1`).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod support;

use reqwest::{Method, StatusCode};
use support::envoy::{self, Envoy, Ports};
use support::http::client;
use support::jwt;
use support::procs::TestDir;
use support::upstream::Upstream;

/// Envoy + recording upstream, riskgate down. Fields drop in order: Envoy, upstream, then the dir.
struct Edge {
    envoy: Envoy,
    upstream: Upstream,
    _riskgate_down: tokio::task::JoinHandle<()>,
    _dir: TestDir,
}

impl Edge {
    /// `None` when Envoy is not installed (the test then skips).
    async fn start(test: &str) -> Option<Edge> {
        let bin = envoy::binary()?;
        let dir = TestDir::new(test);
        let upstream = Upstream::start().await;
        // riskgate is down: this port is held (so no other test process can take it) and
        // every connection to it is closed at once, as a crashed server's would be.
        let down = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the riskgate-down port");
        let riskgate_down = down.local_addr().expect("local address").port();
        let refuser = tokio::spawn(async move {
            while let Ok((conn, _)) = down.accept().await {
                drop(conn);
            }
        });
        let envoy = Envoy::start(&dir, &bin, Ports::new(riskgate_down, upstream.port())).await;
        Some(Edge {
            envoy,
            upstream,
            _riskgate_down: refuser,
            _dir: dir,
        })
    }

    /// Sends `method path` through Envoy, with `Authorization: Bearer <token>` when given.
    async fn send(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = client().request(method.clone(), self.envoy.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if method == Method::POST {
            req = req
                .header("content-type", "application/json")
                .body(r#"{"amount":100}"#);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} through Envoy: {e}"))
    }

    async fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(name).await
    }

    fn assert_upstream_untouched(&self) {
        let got = self.upstream.requests();
        assert!(
            got.is_empty(),
            "the upstream must receive nothing, got {} request(s): {got:#?}",
            got.len()
        );
    }
}

const JWT_DENIED: &str = "http.ingress_http.jwt_authn.denied";
const EXT_AUTHZ_ERROR: &str = "http.ingress_http.ext_authz.error";

/// A bad JWT is answered by Envoy's jwt_authn (401 with a bearer `invalid_token` challenge; Envoy
/// answers a wrong audience with 403); riskgate is never asked and the upstream sees nothing.
async fn assert_rejected_by_jwt_authn(edge: &Edge, token: &str, status: StatusCode, what: &str) {
    let denied_before = edge.stat(JWT_DENIED).await;
    let resp = edge
        .send(Method::GET, "/accounts/a1/balance", Some(token))
        .await;
    assert_eq!(resp.status(), status, "{what}");
    if status == StatusCode::UNAUTHORIZED {
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("invalid_token"),
            "{what}: expected a bearer invalid_token challenge from jwt_authn, got {challenge:?}"
        );
    }
    let body = resp.text().await.expect("401 body");
    assert!(!body.contains("upstream ok"), "{what}: body {body:?}");
    assert_eq!(
        edge.stat(JWT_DENIED).await,
        denied_before + 1,
        "{what}: jwt_authn.denied"
    );
    assert_eq!(
        edge.stat(EXT_AUTHZ_ERROR).await,
        0,
        "{what}: ext_authz must not be consulted for a bad JWT"
    );
    edge.assert_upstream_untouched();
}

#[tokio::test]
async fn expired_jwt_is_401_from_envoy() {
    let Some(edge) = Edge::start("expired_jwt").await else {
        return;
    };
    assert_rejected_by_jwt_authn(
        &edge,
        &jwt::expired("u1"),
        StatusCode::UNAUTHORIZED,
        "expired JWT",
    )
    .await;
}

#[tokio::test]
async fn wrong_issuer_jwt_is_401_from_envoy() {
    let Some(edge) = Edge::start("wrong_issuer_jwt").await else {
        return;
    };
    assert_rejected_by_jwt_authn(
        &edge,
        &jwt::wrong_issuer("u1"),
        StatusCode::UNAUTHORIZED,
        "wrong issuer",
    )
    .await;
}

#[tokio::test]
async fn wrong_audience_403_and_tampered_jwts_401_from_envoy() {
    let Some(edge) = Edge::start("wrong_audience_tampered_jwt").await else {
        return;
    };
    assert_rejected_by_jwt_authn(
        &edge,
        &jwt::wrong_audience("u1"),
        StatusCode::FORBIDDEN,
        "wrong audience",
    )
    .await;
    assert_rejected_by_jwt_authn(
        &edge,
        &jwt::tampered("u1", "u2"),
        StatusCode::UNAUTHORIZED,
        "tampered payload",
    )
    .await;
    assert_rejected_by_jwt_authn(
        &edge,
        "not.a.jwt",
        StatusCode::UNAUTHORIZED,
        "garbage token",
    )
    .await;
}

#[tokio::test]
async fn riskgate_down_is_503_never_200_with_valid_jwt_or_none() {
    let Some(edge) = Edge::start("riskgate_down").await else {
        return;
    };
    let valid = jwt::valid("u1");
    let mfa = jwt::valid_with(
        "u1",
        serde_json::json!({"amr": ["pwd", "mfa"], "acr": "aal2"}),
    );
    let cases: [(Method, &str, Option<&str>, &str); 5] = [
        (
            Method::GET,
            "/accounts/a1/balance",
            Some(&valid),
            "valid JWT, read",
        ),
        (
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&valid),
            "valid JWT, write",
        ),
        (
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&mfa),
            "step-up JWT, write",
        ),
        (Method::GET, "/accounts/a1/balance", None, "anonymous, read"),
        (
            Method::POST,
            "/accounts/a1/withdraw",
            None,
            "anonymous, write",
        ),
    ];
    for (i, (method, path, token, what)) in cases.into_iter().enumerate() {
        let resp = edge.send(method, path, token).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        let body = resp.text().await.expect("503 body");
        assert!(!body.contains("upstream ok"), "{what}: body {body:?}");
        assert_eq!(
            edge.stat(EXT_AUTHZ_ERROR).await,
            i as u64 + 1,
            "{what}: the 503 must come from ext_authz failing to reach riskgate"
        );
    }
    assert_eq!(edge.stat(JWT_DENIED).await, 0, "no JWT here is bad");
    edge.assert_upstream_untouched();

    // forged identity / risk headers change nothing: still 503, still nothing upstream
    let resp = client()
        .post(edge.envoy.url("/accounts/a1/withdraw"))
        .header("x-user-id", "u1")
        .header("x-jwt-payload", "eyJzdWIiOiJ1MSJ9")
        .header("x-risk-score", "1")
        .send()
        .await
        .expect("POST with forged headers through Envoy");
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "forged headers"
    );
    edge.assert_upstream_untouched();

    // the access log (stdout, JSON lines) recorded every request as an ext_authz error
    let lines = edge.envoy.access_log_lines(6).await;
    assert_eq!(
        lines.len(),
        6,
        "one access-log line per request: {lines:#?}"
    );
    for line in &lines {
        assert_eq!(line["status"], 503, "{line}");
        assert_eq!(line["details"], "ext_authz_error", "{line}");
        assert!(line["upstream"].is_null(), "no upstream host: {line}");
    }
}

#[tokio::test]
async fn escaped_slashes_and_underscored_headers_are_400_from_envoy() {
    let Some(edge) = Edge::start("escaped_slash").await else {
        return;
    };
    for path in [
        "/accounts/a1%2Fwithdraw",
        "/accounts/a1%2fwithdraw",
        "/accounts%5Ca1/balance",
    ] {
        let resp = edge.send(Method::POST, path, Some(&jwt::valid("u1"))).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let resp = client()
        .get(edge.envoy.url("/accounts/a1/balance"))
        .header("x_user_id", "u2")
        .send()
        .await
        .expect("GET with an underscored header through Envoy");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "x_user_id header");
    assert_eq!(
        edge.stat(EXT_AUTHZ_ERROR).await,
        0,
        "rejected before ext_authz"
    );
    edge.assert_upstream_untouched();
}

// ---- the fixtures agree with each other (no Envoy needed) ----

/// The committed key, `tests/data/jwt/jwks.json` and the JWKS inlined in `deploy/envoy/envoy.yaml`
/// are one key pair: a token minted with the key verifies against both JWKS.
#[test]
fn test_key_jwks_json_and_envoy_inline_jwks_agree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let jwks_file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/data/jwt/jwks.json")).expect("read jwks.json"),
    )
    .expect("jwks.json is JSON");

    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join(envoy::CONFIG)).expect("read envoy.yaml"),
    )
    .expect("envoy.yaml is YAML");
    let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let jwt_filter = hcm["http_filters"]
        .as_sequence()
        .expect("http_filters is a list")
        .iter()
        .find(|f| f["name"].as_str() == Some("envoy.filters.http.jwt_authn"))
        .expect("a jwt_authn filter");
    let provider = &jwt_filter["typed_config"]["providers"]["riskgate_users"];
    assert_eq!(provider["issuer"].as_str(), Some(jwt::ISSUER));
    assert_eq!(provider["audiences"][0].as_str(), Some(jwt::AUDIENCE));
    let inline: serde_json::Value = serde_json::from_str(
        provider["local_jwks"]["inline_string"]
            .as_str()
            .expect("local_jwks.inline_string"),
    )
    .expect("the inline JWKS is JSON");
    assert_eq!(inline, jwks_file, "envoy.yaml's inline JWKS == jwks.json");

    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwks_file["keys"][0].clone()).expect("a JWK");
    assert_eq!(jwk.common.key_id.as_deref(), Some(jwt::KID));
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key from the JWK");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[jwt::ISSUER]);
    validation.set_audience(&[jwt::AUDIENCE]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt::valid("u1"), &key, &validation)
        .expect("a minted token verifies against jwks.json")
        .claims;
    assert_eq!(claims["sub"], "u1");
    assert!(
        jsonwebtoken::decode::<serde_json::Value>(&jwt::expired("u1"), &key, &validation).is_err(),
        "an expired token does not verify"
    );
}

/// Rendering replaces each of the four template ports exactly once and binds the listener to
/// loopback, even when a new port equals another template port.
#[test]
fn envoy_config_renders_with_test_ports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = std::fs::read_to_string(root.join(envoy::CONFIG)).expect("read envoy.yaml");
    let ports = Ports {
        listener: 9001, // deliberately the template's riskgate port
        admin: 20001,
        riskgate: 20002,
        upstream: 20003,
    };
    let text = envoy::render(&template, &ports);
    for (port, n) in [
        (9001, 1),
        (20001, 1),
        (20002, 1),
        (20003, 1),
        (10000, 0),
        (8081, 0),
    ] {
        assert_eq!(
            text.matches(&format!("port_value: {port} ")).count()
                + text.matches(&format!("port_value: {port}\n")).count(),
            n,
            "port {port} in:\n{text}"
        );
    }
    assert!(text.contains("address: 127.0.0.1, port_value: 9001"));
    assert!(!text.contains("0.0.0.0"));
}
