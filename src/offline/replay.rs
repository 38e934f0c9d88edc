//! `riskgate replay` — change impact of a candidate policy set on recorded traffic.
//!
//! Each audit line that reached the Cedar stage carries the question Cedar was asked
//! (`input`, see [`crate::audit::input`]). Replay puts that same question to the candidate
//! set (with the config's schema and entities) and compares Cedar's answers: what would
//! change from allow to deny and back, by route and by deciding policy, with sample
//! decision ids. Replay reuses the recorded action and resource: a candidate set that also
//! changes routes is not modelled.
//!
//! Nothing is guessed. A line whose decision ended before Cedar (hygiene, no route,
//! identity, action token, risk gate, binding, budget) is "not affected": policies do not
//! decide it. A line Cedar cannot be asked again — risk skipped (the risk API was never
//! asked, so the context is unknown), a fail mode applied, no `input` recorded, or an
//! input left incomplete to keep the line bounded — is counted by cause.
//!
//! The comparison is Cedar's answer against Cedar's answer: a line recorded as
//! `step_up_required` had a Cedar allow, and turns into a deny if the candidate denies;
//! a deny turning into an allow would still face the stages after Cedar (step-up, use
//! counting), which replay does not run.

use crate::audit::input::{CedarInput, CedarOutcome};
use crate::config::Config;
use crate::policy::{PolicyError, PolicyInput, PolicySnapshot};
use crate::routes::RouteTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Why replay cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The candidate set (or the config's schema/entities/routes) did not load.
    #[error("candidate policy set rejected:\n{0}")]
    Policies(#[from] PolicyError),
    /// The config's routes or hosts are invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The audit file could not be read.
    #[error("cannot read audit log `{path}`")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The fields of an audit line replay reads (others are ignored).
#[derive(Debug, Deserialize)]
struct RecordedLine {
    decision_id: String,
    route: Option<String>,
    action: Option<String>,
    decision: String,
    #[serde(default)]
    policies: Vec<String>,
    fail_mode: Option<serde_json::Value>,
    risk: Option<String>,
    input: Option<CedarInput>,
}

/// Decision labels that come from the Cedar stage or after it: only these were put to
/// Cedar, so only these can lack an `input` for a reason other than "decided before".
const REACHED_CEDAR: &[&str] = &[
    "allow",
    "policy_deny",
    "policy_error",
    "step_up_required",
    "binding_used_up",
    "use_ledger_full",
    "principal_uses_full",
    "state_unavailable",
];

/// Why a line cannot be re-decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CannotReason {
    /// `risk: skipped`: the risk context was never known.
    RiskSkipped,
    /// A fail mode decided the band (risk API outage).
    FailMode,
    /// The line reached Cedar but has no `input` (recorded by an older riskgate).
    InputNotRecorded,
    /// The input was cut to keep the line bounded.
    InputTruncated,
    /// The input names something the candidate cannot be asked about.
    InputUnusable,
    /// Not a JSON audit line.
    Unparsable,
}

impl CannotReason {
    /// Label for the report.
    pub fn as_str(self) -> &'static str {
        match self {
            CannotReason::RiskSkipped => "risk_skipped",
            CannotReason::FailMode => "fail_mode",
            CannotReason::InputNotRecorded => "input_not_recorded",
            CannotReason::InputTruncated => "input_truncated",
            CannotReason::InputUnusable => "input_unusable",
            CannotReason::Unparsable => "unparsable_line",
        }
    }
}

/// Direction of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Was allowed by Cedar, the candidate denies.
    AllowToDeny,
    /// Was denied by Cedar, the candidate allows.
    DenyToAllow,
}

impl Change {
    /// `allow→deny` / `deny→allow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::AllowToDeny => "allow→deny",
            Change::DenyToAllow => "deny→allow",
        }
    }
}

/// One group of changed decisions: same direction, route and deciding policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeGroup {
    /// Direction.
    pub change: Change,
    /// Route label.
    pub route: String,
    /// The policies that decided before (recorded).
    pub before: Vec<String>,
    /// The candidate's deciding policies.
    pub after: Vec<String>,
    /// How many decisions.
    pub count: u64,
    /// Up to `samples` decision ids.
    pub sample_ids: Vec<String>,
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Lines read (blank lines skipped).
    pub total: u64,
    /// Lines put to the candidate set.
    pub redecided: u64,
    /// Re-decided with the same Cedar answer.
    pub unchanged: u64,
    /// Cedar allow → candidate deny.
    pub allow_to_deny: u64,
    /// Cedar deny → candidate allow.
    pub deny_to_allow: u64,
    /// Decided before the Cedar stage: policies do not change them.
    pub not_affected: u64,
    /// Lines not re-decided, by cause.
    pub cannot_redecide: BTreeMap<&'static str, u64>,
    /// Changes grouped by direction, route and policies.
    pub changes: Vec<ChangeGroup>,
}

/// Replays `audit` (JSON lines) against the policy set in `candidate_dir`, with the
/// schema, entities and routes of `config`; up to `samples` decision ids per change group.
pub fn replay_file(
    config: &Config,
    candidate_dir: &Path,
    audit: &Path,
    samples: usize,
) -> Result<ReplayReport, ReplayError> {
    let read_err = |source| ReplayError::Read {
        path: audit.display().to_string(),
        source,
    };
    let file = std::fs::File::open(audit).map_err(read_err)?;
    let candidate = load_candidate(config, candidate_dir)?;
    let mut replay = Replay::new(&candidate, samples);
    for line in std::io::BufReader::new(file).lines() {
        replay.line(&line.map_err(read_err)?);
    }
    Ok(replay.finish())
}

/// The candidate set with the config's schema and entities, its routes' actions and
/// resource types checked against the schema as `validate` does.
pub fn load_candidate(config: &Config, dir: &Path) -> Result<PolicySnapshot, ReplayError> {
    let routes = RouteTable::build(&config.routes, &config.hosts, config.default)?;
    Ok(PolicySnapshot::load(
        dir,
        &config.policies.schema,
        config.policies.entities.as_deref(),
        routes.routes(),
    )?)
}

/// Replay in progress, one line at a time.
#[derive(Debug)]
pub struct Replay<'a> {
    candidate: &'a PolicySnapshot,
    samples: usize,
    report: ReplayReport,
    groups: BTreeMap<(Change, String, Vec<String>, Vec<String>), ChangeGroup>,
}

impl<'a> Replay<'a> {
    /// Replay against `candidate`, keeping `samples` ids per change group.
    pub fn new(candidate: &'a PolicySnapshot, samples: usize) -> Replay<'a> {
        Replay {
            candidate,
            samples,
            report: ReplayReport::default(),
            groups: BTreeMap::new(),
        }
    }

    /// Takes one audit line.
    pub fn line(&mut self, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        self.report.total += 1;
        let Ok(line) = serde_json::from_str::<RecordedLine>(text) else {
            self.cannot(CannotReason::Unparsable);
            return;
        };
        if line.risk.as_deref() == Some("skipped") {
            return self.cannot(CannotReason::RiskSkipped);
        }
        if line.fail_mode.as_ref().is_some_and(|f| !f.is_null()) {
            return self.cannot(CannotReason::FailMode);
        }
        let Some(input) = &line.input else {
            // No action: the route was not matched (or passed through), Cedar never asked.
            if line.action.is_some() && REACHED_CEDAR.contains(&line.decision.as_str()) {
                self.cannot(CannotReason::InputNotRecorded);
            } else {
                self.report.not_affected += 1;
            }
            return;
        };
        if input.truncated {
            return self.cannot(CannotReason::InputTruncated);
        }
        let Some(after) = self.redecide(input) else {
            return self.cannot(CannotReason::InputUnusable);
        };
        self.report.redecided += 1;
        let (before, now) = (input.cedar.allows(), after.0.allows());
        let change = match (before, now) {
            (true, false) => Change::AllowToDeny,
            (false, true) => Change::DenyToAllow,
            _ => {
                self.report.unchanged += 1;
                return;
            }
        };
        match change {
            Change::AllowToDeny => self.report.allow_to_deny += 1,
            Change::DenyToAllow => self.report.deny_to_allow += 1,
        }
        let route = line.route.unwrap_or_else(|| "-".into());
        let key = (
            change,
            route.clone(),
            line.policies.clone(),
            after.1.clone(),
        );
        let samples = self.samples;
        let group = self.groups.entry(key).or_insert_with(|| ChangeGroup {
            change,
            route,
            before: line.policies,
            after: after.1,
            count: 0,
            sample_ids: Vec::new(),
        });
        group.count += 1;
        if group.sample_ids.len() < samples {
            group.sample_ids.push(line.decision_id);
        }
    }

    /// The report.
    pub fn finish(mut self) -> ReplayReport {
        self.report.changes = self.groups.into_values().collect();
        self.report
            .changes
            .sort_by(|a, b| (a.change, b.count).cmp(&(b.change, a.count)));
        self.report
    }

    fn cannot(&mut self, why: CannotReason) {
        *self.report.cannot_redecide.entry(why.as_str()).or_default() += 1;
    }

    /// The candidate's answer and deciding policies, or `None` when the recorded
    /// principal type is unknown.
    fn redecide(&self, input: &CedarInput) -> Option<(CedarOutcome, Vec<String>)> {
        let principal = input.principal()?;
        let names = input.claim_names();
        let reasons = input.reasons();
        let question = PolicyInput {
            principal: &principal,
            claims_as_attributes: &names,
            action: &input.action,
            resource_type: &input.resource_type,
            resource_id: &input.resource_id,
            context: input.context(&reasons),
        };
        Some(match self.candidate.evaluate(&question) {
            Ok(a) if a.errors.is_empty() && a.allowed => (CedarOutcome::Allow, a.determining),
            Ok(a) if a.errors.is_empty() => (CedarOutcome::Deny, a.determining),
            Ok(a) => (CedarOutcome::Error, a.determining),
            Err(_) => (CedarOutcome::Error, Vec::new()),
        })
    }
}

impl ReplayReport {
    /// Lines not re-decided, all causes.
    pub fn cannot_total(&self) -> u64 {
        self.cannot_redecide.values().sum()
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "decisions read:      {}", self.total);
        let _ = writeln!(out, "re-decided:          {}", self.redecided);
        let _ = writeln!(out, "  unchanged:         {}", self.unchanged);
        let _ = writeln!(out, "  allow→deny:        {}", self.allow_to_deny);
        let _ = writeln!(out, "  deny→allow:        {}", self.deny_to_allow);
        let _ = writeln!(
            out,
            "not affected:        {} (decided before Cedar)",
            self.not_affected
        );
        let _ = writeln!(out, "cannot re-decide:    {}", self.cannot_total());
        for (why, n) in &self.cannot_redecide {
            let _ = writeln!(out, "  {why}: {n}");
        }
        if self.changes.is_empty() {
            let _ = writeln!(out, "\nno changes");
            return out;
        }
        let _ = writeln!(out, "\nchanges by route and policy:");
        let list = |p: &[String]| {
            if p.is_empty() {
                "(none)".to_owned()
            } else {
                p.join(",")
            }
        };
        for g in &self.changes {
            let _ = writeln!(
                out,
                "  {:<10} {:<22} {:>5}  was: {}  now: {}",
                g.change.as_str(),
                g.route,
                g.count,
                list(&g.before),
                list(&g.after)
            );
            let _ = writeln!(out, "             e.g. {}", g.sample_ids.join(" "));
        }
        out
    }
}
