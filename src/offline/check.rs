//! `riskgate check`: one request decided offline ([`super::scripted`]), printed for people
//! or as JSON (`--json`); the request from flags or from a CheckRequest JSON (`--input`).

use super::check_input;
use super::scripted::{self, ScriptedRecommendation, ScriptedRisk};
use crate::config::Config;
use crate::decision::Decision;
use crate::identity::Principal;
use crate::policy::Snapshot;
use crate::request::AccessRequest;
use crate::risk::RecommendationType;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// What `riskgate check` was asked.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    /// HTTP method (ignored with `input`).
    pub method: String,
    /// Path, possibly with a query (ignored with `input`).
    pub path: String,
    /// Host (ignored with `input`).
    pub host: String,
    /// A CheckRequest JSON file.
    pub input: Option<PathBuf>,
    /// Principal id; `None` = anonymous (or the input's own identity).
    pub principal: Option<String>,
    /// Extra verified claims.
    pub claims: Map<String, Value>,
    /// Risk score; `None` = no action token.
    pub risk_score: Option<f64>,
    /// Recommendation type.
    pub recommendation: RecommendationType,
    /// Challenge type for CHALLENGE.
    pub challenge_type: Option<String>,
    /// Print JSON.
    pub json: bool,
    /// Request body, as `application/json` (ignored with `input`, whose body is its own).
    pub body: Option<String>,
}

/// Why a check could not be made (a denial is not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The `--input` file cannot be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `--input` file is not a usable CheckRequest.
    #[error("{path}: {source}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: check_input::InputError,
    },
    /// The decision could not be made.
    #[error(transparent)]
    Script(#[from] scripted::ScriptError),
    /// The JSON output could not be written.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decides and prints; exit 0 on allow, 2 on a denial (errors are returned).
pub async fn run(config: &Config, args: CheckArgs) -> Result<ExitCode, CheckError> {
    let mut req = match &args.input {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|source| CheckError::Read {
                path: file.clone(),
                source,
            })?;
            check_input::access_request(config, &text).map_err(|source| CheckError::Input {
                path: file.clone(),
                source,
            })?
        }
        None => {
            let (path, query) = match args.path.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (args.path.clone(), None),
            };
            let mut req = AccessRequest::new(&args.method, &path);
            req.query = query;
            req.host = args.host.to_ascii_lowercase();
            if let Some(body) = &args.body {
                req.headers
                    .insert("content-type".into(), "application/json".into());
                req.body = Some(body.clone().into_bytes());
            }
            req
        }
    };
    if let Some(hint) = check_input::method_hint(&req.method) {
        eprintln!("hint: {hint}");
    }
    if let Some(id) = &args.principal {
        let mut claims = args.claims.clone();
        claims.insert(config.identity.claim.clone(), Value::String(id.clone()));
        scripted::attach_identity(config, &mut req, claims)?;
    }
    let subject = match crate::identity::principal(&config.identity, &req) {
        Ok(Principal::User { subject, .. }) => Some(subject),
        _ => None,
    };
    let risk = match args.risk_score {
        None => ScriptedRisk::NoToken,
        Some(score) => ScriptedRisk::Answer(ScriptedRecommendation {
            score,
            kind: args.recommendation,
            challenge_type: args.challenge_type.clone(),
            reasons: Vec::new(),
            action_type: None,
            user_id: None,
        }),
    };
    let (d, snapshot) = scripted::decide(config, req, subject.as_deref(), &risk).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&d, &snapshot))?);
    } else {
        print!("{}", render_text(&d, &snapshot));
    }
    Ok(if d.verdict.http_status() == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The decision for people, one `field: value` per line.
pub fn render_text(d: &Decision, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<10} {v}\n"));
    line("decision:", d.verdict.label());
    line("status:", &d.verdict.http_status().to_string());
    line("band:", &d.band.to_string());
    line("route:", d.route.as_deref().unwrap_or("-"));
    line("principal:", d.principal.as_deref().unwrap_or("-"));
    line("action:", d.action.as_deref().unwrap_or("-"));
    line("resource:", d.resource.as_deref().unwrap_or("-"));
    if d.policies.is_empty() {
        line("policies:", "(none)");
    }
    for id in &d.policies {
        let at = snapshot.policies.origin(id).unwrap_or("?");
        line("policy:", &format!("{id} ({at})"));
    }
    if let (Some(shadow), Some(set)) = (&d.shadow, &snapshot.shadow) {
        let word = if shadow.shadow_allowed {
            "allow"
        } else {
            "deny"
        };
        let agree = if shadow.disagrees() {
            "DISAGREES"
        } else {
            "agrees"
        };
        line(
            "shadow:",
            &format!("{word} ({agree} with the live policies)"),
        );
        for id in &shadow.policies {
            let at = set.origin(id).unwrap_or("?");
            out.push_str(&format!("shadow policy: {id} ({at})\n"));
        }
    }
    out
}

/// The decision as JSON (`riskgate check --json`).
pub fn to_json(d: &Decision, snapshot: &Snapshot) -> Value {
    let policies: Vec<Value> = d
        .policies
        .iter()
        .map(|id| json!({ "id": id, "origin": snapshot.policies.origin(id) }))
        .collect();
    let shadow = match (&d.shadow, &snapshot.shadow) {
        (Some(s), Some(set)) => json!({
            "allowed": s.shadow_allowed,
            "disagrees": s.disagrees(),
            "policies": s.policies.iter()
                .map(|id| json!({ "id": id, "origin": set.origin(id) }))
                .collect::<Vec<_>>(),
        }),
        _ => Value::Null,
    };
    json!({
        "decision": d.verdict.label(),
        "status": d.verdict.http_status(),
        "band": d.band.to_string(),
        "route": d.route,
        "principal": d.principal,
        "action": d.action,
        "resource": d.resource,
        "policies": policies,
        "shadow": shadow,
    })
}
