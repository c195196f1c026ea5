//! The grader's own command line: the scoreboard and the Gradescope report of the reference.
#![cfg(feature = "solution")]

use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn grader() -> Command {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("grader");
    cmd.timeout(Duration::from_secs(300));
    cmd
}

#[test]
fn the_reference_gets_a_full_gradescope_report() {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("results.json");
    let _ = std::fs::remove_file(&path);
    grader()
        .arg("--gradescope")
        .arg(&path)
        .assert()
        .success()
        .stdout(predicate::str::contains("Score: "));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tests = report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), grader::all_checks().len());
    assert!(tests.len() >= 25);
    let max: u64 = tests.iter().map(|t| t["max_score"].as_u64().unwrap()).sum();
    assert_eq!(report["score"].as_u64(), Some(max));
    for test in tests {
        assert_eq!(test["status"], "passed", "{test}");
        assert_eq!(test["score"], test["max_score"]);
        assert!(test["name"].as_str().unwrap().contains(": "));
    }
}

#[test]
fn one_lab_can_be_graded_alone() {
    let out = grader()
        .args(["lab2", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let results: Value = serde_json::from_slice(&out).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 9);
    assert!(
        results
            .iter()
            .all(|r| r["check"].as_str().unwrap().starts_with("lab2_") && r["outcome"] == "passed")
    );
}

#[test]
fn unknown_filters_and_options_are_refused() {
    grader()
        .arg("lab9")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no check matches"));
    grader()
        .arg("--frobnicate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown option"));
}
