//! `cargo xtask student-kit`: the round trip. Export a student copy; it leaks no reference code;
//! untouched, it builds warning-free, its test command passes, kvm-hello stops at lab 1 with
//! status 6 and the grader reports every check not implemented or blocked; solved by pasting the
//! reference's functions into its lab files, its test command still passes and it gets full
//! marks; with one lab file broken (a syntax error, a changed signature), only that lab and the
//! checks that need it are lost.
#![cfg(feature = "instructor")]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Reference body lines shorter than this (`Ok(())`) say nothing about the answer.
const MIN_LEAK_LINE: usize = 16;

/// The lines of every reference function body that the lab's stub file does not already show.
fn reference_body_lines() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for lab in LABS {
        let dir = instructors().join("labs").join(lab).join("src");
        let stub = pristine_stub(lab);
        let (mut depth, mut in_fn) = (0usize, false);
        for line in read(&dir.join("solution.rs")).lines() {
            if depth == 0 && (line.starts_with("pub fn ") || line.starts_with("fn ")) {
                in_fn = true;
            }
            let body = in_fn && depth > 0;
            depth = (depth + line.matches('{').count()).saturating_sub(line.matches('}').count());
            in_fn &= depth > 0 || !line.starts_with('}');
            let line = line.trim();
            if body && line.len() >= MIN_LEAK_LINE && !line.starts_with("//") && !stub.lines().any(|l| l.trim() == line)
            {
                found.push((lab.to_owned(), line.to_owned()));
            }
        }
    }
    assert!(
        found.len() > 100,
        "the leak check knows only {} reference lines",
        found.len()
    );
    found
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

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
            _ => panic!("a check of the untouched student copy must be not implemented or blocked: {result}"),
        }
    }
    assert!(not_implemented >= 20, "only {not_implemented} checks report a stub");
}

/// One lab's file does not compile (`break_it` turns its solved source into a broken one): its
/// checks say so with the compiler's first error and `expected` in it, the checks that need the lab
/// are blocked, and every other check still passes.
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
fn a_student_copy_leaks_nothing_and_grades_from_untouched_to_full_marks() {
    let kit = export(&scratch("student-kit-round-trip").join("kit"));
    assert_no_leak(&kit);
    assert!(!kit.join("book/src/instructors.md").exists());
    assert!(kit.join(".github/workflows/grade.yml").is_file());
    for lab in LABS {
        assert_eq!(
            read(&kit.join(format!("labs/{lab}/src/lib.rs"))),
            read(&kit.join(format!("xtask/stubs/{lab}.rs"))),
            "the untouched copy of {lab} differs from its lab file"
        );
    }

    assert_tests_pass(&kit, "untouched");
    assert_untouched(&kit);
    let help = cargo(&kit, &["xtask", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("grade") && !help.contains("student-kit") && !help.contains("grade-submissions"),
        "{help}"
    );

    solve(&kit, "lab1-memory");
    solve(&kit, "lab2-paging");
    assert_tests_pass(&kit, "partly solved");
    for lab in LABS.iter().filter(|lab| !["lab1-memory", "lab2-paging"].contains(lab)) {
        solve(&kit, lab);
    }
    assert_tests_pass(&kit, "solved");
    assert_full_marks(&grade(&kit));
    // A half-typed function in lab 3.
    assert_partial_credit(&kit, "lab3-registers", 3, "labs/lab3-registers/src/lib.rs:", |source| {
        format!("{source}\npub fn half_typed( {{\n")
    });
    // Lab 2 compiles on its own but no longer fits the kit: translate takes one more argument.
    assert_partial_credit(
        &kit,
        "lab2-paging",
        2,
        "labs/lab2-paging/src/lib.rs does not fit the kit",
        |source| source.replacen("pub fn translate(", "pub fn translate(_extra: u8, ", 1),
    );
}

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

/// `git ARGS` in `repo`: its standard output.
fn git_stdout(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(repo)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A copy of the instructors' repository committed to a git repository of its own.
fn committed_copy(name: &str) -> std::path::PathBuf {
    let repo = instructors_copy(name);
    git(&repo, &["init", "--quiet"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "kit"]);
    repo
}

/// The files a student copy holds that the export writes itself.
fn is_generated(relative: &str) -> bool {
    relative == "README.md" || relative == ".github/workflows/grade.yml" || relative.starts_with("xtask/stubs/")
}

fn write_file(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

#[test]
fn an_export_beside_submissions_and_grades_ships_neither() {
    let repo = committed_copy("student-kit-untracked");
    // Where course staff might keep a class's work and its gradebook: in the repository, untracked.
    let secret = "7f3a-not-for-students";
    write_file(
        &repo.join("submissions/alice/labs/lab2-paging/src/lib.rs"),
        &format!("// alice's lab 2, {secret}\npub fn translate() {{}}\n"),
    );
    write_file(&repo.join("grades.csv"), &format!("student,total\nalice,97 {secret}\n"));
    // Ignored build output never matters.
    write_file(&repo.join("target/debug/leftover.txt"), secret);
    // A tracked chapter edited since the last commit is exported as the working tree holds it.
    let chapter = repo.join("book/src/lab1-memory.md");
    std::fs::write(&chapter, format!("{}\nEdited after the last commit.\n", read(&chapter))).unwrap();

    let kit = repo.join("../kit");
    let out = export_from(&repo, &kit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("student-kit: left out grades.csv, submissions/ (untracked, outside the exported folders)"),
        "{stderr}"
    );
    let tracked = git_stdout(&repo, &["ls-files"]);
    let tracked: Vec<&str> = tracked.lines().collect();
    let shipped = files(&kit);
    assert!(shipped.len() > 100, "only {} files shipped", shipped.len());
    for path in shipped {
        let relative = path.strip_prefix(&kit).unwrap().to_string_lossy().into_owned();
        assert!(
            tracked.contains(&relative.as_str()) || is_generated(&relative),
            "the student copy has {relative}, which git does not track"
        );
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(
            !text.contains(secret),
            "the student copy's {relative} holds an untracked file's text"
        );
    }
    assert!(read(&kit.join("book/src/lab1-memory.md")).contains("Edited after the last commit."));

    // An untracked file where the export reads: it refuses, names the first three, writes nothing.
    for name in ["draft-a.md", "draft-b.md", "draft-c.md", "draft-d.md"] {
        write_file(&repo.join("book/src").join(name), "# Draft\n");
    }
    let out = export_from(&repo, &repo.join("../drafts"));
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "student-kit: git does not track book/src/draft-a.md, book/src/draft-b.md, book/src/draft-c.md, and 1 more \
         under the exported folders (.cargo, book, crates, grader, guest, labs, src, tests, xtask): the student copy \
         is made of what git tracks only; commit them, remove them, or move them outside the repository"
    );
    assert!(!repo.join("../drafts").exists(), "a refused export wrote files");
    for name in ["draft-a.md", "draft-b.md", "draft-c.md", "draft-d.md"] {
        std::fs::remove_file(repo.join("book/src").join(name)).unwrap();
    }

    // Submissions put inside an exported folder are refused the same way, as one folder.
    write_file(&repo.join("labs/submissions/bob/lib.rs"), secret);
    let out = export_from(&repo, &repo.join("../inside"));
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("student-kit: git does not track labs/submissions/ under the exported folders"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn an_export_from_a_folder_that_is_not_a_git_checkout_refuses() {
    // As a tarball unpacks: the kit's files and no `.git`. GIT_CEILING_DIRECTORIES keeps git from
    // finding a repository above it (this test's own, whose target/ may hold the copy).
    let repo = instructors_copy("student-kit-no-git");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["student-kit", repo.join("../kit").to_str().unwrap()])
        .env("CARGO_MANIFEST_DIR", repo.join("xtask"))
        .env("GIT_CEILING_DIRECTORIES", repo.parent().unwrap())
        .output()
        .expect("xtask runs");
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "student-kit: {}: git cannot tell which files are the kit (git rev-parse --show-toplevel: fatal: not a git repository",
            repo.display()
        )) && stderr.trim_end().ends_with(
            "): the student copy is made of the files git tracks; export from a git clone of the instructors' repository"
        ),
        "{stderr}"
    );
    assert!(!repo.join("../kit").exists(), "a refused export wrote files");

    // Inside another checkout that does not track it as its root: refused too, saying where.
    let outer = repo.parent().unwrap();
    git(outer, &["init", "--quiet"]);
    let out = export_from(&repo, &outer.join("kit"));
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "student-kit: {} is not the top of a git checkout (it lies inside the one at {}): the student copy is \
             made of the files git tracks; export from a git clone of the instructors' repository",
            repo.display(),
            outer.display()
        )
    );
}
