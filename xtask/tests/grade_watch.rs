//! `cargo grade --watch` as a user meets it when mistyped: one line, status 2, before anything is
//! built or watched. (Watching a student copy is a system test: `tests/system/watch.rs`.)

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn watch_with_other_arguments_is_bad_usage_in_one_line() {
    for args in [["grade", "--watch", "lab2"], ["grade", "lab2", "--watch"]] {
        Command::new(assert_cmd::cargo::cargo_bin!("xtask"))
            .args(args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(
                predicate::str::starts_with("cargo grade: --watch takes no other argument")
                    .and(predicate::function(|s: &str| s.lines().count() == 1)),
            );
    }
}
