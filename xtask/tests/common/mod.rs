//! What the course-delivery tests share: exporting a student copy, building and grading it, and
//! solving its labs the way a student would (pasting the reference's functions into the lab files).
#![allow(dead_code)] // each test file uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The labs, by folder.
pub const LABS: [&str; 8] = [
    "lab0-lwn",
    "lab1-memory",
    "lab2-paging",
    "lab3-registers",
    "lab4-exit-loop",
    "lab5-hypercalls",
    "lab6-scheduling",
    "lab7-migration",
];

/// The instructors' repository (this workspace).
pub fn instructors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// The untouched exercise of `lab` in the instructors' repository: the lab file if every function
/// of the reference is still its `todo!` stub there, else the newest committed version that is
/// (an instructor may be trying the labs in this repository).
pub fn pristine_stub(lab: &str) -> String {
    let root = instructors();
    let file = format!("labs/{lab}/src/lib.rs");
    let solution = read(&root.join(format!("labs/{lab}/src/solution.rs")));
    let number = &lab[3..4];
    let untouched = |source: &str| {
        solution
            .lines()
            .filter_map(|line| line.strip_prefix("pub fn "))
            .filter_map(|rest| rest.split(['(', '<']).next())
            .all(|name| source.contains(&format!("todo!(\"lab{number} {name} (")))
    };
    let working = read(&root.join(&file));
    if untouched(&working) {
        return working;
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["rev-list", "HEAD", "--", &file])
        .lines()
        .map(|rev| git(&["show", &format!("{rev}:{file}")]))
        .find(|old| untouched(old))
        .unwrap_or_else(|| panic!("{file}: no untouched version, in the working tree or in git"))
}

/// A fresh folder for one test under cargo's temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cargo xtask ARGS` of the instructors' repository.
pub fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

/// Exports a student copy into `dir` and returns it.
pub fn export(dir: &Path) -> PathBuf {
    let out = xtask(&["student-kit", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "student-kit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// `cargo ARGS` in `kit`, with its own target directory (never the instructors' one), warnings
/// denied, offline (the instructors' build fetched every crate already), not started yet.
pub fn cargo_command(kit: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(kit)
        .args(args)
        .env("RUSTFLAGS", "-D warnings")
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MANIFEST_DIR");
    command
}

/// `cargo ARGS` in `kit`, as [`cargo_command`], run to its end.
pub fn cargo(kit: &Path, args: &[&str]) -> Output {
    cargo_command(kit, args).output().expect("cargo runs")
}

/// `cargo test --workspace` in `kit` passes (the student README's test command).
pub fn assert_tests_pass(kit: &Path, state: &str) {
    let out = cargo(kit, &["test", "--workspace"]);
    assert!(
        out.status.success(),
        "the {state} student copy fails its test command (cargo test --workspace):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cargo grade --json` in `kit`: every check's result.
pub fn grade(kit: &Path) -> Vec<Value> {
    grade_with_stderr(kit).0
}

/// `cargo grade --json` in `kit`: every check's result, and what it said on stderr.
pub fn grade_with_stderr(kit: &Path) -> (Vec<Value>, String) {
    let out = cargo(kit, &["grade", "--json"]);
    assert!(
        out.status.success(),
        "cargo grade failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "cargo grade --json does not print JSON ({err}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (results.as_array().expect("a list of checks").clone(), stderr)
}

/// The reference's `use` lines, flattened to one path per name (`use crate::…` left out: lab
/// files have those names already).
fn reference_imports(solution: &str) -> Vec<(String, String)> {
    let mut imports = Vec::new();
    let mut statement = String::new();
    for line in solution.lines() {
        if statement.is_empty() && !line.starts_with("use ") {
            continue;
        }
        statement.push_str(line.trim());
        statement.push(' ');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let body = statement
            .trim()
            .trim_start_matches("use ")
            .trim_end_matches(';')
            .to_owned();
        statement.clear();
        if body.starts_with("crate::") {
            continue;
        }
        match body.split_once("::{") {
            Some((path, names)) => {
                for name in names
                    .trim_end_matches('}')
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                {
                    imports.push((format!("{path}::{name}"), name.to_owned()));
                }
            }
            None => {
                let name = body.rsplit("::").next().unwrap_or_default().to_owned();
                imports.push((body.clone(), name));
            }
        }
    }
    imports
}

/// The reference's top-level items other than `use` lines: (the function's name if it is a
/// `pub fn`, its text).
fn reference_items(solution: &str) -> Vec<(Option<String>, String)> {
    let mut items = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut in_use = false;
    for line in solution.lines() {
        if line.starts_with("//!") || line.trim_start().starts_with("// ANCHOR") {
            continue;
        }
        if in_use || line.starts_with("use ") {
            in_use = !line.trim_end().ends_with(';');
            continue;
        }
        if current.is_empty() && line.trim().is_empty() {
            continue;
        }
        current.push(line);
        let ends = line == "}" || (!line.starts_with(' ') && line.trim_end().ends_with(';') && !line.starts_with("//"));
        if ends {
            let text = current.join("\n");
            let name = text.lines().find(|l| l.starts_with("pub fn ")).map(|l| {
                l["pub fn ".len()..]
                    .split(['(', '<'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            });
            items.push((name, text));
            current.clear();
        }
    }
    items
}

/// Solves `lab` in the student copy `kit` as a student would: each stub is replaced by the
/// reference's function, the reference's helpers are added, and the imports they need.
pub fn solve(kit: &Path, lab: &str) {
    let solution = read(&instructors().join(format!("labs/{lab}/src/solution.rs")));
    let path = kit.join(format!("labs/{lab}/src/lib.rs"));
    let mut source = read(&path);
    for (name, text) in reference_items(&solution) {
        let code: String = text
            .lines()
            .skip_while(|l| l.starts_with("///") || l.starts_with("// "))
            .collect::<Vec<_>>()
            .join("\n");
        let stub_at = name.as_ref().and_then(|name| {
            source
                .find(&format!("\npub fn {name}("))
                .or_else(|| source.find(&format!("\npub fn {name}<")))
        });
        match stub_at {
            Some(at) => {
                let start = at + 1;
                let end = start
                    + source[start..]
                        .find("\n}\n")
                        .expect("a stub ends with } on its own line")
                    + 2;
                source.replace_range(start..end, &code);
            }
            None if source.contains(&code) => {} // solved before
            None => {
                source.push('\n');
                source.push_str(&text);
                source.push('\n');
            }
        }
    }
    let use_lines: Vec<&str> = source
        .lines()
        .filter(|l| l.starts_with("use ") || l.starts_with("pub use "))
        .collect();
    let missing: Vec<String> = reference_imports(&solution)
        .into_iter()
        .filter(|(_, name)| {
            !use_lines.iter().any(|l| {
                l.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|word| word == name)
            })
        })
        .map(|(path, _)| format!("use {path};\n"))
        .collect();
    let header_end = source
        .lines()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .map(|l| l.len() + 1)
        .sum::<usize>();
    source.insert_str(header_end, &missing.concat());
    std::fs::write(&path, source).unwrap();
}

/// Where the host's KVM is PVM (no hardware virtualisation): it refuses 32-bit paging.
const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Every check of a `cargo grade --json` report passed, for full marks (on a PVM host the paged32
/// checks are not run, as the grader says, and count neither way).
pub fn assert_full_marks(results: &[Value]) {
    assert!(results.len() >= 40, "only {} checks", results.len());
    for result in results {
        let pvm_paged32 = Path::new(PVM_MODULE).exists()
            && result["check"].as_str().is_some_and(|name| name.contains("paged32"))
            && result["outcome"] == "not_run"
            && result["message"].as_str().is_some_and(|m| m.contains("PVM"));
        assert!(
            result["outcome"] == "passed" || pvm_paged32,
            "the solved student copy fails a check: {result}"
        );
    }
}

/// Reference body lines shorter than this (`Ok(())`) say nothing about the answer.
const MIN_LEAK_LINE: usize = 16;

/// The lines of every reference function body that the lab's stub file does not already show.
pub fn reference_body_lines() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for lab in LABS {
        let dir = instructors().join("labs").join(lab).join("src");
        let stub = pristine_stub(lab);
        let (mut depth, mut in_fn) = (0usize, false);
        for line in read(&dir.join("solution.rs")).lines() {
            if depth == 0 && (line.starts_with("pub fn ") || line.starts_with("fn ")) {
                in_fn = true;
            }
            let body = in_fn && depth > 0;
            depth = (depth + line.matches('{').count()).saturating_sub(line.matches('}').count());
            in_fn &= depth > 0 || !line.starts_with('}');
            let line = line.trim();
            if body && line.len() >= MIN_LEAK_LINE && !line.starts_with("//") && !stub.lines().any(|l| l.trim() == line)
            {
                found.push((lab.to_owned(), line.to_owned()));
            }
        }
    }
    assert!(
        found.len() > 100,
        "the leak check knows only {} reference lines",
        found.len()
    );
    found
}

pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}
