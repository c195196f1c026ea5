//! kvm-hello as a student meets it: the run stops at the first stub left, with status 6 and one
//! line naming it (every lab a stub: lab 1's `vm_init`, in every mode), and greets once labs 1
//! to 4 are done. Runs in the student build only, so it also passes while the labs get solved.
#![cfg(not(feature = "solution"))]

mod common;

use std::path::Path;

use common::kvm_hello;
use predicates::prelude::*;

/// The first stub a run meets while lab 1 is untouched.
const FIRST_STUB: &str = "lab1 vm_init (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)";
/// What kvm-hello says before a stub's own message.
const NOT_IMPLEMENTED: &str = "kvm-hello: not implemented yet: ";
/// kvm-hello's status for a stub reached.
const STATUS_NOT_IMPLEMENTED: i32 = 6;

/// The lab files as this build compiled them.
fn lab_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn lab1_untouched() -> bool {
    lab_file("labs/lab1-memory/src/lib.rs").contains(&format!("todo!(\"{FIRST_STUB}\")"))
}

#[test]
fn the_first_stub_stops_the_run_with_status_6_and_one_line() {
    if lab1_untouched() {
        for mode in ["long", "protected", "paged32", "real"] {
            kvm_hello()
                .args(["--mode", mode])
                .assert()
                .code(STATUS_NOT_IMPLEMENTED)
                .stdout("")
                .stderr(format!("{NOT_IMPLEMENTED}{FIRST_STUB}\n"));
        }
        return;
    }
    // Lab 1 is done: the run goes as far as the labs do, in long mode (the mode every host runs).
    if let Some(stdout) = assert_first_stub_left_or_done(&["--mode", "long"]) {
        assert_eq!(stdout, "Hello, world!\n");
    }
}

/// Runs kvm-hello with `args` once lab 1 is done: it ends at the first stub left (status 6, one
/// line naming a stub that its lab file still has), or it finishes (status 0: its stdout is
/// returned). Anything else fails, with what kvm-hello said.
fn assert_first_stub_left_or_done(args: &[&str]) -> Option<String> {
    let out = kvm_hello().args(args).output().expect("kvm-hello runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(STATUS_NOT_IMPLEMENTED) => {
            let line = stderr
                .lines()
                .find(|line| line.starts_with(NOT_IMPLEMENTED))
                .unwrap_or_default();
            let stub = line
                .strip_prefix(NOT_IMPLEMENTED)
                .unwrap_or_else(|| panic!("kvm-hello {args:?}: status 6 without the line naming a stub: {stderr:?}"));
            let file = stub
                .split(['(', ';'])
                .nth(1)
                .unwrap_or_else(|| panic!("the stub's message names no file: {stub}"));
            assert!(
                lab_file(file).contains(&format!("todo!(\"{stub}\")")),
                "kvm-hello names a stub that {file} does not have: {stub}"
            );
            None
        }
        status => panic!("kvm-hello {args:?} ended with {status:?} (0, or 6 at a stub, expected): {stderr}"),
    }
}

#[test]
fn the_json_report_names_the_stub() {
    if lab1_untouched() {
        kvm_hello().arg("--json").assert().code(STATUS_NOT_IMPLEMENTED).stdout(
            predicate::str::contains(r#""kind":"not_implemented""#).and(predicate::str::contains("lab1 vm_init")),
        );
        return;
    }
    let out = kvm_hello().arg("--json").output().expect("kvm-hello runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => assert!(stdout.contains("Hello, world!"), "{stdout}"),
        Some(STATUS_NOT_IMPLEMENTED) => assert!(stdout.contains(r#""kind":"not_implemented""#), "{stdout}"),
        status => panic!(
            "kvm-hello --json ended with {status:?} (0, or 6 at a stub, expected): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn step_and_gdb_run_the_students_labs_and_stop_at_the_first_stub() {
    if lab1_untouched() {
        for args in [
            &["--step"][..],
            &["--step", "--mode", "real"],
            &["--gdb", "127.0.0.1:0"],
        ] {
            kvm_hello()
                .args(args)
                .assert()
                .code(STATUS_NOT_IMPLEMENTED)
                .stdout("")
                .stderr(predicate::str::starts_with(format!("{NOT_IMPLEMENTED}lab1 vm_init")));
        }
        return;
    }
    // Lab 1 is done: --step goes as far as the labs do (--gdb would wait for a debugger now:
    // tests/gdb.rs drives it).
    for args in [&["--step"][..], &["--step", "--mode", "real"]] {
        assert_first_stub_left_or_done(args);
    }
}
