//! `riskgate test [DIR]`: policy tests kept beside the policies and run in CI, like
//! `opa test`. Every `*_test.yaml` (or `*_test.yml`) under DIR is a list of cases; each case
//! is decided like `serve` would ([`super::scripted`]) and its status — and, when given, its
//! deny reason and a determining policy — compared with what the case expects. The report
//! also names the policies no case had among its determining policies.
//!
//! ```yaml
//! cases:
//!   - name: owner withdraws at low risk
//!     request: { method: POST, path: /accounts/a1/withdraw }   # host, headers optional
//!     identity: { sub: u1 }          # verified claims; omit for an anonymous request
//!     risk: { score: 12 }            # or `risk: outage`; omit for no action token
//!     expect: { status: 200, policy: account-owner-write-low-risk }
//! ```

use super::scripted::{self, ScriptError, ScriptedRecommendation, ScriptedRisk};
use crate::clock::now_ms;
use crate::config::Config;
use crate::request::AccessRequest;
use crate::risk::RecommendationType;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The cases, run in order, each with a fresh state.
    pub cases: Vec<Case>,
}

/// One request and the answer it must get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report.
    pub name: String,
    /// The HTTP request.
    pub request: RequestSpec,
    /// Verified claims (the config's `identity.claim` names the principal); `None` = anonymous.
    #[serde(default)]
    pub identity: Option<Map<String, Value>>,
    /// Sets the `auth_time` claim this many seconds before now (for step-up's `max_age_s`).
    #[serde(default)]
    pub auth_age_s: Option<u32>,
    /// What the risk API says; `None` = no action token.
    #[serde(default)]
    pub risk: Option<RiskSpec>,
    /// The expected answer.
    pub expect: Expect,
}

/// The request as the proxy would see it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// HTTP method (case-sensitive, as sent).
    pub method: String,
    /// Path; a query after `?` is stripped like `serve` does.
    pub path: String,
    /// Host (for host-scoped routes).
    #[serde(default)]
    pub host: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON request body (written as YAML), sent as `application/json` unless `headers`
    /// names another `content-type`; for routes with `body` (`context.transaction`).
    #[serde(default)]
    pub body: Option<Value>,
}

/// `risk: outage` or a recommendation.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RiskSpec {
    /// The word `outage`.
    Outage(OutageWord),
    /// A recommendation.
    Answer(RiskAnswer),
}

/// The single word `outage`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutageWord {
    /// The risk API is down.
    Outage,
}

/// A recommendation; binding fields default so the recommendation fits the request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAnswer {
    /// `risk_score`, 0–100.
    pub score: f64,
    /// TRUST, ALLOW (default), CHALLENGE or DENY.
    #[serde(default = "allow")]
    pub recommendation: String,
    /// `challenge_type` for CHALLENGE.
    #[serde(default)]
    pub challenge_type: Option<String>,
    /// `reasons`.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Default: the route's first `action_types`.
    #[serde(default)]
    pub action_type: Option<String>,
    /// Default: the identity's principal claim.
    #[serde(default)]
    pub user_id: Option<String>,
}

fn allow() -> String {
    "ALLOW".into()
}

/// The answer a case must get.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// HTTP status under `mode: enforce` (200, 401, 403, 429, 503).
    pub status: u16,
    /// A policy id that must be among the determining policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The decision label (`allow`, `policy_deny`, `risk_high`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why the tests could not be run (a failing case is not an error).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// DIR or a file cannot be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A test file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (with line and column when known).
        message: String,
    },
    /// No test file found.
    #[error("no test files (`*_test.yaml`) under `{0}`")]
    NoTests(PathBuf),
    /// A case could not be decided.
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Test file.
    pub file: PathBuf,
    /// Case name.
    pub name: String,
    /// What was expected.
    pub expect: Expect,
    /// Status under enforcement.
    pub status: u16,
    /// Decision label.
    pub reason: &'static str,
    /// Determining policies.
    pub policies: Vec<String>,
    /// Hint for a likely mistake in the case (e.g. the method's case).
    pub hint: Option<String>,
}

impl CaseResult {
    /// The decision meets every expectation given.
    pub fn passed(&self) -> bool {
        self.status == self.expect.status
            && self
                .expect
                .reason
                .as_deref()
                .is_none_or(|r| r == self.reason)
            && self
                .expect
                .policy
                .as_ref()
                .is_none_or(|p| self.policies.contains(p))
    }
}

/// All results, and the policies no case exercised.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// Cases in file and case order.
    pub cases: Vec<CaseResult>,
    /// `(id, file:line)` of live policies never among a case's determining policies.
    pub unexercised: Vec<(String, String)>,
}

impl TestReport {
    /// Number of failing cases.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed()).count()
    }

    /// One line per case, a summary, and the unexercised policies.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.cases {
            let got = format!("{} {}{}", c.status, c.reason, policies_text(&c.policies));
            if c.passed() {
                out.push_str(&format!("PASS  {}: {} ({got})\n", c.file.display(), c.name));
            } else {
                let mut want = format!("{}", c.expect.status);
                if let Some(r) = &c.expect.reason {
                    want.push_str(&format!(" {r}"));
                }
                if let Some(p) = &c.expect.policy {
                    want.push_str(&format!(" by policy {p}"));
                }
                out.push_str(&format!(
                    "FAIL  {}: {}: expected {want}, got {got}\n",
                    c.file.display(),
                    c.name
                ));
                if let Some(h) = &c.hint {
                    out.push_str(&format!("      hint: {h}\n"));
                }
            }
        }
        let failed = self.failed();
        out.push_str(&format!(
            "{} cases: {} passed, {failed} failed\n",
            self.cases.len(),
            self.cases.len() - failed
        ));
        if self.unexercised.is_empty() {
            out.push_str("every policy was exercised by a test\n");
        } else {
            let list: Vec<String> = self
                .unexercised
                .iter()
                .map(|(id, at)| format!("{id} ({at})"))
                .collect();
            out.push_str(&format!(
                "policies no test exercised: {}\n",
                list.join(", ")
            ));
        }
        out
    }

    /// The same as JSON, for CI tooling.
    pub fn to_json(&self) -> Value {
        let cases: Vec<Value> = self
            .cases
            .iter()
            .map(|c| {
                json!({
                    "file": c.file.display().to_string(),
                    "name": c.name,
                    "passed": c.passed(),
                    "expected": c.expect,
                    "got": { "status": c.status, "reason": c.reason, "policies": c.policies },
                    "hint": c.hint,
                })
            })
            .collect();
        let unexercised: Vec<Value> = self
            .unexercised
            .iter()
            .map(|(id, at)| json!({ "id": id, "origin": at }))
            .collect();
        json!({
            "passed": self.cases.len() - self.failed(),
            "failed": self.failed(),
            "cases": cases,
            "unexercised": unexercised,
        })
    }
}

fn policies_text(policies: &[String]) -> String {
    if policies.is_empty() {
        String::new()
    } else {
        format!(" by {}", policies.join(", "))
    }
}

/// The `*_test.yaml` / `*_test.yml` files under `dir`, recursively, sorted.
pub fn find_test_files(dir: &Path) -> Result<Vec<PathBuf>, TestError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let read = |source| TestError::Read {
            path: d.clone(),
            source,
        };
        for entry in std::fs::read_dir(&d).map_err(read)? {
            let path = entry.map_err(read)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                pending.push(path);
            } else if name.ends_with("_test.yaml") || name.ends_with("_test.yml") {
                found.push(path);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(TestError::NoTests(dir.to_path_buf()));
    }
    Ok(found)
}

/// Reads one test file (strictly: unknown fields and bad values fail with the line).
pub fn read_test_file(path: &Path) -> Result<TestFile, TestError> {
    let text = std::fs::read_to_string(path).map_err(|source| TestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| TestError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: TestFile = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    for case in &file.cases {
        if let Some(RiskSpec::Answer(r)) = &case.risk {
            if RecommendationType::parse(&r.recommendation).is_none() {
                return Err(invalid(format!(
                    "case `{}`: recommendation `{}` is not TRUST, ALLOW, CHALLENGE or DENY",
                    case.name, r.recommendation
                )));
            }
            if !(0.0..=100.0).contains(&r.score) {
                return Err(invalid(format!(
                    "case `{}`: score `{}` is outside 0..=100",
                    case.name, r.score
                )));
            }
        }
    }
    Ok(file)
}

/// Runs every test file under `dir` against the config's routes and policies.
pub async fn run(config: &Config, dir: &Path) -> Result<TestReport, TestError> {
    let files = find_test_files(dir)?;
    let mut report = TestReport::default();
    let mut exercised = BTreeSet::new();
    let mut all_policies = Vec::new();
    for path in files {
        let file = read_test_file(&path)?;
        for case in file.cases {
            let (result, snapshot) = run_case(config, &path, case).await?;
            exercised.extend(result.policies.iter().cloned());
            if all_policies.is_empty() {
                all_policies = snapshot
                    .policies
                    .origins()
                    .into_iter()
                    .map(|(id, at)| (id.to_owned(), at.to_owned()))
                    .collect();
            }
            report.cases.push(result);
        }
    }
    report.unexercised = all_policies
        .into_iter()
        .filter(|(id, _)| !exercised.contains(id))
        .collect();
    Ok(report)
}

async fn run_case(
    config: &Config,
    file: &Path,
    case: Case,
) -> Result<(CaseResult, std::sync::Arc<crate::policy::Snapshot>), TestError> {
    let (path, query) = match case.request.path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (case.request.path.clone(), None),
    };
    let mut req = AccessRequest::new(&case.request.method, &path);
    req.query = query;
    req.host = case.request.host.to_ascii_lowercase();
    req.headers = case
        .request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if let Some(body) = &case.request.body {
        req.headers
            .entry("content-type".into())
            .or_insert_with(|| "application/json".into());
        req.body = Some(body.to_string().into_bytes());
    }
    let mut subject = None;
    if let Some(mut claims) = case.identity {
        if let Some(age) = case.auth_age_s {
            claims.insert(
                "auth_time".into(),
                Value::from(now_ms() / 1000 - i64::from(age)),
            );
        }
        subject = claims
            .get(&config.identity.claim)
            .and_then(Value::as_str)
            .map(str::to_owned);
        scripted::attach_identity(config, &mut req, claims)?;
    }
    let risk = match case.risk {
        None => ScriptedRisk::NoToken,
        Some(RiskSpec::Outage(_)) => ScriptedRisk::Outage,
        Some(RiskSpec::Answer(r)) => ScriptedRisk::Answer(ScriptedRecommendation {
            score: r.score,
            kind: RecommendationType::parse(&r.recommendation).unwrap_or(RecommendationType::Deny),
            challenge_type: r.challenge_type,
            reasons: r.reasons,
            action_type: r.action_type,
            user_id: r.user_id,
        }),
    };
    let (d, snapshot) = scripted::decide(config, req, subject.as_deref(), &risk).await?;
    let result = CaseResult {
        file: file.to_path_buf(),
        name: case.name,
        expect: case.expect,
        status: d.verdict.http_status(),
        reason: d.verdict.label(),
        policies: d.policies,
        hint: super::check_input::method_hint(&case.request.method),
    };
    Ok((result, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(yaml: &str) -> Result<(tempfile::TempDir, PathBuf), std::io::Error> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x_test.yaml");
        std::fs::write(&path, yaml)?;
        Ok((dir, path))
    }

    fn case(risk: &str) -> String {
        format!(
            "cases:\n  - name: c\n    request: {{ method: GET, path: / }}\n    risk: {risk}\n    expect: {{ status: 200 }}\n"
        )
    }

    #[test]
    fn risk_is_an_outage_or_a_valid_recommendation() -> Result<(), std::io::Error> {
        let (_d, path) = file_with(&case("outage"))?;
        assert!(matches!(
            read_test_file(&path).map(|f| f.cases[0].risk.clone()),
            Ok(Some(RiskSpec::Outage(_)))
        ));
        let (_d, path) = file_with(&case("{ score: 12, recommendation: challenge }"))?;
        assert!(read_test_file(&path).is_ok());
        for bad in [
            "{ score: 12, recommendation: MAYBE }",
            "{ score: 101 }",
            "down",
        ] {
            let (_d, path) = file_with(&case(bad))?;
            assert!(
                matches!(read_test_file(&path), Err(TestError::Invalid { .. })),
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_case_passes_only_when_every_given_expectation_holds() {
        let result = |expect: Expect| CaseResult {
            file: PathBuf::from("f"),
            name: "n".into(),
            expect,
            status: 403,
            reason: "policy_deny",
            policies: vec!["p1".into()],
            hint: None,
        };
        let expect = |status, policy: Option<&str>, reason: Option<&str>| Expect {
            status,
            policy: policy.map(str::to_owned),
            reason: reason.map(str::to_owned),
        };
        assert!(result(expect(403, None, None)).passed());
        assert!(result(expect(403, Some("p1"), Some("policy_deny"))).passed());
        assert!(!result(expect(200, None, None)).passed());
        assert!(!result(expect(403, Some("p2"), None)).passed());
        assert!(!result(expect(403, None, Some("risk_high"))).passed());
    }
}
