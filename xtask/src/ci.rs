//! `cargo xtask ci`: the slow tests, which the README's test command lists as ignored ("slow:
//! cargo xtask ci runs it"): the system tests (a student copy's round trip, a class, the Gradescope
//! autograder, `cargo grade --watch`), the grader's wrong-cause sweep over every seeded mistake,
//! and the tests that wait on timeouts or run long guests; then the kit under KVM on emulated
//! AMD-V (`svm-check`). `.ci/run` calls it after the README's test command; a maintainer runs it
//! before a release. Stops at the first step that fails, with that step's status.

use std::process::Command;
use std::time::Instant;

use crate::kit;

/// `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only the slow tests whose name contains one of these (as `cargo test`'s filters);
    /// svm-check is then left out.
    filters: Vec<String>,
}

pub fn run(args: Args) -> u8 {
    let root = kit::root();
    let started = Instant::now();
    // Every ignored test of the workspace: each is ignored only as slow (a test asserts it).
    let mut tests = Command::new(kit::cargo());
    tests
        .current_dir(&root)
        .args(["test", "--workspace", "--features", "solution", "--"])
        .arg("--ignored");
    tests.args(&args.filters);
    let mut steps = vec![(
        "the slow tests (cargo test --workspace --features solution -- --ignored)",
        tests,
    )];
    if args.filters.is_empty() {
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
