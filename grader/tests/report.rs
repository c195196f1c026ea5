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
#[ignore = "slow: cargo xtask ci runs it"]
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
    assert_eq!(report["max_score"].as_u64(), Some(max));
    assert!(report["output"].as_str().unwrap().contains("Seed: "), "{report}");
    for test in tests {
        assert!(test["name"].as_str().unwrap().contains(": "));
        assert_eq!(test["score"], test["max_score"]);
        if test["output"].as_str().unwrap().starts_with("not run: ") {
            // A check this host cannot run: 0 of 0 points, no status, the reason.
            assert_eq!(test["max_score"], 0, "{test}");
            assert!(test.get("status").is_none(), "{test}");
        } else {
            assert_eq!(test["status"], "passed", "{test}");
        }
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
    let lab2 = grader::all_checks()
        .iter()
        .filter(|check| check.part == grader::Part::Lab(2))
        .count();
    assert_eq!(results.len(), lab2);
    for r in results {
        assert!(
            r["check"].as_str().unwrap().starts_with("lab2_") && r["outcome"] == "passed",
            "{r}"
        );
        for key in ["part", "points", "message", "seed"] {
            assert!(r.get(key).is_some(), "{r} has no {key}");
        }
    }
}

#[test]
fn a_seed_repeats_the_inputs_and_is_printed() {
    let run = |seed: &str| {
        let out = grader()
            .args(["lab2_translate_other", "--seed", seed])
            .assert()
            .success();
        String::from_utf8_lossy(&out.get_output().stdout).into_owned()
    };
    let board = run("4242");
    assert!(board.contains("Seed: 4242 (cargo grade --seed 4242"), "{board}");
    let json = |seed: &str| {
        let out = grader().args(["lab2", "--json", "--seed", seed]).assert().success();
        let value: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["check_seed"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(json("7"), json("7"));
    assert_ne!(json("7"), json("8"));
    grader()
        .args(["--seed", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--seed needs a number"));
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
