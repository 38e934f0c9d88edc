//! Loading the Cedar inputs: schema, every `*.cedar` file in the policy directory, and the
//! entities file. Each policy must carry a unique `@id("...")`, which becomes its policy id
//! so audit lines name policies the way their authors do. Everything is validated
//! strictly against the schema; every problem is reported as `file:line: message`.

use crate::source::SourceLocation;
use cedar_policy::{Entities, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in the policy inputs, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The file at fault, and the line when known.
    pub at: SourceLocation,
    /// What is wrong (Cedar's message where Cedar found it).
    pub message: String,
}

impl PolicyProblem {
    /// A problem in `file`, at `line` when known.
    pub fn new(file: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        PolicyProblem {
            at: SourceLocation::line(file, line),
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Every problem found in one load; the set is rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError(pub Vec<PolicyProblem>);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The validated inputs.
#[derive(Debug)]
pub struct Loaded {
    /// The schema.
    pub schema: Schema,
    /// All policies, ids taken from `@id`.
    pub policies: PolicySet,
    /// Entities from the entities file (empty without one).
    pub entities: Entities,
    /// Where each policy came from (`file:line`).
    pub origins: HashMap<String, String>,
}

fn problem(file: &Path, line: Option<usize>, message: impl Into<String>) -> PolicyProblem {
    PolicyProblem::new(file, line, message)
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path)
        .map_err(|e| PolicyError(vec![problem(path, None, format!("cannot read: {e}"))]))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |prefix| prefix.matches('\n').count() + 1)
}

/// First labelled span of a Cedar diagnostic, as a line in `text`.
fn diagnostic_line(d: &dyn Diagnostic, text: &str) -> Option<usize> {
    let mut labels = d.labels()?;
    labels.next().map(|l| line_of(text, l.offset()))
}

/// The full message of an error and its causes (Cedar puts detail in `help` and sources).
fn full_message(d: &dyn Diagnostic) -> String {
    let mut msg = d.to_string();
    if let Some(help) = d.help() {
        msg.push_str(&format!(" (help: {help})"));
    }
    msg
}

/// Loads and validates schema, policies and entities.
pub fn load(
    dir: &Path,
    schema_path: &Path,
    entities_path: Option<&Path>,
) -> Result<Loaded, PolicyError> {
    let schema = load_schema(schema_path)?;
    let (policies, origins) = load_policy_set(dir, &schema)?;
    let entities = match entities_path {
        Some(path) => load_entities(path, &schema)?,
        None => Entities::empty(),
    };
    Ok(Loaded {
        schema,
        policies,
        entities,
        origins,
    })
}

/// Parses every `*.cedar` file in `dir` (unique `@id`s) and validates the set strictly
/// against `schema`. Returns the set and where each policy came from.
pub fn load_policy_set(
    dir: &Path,
    schema: &Schema,
) -> Result<(PolicySet, HashMap<String, String>), PolicyError> {
    let (policies, origins, texts) = load_policies(dir)?;
    validate(schema, &policies, &texts)?;
    Ok((policies, origins))
}

/// Parses the `.cedarschema` file.
pub fn load_schema(path: &Path) -> Result<Schema, PolicyError> {
    let text = read(path)?;
    match Schema::from_cedarschema_str(&text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                tracing::warn!(file = %path.display(), warning = %w, "cedar schema warning");
            }
            Ok(schema)
        }
        Err(e) => Err(PolicyError(vec![problem(
            path,
            diagnostic_line(&e, &text),
            full_message(&e),
        )])),
    }
}

type PolicyTexts = HashMap<String, (PathBuf, String)>;

/// The `*.cedar` files of a policy directory, sorted (symlinks followed).
pub fn cedar_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PolicyError(vec![problem(
            dir,
            None,
            format!("cannot read directory: {e}"),
        )])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "cedar"))
        .collect();
    files.sort();
    Ok(files)
}

fn load_policies(
    dir: &Path,
) -> Result<(PolicySet, HashMap<String, String>, PolicyTexts), PolicyError> {
    let files = cedar_files(dir)?;
    let mut problems = Vec::new();
    let mut merged = PolicySet::new();
    let mut origins: HashMap<String, String> = HashMap::new();
    let mut texts: PolicyTexts = HashMap::new();
    for file in &files {
        let text = read(file)?;
        let set: PolicySet = match text.parse() {
            Ok(set) => set,
            Err(e) => {
                let e: cedar_policy::ParseErrors = e;
                for err in e.iter() {
                    problems.push(problem(
                        file,
                        diagnostic_line(err, &text),
                        full_message(err),
                    ));
                }
                continue;
            }
        };
        if set.templates().next().is_some() {
            problems.push(problem(file, None, "policy templates are not supported"));
        }
        for policy in set.policies() {
            let src = policy.to_string();
            let line = text.find(src.trim()).map(|off| line_of(&text, off));
            let Some(id) = policy.annotation("id").map(str::to_owned) else {
                problems.push(problem(
                    file,
                    line,
                    "policy has no `@id(\"...\")` annotation",
                ));
                continue;
            };
            let here = format!("{}:{}", file.display(), line.unwrap_or(0));
            if let Some(first) = origins.get(&id) {
                problems.push(problem(
                    file,
                    line,
                    format!("duplicate policy id `{id}` (first at {first})"),
                ));
                continue;
            }
            if let Err(e) = merged.add(policy.new_id(PolicyId::new(&id))) {
                problems.push(problem(file, line, e.to_string()));
                continue;
            }
            origins.insert(id.clone(), here);
            texts.insert(id, (file.clone(), text.clone()));
        }
    }
    if files.is_empty() {
        problems.push(problem(dir, None, "no `*.cedar` policy files"));
    }
    if problems.is_empty() {
        Ok((merged, origins, texts))
    } else {
        Err(PolicyError(problems))
    }
}

fn validate(schema: &Schema, policies: &PolicySet, texts: &PolicyTexts) -> Result<(), PolicyError> {
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    let problems: Vec<PolicyProblem> = result
        .validation_errors()
        .map(|e| {
            let id = e.policy_id().to_string();
            match texts.get(&id) {
                Some((file, text)) => problem(
                    file,
                    diagnostic_line(e, text),
                    format!("policy `{id}`: {}", full_message(e)),
                ),
                None => problem(Path::new("<policies>"), None, full_message(e)),
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyError(problems))
    }
}

/// Parses the entities file, conforming to the schema.
pub fn load_entities(path: &Path, schema: &Schema) -> Result<Entities, PolicyError> {
    let text = read(path)?;
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
        return Err(PolicyError(vec![problem(
            path,
            Some(e.line()),
            e.to_string(),
        )]));
    }
    Entities::from_json_str(&text, Some(schema))
        .map_err(|e| PolicyError(vec![problem(path, None, full_message(&e))]))
}
