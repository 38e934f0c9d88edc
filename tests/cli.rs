//! The policy-as-code CLI (issue 6), run as the built binary: `riskgate validate` and
//! `riskgate check` exit codes and outputs for good and broken inputs.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn riskgate(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .args(args)
        .env_remove("RISKGATE_CONFIG")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run riskgate: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn shipped_config() -> String {
    repo("deploy/riskgate.yaml").to_string_lossy().into_owned()
}

fn data(name: &str) -> String {
    repo("tests/data/lifecycle")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// A workspace whose policies carry one more file.
fn workspace_with(name: &str, content: &[u8]) -> Workspace {
    let mut ws = Workspace::new("http://127.0.0.1:9", "");
    let mut files = example_policies();
    files.insert(name.into(), content.to_vec());
    assert!(ws.policies.swap(&files).is_ok());
    ws
}

#[test]
fn validate_accepts_the_shipped_config_with_its_envoy_and_istio_configs() {
    let envoy = repo("deploy/envoy/envoy.yaml");
    let out = riskgate(&[
        "validate",
        "-c",
        &shipped_config(),
        "--envoy-config",
        path_str(&envoy),
        "--istio-config",
        &data("istio-operator.yaml"),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("policies"), "{stdout}");
    assert!(
        stdout.contains("1000 ms fits risk budget 250 ms + reserve 20 ms"),
        "{stdout}"
    );
    assert!(stdout.contains("provider `riskgate`"), "{stdout}");
}

#[test]
fn validate_reports_a_broken_policy_with_file_and_line() {
    let ws = workspace_with("broken.cedar", &lifecycle_data("broken.cedar"));
    let out = riskgate(&["validate", "-c", path_str(&ws.config)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.cedar:3: "), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_reports_duplicate_policy_ids() {
    let dup = b"\n@id(\"forbid-high-risk\")\nforbid (principal, action, resource) when { context.risk.score > 99 };\n";
    let ws = workspace_with("zz-dup.cedar", dup);
    let out = riskgate(&["validate", "-c", path_str(&ws.config)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("zz-dup.cedar:2: duplicate policy id `forbid-high-risk`"),
        "{stderr}"
    );
}

#[test]
fn validate_is_strict_about_the_schema() {
    let off_schema =
        b"@id(\"typo\")\npermit (principal, action == Action::\"view_balance\", resource)\nwhen { context.risk.scroe > 1 };\n";
    let ws = workspace_with("typo.cedar", off_schema);
    let out = riskgate(&["validate", "-c", path_str(&ws.config)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("typo.cedar:3: policy `typo`"), "{stderr}");
}

#[test]
fn validate_checks_a_broken_shadow_set_too() {
    let ws = Workspace::new("http://127.0.0.1:9", "");
    let mut files = example_policies();
    files.retain(|n, _| n.ends_with(".cedar"));
    files.insert("broken.cedar".into(), lifecycle_data("broken.cedar"));
    let shadow = ws.plain_dir("shadow", &files);
    ws.write_config_with(
        &format!(
            "{{ dir: policies, schema: policies/schema.cedarschema, shadow_dir: {} }}",
            shadow.display()
        ),
        "",
    );
    let out = riskgate(&["validate", "-c", path_str(&ws.config)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("shadow/broken.cedar:3: "), "{stderr}");
}

#[test]
fn validate_rejects_a_budget_that_does_not_fit_the_envoy_timeout() {
    let out = riskgate(&[
        "validate",
        "-c",
        &shipped_config(),
        "--envoy-config",
        &data("envoy-timeout-200ms.yaml"),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("envoy-timeout-200ms.yaml:14: ext_authz `grpc_service.timeout` is 200 ms"),
        "{stderr}"
    );
    assert!(stderr.contains("= 270 ms"), "{stderr}");
}

#[test]
fn validate_rejects_a_budget_that_does_not_fit_the_istio_timeout() {
    // The workspace config has a 3000 ms budget; the mesh gives ext_authz 500 ms.
    let ws = Workspace::new("http://127.0.0.1:9", "");
    let out = riskgate(&[
        "validate",
        "-c",
        path_str(&ws.config),
        "--istio-config",
        &data("istio-operator.yaml"),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "istio-operator.yaml:16: extension provider `riskgate` `envoyExtAuthzGrpc.timeout` is 500 ms"
        ),
        "{stderr}"
    );
}

#[test]
fn validate_reports_proxy_files_without_ext_authz() {
    let out = riskgate(&[
        "validate",
        "-c",
        &shipped_config(),
        "--istio-config",
        &data("envoy-timeout-200ms.yaml"),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no `extensionProviders[].envoyExtAuthzGrpc` found"),
        "{stderr}"
    );
}

#[test]
fn validate_names_a_bad_config_field_and_line() {
    let ws = Workspace::new("http://127.0.0.1:9", "modee: dry_run");
    let out = riskgate(&["validate", "-c", path_str(&ws.config)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("riskgate.yaml:"), "{stderr}");
    assert!(stderr.contains("modee"), "{stderr}");

    let ws = Workspace::new("http://127.0.0.1:9", "shutdown: { grace_ms: 0 }");
    let out = riskgate(&["validate", "-c", path_str(&ws.config)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("shutdown.grace"), "{stderr}");
}

#[test]
fn check_prints_an_allow_with_its_determining_policy() {
    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--method",
        "POST",
        "--path",
        "/accounts/a1/withdraw",
        "--body",
        r#"{"amount": 120, "currency": "USD"}"#,
        "--principal",
        "u1",
        "--risk-score",
        "12",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("decision:  allow\n"), "{stdout}");
    assert!(stdout.contains("status:    200\n"), "{stdout}");
    assert!(stdout.contains("band:      low\n"), "{stdout}");
    assert!(
        stdout.contains("policy:    account-owner-write-low-risk (")
            && stdout.contains("accounts.cedar:10)"),
        "{stdout}"
    );
}

#[test]
fn check_prints_denials_with_exit_code_2() {
    let ask = |score: &str, extra: &[&str]| {
        let mut args = vec![
            "check",
            "-c",
            shipped_config_static(),
            "--method",
            "POST",
            "--path",
            "/accounts/a1/withdraw",
            "--body",
            r#"{"amount": 120, "currency": "USD"}"#,
            "--principal",
            "u1",
            "--risk-score",
            score,
        ];
        args.extend_from_slice(extra);
        riskgate(&args)
    };
    // Medium band: no permit for writes.
    let out = ask("55", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("decision:  policy_deny\n"), "{stdout}");
    assert!(stdout.contains("status:    403\n"), "{stdout}");
    assert!(stdout.contains("band:      medium\n"), "{stdout}");
    assert!(stdout.contains("policies:  (none)\n"), "{stdout}");
    // Low band but a CHALLENGE without step-up: 401.
    let out = ask("12", &["--recommendation", "CHALLENGE"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("status:    401\n"), "{stdout}");
    // ... which verified claims showing a recent MFA satisfy (identity.step_up.max_age_s).
    let now = riskgate::clock::now_ms() / 1000;
    let claims = format!(r#"{{"amr":["mfa"],"auth_time":{now}}}"#);
    let out = ask(
        "12",
        &["--recommendation", "CHALLENGE", "--claims", &claims],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // High band: denied before Cedar.
    let out = ask("91", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("decision:  risk_high\n"), "{stdout}");
}

fn shipped_config_static() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(shipped_config)
}

#[test]
fn check_with_broken_inputs_exits_1() {
    let ws = workspace_with("broken.cedar", &lifecycle_data("broken.cedar"));
    let out = riskgate(&[
        "check",
        "-c",
        path_str(&ws.config),
        "--method",
        "GET",
        "--path",
        "/accounts/a1/balance",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("broken.cedar:3: "), "{stderr}");

    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--method",
        "GET",
        "--path",
        "/accounts/a1/balance",
        "--claims",
        "not json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--claims"));
}

/// deploy/riskgate.yaml trusting `x-jwt-payload` (as deploy/kubernetes does), written to a temp
/// dir with absolute policy paths.
fn trusting_config(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(repo("deploy/riskgate.yaml")).unwrap_or_default();
    let text = text
        .replace("../policies", &repo("policies").to_string_lossy())
        .replace(
            "identity:\n",
            "identity:\n  trusted_header: { name: x-jwt-payload, format: jwt_payload }\n",
        );
    let path = dir.join("riskgate.yaml");
    if let Err(e) = std::fs::write(&path, text) {
        panic!("write config: {e}");
    }
    path.to_string_lossy().into_owned()
}

#[test]
fn validate_rejects_a_trusted_header_the_proxy_lets_a_client_send() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let config = trusting_config(dir.path());
    let broken = repo("tests/data/deploy/envoy/broken-unguarded-trusted-header.yaml");
    let out = riskgate(&[
        "validate",
        "-c",
        &config,
        "--envoy-config",
        path_str(&broken),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken-unguarded-trusted-header.yaml:")
            && stderr.contains("riskgate trusts header `x-jwt-payload`"),
        "{stderr}"
    );
    // the mesh config alone shows nothing about who writes the header
    let mesh = repo("deploy/istio/mesh-config.yaml");
    let out = riskgate(&["validate", "-c", &config, "--istio-config", path_str(&mesh)]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no AuthorizationPolicy with `action: CUSTOM`"),
        "{stderr}"
    );
    // every shipped proxy config guarantees it
    let mut args = vec!["validate".to_owned(), "-c".to_owned(), config];
    for (flag, dir) in [
        ("--envoy-config", "deploy/envoy"),
        ("--envoy-config", "deploy/envoy/mtls"),
        ("--istio-config", "deploy/istio"),
        ("--istio-config", "deploy/istio/ambient"),
    ] {
        let mut files: Vec<_> = std::fs::read_dir(repo(dir))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|x| x == "yaml"));
        for f in files {
            args.push(flag.to_owned());
            args.push(f.to_string_lossy().into_owned());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = riskgate(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

fn policies_dir() -> String {
    repo("policies").to_string_lossy().into_owned()
}

/// A temp dir holding one policy test file.
fn test_dir(yaml: &str) -> tempfile::TempDir {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    if let Err(e) = std::fs::write(dir.path().join("bank_test.yaml"), yaml) {
        panic!("write: {e}");
    }
    dir
}

#[test]
fn test_passes_the_shipped_policy_tests_and_names_unexercised_policies() {
    let out = riskgate(&["test", "-c", &shipped_config(), &policies_dir()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("passed, 0 failed\n"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("PASS  ") && stdout.contains("accounts_test.yaml: owner withdraws at low risk (200 allow by account-owner-write-low-risk)"),
        "{stdout}"
    );
    // backed up by riskgate's own high-band denial: no request reaches it
    assert!(
        stdout.contains("policies no test exercised: forbid-high-risk (")
            && stdout.contains("guardrails.cedar:3)"),
        "{stdout}"
    );
    assert!(!stdout.contains("account-owner-read ("), "{stdout}");
}

#[test]
fn test_fails_with_expected_and_got_and_reports_json() {
    let dir = test_dir(
        r#"
cases:
  - name: owner reads
    request: { method: GET, path: /accounts/a1/balance }
    identity: { sub: u1 }
    risk: { score: 12 }
    expect: { status: 200, policy: account-owner-read }
  - name: wrongly expected denial
    request: { method: GET, path: /accounts/a1/balance }
    identity: { sub: u1 }
    risk: { score: 12 }
    expect: { status: 403, policy: forbid-high-risk }
  - name: outage on a read-only route
    request: { method: GET, path: /accounts/a1/transactions }
    identity: { sub: u1 }
    risk: outage
    expect: { status: 200, reason: allow }
"#,
    );
    let out = riskgate(&["test", "-c", &shipped_config(), path_str(dir.path())]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("bank_test.yaml: wrongly expected denial: expected 403 by policy forbid-high-risk, got 200 allow by account-owner-read\n"),
        "{stdout}"
    );
    assert!(stdout.contains("3 cases: 2 passed, 1 failed\n"), "{stdout}");
    assert!(stdout.contains("login-below-high-risk ("), "{stdout}");
    assert!(!stdout.contains("account-owner-read ("), "{stdout}");

    let out = riskgate(&[
        "test",
        "-c",
        &shipped_config(),
        "--json",
        path_str(dir.path()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("not JSON ({e}): {}", text(&out.stdout)),
    };
    assert_eq!(report["failed"], 1);
    assert_eq!(report["passed"], 2);
    assert_eq!(report["cases"][1]["passed"], false);
    assert_eq!(report["cases"][1]["got"]["status"], 200);
    assert_eq!(report["cases"][1]["expected"]["status"], 403);
    assert_eq!(
        report["cases"][2]["got"]["policies"][0],
        "account-owner-read"
    );
    let unexercised = report["unexercised"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        unexercised
            .iter()
            .any(|p| p["id"] == "login-below-high-risk"),
        "{report}"
    );
}

#[test]
fn test_rejects_a_bad_test_file_and_an_empty_dir() {
    let dir = test_dir(
        "cases:\n  - name: typo\n    request: { method: GET, path: / }\n    expected: { status: 200 }\n",
    );
    let out = riskgate(&["test", "-c", &shipped_config(), path_str(dir.path())]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bank_test.yaml: ")
            && stderr.contains("unknown field `expected`")
            && stderr.contains("line 4"),
        "{stderr}"
    );
    let empty = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let out = riskgate(&["test", "-c", &shipped_config(), path_str(empty.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no test files"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_json_carries_the_decision_fields() {
    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--json",
        "--method",
        "POST",
        "--path",
        "/accounts/a1/withdraw",
        "--body",
        r#"{"amount": 120, "currency": "USD"}"#,
        "--principal",
        "u1",
        "--risk-score",
        "55",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let d: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("not JSON ({e}): {}", text(&out.stdout)),
    };
    assert_eq!(d["decision"], "policy_deny");
    assert_eq!(d["status"], 403);
    assert_eq!(d["band"], "medium");
    assert!(
        d["route"].as_str().is_some_and(|r| r.contains("withdraw")),
        "{d}"
    );
    assert_eq!(d["principal"], "User::\"u1\"");
    assert_eq!(d["policies"], serde_json::json!([]));

    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--json",
        "--method",
        "GET",
        "--path",
        "/accounts/a1/balance",
        "--principal",
        "u1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(d["policies"][0]["id"], "account-owner-read");
    assert!(
        d["policies"][0]["origin"]
            .as_str()
            .is_some_and(|o| o.ends_with("accounts.cedar:3")),
        "{d}"
    );
}

#[test]
fn check_input_decides_an_envoy_check_request_on_the_path_without_query() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let input = dir.path().join("check.json");
    let write = |method: &str| {
        let json = format!(
            r#"{{"attributes":{{
                "source":{{"address":{{"socketAddress":{{"address":"10.1.2.3","portValue":50000}}}}}},
                "request":{{"http":{{"id":"1","method":"{method}","path":"/accounts/a1/balance?currency=eur",
                    "host":"bank.example:8080","headers":{{":authority":"bank.example:8080"}}}}}},
                "metadataContext":{{"filterMetadata":{{"envoy.filters.http.jwt_authn":
                    {{"jwt_payload":{{"sub":"u1"}}}}}}}}}}}}"#
        );
        if let Err(e) = std::fs::write(&input, json) {
            panic!("write: {e}");
        }
    };
    write("GET");
    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--input",
        path_str(&input),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("principal: User::\"u1\"\n"), "{stdout}");
    assert!(
        stdout.contains("policy:    account-owner-read ("),
        "{stdout}"
    );
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    // the method as sent, lower case: no route, and a hint on stderr
    write("get");
    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--input",
        path_str(&input),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("decision:  no_route\n"));
    assert!(
        text(&out.stderr).contains("methods are case-sensitive: did you mean GET?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_strips_the_query_and_hints_at_method_case() {
    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--method",
        "get",
        "--path",
        "/accounts/a1/balance?x=1",
        "--principal",
        "u1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean GET?"),
        "{}",
        text(&out.stderr)
    );
    let out = riskgate(&[
        "check",
        "-c",
        &shipped_config(),
        "--method",
        "GET",
        "--path",
        "/accounts/a1/balance?x=1",
        "--principal",
        "u1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stderr).is_empty());
}

/// deploy/riskgate.yaml with `context.headers` naming `x-tenant` (any client can send it) and
/// `x-jwt-payload` (the shipped Envoy's jwt_authn writes it), and a schema declaring both.
fn context_headers_config(dir: &std::path::Path) -> String {
    let policies = dir.join("policies");
    if let Err(e) = std::fs::create_dir_all(&policies) {
        panic!("mkdir: {e}");
    }
    for entry in std::fs::read_dir(repo("policies"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if !entry.path().is_file() {
            continue;
        }
        let mut content = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if entry.file_name() == "schema.cedarschema" {
            content = content.replace(
                "\"ip\"?: __cedar::ipaddr,",
                "\"ip\"?: __cedar::ipaddr,\n  \"headers\"?: { \"tenant\"?: String, \"payload\"?: String },",
            );
        }
        if let Err(e) = std::fs::write(policies.join(entry.file_name()), content) {
            panic!("write policy: {e}");
        }
    }
    let text = std::fs::read_to_string(repo("deploy/riskgate.yaml")).unwrap_or_default();
    let text = text.replace("../policies", &policies.to_string_lossy()).replace(
        "context:\n",
        "context:\n  headers: [{ name: X-Tenant, as: tenant }, { name: x-jwt-payload, as: payload, max_len: 4096 }]\n",
    );
    let path = dir.join("riskgate.yaml");
    if let Err(e) = std::fs::write(&path, text) {
        panic!("write config: {e}");
    }
    path.to_string_lossy().into_owned()
}

#[test]
fn validate_warns_of_a_context_header_the_proxy_lets_a_client_send() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let config = context_headers_config(dir.path());
    let envoy = repo("deploy/envoy/envoy.yaml");
    let out = riskgate(&[
        "validate",
        "-c",
        &config,
        "--envoy-config",
        path_str(&envoy),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: context.headers[0] `x-tenant` (context.request.headers.tenant) is client-controlled"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("context.headers[1]"),
        "jwt_authn writes x-jwt-payload: {stderr}"
    );
    // without proxy configs nothing shows who writes a header: no warning
    let out = riskgate(&["validate", "-c", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("client-controlled"));
}

/// The policies guide's config (examples/guide): a typed `x-api-version` header, CIDR
/// policies, a workload policy.
fn guide_config() -> String {
    repo("examples/guide/riskgate.yaml")
        .to_string_lossy()
        .into_owned()
}

/// `riskgate check -c <guide config>` with `args`: (exit code, stdout, stderr).
fn guide_check(args: &[&str]) -> (Option<i32>, String, String) {
    let config = guide_config();
    let mut all = vec!["check", "-c", &config];
    all.extend_from_slice(args);
    let out = riskgate(&all);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn check_header_flag_feeds_a_typed_context_header() {
    let statement = |extra: &[&str]| {
        let mut args = vec!["--method", "GET", "--path", "/accounts/a1/statement"];
        args.extend_from_slice(&["--principal", "u1"]);
        args.extend_from_slice(extra);
        guide_check(&args)
    };
    // the name is matched case-insensitively, the value typed as a Long
    let (code, stdout, stderr) = statement(&["--header", "X-Api-Version: 2"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("policy:    owner-reads ("), "{stdout}");
    let (code, stdout, _) = statement(&["--header", "x-api-version: 1"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("decision:  policy_deny\n"), "{stdout}");
    assert!(
        stdout.contains("policy:    statements-need-api-v2 ("),
        "{stdout}"
    );
    let (code, stdout, _) = statement(&[]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("decision:  policy_deny\n"), "{stdout}");
    // not a Long: a malformed request, as under serve
    let (code, stdout, _) = statement(&["--header", "x-api-version: v2"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("decision:  malformed_request\n"),
        "{stdout}"
    );
    // a name given twice is joined as Envoy joins it (`2,3`), which a Long refuses
    let (code, stdout, _) = statement(&[
        "--header",
        "x-api-version: 2",
        "--header",
        "x-api-version: 3",
    ]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("decision:  malformed_request\n"),
        "{stdout}"
    );
}

#[test]
fn check_ip_flag_is_the_client_address_for_cidr_policies() {
    let reports = |ip: Option<&str>| {
        let mut args = vec![
            "--method",
            "GET",
            "--path",
            "/reports/daily",
            "--principal",
            "u1",
        ];
        if let Some(ip) = ip {
            args.extend_from_slice(&["--ip", ip]);
        }
        guide_check(&args)
    };
    // an IPv4 client as a dual-stack listener reports it (IPv4-mapped IPv6) is that client
    for inside in ["10.1.2.3", "::ffff:10.1.2.3"] {
        let (code, stdout, stderr) = reports(Some(inside));
        assert_eq!(code, Some(0), "{inside}: {stdout}{stderr}");
        assert!(
            stdout.contains("policy:    reports-from-the-office-network ("),
            "{stdout}"
        );
    }
    for outside in [Some("203.0.113.7"), Some("2001:db8::1"), None] {
        let (code, stdout, _) = reports(outside);
        assert_eq!(code, Some(2), "{outside:?}: {stdout}");
        assert!(stdout.contains("decision:  policy_deny\n"), "{stdout}");
    }
    // a forbid on a range beats the low band's permit
    let withdraw = |ip: &str| {
        guide_check(&[
            "--method",
            "POST",
            "--path",
            "/accounts/a1/withdraw",
            "--principal",
            "u1",
            "--risk-score",
            "12",
            "--ip",
            ip,
        ])
    };
    let (code, stdout, _) = withdraw("198.51.100.23");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("policy:    no-writes-from-the-test-range ("),
        "{stdout}"
    );
    let (code, stdout, _) = withdraw("198.51.101.23");
    assert_eq!(code, Some(0), "{stdout}");
}

#[test]
fn check_source_principal_flag_names_the_calling_workload() {
    let settle = |principal: &str| {
        guide_check(&[
            "--method",
            "POST",
            "--path",
            "/internal/settle",
            "--source-principal",
            principal,
        ])
    };
    let (code, stdout, stderr) = settle("spiffe://cluster.local/ns/bank/sa/payments");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("policy:    settle-only-payments ("),
        "{stdout}"
    );
    for other in [
        "spiffe://cluster.local/ns/web/sa/frontend",
        // a trust domain the config does not list: no `context.source`
        "spiffe://evil.example/ns/bank/sa/payments",
        "spiffe://cluster.local/ns/bank/sa/payments/extra",
        "",
    ] {
        let (code, stdout, _) = settle(other);
        assert_eq!(code, Some(2), "{other}: {stdout}");
        assert!(stdout.contains("decision:  policy_deny\n"), "{stdout}");
    }
}

#[test]
fn check_flags_override_and_add_to_an_input_check_request() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let input = dir.path().join("check.json");
    let json = r#"{"attributes":{
        "source":{"address":{"socketAddress":{"address":"203.0.113.7"}},
                  "principal":"spiffe://cluster.local/ns/web/sa/frontend"},
        "request":{"http":{"method":"GET","path":"/reports/daily",
            "headers":{"X-Api-Version":"1"}}},
        "metadataContext":{"filterMetadata":{"envoy.filters.http.jwt_authn":
            {"jwt_payload":{"sub":"u1"}}}}}}"#;
    if let Err(e) = std::fs::write(&input, json) {
        panic!("write: {e}");
    }
    let input = path_str(&input).to_owned();
    let (code, stdout, _) = guide_check(&["--input", &input]);
    assert_eq!(code, Some(2), "{stdout}");
    let (code, stdout, stderr) = guide_check(&["--input", &input, "--ip", "10.9.9.9"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("principal: User::\"u1\"\n"), "{stdout}");

    // the same input on the settle route: --source-principal replaces the input's
    let settle = json.replace(
        "GET\",\"path\":\"/reports/daily",
        "POST\",\"path\":\"/internal/settle",
    );
    if let Err(e) = std::fs::write(&input, settle) {
        panic!("write: {e}");
    }
    let (code, stdout, _) = guide_check(&["--input", &input]);
    assert_eq!(code, Some(2), "{stdout}");
    let (code, stdout, stderr) = guide_check(&[
        "--input",
        &input,
        "--source-principal",
        "spiffe://cluster.local/ns/bank/sa/payments",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let d: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
    assert_eq!(d["policies"][0]["id"], "settle-only-payments", "{stdout}");

    // --header replaces the input's header of that name, whatever its case
    let statement = json.replace("/reports/daily", "/accounts/a1/statement");
    if let Err(e) = std::fs::write(&input, statement) {
        panic!("write: {e}");
    }
    let (code, stdout, _) = guide_check(&["--input", &input]);
    assert_eq!(code, Some(2), "{stdout}");
    let (code, stdout, stderr) = guide_check(&["--input", &input, "--header", "x-api-version: 2"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn check_bad_flag_values_exit_1_naming_the_flag() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let missing = dir.path().join("missing.json");
    let at_missing = format!("@{}", path_str(&missing));
    let big = format!(r#"{{"memo":"{}"}}"#, "x".repeat(70_000));
    let cases: [(&[&str], &str); 7] = [
        (
            &["--ip", "10.0.0.256"],
            "--ip `10.0.0.256` is not an ip address",
        ),
        (
            &["--header", "x-api-version 2"],
            "--header `x-api-version 2`",
        ),
        (&["--header", "x api: 2"], "--header `x api: 2`"),
        (&["--body", "{amount: 1}"], "--body is not JSON"),
        (&["--body", &at_missing], "--body: cannot read `"),
        // over `limits.max_body_bytes` (64 KiB): refused as serve refuses it
        (&["--body", &big], "exceeds a limit: BodyBytes"),
        // a usage error is not "not allowed" (2) either
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["--method", "POST", "--path", "/accounts/a1/withdraw"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = guide_check(&args);
        assert_eq!(code, Some(1), "{extra:?}: {stdout}{stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
    // a good body, inline or from a file, is accepted (nothing reads it yet on this route)
    let body = dir.path().join("body.json");
    if let Err(e) = std::fs::write(&body, r#"{"amount": 120.00, "currency": "USD"}"#) {
        panic!("write: {e}");
    }
    for arg in [
        format!("@{}", path_str(&body)),
        r#"{"amount": 1}"#.to_owned(),
    ] {
        let (code, stdout, stderr) = guide_check(&[
            "--method",
            "POST",
            "--path",
            "/accounts/a1/withdraw",
            "--principal",
            "u1",
            "--risk-score",
            "12",
            "--body",
            &arg,
        ]);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
    }
}

/// A body-mapped route (the shipped withdraw and transfer routes) behind an Envoy config that
/// sends no body with the Check would deny every withdrawal: `validate` names the file, and
/// the shipped config (8 KiB on those routes) passes.
#[test]
fn validate_fails_when_the_envoy_config_sends_no_body_to_body_mapped_routes() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let shipped = repo("deploy/envoy/envoy.yaml");
    let envoy_text = match std::fs::read_to_string(&shipped) {
        Ok(t) => t,
        Err(e) => panic!("read {}: {e}", shipped.display()),
    };
    assert!(
        envoy_text.contains("with_request_body:"),
        "the shipped config sends bodies"
    );
    // the shipped per-route body setting, dropped (its three keys with it)
    let stripped: String = envoy_text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("with_request_body:")
                || t.starts_with("max_request_bytes:")
                || t.starts_with("allow_partial_message:")
                || t.starts_with("pack_as_bytes:"))
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("check_settings:\n", "check_settings: {}\n");
    let without = dir.path().join("envoy-no-body.yaml");
    if let Err(e) = std::fs::write(&without, stripped) {
        panic!("write: {e}");
    }
    let config = repo("deploy/riskgate.yaml");
    let out = riskgate(&[
        "validate",
        "-c",
        path_str(&config),
        "--envoy-config",
        path_str(&without),
    ]);
    let stderr = text_of(&out);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("envoy-no-body.yaml") && stderr.contains("sends no body"),
        "{stderr}"
    );
    let out = riskgate(&[
        "validate",
        "-c",
        path_str(&config),
        "--envoy-config",
        path_str(&shipped),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    assert!(text(&out.stdout).contains("body-mapped routes get up to 8192 bytes"));
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}
