//! `cargo xtask student-kit` refuses what it must not export: a line of the reference in the
//! book, a lab file without an untouched version, a folder that is not empty. (The round trip of
//! a student copy, which builds it, is a system test: `tests/system/round_trip.rs`.)
#![cfg(feature = "instructor")]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A copy of the instructors' repository's sources (no build output, no git history), with the
/// untouched exercises in its lab files, to break on purpose.
fn instructors_copy(name: &str) -> std::path::PathBuf {
    let copy = scratch(name).join("repo");
    let root = instructors();
    for path in files(&root) {
        let relative = path.strip_prefix(&root).unwrap();
        if relative.starts_with(".git") || relative.starts_with("book/book") {
            continue;
        }
        let to = copy.join(relative);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&path, &to).unwrap();
    }
    for lab in LABS {
        std::fs::write(copy.join(format!("labs/{lab}/src/lib.rs")), pristine_stub(lab)).unwrap();
    }
    copy
}

fn export_from(repo: &Path, dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["student-kit", dir.to_str().unwrap()])
        .env("CARGO_MANIFEST_DIR", repo.join("xtask"))
        .output()
        .expect("xtask runs")
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(repo)
        .args(["-c", "user.name=kit", "-c", "user.email=kit@example.org"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_export_refuses_a_leak_and_a_lab_without_an_untouched_version() {
    let repo = instructors_copy("student-kit-refusals");
    git(&repo, &["init", "--quiet"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "kit"]);

    let chapter = repo.join("book/src/lab1-memory.md");
    let original = read(&chapter);
    let leaked = reference_body_lines()
        .into_iter()
        .find(|(lab, _)| lab == "lab1-memory")
        .unwrap()
        .1;
    std::fs::write(&chapter, format!("{original}\n```rust\n{leaked}\n```\n")).unwrap();
    let out = export_from(&repo, &repo.join("../leak"));
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("book/src/lab1-memory.md") && stderr.contains("a line of the reference"),
        "{stderr}"
    );
    std::fs::write(&chapter, original).unwrap();

    // An instructor tried lab 2 here, and even committed it: the export ships the newest committed
    // untouched exercise, not the attempt.
    let lab2 = repo.join("labs/lab2-paging/src/lib.rs");
    let source = read(&lab2);
    let edited = source.replacen(
        "    todo!(\"lab2 translate",
        "    let _ = 1;\n    unimplemented!(\"lab2 translate",
        1,
    );
    assert_ne!(edited, source);
    std::fs::write(&lab2, &edited).unwrap();
    git(&repo, &["commit", "--quiet", "-am", "lab 2 tried"]);
    let out = export_from(&repo, &repo.join("../tried"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shipped = read(&repo.join("../tried/labs/lab2-paging/src/lib.rs"));
    assert!(
        shipped.contains("    todo!(\"lab2 translate") && !shipped.contains("let _ = 1;"),
        "{shipped}"
    );

    // Without an untouched version anywhere, the export refuses in one line.
    std::fs::remove_dir_all(repo.join(".git")).unwrap();
    let out = export_from(&repo, &repo.join("../edited"));
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "student-kit: labs/lab2-paging/src/lib.rs is not the untouched exercise (translate is not its todo! stub), \
         and no committed version of it is: restore it from a clean checkout of the kit"
    );
    assert!(!repo.join("../edited").exists(), "a refused export wrote files");
}

#[test]
fn the_export_wants_a_new_or_empty_folder() {
    let dir = scratch("student-kit-not-empty");
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let out = xtask(&["student-kit", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(read(&dir.join("keep.txt")), "mine");
}
