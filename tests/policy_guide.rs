//! The README's policies guide stays true (issue #16 item 6): every block marked
//! `<!-- guide-example: NAME -->` is run — each `$ riskgate …` line with the built binary, from
//! the repository root — and must print the lines shown under it and exit as they say (0 when
//! the decision is `allow`, else 2); every block marked `<!-- guide-policy: FILE -->` must be
//! that file's text.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (the guide's commands run from it).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn repo(path: &str) -> PathBuf {
    root().join(path)
}

/// One `$ riskgate …` line and the output lines shown under it.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    expected: Vec<String>,
}

/// A marked block.
#[derive(Debug)]
struct Example {
    name: String,
    runs: Vec<Run>,
}

fn readme() -> String {
    match std::fs::read_to_string(repo("README.md")) {
        Ok(t) => t,
        Err(e) => panic!("read README.md: {e}"),
    }
}

/// The fenced block that follows each `<!-- MARKER: VALUE -->`, with VALUE.
fn marked_blocks(text: &str, marker: &str) -> Vec<(String, Vec<String>)> {
    let open = format!("<!-- {marker}: ");
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(&open) else {
            continue;
        };
        let value = rest.trim_end_matches("-->").trim().to_owned();
        match lines.next() {
            Some(fence) if fence.starts_with("```") => {}
            other => panic!("`{line}` is not followed by a fenced block but by {other:?}"),
        }
        let body: Vec<String> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(str::to_owned)
            .collect();
        blocks.push((value, body));
    }
    blocks
}

fn examples(text: &str) -> Vec<Example> {
    marked_blocks(text, "guide-example")
        .into_iter()
        .map(|(name, body)| {
            let mut runs: Vec<Run> = Vec::new();
            for line in body {
                if let Some(command) = line.strip_prefix("$ riskgate ") {
                    runs.push(Run {
                        args: shell_words(command),
                        expected: Vec::new(),
                    });
                } else {
                    match runs.last_mut() {
                        Some(run) => run.expected.push(line),
                        None => panic!("example `{name}`: output before any `$ riskgate` line"),
                    }
                }
            }
            Example { name, runs }
        })
        .collect()
}

/// Splits a command line as a POSIX shell would for what the guide uses: words separated by
/// spaces, `'…'` taken literally, `"…"` with `\"` and `\\` escapes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Runs every command of `example`, collecting what differs from the README.
fn failures(example: &Example) -> Vec<String> {
    let mut failed = Vec::new();
    for run in &example.runs {
        let out = match Command::new(env!("CARGO_BIN_EXE_riskgate"))
            .args(&run.args)
            .current_dir(root())
            .env_remove("RISKGATE_CONFIG")
            .output()
        {
            Ok(o) => o,
            Err(e) => panic!("cannot run riskgate: {e}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let printed: Vec<&str> = stdout.lines().collect();
        let want_code = if run.expected.iter().any(|l| l == "decision:  allow") {
            0
        } else {
            2
        };
        let missing: Vec<&String> = run
            .expected
            .iter()
            .filter(|l| !printed.contains(&l.as_str()))
            .collect();
        if out.status.code() != Some(want_code) || !missing.is_empty() {
            failed.push(format!(
                "{}: riskgate {}\n  exit {:?} (README: {want_code}), lines not printed: {missing:?}\n{stdout}{}",
                example.name,
                run.args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr),
            ));
        }
    }
    failed
}

fn check_examples() {
    let all = examples(&readme());
    let chosen: Vec<&Example> = all.iter().collect();
    for example in &chosen {
        assert!(
            !example.runs.is_empty(),
            "example `{}` has no command",
            example.name
        );
        for run in &example.runs {
            assert!(
                run.expected.iter().any(|l| l.starts_with("decision:")),
                "example `{}`: every command shows its decision line",
                example.name
            );
        }
    }
    let failed: Vec<String> = chosen.iter().flat_map(|e| failures(e)).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn guide_examples_print_what_the_readme_shows() {
    let names: Vec<String> = examples(&readme()).into_iter().map(|e| e.name).collect();
    for name in [
        "bands",
        "networks",
        "workloads",
        "headers",
        "transactions",
        "history",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "no `{name}` example in {names:?}"
        );
    }
    check_examples();
}

#[test]
fn guide_policies_are_the_example_files() {
    let blocks = marked_blocks(&readme(), "guide-policy");
    assert!(blocks.len() >= 6, "{blocks:?}");
    for (file, body) in blocks {
        let text = match std::fs::read_to_string(repo(&file)) {
            Ok(t) => t,
            Err(e) => panic!("read {file}: {e}"),
        };
        let shown = body.join("\n");
        assert!(
            text.contains(&shown),
            "the README's block for {file} is not the file's text:\n{shown}"
        );
    }
}

#[test]
fn the_guide_config_validates() {
    let out = match Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .args(["validate", "-c", "examples/guide/riskgate.yaml"])
        .current_dir(root())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run riskgate: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok: 5 routes; 9 policies"), "{stdout}");
}

#[test]
fn shell_words_split_like_the_shell() {
    assert_eq!(
        shell_words(r#"check --header 'x-api-version: 2' --body "{\"a\": 1}" x"#),
        [
            "check",
            "--header",
            "x-api-version: 2",
            "--body",
            r#"{"a": 1}"#,
            "x"
        ]
    );
}
