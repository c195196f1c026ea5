//! `cargo xtask ci`: the slow system tests, which the README's test command lists as ignored
//! ("slow: cargo xtask ci runs it"), the grader's wrong-cause sweep over every seeded mistake,
//! then the kit under KVM on emulated AMD-V (`svm-check`).
//! `.ci/run` calls it after the README's test command; a maintainer runs it before a release.
//! Stops at the first step that fails, with that step's status.

use std::process::Command;
use std::time::Instant;

use crate::kit;

/// The test binary of xtask that holds the system tests (`xtask/tests/system/`).
const SYSTEM_TESTS: &str = "system";

/// The ignored test of each seeded-mistake binary that runs every mistake against every check.
const WRONG_CAUSE_SWEEP: &str = "no_seeded_mistake_is_blamed_on_another_cause";

/// `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only the system tests whose name contains one of these (as `cargo test`'s filters);
    /// svm-check is then left out.
    filters: Vec<String>,
}

pub fn run(args: Args) -> u8 {
    let root = kit::root();
    let started = Instant::now();
    let mut tests = Command::new(kit::cargo());
    tests
        .current_dir(&root)
        .args(["test", "--package", "xtask", "--test", SYSTEM_TESTS, "--"])
        .arg("--ignored");
    tests.args(&args.filters);
    let mut steps = vec![(
        "the system tests (cargo test -p xtask --test system -- --ignored)",
        tests,
    )];
    if args.filters.is_empty() {
        // Every seeded mistake against every check it reaches: no message names a wrong cause.
        let mut sweep = Command::new(kit::cargo());
        sweep.current_dir(&root).args([
            "test",
            "--package",
            "grader",
            "--features",
            "solution",
            "--test",
            "seeded",
            "--test",
            "seeded_lab6",
            "--test",
            "seeded_lab7",
            "--test",
            "seeded_lab2_lab5",
            "--",
            "--ignored",
            "--exact",
            WRONG_CAUSE_SWEEP,
        ]);
        steps.push((
            "the wrong-cause sweep (cargo test -p grader --features solution --test 'seeded*' -- --ignored no_seeded_mistake_is_blamed_on_another_cause)",
            sweep,
        ));
        let mut svm_check = match std::env::current_exe() {
            Ok(xtask) => Command::new(xtask),
            Err(err) => {
                eprintln!("ci: cannot find this program to run svm-check: {err}");
                return kit::status::IO;
            }
        };
        svm_check.current_dir(&root).arg("svm-check");
        steps.push(("svm-check (the reference build under KVM on emulated AMD-V)", svm_check));
    }
    for (name, mut command) in steps {
        eprintln!("\n== ci: {name}");
        let step_started = Instant::now();
        let status = match command.status() {
            Ok(status) => status,
            Err(err) => {
                eprintln!("ci: cannot start {name}: {err}");
                return kit::status::IO;
            }
        };
        eprintln!(
            "== ci: {name}: {status} in {:.0} s",
            step_started.elapsed().as_secs_f64()
        );
        if !status.success() {
            eprintln!("ci: {name} failed ({status})");
            return status
                .code()
                .and_then(|code| u8::try_from(code).ok())
                .unwrap_or(1)
                .max(1);
        }
    }
    eprintln!("ci: every step passed in {:.0} s", started.elapsed().as_secs_f64());
    0
}
