//! The documentation cannot drift from the code. Every YAML example in `README.md`, `docs/` and
//! `deploy/` validates, or is marked before its fence and checked as what it is:
//!
//! - no mark: a whole pipeline, which `dagrun validate` accepts;
//! - `<!-- docs-test: task -->`: tasks; the marked blocks of one file, in order, are one pipeline
//!   (over `data/`), which validates;
//! - `<!-- docs-test: sparkify ARGS -->`: top-level sections put into `pipelines/sparkify.yaml` (a
//!   section replaces the file's own; `vars` entries are added), which validates with `ARGS`;
//! - `<!-- docs-test: fragment -->`: an outline with placeholders, which must still be YAML.
//!
//! Every `dagrun` command shown (in shell blocks, in inline code, and in the command reference)
//! names a subcommand and flags the CLI has; every whole command in a shell block is run (a run
//! as `--dry-run`, with AWS pointed at a closed local port) and clap must accept it. And the
//! command reference lists every flag `--help` shows.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Run, dagrun, repo};

/// A fenced block of a Markdown file.
struct Block {
    /// `file:line` of the opening fence.
    place: String,
    lang: String,
    /// What the `<!-- docs-test: ... -->` line just before the fence says.
    mark: Option<String>,
    text: String,
}

/// The Markdown files the documentation is made of.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut out = vec![root.join("README.md")];
    for dir in ["docs", "deploy", "deploy/emr"] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else { continue };
        let mut files: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
        files.sort();
        out.extend(files);
    }
    assert!(out.len() > 5, "the docs/ chapters are missing: {out:?}");
    out
}

fn shown(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap_or(path).display().to_string()
}

fn blocks(path: &Path) -> Vec<Block> {
    let text = fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push(lines[i]);
            i += 1;
        }
        assert!(i < lines.len(), "{}:{}: a fence that is never closed", shown(path), start + 1);
        let mark = start
            .checked_sub(1)
            .and_then(|p| lines[p].trim().strip_prefix("<!-- docs-test:"))
            .and_then(|m| m.strip_suffix("-->"))
            .map(|m| m.trim().to_string());
        out.push(Block {
            place: format!("{}:{}", shown(path), start + 1),
            lang: lang.trim().to_string(),
            mark,
            text: body.join("\n") + "\n",
        });
        i += 1;
    }
    out
}

/// `dagrun validate FILE ARGS`, from the repository's root, with the variables the examples read
/// from the environment set.
fn validate(file: &Path, args: &[String]) -> Run {
    let output = dagrun()
        .current_dir(repo())
        .arg("validate")
        .arg(file)
        .args(args)
        .env("DB_PASSWORD", "an-example-password")
        .env("LAKE_BUCKET", "my-lake")
        .output()
        .unwrap();
    Run::from(output)
}

/// `pipelines/sparkify.yaml` with the top-level sections of `fragment` in place of its own.
fn into_sparkify(fragment: &str) -> String {
    let base = fs::read_to_string(repo().join("pipelines/sparkify.yaml")).unwrap();
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let top = |l: &str| {
        l.split_once(':').is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    };
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in fragment.lines() {
        if top(line) {
            sections.push((line.split_once(':').unwrap().0.to_string(), vec![line.to_string()]));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push(line.to_string());
        }
    }
    for (key, body) in sections {
        let Some(start) = lines.iter().position(|l| top(l) && l.split_once(':').unwrap().0 == key) else {
            lines.extend(body);
            continue;
        };
        let end = (start + 1..lines.len()).find(|&j| top(&lines[j])).unwrap_or(lines.len());
        if key == "vars" {
            lines.splice(start + 1..start + 1, body.into_iter().skip(1));
        } else {
            lines.splice(start..end, body.into_iter().chain([String::new()]));
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn every_yaml_example_validates_or_is_checked_as_a_marked_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let mut tasks = String::new();
        let mut first_task = None;
        for (n, block) in blocks(&doc).into_iter().filter(|b| b.lang == "yaml").enumerate() {
            checked += 1;
            let file = dir.path().join(format!("example-{n}.yaml"));
            let mark = block.mark.as_deref().unwrap_or("");
            let (text, args): (String, Vec<String>) = match mark.split_once(' ').unwrap_or((mark, "")) {
                ("", _) => (block.text.clone(), vec![]),
                ("task", _) => {
                    first_task.get_or_insert(block.place.clone());
                    for line in block.text.lines() {
                        tasks.push_str(&format!("  {line}\n"));
                    }
                    continue;
                }
                ("sparkify", args) => {
                    (into_sparkify(&block.text), args.split_whitespace().map(str::to_string).collect())
                }
                ("fragment", _) => {
                    fs::write(&file, &block.text).unwrap();
                    let run = validate(&file, &[]);
                    if run.stderr.contains("invalid YAML") {
                        failures.push(format!("{}: the fragment is not YAML:\n{}", block.place, run.stderr));
                    }
                    continue;
                }
                (other, _) => {
                    failures.push(format!("{}: unknown docs-test mark `{other}`", block.place));
                    continue;
                }
            };
            fs::write(&file, text).unwrap();
            let run = validate(&file, &args);
            if run.code != 0 {
                let hint = if mark.is_empty() { " (a part of a pipeline? mark it: see tests/docs.rs)" } else { "" };
                failures.push(format!("{}: does not validate{hint}:\n{}{}", block.place, run.stdout, run.stderr));
            }
        }
        if let Some(place) = first_task {
            let file = dir.path().join("tasks.yaml");
            fs::write(&file, format!("name: reference\nvars: {{input: data, output: output}}\ntasks:\n{tasks}"))
                .unwrap();
            let run = validate(&file, &[]);
            if run.code != 0 {
                failures.push(format!(
                    "{place}: the task examples of this file, together, do not validate:\n{}",
                    run.stderr
                ));
            }
        }
    }
    assert!(checked >= 8, "only {checked} YAML examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every long and short flag `text` names (`--set`, `-j`), without values.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in text.split(|c: char| c.is_whitespace() || matches!(c, '/' | '(' | ')' | '[' | ']' | ',' | '`' | '|')) {
        let name = word.split('=').next().unwrap().trim_end_matches('.');
        let long = name
            .strip_prefix("--")
            .is_some_and(|n| n.len() > 1 && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        let short = name.len() == 2 && name.starts_with('-') && name.as_bytes()[1].is_ascii_alphabetic();
        if long || short {
            out.insert(name.to_string());
        }
    }
    out
}

/// The subcommands `dagrun --help` (or `dagrun emr --help`) lists.
fn subcommands(parent: &[&str]) -> Vec<String> {
    let run = Run::from(dagrun().args(parent).arg("--help").output().unwrap()).expect(0);
    let listing = run.stdout.split("Commands:").nth(1).expect("a Commands: section").split("\n\n").next().unwrap();
    listing
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Which subcommand a command line (the words after `dagrun`) is, as `dagrun` arguments.
fn subcommand_of(words: &[&str], top: &[String], emr: &[String]) -> Vec<String> {
    let positional: Vec<&str> = words.iter().copied().filter(|w| !w.starts_with('-')).collect();
    match positional.first() {
        None if !words.is_empty() && words.iter().all(|w| matches!(*w, "--version" | "-V" | "--help" | "-h")) => vec![],
        Some(&"emr") => match positional.get(1) {
            Some(s) if emr.iter().any(|e| e == s) => vec!["emr".into(), (*s).into()],
            _ => vec!["emr".into()],
        },
        Some(s) if top.iter().any(|t| t == s) => vec![(*s).to_string()],
        _ => vec!["run".into()],
    }
}

/// The flags `dagrun SUB --help` documents, global ones included.
fn help_flags(sub: &[String]) -> Result<BTreeSet<String>, String> {
    let run = Run::from(dagrun().args(sub).arg("--help").output().unwrap());
    if run.code != 0 {
        return Err(format!("`dagrun {} --help` exits {}: {}", sub.join(" "), run.code, run.stderr));
    }
    Ok(flags(&run.stdout))
}

/// The `dagrun` command lines a document shows: in shell and text blocks (continuations joined,
/// comments cut) and in inline code, each with its place and whether it came from a shell block.
fn commands(doc: &Path) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for block in blocks(doc).into_iter().filter(|b| b.lang == "sh" || b.lang == "text") {
        let joined = block.text.replace("\\\n", " ");
        // In the reference, an indented `--flag VALUE   what it does` belongs to the command above.
        let mut above: Option<String> = None;
        for raw in joined.lines() {
            let line = raw.split(" # ").next().unwrap().trim();
            if let Some(rest) = line.strip_prefix("dagrun ") {
                let command = rest.split("   ").next().unwrap().trim().to_string();
                above = Some(command.clone());
                out.push((block.place.clone(), command, block.lang == "sh"));
            } else if raw.starts_with(' ')
                && line.starts_with('-')
                && let Some(command) = &above
            {
                let flag = line.split("   ").next().unwrap().trim();
                out.push((block.place.clone(), format!("{command} {flag}"), false));
            }
        }
    }
    let text = fs::read_to_string(doc).unwrap();
    for (n, line) in text.lines().enumerate() {
        for (i, piece) in line.split('`').enumerate() {
            if i % 2 == 1
                && let Some(rest) = piece.strip_prefix("dagrun ")
            {
                out.push((format!("{}:{}", shown(doc), n + 1), rest.to_string(), false));
            }
        }
    }
    out
}

#[test]
fn every_dagrun_command_shown_is_one_the_cli_accepts() {
    let top = subcommands(&[]);
    let emr = subcommands(&["emr"]);
    let mut helps: std::collections::BTreeMap<Vec<String>, Result<BTreeSet<String>, String>> = Default::default();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut seen = 0;
    for doc in documents() {
        for (place, command, shell) in commands(&doc) {
            seen += 1;
            let words: Vec<&str> = command.split_whitespace().collect();
            let sub = subcommand_of(&words, &top, &emr);
            let known = match helps.entry(sub.clone()).or_insert_with(|| help_flags(&sub)).clone() {
                Ok(known) => known,
                Err(e) => {
                    failures.push(format!("{place}: `dagrun {command}`: {e}"));
                    continue;
                }
            };
            for flag in flags(&command).difference(&known) {
                failures.push(format!("{place}: `dagrun {command}`: `dagrun {}` has no flag `{flag}`", sub.join(" ")));
            }
            // A whole command (no placeholders, no shell variables) is run: clap must take it.
            let placeholder = words.iter().any(|w| {
                w.contains('$') || w.contains('|') || (w.chars().any(|c| c.is_ascii_uppercase()) && !w.contains('='))
            });
            if shell && !placeholder {
                ran += 1;
                let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
                if sub == ["run"] && !args.iter().any(|a| a == "--dry-run") {
                    args.push("--dry-run".into());
                }
                let run = run_briefly(&args);
                if run.stderr.contains("Usage: dagrun") || run.stderr.contains("unexpected argument") {
                    failures.push(format!("{place}: `dagrun {command}` is refused by the CLI:\n{}", run.stderr));
                }
            }
        }
    }
    assert!(seen >= 20 && ran >= 3, "only {seen} commands found, {ran} run");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `dagrun ARGS` from the repository's root with AWS pointed at a closed local port (offline),
/// for at most five seconds: clap answers a command it refuses at once, so one still running by
/// then was taken (a command reaching for S3 would retry for a minute).
fn run_briefly(args: &[String]) -> Run {
    let mut child = dagrun()
        .current_dir(repo())
        .args(args)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "docs-test")
        .env("AWS_SECRET_ACCESS_KEY", "docs-test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn the_command_reference_lists_every_flag_of_every_subcommand() {
    let reference = fs::read_to_string(repo().join("docs/commands.md")).unwrap();
    let listed = flags(&reference);
    let mut missing = Vec::new();
    let top = subcommands(&[]);
    let emr = subcommands(&["emr"]);
    let mut all: Vec<Vec<String>> = top.iter().filter(|t| *t != "emr").map(|t| vec![t.clone()]).collect();
    all.extend(emr.iter().map(|e| vec!["emr".to_string(), e.clone()]));
    for sub in all {
        for flag in help_flags(&sub).unwrap() {
            if flag != "--help" && flag != "-h" && !listed.contains(&flag) {
                missing.push(format!("`dagrun {} {flag}`", sub.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "docs/commands.md does not list: {}", missing.join(", "));
}
