//! `riskgate validate` warns, per `risk: optional` route, when a principal of the entities
//! file (or Anonymous) is allowed at band `unassessed` but not at `medium`: dropping the
//! action token would gain it access (issue 13, item 5). A warning does not fail
//! validation. Run as the built binary.

mod common;

use common::*;
use std::process::{Command, Output};

fn validate(config: &std::path::Path) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .args(["validate", "-c"])
        .arg(config)
        .env_remove("RISKGATE_CONFIG")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run riskgate: {e}"),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A workspace over the example policies plus `name` = `content`.
fn workspace_with(name: &str, content: &str) -> Workspace {
    let mut ws = Workspace::new("http://127.0.0.1:9", "");
    let mut files = example_policies();
    files.insert(name.into(), content.as_bytes().to_vec());
    assert!(ws.policies.swap(&files).is_ok());
    ws
}

#[test]
fn the_shipped_policies_give_no_warning() {
    let out = validate(&repo("deploy/riskgate.yaml"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let ws = Workspace::new("http://127.0.0.1:9", "");
    let out = validate(&ws.config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn a_read_allowed_unassessed_but_not_at_medium_is_warned_about() {
    let ws = workspace_with(
        "gap.cedar",
        r#"
@id("balance-not-at-medium")
forbid (principal, action == Action::"view_balance", resource)
when { context.risk.band == "medium" };

@id("anonymous-balance-without-risk")
permit (principal is Anonymous, action == Action::"view_balance", resource)
when { context.risk.band == "unassessed" };
"#,
    );
    let out = validate(&ws.config);
    let err = stderr(&out);
    assert!(out.status.success(), "a warning does not fail: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, for the one optional route: {err}"
    );
    let w = warnings[0];
    assert!(w.contains("GET /accounts/{account_id}/balance"), "{w}");
    for who in [
        r#"User::"u1""#,
        r#"User::"u2""#,
        r#"User::"u3""#,
        "Anonymous",
    ] {
        assert!(w.contains(who), "{who} in {w}");
    }
}

#[test]
fn a_principal_allowed_at_both_bands_is_not_warned_about() {
    // Anonymous may read balances at every band: no gain in dropping the token
    let ws = workspace_with(
        "anon.cedar",
        r#"
@id("anonymous-balance")
permit (principal is Anonymous, action == Action::"view_balance", resource);
"#,
    );
    let out = validate(&ws.config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}
