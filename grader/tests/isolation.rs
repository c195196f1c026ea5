//! Lab code is hostile to the grader. Each attack runs through the real judge (`grader`) with a
//! probe whose lab 2 attacks the grading (`tests/bin/hostile_probe.rs`), jailed as official
//! grading runs it: forged answers sprayed on every descriptor after a scan of its own and its
//! ancestors' memory, writes to ancestors' stdout and memory, ptrace and signals, a terminal, the
//! grader's files, an escaped child that answers late. None may gain a point over the honest
//! reference's result, the judge's own output stays its own, and the honest functions beside the
//! attack keep their points.
#![cfg(feature = "solution")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The seed of every run here: the same inputs for the honest and the hostile probe.
const SEED: &str = "4242";
/// Lab 2's checks that call only `setup_long_mode_page_tables`, the function that attacks.
const ATTACKED: [&str; 5] = [
    "lab2_long_mode_cr3",
    "lab2_pml4_entry",
    "lab2_pdpt_entry",
    "lab2_pd_entry",
    "lab2_nothing_else_mapped",
];

/// The jail these tests need: official grading runs lab code in it.
fn require_jail() {
    if let Err(why) = kit_jail::Jail::detect() {
        panic!("the isolation tests need the jail that official grading uses: {why}");
    }
}

/// The hostile probe, linked beside itself under the name that picks `attack`.
fn hostile_probe(attack: &str) -> PathBuf {
    let program = Path::new(env!("CARGO_BIN_EXE_hostile-probe"));
    let link = program.with_file_name(format!("hostile-{attack}"));
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(program, &link).unwrap();
    link
}

/// Runs the judge on lab 2 with `probe`; returns its stdout and each check's points.
fn grade(probe: &Path) -> (String, BTreeMap<String, u64>) {
    let out = Command::new(env!("CARGO_BIN_EXE_grader"))
        .arg("--probe")
        .arg(probe)
        .args(["lab2", "--json", "--seed", SEED])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the judge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("the judge's stdout is not its own JSON ({err}): {stdout}"));
    let points = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["check"].as_str().unwrap().to_owned(), r["score"].as_u64().unwrap()))
        .collect();
    (stdout, points)
}

/// The honest reference's points, for the same seed.
fn honest() -> BTreeMap<String, u64> {
    grade(Path::new(env!("CARGO_BIN_EXE_grader-probe"))).1
}

/// Grades `attack` and asserts it gained nothing: no check above the honest reference, every
/// check of the attacking function failed, and `kept` (checks of honest functions) at full points.
fn gains_nothing(attack: &str, kept: &[&str]) {
    require_jail();
    let honest = honest();
    // `grade` asserts that the judge's stdout is its JSON alone: nothing was written into it.
    let (_, hostile) = grade(&hostile_probe(attack));
    for (check, points) in &hostile {
        assert!(points <= &honest[check], "{attack}: {check} gained {points} points");
    }
    for check in ATTACKED {
        assert_eq!(hostile[check], 0, "{attack}: {check} passed");
    }
    for check in kept {
        assert_eq!(
            hostile[*check], honest[*check],
            "{attack}: {check} lost its honest points"
        );
    }
}

/// Lab 2's checks of functions that do not attack, in the attacks where `translate` is honest.
const HONEST_BESIDE: [&str; 4] = [
    "lab2_paged32_directory",
    "lab2_translate_identity",
    "lab2_translate_faults",
    "lab2_translate_other_pages",
];

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn forged_answers_sprayed_after_a_memory_scan_gain_nothing() {
    gains_nothing("spray-forged-answers", &["lab2_paged32_directory"]);
}

#[test]
fn writing_to_ancestors_and_signalling_them_gains_nothing() {
    gains_nothing("ancestors", &HONEST_BESIDE);
}

#[test]
fn a_terminal_and_injected_keystrokes_gain_nothing() {
    gains_nothing("terminal", &HONEST_BESIDE);
}

#[test]
fn the_grader_s_files_cannot_be_replaced() {
    let judge = std::fs::read(env!("CARGO_BIN_EXE_grader")).unwrap();
    let probe = std::fs::read(env!("CARGO_BIN_EXE_grader-probe")).unwrap();
    gains_nothing("grader-files", &HONEST_BESIDE);
    assert!(
        judge == std::fs::read(env!("CARGO_BIN_EXE_grader")).unwrap(),
        "the judge was rewritten"
    );
    assert!(
        probe == std::fs::read(env!("CARGO_BIN_EXE_grader-probe")).unwrap(),
        "the probe was rewritten"
    );
    let planted = Path::new(env!("CARGO_BIN_EXE_hostile-probe")).with_file_name("planted");
    assert!(!planted.exists(), "the probe planted {}", planted.display());
}

#[test]
fn an_escaped_child_answering_late_gains_nothing_and_is_gone() {
    gains_nothing("escapee", &HONEST_BESIDE);
    let left = Command::new("pgrep").args(["-f", "hostile-escapee"]).output().unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes of the probe outlived it: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn the_judge_links_no_lab_code() {
    // Rust's (legacy) mangled paths name each crate with its length: `11lab2_paging`.
    let mangled = |krate: &str| format!("{}{krate}", krate.len());
    let judge = std::fs::read(env!("CARGO_BIN_EXE_grader")).unwrap();
    for krate in [
        "lab0_lwn",
        "lab1_memory",
        "lab2_paging",
        "lab3_registers",
        "lab4_exit_loop",
        "lab5_hypercalls",
        "lab6_scheduling",
        "kvm_hello",
        "grader_probe",
    ] {
        let name = mangled(krate);
        let found = judge.windows(name.len()).any(|w| w == name.as_bytes());
        assert!(!found, "the judge holds code of {krate}");
    }
    let probe = std::fs::read(env!("CARGO_BIN_EXE_grader-probe")).unwrap();
    let name = mangled("lab2_paging");
    assert!(
        probe.windows(name.len()).any(|w| w == name.as_bytes()),
        "the search itself finds lab code in the probe"
    );
}
