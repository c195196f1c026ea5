//! `cargo xtask svm-check` as a user meets it when something is missing or mistyped. The full
//! run (QEMU, the guest, the table) is run by CI itself (`.ci/run`), not from a test.

use assert_cmd::Command;
use predicates::prelude::*;

fn xtask() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("xtask"))
}

#[test]
fn a_missing_qemu_is_named_with_its_debian_package_in_one_line() {
    // No PATH: qemu-system-x86_64 cannot be found, whatever else this machine has.
    xtask()
        .args(["svm-check"])
        .env("PATH", "/nonexistent")
        .assert()
        .code(3)
        .stdout("")
        .stderr(
            predicate::str::starts_with("svm-check: missing")
                .and(predicate::str::contains("qemu-system-x86_64 (package qemu-system-x86)"))
                .and(predicate::str::contains("sudo apt-get install -y qemu-system-x86"))
                .and(predicate::function(|s: &str| s.lines().count() == 1)),
        );
}

#[test]
fn a_bad_time_limit_is_bad_usage() {
    xtask()
        .args(["svm-check", "--time-limit", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--time-limit"));
}
