//! `cargo xtask student-kit`: the round trip. Export a student copy; it leaks no reference code;
//! untouched, it builds warning-free, its test command passes, kvm-hello stops at lab 1 with
//! status 6 and the grader reports every check not implemented or blocked; solved by pasting the
//! reference's functions into its lab files, its test command still passes and it gets full
//! marks; with one lab file broken (a syntax error, a changed signature), only that lab and the
//! checks that need it are lost.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// No `solution.rs`, no `solution` feature, no line of a reference function body in what students
/// read (the book, the README, the lab files and their untouched copies).
fn assert_no_leak(kit: &Path) {
    let reference = reference_body_lines();
    for path in files(kit) {
        let relative = path.strip_prefix(kit).unwrap().to_string_lossy().into_owned();
        assert!(!relative.ends_with("solution.rs"), "the student copy has {relative}");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for word in ["feature = \"solution\"", "--features solution"] {
            assert!(!text.contains(word), "the student copy's {relative} mentions {word}");
        }
        let read_by_students = ["book/", "labs/", "xtask/stubs/", "README.md"]
            .iter()
            .any(|p| relative.starts_with(p));
        if read_by_students {
            assert!(
                !text.contains("solution.rs"),
                "the student copy's {relative} names a solution.rs"
            );
            for (lab, line) in &reference {
                assert!(
                    !text.lines().any(|l| l.trim() == line),
                    "the student copy's {relative} has a line of {lab}'s reference: {line}"
                );
            }
        }
    }
}

fn assert_untouched(kit: &Path) {
    let kvm_hello = Command::new(kit.join("target/debug/kvm-hello"))
        .output()
        .expect("kvm-hello runs");
    assert_eq!(
        kvm_hello.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&kvm_hello.stderr)
    );
    assert!(kvm_hello.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&kvm_hello.stderr),
        "kvm-hello: not implemented yet: lab1 vm_init (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)\n"
    );
    let results = grade(kit);
    let mut not_implemented = 0;
    for result in &results {
        let message = result["message"].as_str().unwrap_or_default();
        match result["outcome"].as_str() {
            Some("not_implemented") => {
                assert!(message.starts_with("not implemented yet: lab"), "{result}");
                not_implemented += 1;
            }
            Some("blocked") => assert!(message.starts_with("blocked by lab "), "{result}"),
            // A check this host cannot run (paged32 on a PVM host) is not run, whatever the labs.
            Some("not_run")
                if std::path::Path::new("/sys/module/kvm_pvm").exists()
                    && result["check"].as_str().unwrap_or_default().contains("paged32") => {}
            _ => panic!("a check of the untouched student copy must be not implemented or blocked: {result}"),
        }
    }
    assert!(not_implemented >= 20, "only {not_implemented} checks report a stub");
}

/// One lab's file does not compile (`break_it` turns its solved source into a broken one): its
/// checks say so with the compiler's first error and `expected` in it, the checks that need the lab
/// are blocked, and every other check still passes.
/// Labs 0 to 6 solved, lab 7 untouched: `kvm-hello --lab migrate` builds its VM with labs 1 to 3
/// and lab 6, and stops at lab 7's first stub with status 6, naming it.
fn assert_stops_at_lab7(kit: &Path) {
    let build = cargo(kit, &["build", "-p", "kvm-hello"]);
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let out = Command::new(kit.join("target/debug/kvm-hello"))
        .args(["--lab", "migrate"])
        .output()
        .expect("kvm-hello runs");
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        // The source runs the guest a while (run_slice) before it moves it (migrate).
        "kvm-hello: not implemented yet: lab7 run_slice (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)\n"
    );
}

fn assert_partial_credit(kit: &Path, lab: &str, number: u8, expected: &str, break_it: impl Fn(&str) -> String) {
    let file = format!("labs/{lab}/src/lib.rs");
    let solved = read(&kit.join(&file));
    let broken = break_it(&solved);
    assert_ne!(broken, solved);
    std::fs::write(kit.join(&file), broken).unwrap();
    let (results, stderr) = grade_with_stderr(kit);
    std::fs::write(kit.join(&file), solved).unwrap();
    // The student sees the compiler's first error, with its file and line, before the scoreboard.
    let said = stderr
        .lines()
        .find(|line| line.starts_with(&format!("cargo grade: {file} does not compile")))
        .unwrap_or_else(|| panic!("cargo grade does not say that {file} does not compile: {stderr}"));
    let first_error = said.split("First error: ").nth(1).unwrap_or_default();
    assert!(
        first_error.contains(expected) && first_error.contains(": error"),
        "no first error with its place: {said}"
    );
    let mut own_checks = 0;
    for result in &results {
        let check = result["check"].as_str().unwrap();
        let message = result["message"].as_str().unwrap_or_default();
        if check.starts_with(&format!("lab{number}_")) {
            assert!(message.starts_with("does not compile: "), "{result}");
            assert!(message.contains(expected), "{result}");
            own_checks += 1;
        } else if result["outcome"] == "not_run" {
            // Only what this host cannot run: paged32 on a PVM host.
            assert!(
                std::path::Path::new("/sys/module/kvm_pvm").exists() && check.contains("paged32"),
                "{result}"
            );
        } else if result["outcome"] != "passed" {
            assert_eq!(result["outcome"], "blocked", "{result}");
            assert!(message.starts_with(&format!("blocked by lab {number}")), "{result}");
        }
    }
    assert!(own_checks > 0);
    let passed = results.iter().filter(|r| r["outcome"] == "passed").count();
    assert!(passed >= 20, "only {passed} checks pass with {file} broken");
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_student_copy_leaks_nothing_and_grades_from_untouched_to_full_marks() {
    let copy = crate::student_copy();
    let kit = copy.path();
    assert_no_leak(kit);
    assert!(!kit.join("book/src/instructors.md").exists());
    assert!(kit.join(".github/workflows/grade.yml").is_file());
    for lab in LABS {
        assert_eq!(
            read(&kit.join(format!("labs/{lab}/src/lib.rs"))),
            read(&kit.join(format!("xtask/stubs/{lab}.rs"))),
            "the untouched copy of {lab} differs from its lab file"
        );
    }

    assert_tests_pass(kit, "untouched");
    assert_untouched(kit);
    let help = cargo(kit, &["xtask", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("grade") && !help.contains("student-kit") && !help.contains("grade-submissions"),
        "{help}"
    );

    solve(kit, "lab1-memory");
    solve(kit, "lab2-paging");
    assert_tests_pass(kit, "partly solved");
    for lab in LABS
        .iter()
        .filter(|lab| !["lab1-memory", "lab2-paging", "lab7-migration"].contains(lab))
    {
        solve(kit, lab);
    }
    assert_stops_at_lab7(kit);
    solve(kit, "lab7-migration");
    assert_tests_pass(kit, "solved");
    assert_full_marks(&grade(kit));
    // A half-typed function in lab 3.
    assert_partial_credit(kit, "lab3-registers", 3, "labs/lab3-registers/src/lib.rs:", |source| {
        format!("{source}\npub fn half_typed( {{\n")
    });
    // Lab 2 compiles on its own but no longer fits the kit: translate takes one more argument.
    assert_partial_credit(
        kit,
        "lab2-paging",
        2,
        "labs/lab2-paging/src/lib.rs does not fit the kit",
        |source| source.replacen("pub fn translate(", "pub fn translate(_extra: u8, ", 1),
    );
}
