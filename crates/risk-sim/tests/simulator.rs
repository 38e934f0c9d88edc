//! The risk API simulator, driven over real HTTP with reqwest, as riskgate's risk client will be.
#![allow(clippy::expect_used, reason = "a failed expectation is a test failure")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::{header, Client, Response, StatusCode, Url};
use risk_sim::{start, ScriptedAction, SimConfig, SimHandle, SimStats};
use serde_json::{json, Value};

const ID: &str = "riskgate-test";
const SECRET: &str = "sim-secret";

async fn sim_with(config: SimConfig) -> SimHandle {
    start(config, "127.0.0.1:0".parse().expect("valid address"))
        .await
        .expect("simulator starts")
}

async fn sim() -> SimHandle {
    sim_with(SimConfig::default()).await
}

fn client() -> Client {
    Client::builder().no_proxy().build().expect("client builds")
}

async fn request_token(client: &Client, sim: &SimHandle, form: &[(&str, &str)]) -> Response {
    client
        .post(format!("{}/oidc/token", sim.base_url()))
        .form(form)
        .send()
        .await
        .expect("token request sent")
}

async fn bearer(client: &Client, sim: &SimHandle) -> String {
    let response = request_token(
        client,
        sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("token JSON");
    body["access_token"]
        .as_str()
        .expect("access_token is a string")
        .to_owned()
}

async fn recommend(
    client: &Client,
    sim: &SimHandle,
    bearer: Option<&str>,
    action_token: Option<&str>,
) -> Response {
    let mut request = client.get(recommendation_url(&sim.base_url(), action_token));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.expect("recommendation request sent")
}

/// `{base}/risk/v1/recommendation[?action_token=…]`, percent-encoded.
fn recommendation_url(base: &str, action_token: Option<&str>) -> Url {
    let url = format!("{base}/risk/v1/recommendation");
    match action_token {
        Some(token) => Url::parse_with_params(&url, &[("action_token", token)]),
        None => Url::parse(&url),
    }
    .expect("valid URL")
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

fn is_hex64(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[allow(
    clippy::disallowed_methods,
    reason = "the simulator's tests read the clock the simulator reads, not riskgate's"
)]
fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_millis()).expect("fits in u64")
}

#[tokio::test]
async fn token_has_the_oauth_shape() {
    let sim = sim().await;
    let client = client();
    let response = request_token(
        &client,
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", SECRET),
            ("resource", "https://api.transmitsecurity.io/risk"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = json_of(response).await;
    assert_eq!(body["token_type"], json!("Bearer"));
    assert_eq!(body["expires_in"], json!(3600));
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));
    let again = bearer(&client, &sim).await;
    assert_ne!(body["access_token"], json!(again), "tokens are random");
}

#[tokio::test]
async fn token_expires_at_its_millisecond_lifetime() {
    let sim = sim_with(SimConfig {
        token_lifetime_ms: 300,
        ..SimConfig::default()
    })
    .await;
    sim.script("tok", ScriptedAction::default());
    let client = client();
    let response = request_token(
        &client,
        &sim,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", SECRET),
        ],
    )
    .await;
    let body = json_of(response).await;
    assert_eq!(body["expires_in"], json!(1), "300 ms rounds up to 1 s");
    let token = body["access_token"].as_str().expect("token").to_owned();

    let fresh = recommend(&client, &sim, Some(&token), Some("tok")).await;
    assert_eq!(fresh.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let stale = recommend(&client, &sim, Some(&token), Some("tok")).await;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let challenge = stale.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii");
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_eq!(json_of(stale).await["error_code"], json!(401));

    let renewed = bearer(&client, &sim).await;
    let again = recommend(&client, &sim, Some(&renewed), Some("tok")).await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_endpoint_rejects_bad_credentials_and_grants() {
    let sim = sim().await;
    let client = client();
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a str);
    let cases: [Case; 5] = [
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", ID),
                ("client_secret", "wrong"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "someone-else"),
                ("client_secret", SECRET),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            &[("grant_type", "client_credentials"), ("client_id", ID)],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", ID),
                ("client_secret", SECRET),
            ],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            &[("client_id", ID), ("client_secret", SECRET)],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (form, status, error) in cases {
        let response = request_token(&client, &sim, form).await;
        assert_eq!(response.status(), status, "{form:?}");
        assert_eq!(
            json_of(response).await,
            json!({ "error": error }),
            "{form:?}"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.token_requests, 5);
    assert_eq!(stats.unauthorized, 3);
}

#[tokio::test]
async fn recommendation_needs_a_valid_bearer() {
    let sim = sim().await;
    sim.script("tok", ScriptedAction::default());
    let client = client();

    let missing = recommend(&client, &sim, None, Some("tok")).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(json_of(missing).await["error_code"], json!(401));

    let unknown = recommend(&client, &sim, Some("made-up"), Some("tok")).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(json_of(unknown).await["message"].is_string());

    assert_eq!(sim.stats().unauthorized, 2);
}

#[tokio::test]
async fn revoke_invalidates_issued_bearers() {
    let sim = sim().await;
    sim.script("tok", ScriptedAction::default());
    let client = client();

    let first = bearer(&client, &sim).await;
    sim.revoke_tokens();
    let after_revoke = recommend(&client, &sim, Some(&first), Some("tok")).await;
    assert_eq!(after_revoke.status(), StatusCode::UNAUTHORIZED);

    let second = bearer(&client, &sim).await;
    assert_eq!(
        recommend(&client, &sim, Some(&second), Some("tok"))
            .await
            .status(),
        StatusCode::OK
    );
    let revoked = client
        .post(format!("{}/_sim/revoke", sim.base_url()))
        .send()
        .await
        .expect("revoke sent");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        recommend(&client, &sim, Some(&second), Some("tok"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn scripted_body_has_every_documented_field() {
    let sim = sim().await;
    sim.script(
        "tok-challenge",
        ScriptedAction {
            risk_score: json!(73.2),
            recommendation: "CHALLENGE".into(),
            challenge_type: Some("email_otp".into()),
            reasons: Some(vec!["PROFILE_DEVICE_NEW".into()]),
            action_type: "withdraw".into(),
            user_id: Some("alice".into()),
            age_ms: 60_000,
            threats: Some(vec!["ACCOUNT_TAKEOVER".into()]),
            transaction_data: Some(json!({"amount": 120, "currency": "USD"})),
            ..ScriptedAction::default()
        },
    );
    let client = client();
    let token = bearer(&client, &sim).await;
    let before = now_ms();
    let response = recommend(&client, &sim, Some(&token), Some("tok-challenge")).await;
    let after = now_ms();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
    let body = json_of(response).await;

    // Required top-level fields, with their documented types.
    assert!(is_hex64(&body["id"]), "id");
    let issued_at = body["issued_at"].as_u64().expect("issued_at is a number");
    assert!((before..=after).contains(&issued_at));
    assert_eq!(body["recommendation"]["type"], json!("CHALLENGE"));
    assert_eq!(body["recommendation"]["challenge_type"], json!("email_otp"));
    assert_eq!(body["risk_score"].as_f64(), Some(73.2));
    assert_eq!(body["reasons"], json!(["PROFILE_DEVICE_NEW"]));
    assert_eq!(body["threats"], json!(["ACCOUNT_TAKEOVER"]));
    assert_eq!(body["transaction_data"]["amount"], json!(120));
    for group in ["device", "network", "behavior", "history"] {
        assert!(
            body["risk_signals"][group].is_object(),
            "risk_signals.{group}"
        );
    }

    // Required context fields.
    let ctx = &body["context"];
    assert!(is_hex64(&ctx["action_id"]), "action_id");
    assert_eq!(ctx["action_type"], json!("withdraw"));
    let performed = ctx["action_performed_at"].as_u64().expect("a number");
    assert!((before - 60_000..=after - 60_000).contains(&performed));
    for key in ["application_id", "device_id", "device_fingerprint"] {
        assert!(ctx[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    assert_eq!(ctx["user_id"], json!("alice"));
    // Documented optional context fields.
    assert!(ctx["device_timestamp"].is_u64());
    for key in [
        "client_id",
        "tenant_id",
        "correlation_id",
        "device_public_key",
        "location",
        "ip",
        "ip_country",
        "ip_region",
        "ip_location_city",
        "ip_location_zip",
        "ip_location_longitude",
        "ip_location_latitude",
        "ip_asn_name",
        "ip_asn_id",
        "ip_organization_name",
        "ip_organization_type",
        "ip_location_timezone",
        "device_timezone",
        "device_platform",
        "os_name",
        "os_version",
        "browser_name",
        "browser_version",
        "user_agent",
    ] {
        assert!(ctx[key].is_string(), "context.{key}");
    }
    assert!(ctx["ip"]
        .as_str()
        .is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()));
    assert!(ctx["device_languages"].is_array());

    // The action id is stable per action token.
    let again = json_of(recommend(&client, &sim, Some(&token), Some("tok-challenge")).await).await;
    assert_eq!(again["context"]["action_id"], ctx["action_id"]);
    assert_ne!(again["id"], body["id"]);
}

#[tokio::test]
async fn short_script_entry_gets_defaults_and_no_user_id() {
    let sim = sim().await;
    sim.script("tok", ScriptedAction::default());
    let client = client();
    let token = bearer(&client, &sim).await;
    let body = json_of(recommend(&client, &sim, Some(&token), Some("tok")).await).await;
    assert_eq!(body["recommendation"], json!({"type": "ALLOW"}));
    assert_eq!(body["risk_score"], json!(10));
    assert_eq!(body["context"]["action_type"], json!("login"));
    assert!(body["context"].get("user_id").is_none());
    assert!(body.get("transaction_data").is_none());
}

#[tokio::test]
async fn missing_or_unknown_action_token_is_a_400() {
    let sim = sim().await;
    let client = client();
    let token = bearer(&client, &sim).await;

    let missing = recommend(&client, &sim, Some(&token), None).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(missing).await["error_code"], json!(400));

    let unknown = recommend(&client, &sim, Some(&token), Some("never-scripted")).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(unknown).await["message"].is_string());
}

#[tokio::test]
async fn delay_holds_the_answer_back() {
    let sim = sim().await;
    sim.script(
        "slow",
        ScriptedAction {
            delay_ms: 150,
            ..ScriptedAction::default()
        },
    );
    let client = client();
    let token = bearer(&client, &sim).await;

    let started = Instant::now();
    let response = recommend(&client, &sim, Some(&token), Some("slow")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let timed_out = client
        .get(recommendation_url(&sim.base_url(), Some("slow")))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(timed_out.is_err_and(|err| err.is_timeout()));
}

#[tokio::test]
async fn scripted_status_and_garbage() {
    let sim = sim().await;
    for (token, status) in [("rate-limited", 429), ("broken", 500), ("rejected", 403)] {
        sim.script(
            token,
            ScriptedAction {
                status: Some(status),
                ..ScriptedAction::default()
            },
        );
    }
    sim.script(
        "garbage",
        ScriptedAction {
            garbage: true,
            ..ScriptedAction::default()
        },
    );
    let client = client();
    let token = bearer(&client, &sim).await;

    let limited = recommend(&client, &sim, Some(&token), Some("rate-limited")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()[header::RETRY_AFTER], "1");
    assert_eq!(json_of(limited).await["error_code"], json!(429));
    let broken = recommend(&client, &sim, Some(&token), Some("broken")).await;
    assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let rejected = recommend(&client, &sim, Some(&token), Some("rejected")).await;
    assert_eq!(rejected.status(), StatusCode::FORBIDDEN);

    let garbage = recommend(&client, &sim, Some(&token), Some("garbage")).await;
    assert_eq!(garbage.status(), StatusCode::OK);
    let text = garbage.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn omit_and_body_override() {
    let sim = sim().await;
    sim.script(
        "no-score",
        ScriptedAction {
            omit: vec!["risk_score".into(), "context.action_type".into()],
            ..ScriptedAction::default()
        },
    );
    sim.script(
        "raw",
        ScriptedAction {
            body: Some(json!({"id": "x", "risk_score": "high"})),
            ..ScriptedAction::default()
        },
    );
    sim.script(
        "odd-score",
        ScriptedAction {
            risk_score: json!(140),
            ..ScriptedAction::default()
        },
    );
    let client = client();
    let token = bearer(&client, &sim).await;

    let omitted = json_of(recommend(&client, &sim, Some(&token), Some("no-score")).await).await;
    assert!(omitted.get("risk_score").is_none());
    assert!(omitted["context"].get("action_type").is_none());
    assert!(omitted["context"].get("action_id").is_some());

    let raw = json_of(recommend(&client, &sim, Some(&token), Some("raw")).await).await;
    assert_eq!(raw, json!({"id": "x", "risk_score": "high"}));

    let odd = json_of(recommend(&client, &sim, Some(&token), Some("odd-score")).await).await;
    assert_eq!(odd["risk_score"], json!(140));
}

#[tokio::test]
async fn outage_fails_every_call_until_lifted() {
    let sim = sim().await;
    sim.script("tok", ScriptedAction::default());
    let client = client();
    let token = bearer(&client, &sim).await;

    sim.set_outage(Some(503));
    let down = recommend(&client, &sim, Some(&token), Some("tok")).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers()[header::RETRY_AFTER], "1");
    sim.set_outage(None);
    let up = recommend(&client, &sim, Some(&token), Some("tok")).await;
    assert_eq!(up.status(), StatusCode::OK);

    let fail = |status: Value| {
        client
            .post(format!("{}/_sim/fail", sim.base_url()))
            .json(&json!({ "status": status }))
            .send()
    };
    assert_eq!(
        fail(json!(502)).await.expect("sent").status(),
        StatusCode::NO_CONTENT
    );
    let down = recommend(&client, &sim, Some(&token), Some("tok")).await;
    assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        fail(json!(42)).await.expect("sent").status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        fail(Value::Null).await.expect("sent").status(),
        StatusCode::NO_CONTENT
    );
    let up = recommend(&client, &sim, Some(&token), Some("tok")).await;
    assert_eq!(up.status(), StatusCode::OK);
}

#[tokio::test]
async fn stats_count_every_call() {
    let sim = sim().await;
    sim.script("a", ScriptedAction::default());
    sim.script("b", ScriptedAction::default());
    let client = client();
    let token = bearer(&client, &sim).await;
    for action_token in ["a", "a", "b"] {
        recommend(&client, &sim, Some(&token), Some(action_token)).await;
    }
    recommend(&client, &sim, None, Some("a")).await;
    recommend(&client, &sim, Some(&token), None).await;

    let expected = SimStats {
        token_requests: 1,
        recommendation_requests: 5,
        unauthorized: 1,
        per_token: HashMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]),
    };
    assert_eq!(sim.stats(), expected);
    let over_http: SimStats = client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .expect("stats sent")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(over_http, expected);
}

#[tokio::test]
async fn script_can_be_merged_over_http() {
    let sim = sim_with(SimConfig {
        script: HashMap::from([("kept".to_owned(), ScriptedAction::default())]),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let put = |body: Value| {
        client
            .put(format!("{}/_sim/script", sim.base_url()))
            .json(&body)
            .send()
    };
    let merged = put(json!({"new": {"recommendation": "DENY", "risk_score": 95}}))
        .await
        .expect("sent");
    assert_eq!(merged.status(), StatusCode::OK);
    assert_eq!(json_of(merged).await, json!({"scripted": 1}));
    let typo = put(json!({"bad": {"recomendation": "DENY"}}))
        .await
        .expect("sent");
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);
    let bad_status = put(json!({"bad": {"status": 7}})).await.expect("sent");
    assert_eq!(bad_status.status(), StatusCode::BAD_REQUEST);

    let token = bearer(&client, &sim).await;
    let denied = json_of(recommend(&client, &sim, Some(&token), Some("new")).await).await;
    assert_eq!(denied["recommendation"]["type"], json!("DENY"));
    assert_eq!(denied["risk_score"], json!(95));
    let kept = recommend(&client, &sim, Some(&token), Some("kept")).await;
    assert_eq!(kept.status(), StatusCode::OK);
    let bad = recommend(&client, &sim, Some(&token), Some("bad")).await;
    assert_eq!(
        bad.status(),
        StatusCode::BAD_REQUEST,
        "rejected entries are not merged"
    );
}

#[tokio::test]
async fn invalid_script_status_fails_start() {
    let config = SimConfig {
        script: HashMap::from([(
            "t".to_owned(),
            ScriptedAction {
                status: Some(7),
                ..ScriptedAction::default()
            },
        )]),
        ..SimConfig::default()
    };
    let err = start(config, "127.0.0.1:0".parse().expect("address"))
        .await
        .expect_err("status 7 is rejected");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let sim = sim().await;
    let addr = sim.addr();
    let client = client();
    bearer(&client, &sim).await;
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn risk_sim_binary_announces_its_address_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

    let dir = std::env::temp_dir().join(format!("risk-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("script.yaml");
    std::fs::write(
        &script,
        "tok-deny: { recommendation: DENY, risk_score: 97, user_id: alice }\n",
    )
    .expect("script written");
    let secret = dir.join("secret");
    std::fs::write(&secret, "file-secret\n").expect("secret written");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_risk-sim"))
        .args(["--listen", "127.0.0.1:0", "--client-id", "e2e"])
        .arg("--script")
        .arg(&script)
        .arg("--client-secret-file")
        .arg(&secret)
        .env_remove("RISK_SIM_CLIENT_SECRET")
        .env_remove("RISK_SIM_LISTEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("risk-sim spawns");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
        .await
        .expect("announced in time")
        .expect("stdout readable");
    let base = line
        .trim_end()
        .strip_prefix("risk-sim listening on ")
        .expect("announcement line")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let client = client();
    let token: Value = client
        .post(format!("{base}/oidc/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "e2e"),
            ("client_secret", "file-secret"),
        ])
        .send()
        .await
        .expect("token sent")
        .json()
        .await
        .expect("token JSON");
    let body: Value = client
        .get(recommendation_url(&base, Some("tok-deny")))
        .bearer_auth(token["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("recommendation sent")
        .json()
        .await
        .expect("recommendation JSON");
    assert_eq!(body["recommendation"]["type"], json!("DENY"));
    assert_eq!(body["context"]["user_id"], json!("alice"));

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits in time")
        .expect("wait works");
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.expect("stdout");
    assert!(rest.is_empty(), "only one stdout line: {rest:?}");
    std::fs::remove_dir_all(&dir).ok();
}
