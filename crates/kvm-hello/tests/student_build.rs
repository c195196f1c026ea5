//! kvm-hello as a student first meets it: every lab is a stub.
#![cfg(not(feature = "solution"))]

mod common;

use common::kvm_hello;
use predicates::prelude::*;

#[test]
fn the_first_stub_stops_the_run_with_status_6_and_one_line() {
    for mode in ["long", "protected", "paged32", "real"] {
        kvm_hello().args(["--mode", mode]).assert().code(6).stdout("").stderr(
            "kvm-hello: not implemented yet: lab1 vm_init (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory \
                 and the vCPU)\n",
        );
    }
}

#[test]
fn the_json_report_names_the_stub() {
    kvm_hello()
        .arg("--json")
        .assert()
        .code(6)
        .stdout(predicate::str::contains(r#""kind":"not_implemented""#).and(predicate::str::contains("lab1 vm_init")));
}

#[test]
fn step_and_gdb_run_the_students_labs_and_stop_at_the_first_stub() {
    for args in [
        &["--step"][..],
        &["--step", "--mode", "real"],
        &["--gdb", "127.0.0.1:0"],
    ] {
        kvm_hello()
            .args(args)
            .assert()
            .code(6)
            .stdout("")
            .stderr(predicate::str::starts_with(
                "kvm-hello: not implemented yet: lab1 vm_init",
            ));
    }
}
