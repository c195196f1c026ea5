//! Every graded rule is stated before it is graded: each check has a rule and two hints
//! (`grader --list --rules`, `grader --hint CHECK [--more]`), and each rule's text stands word for
//! word, white space and comment markers aside, in the lab stubs' comments or in a chapter of the
//! book as the student copy ships them.

use std::path::{Path, PathBuf};

use grader::all_checks;
use grader::rules::{RULES, normalize, rule_of, stated_in};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kit's root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// The untouched stubs: a student copy keeps them in `xtask/stubs/` (its lab files are the
/// student's work); the instructors' lab files are the stubs themselves.
fn stubs() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root().join("labs")).expect("labs/") {
        let dir = entry.expect("a lab").file_name().to_string_lossy().into_owned();
        let kept = root().join("xtask/stubs").join(format!("{dir}.rs"));
        let path = if kept.is_file() {
            kept
        } else {
            root().join("labs").join(&dir).join("src/lib.rs")
        };
        found.push((path.display().to_string(), read(&path)));
    }
    assert!(found.len() >= 7, "only {} lab stubs found", found.len());
    found
}

/// A chapter as a student reads it: without the blocks the student copy removes.
fn student_text(chapter: &str) -> String {
    let mut out = String::new();
    let mut skip_until: Option<&str> = None;
    for line in chapter.lines() {
        let trimmed = line.trim();
        if let Some(end) = skip_until {
            if trimmed.starts_with(end) {
                skip_until = None;
            }
            continue;
        }
        skip_until = match trimmed {
            "<!-- instructors -->" => Some("<!-- /instructors -->"),
            "<!-- reference -->" => Some("<!-- /reference -->"),
            "<!-- answer -->" => Some("<!-- /answer -->"),
            _ => None,
        };
        if skip_until.is_none() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The book's chapters that ship to students (the instructors' notes do not).
fn chapters() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root().join("book/src")).expect("book/src") {
        let path = entry.expect("a chapter").path();
        if path.extension().is_some_and(|ext| ext == "md") && !path.ends_with("instructors.md") {
            found.push((path.display().to_string(), student_text(&read(&path))));
        }
    }
    found
}

#[test]
fn every_check_has_a_rule_and_two_hints() {
    let checks = all_checks();
    for check in &checks {
        let rule = rule_of(check.name).unwrap_or_else(|| panic!("{} has no rule in grader/src/rules.rs", check.name));
        assert!(!rule.rule.trim().is_empty(), "{}: the rule is empty", check.name);
        for (level, hint) in rule.hints.iter().enumerate() {
            assert!(!hint.trim().is_empty(), "{}: hint {} is empty", check.name, level + 1);
            assert_ne!(
                normalize(hint),
                normalize(rule.rule),
                "{}: a hint only repeats the rule",
                check.name
            );
        }
        assert_ne!(
            rule.hints[0], rule.hints[1],
            "{}: the two hints are the same",
            check.name
        );
    }
    for rule in RULES {
        assert!(
            checks.iter().any(|check| check.name == rule.check),
            "rules.rs has a rule for {}, which is no check",
            rule.check
        );
        assert_eq!(
            RULES.iter().filter(|other| other.check == rule.check).count(),
            1,
            "{} has two rules",
            rule.check
        );
    }
}

#[test]
fn every_rule_is_stated_in_a_stub_or_a_chapter() {
    let texts: Vec<(String, String)> = stubs().into_iter().chain(chapters()).collect();
    let missing: Vec<String> = RULES
        .iter()
        .filter(|rule| !texts.iter().any(|(_, text)| stated_in(rule.rule, text)))
        .map(|rule| format!("{}: {}", rule.check, rule.rule))
        .collect();
    assert!(
        missing.is_empty(),
        "{} rule(s) stated in no lab stub and no student chapter (state them word for word):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// The test above can fail: a stub that loses one rule's sentence no longer states it.
#[test]
fn a_stub_without_its_rule_no_longer_states_it() {
    let stubs = stubs();
    let mut removed = 0;
    for rule in RULES {
        let Some((path, text)) = stubs.iter().find(|(_, text)| stated_in(rule.rule, text)) else {
            continue;
        };
        let without = normalize(text).replace(&normalize(rule.rule), "");
        assert!(
            !stated_in(rule.rule, &without),
            "{path} still states {} without it",
            rule.check
        );
        // One word changed is not the rule either.
        let changed = normalize(text).replace(&normalize(rule.rule), &normalize(rule.rule).replacen(' ', "  x ", 1));
        assert!(
            !stated_in(rule.rule, &changed),
            "{path}: a changed rule of {} passed",
            rule.check
        );
        removed += 1;
    }
    assert!(removed > 0, "no rule is stated in a stub");
}
