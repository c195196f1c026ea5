//! The kit's own promises about its exercises (rustlings' maintainer check): every lab file is a
//! set of `todo!` stubs that say where they are and which chapter explains them, the reference
//! defines every stubbed function, and the untouched student kit builds cleanly and stops at
//! the first stub with status 6.

use std::path::{Path, PathBuf};
use std::process::Command;

const LABS: [&str; 7] = [
    "lab0-lwn",
    "lab1-memory",
    "lab2-paging",
    "lab3-registers",
    "lab4-exit-loop",
    "lab5-hypercalls",
    "lab6-scheduling",
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// A stub: the function's name and its `todo!` message.
#[derive(Debug)]
struct Stub {
    function: String,
    message: String,
}

/// The `todo!("…")` stubs of a lab file, each with the `pub fn` it sits in.
fn stubs(source: &str) -> Vec<Stub> {
    let mut found = Vec::new();
    for (at, _) in source.match_indices("todo!(") {
        let function = source[..at]
            .rsplit_once("pub fn ")
            .and_then(|(_, rest)| rest.split('(').next())
            .unwrap_or_default()
            .to_owned();
        let after = source[at + "todo!(".len()..].trim_start();
        let message = after
            .strip_prefix('"')
            .and_then(|m| m.split_once('"'))
            .map(|(m, _)| m)
            .unwrap_or_default();
        found.push(Stub {
            function,
            message: message.to_owned(),
        });
    }
    found
}

fn book_chapters() -> String {
    read(&workspace().join("book/src/SUMMARY.md"))
}

#[test]
fn every_stub_names_its_lab_function_file_and_an_existing_chapter() {
    let summary = book_chapters();
    for lab in LABS {
        let file = format!("labs/{lab}/src/lib.rs");
        let source = read(&workspace().join(&file));
        let number = &lab[3..4];
        let stubs = stubs(&source);
        assert!(!stubs.is_empty(), "{file} has no todo! stub");
        assert!(
            source.contains(&format!("// TODO(lab{number})")),
            "{file} has no TODO(lab{number}) comment"
        );
        for stub in &stubs {
            let prefix = format!("lab{number} {} ({file}; book: ", stub.function);
            assert!(
                stub.message.starts_with(&prefix),
                "{file}: stub in {} says {:?}, expected it to start with {prefix:?}",
                stub.function,
                stub.message
            );
            let chapter = stub.message[prefix.len()..].trim_end_matches(')');
            let title = chapter.replacen(", ", ": ", 1);
            assert!(
                summary.contains(&format!("[{title}]")),
                "{file}: chapter {title:?} of {} is not in book/src/SUMMARY.md",
                stub.function
            );
        }
    }
}

#[test]
fn the_reference_defines_every_stubbed_function() {
    for lab in LABS {
        let dir = workspace().join("labs").join(lab).join("src");
        let lib = read(&dir.join("lib.rs"));
        let solution = read(&dir.join("solution.rs"));
        for stub in stubs(&lib) {
            assert!(
                solution.contains(&format!("pub fn {}(", stub.function)),
                "labs/{lab}/src/solution.rs lacks pub fn {}",
                stub.function
            );
            let gate = format!("#[cfg(not(feature = \"solution\"))]\npub fn {}(", stub.function);
            assert!(
                lib.contains(&gate),
                "labs/{lab}/src/lib.rs: pub fn {} must be gated by cfg(not(feature = \"solution\"))",
                stub.function
            );
        }
    }
}

/// Builds the untouched student kit (no `solution`: kvm-hello and the grader) in its own target
/// directory, warnings denied, once per test run. Returns its `debug` folder.
fn build_student_kit() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_student_kit_now).clone()
}

fn build_student_kit_now() -> PathBuf {
    let target = workspace().join("target").join("kit-student");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--locked",
            "--offline",
            "-p",
            "kvm-hello",
            "-p",
            "grader",
            "--target-dir",
        ])
        .arg(&target)
        .env("RUSTFLAGS", "-D warnings")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the student kit does not build warning-free:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug")
}

#[test]
fn the_student_kit_builds_warning_free_and_stops_at_lab1_with_status_6() {
    let kvm_hello = build_student_kit().join("kvm-hello");
    let out = Command::new(&kvm_hello).output().expect("kvm-hello runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr,
        "kvm-hello: not implemented yet: lab1 vm_init (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)\n"
    );
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    let out = Command::new(&kvm_hello)
        .args(["--lab", "lwn"])
        .output()
        .expect("kvm-hello runs");
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kvm-hello: not implemented yet: lab0 create_vm (labs/lab0-lwn/src/lib.rs; book: Lab 0, The LWN warm-up)\n"
    );
}

#[test]
fn the_untouched_kit_fails_every_check_as_not_implemented_or_blocked() {
    let grader = build_student_kit().join("grader");
    let out = Command::new(&grader).arg("--json").output().expect("the grader runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let results = results.as_array().expect("a list of checks");
    let mut not_implemented = 0;
    for result in results {
        let message = result["message"].as_str().unwrap_or_default();
        match result["outcome"].as_str() {
            Some("not_implemented") => {
                assert!(message.starts_with("not implemented yet: lab"), "{result}");
                not_implemented += 1;
            }
            Some("blocked") => assert!(message.starts_with("blocked by lab "), "{result}"),
            _ => panic!("a check of the untouched kit must fail as not implemented or blocked: {result}"),
        }
    }
    assert!(not_implemented >= 20, "only {not_implemented} checks report a stub");
}
