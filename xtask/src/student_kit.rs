//! `cargo xtask student-kit DIR [--with-answers]`: the repository a class receives. No
//! `solution.rs`, no `solution` feature, no reference code in the book (answers to the
//! assignment's questions only with `--with-answers`), no instructor-only chapter, test or
//! command; a README for students, the untouched stubs kept for `cargo grade`, and a CI workflow.
//!
//! Before writing anything it checks the stubs (each stubbed function is an untouched `todo!` that
//! names its lab, file and book chapter, and the reference defines it); after writing, it checks
//! that no line of a reference function body and no mention of the `solution` feature is left.
//!
//! The copy is made of the files git tracks (`git ls-files`: the index, so a file `git add`ed but
//! not yet committed counts) and of the files the export writes itself (`xtask/stubs/`, the
//! student README, the CI workflow), never of a listing of the folder: course staff keep
//! submissions, gradebooks and notes beside the kit, and none of them may reach a class. Untracked
//! files outside the exported folders (the top-level folders a shipped file is in: a
//! `submissions/` folder or a `grades.csv` at the root) are never read; untracked (not ignored)
//! files under them make the export refuse (status 6), since a file there was either forgotten by
//! `git add` (the copy would lack it) or does not belong in the kit. A folder that is not the top
//! of a git checkout (a tarball, a copy), or one git cannot list, is refused (status 7): nothing
//! says which of its files are the kit. A tracked file is exported as the working tree holds it,
//! uncommitted edits included (the lab files excepted: their untouched exercise comes from a
//! pristine source, see `kit::pristine_stub`): staff edit the book and the kit and export what
//! they just built and tested, and every check above runs on what is written; HEAD's version
//! would silently drop those edits. Which files ship is git's record; what they say is the
//! working tree's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::kit::{self, LABS, STUB_GATE};
use crate::shape;

/// Bad usage: `DIR` exists and is not empty.
const STATUS_USAGE: u8 = 2;
/// The instructors' repository is not fit to export (a stub was edited, reference code leaks).
const STATUS_NOT_EXPORTABLE: u8 = 5;
/// The working tree holds files git does not track under the exported folders.
const STATUS_UNTRACKED: u8 = 6;
/// The instructors' repository is not the top of a git checkout: no record of what the kit is.
const STATUS_NOT_A_CHECKOUT: u8 = 7;
/// How many untracked paths a refusal names.
const NAMED_UNTRACKED: usize = 3;

/// The gate of a test file that runs in the student build only.
const STUDENT_BUILD_TEST_GATE: &str = "#![cfg(not(feature = \"solution\"))]";
/// The gate of the reference module.
const SOLUTION_GATE: &str = "#[cfg(feature = \"solution\")]";
/// The gate of the course staff's commands in xtask.
const INSTRUCTOR_GATE: &str = "#[cfg(feature = \"instructor\")]";
/// Text that must not survive the export anywhere: the feature that builds the reference, and the
/// one of the course staff's commands. (Code may still look for a `solution.rs` to find out which
/// copy it is in; the files students read may not name it: see the kit's round-trip test.)
const FORBIDDEN: [&str; 3] = ["feature = \"solution\"", "features solution", "\"instructor\""];
/// Book mark-up removed from the student copy, with what is inside (`<!-- answer -->` blocks are
/// kept, without the markers, with `--with-answers`).
const REMOVED_BLOCKS: [(&str, &str); 2] = [
    ("<!-- reference -->", "<!-- /reference -->"),
    ("<!-- instructors -->", "<!-- /instructors -->"),
];
const ANSWER_BLOCK: (&str, &str) = ("<!-- answer -->", "<!-- /answer -->");
/// A block the instructors' book hides in a comment and the student copy shows.
const STUDENT_BLOCK: (&str, &str) = ("<!-- student:", "-->");
/// A `<details>` block whose summary starts so holds reference code; one whose summary is
/// "Answer" holds the answer to a question.
const REFERENCE_SUMMARY: &str = "<summary>Reference solution";
const ANSWER_SUMMARY: &str = "<summary>Answer";
/// Reference body lines shorter than this (`Ok(())`, `source,`) say nothing about the answer.
const MIN_LEAK_LINE: usize = 16;
/// Reference body lines that the kit's given code also has, word for word, because there is one
/// way to write them (a match arm, a struct's rest), not because it copies the answer.
const GENERIC_LINES: [&str; 10] = [
    "let mut bytes = Vec::new();",
    ".write_obj(value, GuestAddress(addr))",
    "Mode::Paged32 => {",
    "..Default::default()",
    "VcpuExit::Hlt => {",
    "VcpuExit::IoOut(port, data) => {",
    "if image.len() > MAX_IMAGE_SIZE {",
    "let region = kvm_userspace_memory_region {",
    "sregs.cs.selector = 0;",
    "limit: FLAT_LIMIT,",
];
/// Lines the kit's given code shares with the reference: the grader computes some expected
/// values the way the reference does, and kvm-hello's `--explain` turns a guest physical address
/// into a host one (known; both are shipped, so a student can read them).
const KIT_OVERLAP: [&str; 10] = [
    "host_base.checked_add(gpa)",
    "let address = vcpu.fd.get_kvm_run() as *const _ as u64;",
    "const FLAGS: u64 = PTE_PRESENT | PTE_RW | PTE_USER;",
    "let long_code = code && mode == Mode::Long;",
    "selector: if code { CODE_SELECTOR } else { DATA_SELECTOR },",
    "type_: if code { SEG_TYPE_CODE } else { SEG_TYPE_DATA },",
    "let accounts = [vms[0].account, vms[1].account];",
    "let started = Instant::now();",
    "let version = kvm.get_api_version();",
    "if version != KVM_API_VERSION {",
];

/// Lines the book teaches as facts (the long-mode state KVM_SET_SREGS accepts, in "Under
/// KVM_RUN", from `crates/kvm-hello/tests/set_sregs.rs`) that the reference also has.
const TAUGHT_LINES: [&str; 2] = ["sregs.cr4 = CR4_PAE;", "sregs.efer = EFER_LME | EFER_LMA;"];

/// Files and folders that stay with the instructors (besides every `solution.rs` and every test
/// that builds the reference).
const INSTRUCTOR_ONLY: [&str; 23] = [
    ".ci",
    // Mutation testing of the references: its settings and its record name the references' code.
    ".cargo/mutants.toml",
    "grader/mutants.md",
    "README.md",
    "book/src/instructors.md",
    "crates/kvm-hello/bench",
    // Lab 0's answer as one program (the book's reference block shows it; the warm-up's guest
    // bytes, which it also holds, are written into the student book instead).
    "crates/kvm-hello/tests/lwn.rs",
    "grader/tests/grade.rs",
    // The reference's pass counts (cargo xtask stability --record) and the command that writes them.
    "grader/stability.md",
    "xtask/src/stability.rs",
    // The hidden checks (the copy gets a stand-in that says how many and their points), the
    // hostile probe of the isolation tests, and the jail's own tests (bubblewrap and python3).
    "grader/src/checks/hidden.rs",
    "grader/tests/bin",
    "grader/tests/isolation.rs",
    "crates/kit-jail/tests",
    "tests/reference_blocks.rs",
    // The rule that a test is ignored only as slow, for cargo xtask ci (instructors' only).
    "tests/slow_tests.rs",
    "xtask/bench",
    "xtask/src/shape.rs",
    "xtask/src/student_kit.rs",
    "xtask/src/submissions.rs",
    "xtask/src/gradescope.rs",
    "xtask/src/ci.rs",
    "xtask/src/mutants.rs",
];
/// Instructor-only unless `--with-answers`: the test that every question has an answer.
const ANSWERS_TEST: &str = "tests/answers.rs";
/// xtask's own tests (the export's round trip, batch grading) stay with the instructors.
const XTASK_TESTS: &str = "xtask/tests";

/// `cargo xtask student-kit DIR [--with-answers]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the student copy (a new or empty folder).
    dir: PathBuf,
    /// Keep the answers to the assignment's questions in the book.
    #[arg(long)]
    with_answers: bool,
}

pub fn run(args: Args) -> u8 {
    match export(&kit::root(), &args.dir, args.with_answers) {
        Ok(Exported { written, left_out }) => {
            eprintln!("student-kit: wrote {written} files to {}", args.dir.display());
            if !left_out.is_empty() {
                eprintln!(
                    "student-kit: left out {} (untracked, outside the exported folders): only what git tracks is exported",
                    left_out.join(", ")
                );
            }
            0
        }
        Err((status, message)) => {
            eprintln!("student-kit: {message}");
            status
        }
    }
}

type Failure = (u8, String);

fn io_failure(what: &str, path: &Path, err: std::io::Error) -> Failure {
    (kit::status::IO, kit::io_error(what, path, err))
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|err| io_failure("read", path, err))
}

/// What an export did.
#[derive(Debug)]
pub struct Exported {
    /// How many files it wrote.
    pub written: usize,
    /// Untracked paths of the instructors' repository that it did not read (outside the exported
    /// folders; a folder ends with `/`).
    pub left_out: Vec<String>,
}

/// Writes the student copy of the kit at `root` into `dir`.
pub fn export(root: &Path, dir: &Path, with_answers: bool) -> Result<Exported, Failure> {
    let stubs = pristine_stubs(root).map_err(|message| (STATUS_NOT_EXPORTABLE, message))?;
    check_stubs(root, &stubs).map_err(|message| (STATUS_NOT_EXPORTABLE, message))?;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err((
            STATUS_USAGE,
            format!("{} is not empty: give a new or empty folder", dir.display()),
        ));
    }
    let mut written = 0;
    let (dropped, files): (Vec<PathBuf>, Vec<PathBuf>) = tracked_files(root)?
        .into_iter()
        .partition(|file| is_instructor_only(root, file, with_answers));
    let left_out = refuse_untracked(root, &files)?;
    let dropped_chapters: Vec<String> = dropped
        .iter()
        .filter(|file| file.starts_with("book/src"))
        .filter_map(|file| file.file_name().map(|name| name.to_string_lossy().into_owned()))
        .collect();
    for relative in &files {
        let from = root.join(relative);
        let contents = match transform(root, relative, with_answers, &dropped_chapters, &stubs)? {
            Some(text) => text.into_bytes(),
            None => std::fs::read(&from).map_err(|err| io_failure("read", &from, err))?,
        };
        write(dir, relative, &contents)?;
        written += 1;
    }
    for lab in LABS {
        let stub = student_lab_file(&stubs[lab.dir]);
        write(dir, Path::new(&lab.stub_copy()), stub.as_bytes())?;
        written += 1;
    }
    write(dir, Path::new("README.md"), student_readme().as_bytes())?;
    write(dir, Path::new(".github/workflows/grade.yml"), GRADE_WORKFLOW.as_bytes())?;
    let (checks, points) = hidden_summary();
    write(
        dir,
        Path::new(HIDDEN_CHECKS),
        hidden_stand_in(checks, points).as_bytes(),
    )?;
    written += 3;
    check_export(root, dir, &stubs).map_err(|message| (STATUS_NOT_EXPORTABLE, message))?;
    Ok(Exported { written, left_out })
}

/// `git ARGS` in `root`: its standard output, or a failure that says why git could not give it
/// (git's own first line: not a repository, a repository git does not trust, a broken index).
fn git(root: &Path, args: &[&str]) -> Result<Vec<u8>, Failure> {
    let out = std::process::Command::new("git")
        .current_dir(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| {
            (
                kit::status::IO,
                format!("cannot run git (git {}): {err}", args.join(" ")),
            )
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cause = stderr
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no message");
    Err((
        STATUS_NOT_A_CHECKOUT,
        format!(
            "{}: git cannot tell which files are the kit (git {}: {cause}): the student copy is made of the files git tracks; export from a git clone of the instructors' repository",
            root.display(),
            args.join(" ")
        ),
    ))
}

/// Paths from `git ls-files -z`.
fn paths(listing: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    listing
        .split(|byte| *byte == 0)
        .filter(|path| !path.is_empty())
        .map(|path| PathBuf::from(std::ffi::OsStr::from_bytes(path)))
        .collect()
}

/// The files git tracks in `root` that the working tree holds (a tracked file deleted there is
/// not exported, like any other uncommitted edit), sorted. `root` must be the top of its own
/// checkout: a copy of the kit inside another repository's folder is not tracked as the kit.
fn tracked_files(root: &Path) -> Result<Vec<PathBuf>, Failure> {
    let top = git(root, &["rev-parse", "--show-toplevel"])?;
    let top = PathBuf::from(String::from_utf8_lossy(&top).trim_end_matches('\n'));
    let same = |a: &Path, b: &Path| {
        a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().is_ok_and(|b| a == b))
    };
    if !same(&top, root) {
        return Err((
            STATUS_NOT_A_CHECKOUT,
            format!(
                "{} is not the top of a git checkout (it lies inside the one at {}): the student copy is made of the files git tracks; export from a git clone of the instructors' repository",
                root.display(),
                top.display()
            ),
        ));
    }
    let mut files: Vec<PathBuf> = paths(&git(root, &["ls-files", "-z", "--cached"])?)
        .into_iter()
        .filter(|file| !kit::is_build_output(file))
        .filter(|file| std::fs::symlink_metadata(root.join(file)).is_ok_and(|meta| meta.is_file()))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The exported folders: the top-level folders of the files the export ships.
fn exported_folders(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = files
        .iter()
        .filter(|file| file.components().count() > 1)
        .filter_map(|file| file.components().next().map(|first| PathBuf::from(first.as_os_str())))
        .collect();
    folders.sort();
    folders.dedup();
    folders
}

/// Refuses when git does not track a file (and does not ignore it) under the exported folders;
/// returns the untracked paths elsewhere, which the export never reads.
fn refuse_untracked(root: &Path, files: &[PathBuf]) -> Result<Vec<String>, Failure> {
    let untracked = paths(&git(
        root,
        &[
            "ls-files",
            "-z",
            "--others",
            "--exclude-standard",
            "--directory",
            "--no-empty-directory",
        ],
    )?);
    let folders = exported_folders(files);
    let (inside, outside): (Vec<PathBuf>, Vec<PathBuf>) = untracked
        .into_iter()
        .partition(|path| path.components().count() > 1 && folders.iter().any(|folder| path.starts_with(folder)));
    // (`--directory` names a wholly untracked folder once, with a trailing slash.)
    let shown = |path: &PathBuf| path.to_string_lossy().into_owned();
    if !inside.is_empty() {
        let mut named: Vec<String> = inside.iter().take(NAMED_UNTRACKED).map(shown).collect();
        if inside.len() > NAMED_UNTRACKED {
            named.push(format!("and {} more", inside.len() - NAMED_UNTRACKED));
        }
        let folders: Vec<String> = folders
            .iter()
            .map(|folder| folder.to_string_lossy().into_owned())
            .collect();
        return Err((
            STATUS_UNTRACKED,
            format!(
                "git does not track {} under the exported folders ({}): the student copy is made of what git tracks only; commit them, remove them, or move them outside the repository",
                named.join(", "),
                folders.join(", ")
            ),
        ));
    }
    Ok(outside.iter().map(shown).collect())
}

fn write(dir: &Path, relative: &Path, contents: &[u8]) -> Result<(), Failure> {
    let to = dir.join(relative);
    kit::write_if_changed(&to, contents).map_err(|err| io_failure("write", &to, err))
}

/// Whether a file of the instructors' repository stays out of the student copy.
fn is_instructor_only(root: &Path, relative: &Path, with_answers: bool) -> bool {
    let text = relative.to_string_lossy();
    let is_test = text.starts_with("tests/") || text.contains("/tests/");
    INSTRUCTOR_ONLY.iter().any(|path| relative.starts_with(path))
        || relative.starts_with(XTASK_TESTS)
        || relative
            .file_name()
            .is_some_and(|name| name == "solution.rs" || name == "results.json")
        || (!with_answers && relative == Path::new(ANSWERS_TEST))
        || (is_test
            && std::fs::read_to_string(root.join(relative))
                .is_ok_and(|source| source.contains("feature = \"solution\"") && !is_student_build_test(&source)))
}

/// A test of the student build only (`#![cfg(not(feature = "solution"))]` its one mention of the
/// feature): it ships, without that line.
fn is_student_build_test(source: &str) -> bool {
    let mentions: Vec<&str> = source
        .lines()
        .filter(|line| line.contains("feature = \"solution\""))
        .collect();
    mentions == [STUDENT_BUILD_TEST_GATE]
}

/// The student's version of a file, or `None` to copy it as it is.
fn transform(
    root: &Path,
    relative: &Path,
    with_answers: bool,
    dropped_chapters: &[String],
    stubs: &Stubs,
) -> Result<Option<String>, Failure> {
    let from = &root.join(relative);
    let text = relative.to_string_lossy();
    let transformed = if let Some(lab) = LABS.iter().find(|lab| lab.file() == text) {
        // The exercise as shipped, whatever the lab file here holds now.
        student_lab_file(&stubs[lab.dir])
    } else if text.ends_with(".rs") && is_student_build_test(&read(from)?) {
        read(from)?
            .lines()
            .filter(|line| *line != STUDENT_BUILD_TEST_GATE)
            .map(|line| format!("{line}\n"))
            .collect()
    } else if text.ends_with("Cargo.toml") {
        let manifest = remove_feature(&read(from)?, "solution");
        if text == "xtask/Cargo.toml" {
            remove_table(&manifest, "[features]")
        } else {
            manifest
        }
    } else if text == "xtask/src/main.rs" {
        remove_gated_items(&read(from)?, INSTRUCTOR_GATE)
    } else if text.starts_with("book/src/") && text.ends_with(".md") {
        let mut chapter = inline_instructor_includes(root, &student_chapter(&read(from)?, with_answers), with_answers)?;
        if text == "book/src/SUMMARY.md" {
            chapter = chapter
                .lines()
                .filter(|line| !dropped_chapters.iter().any(|name| line.contains(&format!("]({name})"))))
                .map(|line| format!("{line}\n"))
                .collect();
        }
        chapter
    } else {
        return Ok(None);
    };
    Ok(Some(transformed))
}

/// A chapter whose includes of files that stay with the instructors are replaced by the lines they
/// include, so that the student book still shows them and has no dangling include.
fn inline_instructor_includes(root: &Path, chapter: &str, with_answers: bool) -> Result<String, Failure> {
    let mut out = String::new();
    for line in chapter.lines() {
        let spec = line
            .trim()
            .strip_prefix("{{#include ../../")
            .and_then(|rest| rest.strip_suffix("}}"));
        let Some((file, anchor)) = spec.and_then(|spec| spec.split_once(':')) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if !is_instructor_only(root, Path::new(file), with_answers) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let source = read(&root.join(file))?;
        let mut inside = false;
        let mut found = false;
        for source_line in source.lines() {
            if source_line.trim().ends_with(&format!("ANCHOR: {anchor}")) {
                (inside, found) = (true, true);
            } else if source_line.trim().ends_with(&format!("ANCHOR_END: {anchor}")) {
                inside = false;
            } else if inside && !source_line.contains("ANCHOR: ") && !source_line.contains("ANCHOR_END: ") {
                out.push_str(source_line);
                out.push('\n');
            }
        }
        if !found {
            return Err((
                STATUS_NOT_EXPORTABLE,
                format!("the book includes {file}:{anchor}, an anchor that file does not have"),
            ));
        }
    }
    Ok(out)
}

/// A lab file without the gates of the stubs, the reference module and the note about it.
pub fn student_lab_file(source: &str) -> String {
    let mut out = Vec::new();
    let mut lines = source.lines();
    let mut in_note = false;
    while let Some(line) = lines.next() {
        if in_note || (line.starts_with("//! (") && line.contains("--features solution")) {
            in_note = !line.trim_end().ends_with(')');
            // The note ends a paragraph: drop the blank doc line before it too.
            if out.last() == Some(&"//!") && !in_note {
                out.pop();
            }
            continue;
        }
        match line.trim() {
            STUB_GATE => {}
            SOLUTION_GATE => {
                lines.next();
            }
            _ => out.push(line),
        }
    }
    while out.last().is_some_and(|line| line.trim().is_empty()) {
        out.pop();
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Removes feature `name` from a manifest (with the comment above it, and `[features]` if it ends
/// up empty).
pub fn remove_feature(manifest: &str, name: &str) -> String {
    let lines: Vec<&str> = manifest.lines().collect();
    let mut out: Vec<&str> = Vec::new();
    let mut in_table = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with('[') {
            in_table = line.trim() == "[features]";
        }
        // A target that needs the feature goes with it: `[[bin]]` … `required-features = ["NAME"]`.
        if line.starts_with("[[") {
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].starts_with('['))
                .unwrap_or(lines.len());
            if lines[i..end]
                .iter()
                .any(|l| l.starts_with("required-features") && l.contains(&format!("\"{name}\"")))
            {
                while out.last().is_some_and(|l| l.trim().is_empty()) {
                    out.pop();
                }
                out.push("");
                i = end;
                continue;
            }
        }
        if in_table && line.starts_with(&format!("{name} = ")) {
            while out.last().is_some_and(|l| l.starts_with('#')) {
                out.pop();
            }
            if line.contains('[') && !line.contains(']') {
                while i < lines.len() && lines[i].trim() != "]" {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        out.push(line);
        i += 1;
    }
    let text = out.join("\n") + "\n";
    if table_is_empty(&text, "[features]") {
        remove_table(&text, "[features]")
    } else {
        text
    }
}

fn table_is_empty(manifest: &str, header: &str) -> bool {
    let mut lines = manifest.lines().skip_while(|line| line.trim() != header);
    lines.next().is_some()
        && lines
            .take_while(|line| !line.starts_with('['))
            .all(|line| line.trim().is_empty() || line.starts_with('#'))
}

/// Removes a table (its header, its entries, and the comment lines just above it).
pub fn remove_table(manifest: &str, header: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut skipping = false;
    for line in manifest.lines() {
        if line.trim() == header {
            while out.last().is_some_and(|l| l.starts_with('#')) {
                out.pop();
            }
            while out.last().is_some_and(|l| l.trim().is_empty()) {
                out.pop();
            }
            skipping = true;
            continue;
        }
        // The table ends at the next header, or at the comment that introduces it.
        if skipping && (line.starts_with('[') || line.starts_with('#')) {
            skipping = false;
            out.push("");
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}

/// Removes every item gated by `gate`: the gate, the one line after it, and the doc comment above.
pub fn remove_gated_items(source: &str, gate: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line.trim() == gate {
            while out.last().is_some_and(|l| l.trim_start().starts_with("///")) {
                out.pop();
            }
            lines.next();
            continue;
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// A chapter without reference code, instructor-only blocks, and (unless `with_answers`) answers.
pub fn student_chapter(text: &str, with_answers: bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let summary = lines.get(i + 1).map(|next| next.trim()).unwrap_or_default();
        let details = line.starts_with("<details>")
            && (summary.starts_with(REFERENCE_SUMMARY)
                || line.contains(REFERENCE_SUMMARY)
                || (!with_answers && (summary.starts_with(ANSWER_SUMMARY) || line.contains(ANSWER_SUMMARY))));
        let end = if details {
            Some("</details>")
        } else if let Some((_, end)) = REMOVED_BLOCKS.iter().find(|(start, _)| line == *start) {
            Some(*end)
        } else if line == ANSWER_BLOCK.0 && !with_answers {
            Some(ANSWER_BLOCK.1)
        } else {
            None
        };
        if let Some(end) = end {
            while i < lines.len() && !lines[i].trim().starts_with(end) {
                i += 1;
            }
            i += 1;
            // No double blank line where the block was.
            if out.last().is_some_and(|l| l.trim().is_empty()) && lines.get(i).is_some_and(|l| l.trim().is_empty()) {
                i += 1;
            }
            continue;
        }
        if line == STUDENT_BLOCK.0 {
            i += 1;
            while i < lines.len() && lines[i].trim() != STUDENT_BLOCK.1 {
                out.push(lines[i]);
                i += 1;
            }
        } else if line != ANSWER_BLOCK.0 && line != ANSWER_BLOCK.1 {
            out.push(lines[i]);
        }
        i += 1;
    }
    out.join("\n") + "\n"
}

/// A stubbed function of an instructors' lab file.
#[derive(Debug)]
struct Stub {
    name: String,
    body: String,
}

fn gated_functions(source: &str) -> Vec<Stub> {
    let mut found = Vec::new();
    for (at, _) in source.match_indices(&format!("{STUB_GATE}\npub fn ")) {
        let rest = &source[at + STUB_GATE.len() + "\npub fn ".len()..];
        let name = rest.split(['(', '<']).next().unwrap_or_default().to_owned();
        let body = rest.split("\n}\n").next().unwrap_or(rest).to_owned();
        found.push(Stub { name, body });
    }
    found
}

/// Each lab's untouched exercise (by folder), from a pristine source (see `kit::pristine_stub`): an
/// instructor may have tried the labs in this repository's lab files.
type Stubs = BTreeMap<&'static str, String>;

fn pristine_stubs(root: &Path) -> Result<Stubs, String> {
    LABS.iter()
        .map(|lab| Ok((lab.dir, kit::pristine_stub(root, *lab, true)?)))
        .collect()
}

/// The exercises are fit to ship: each gated function is a `todo!` that names its lab, function,
/// file and an existing book chapter, and the reference defines it.
fn check_stubs(root: &Path, stubs: &Stubs) -> Result<(), String> {
    let summary = std::fs::read_to_string(root.join("book/src/SUMMARY.md")).unwrap_or_default();
    for lab in LABS {
        let file = lab.file();
        let source = &stubs[lab.dir];
        let solution_file = format!("labs/{}/src/solution.rs", lab.dir);
        let solution = std::fs::read_to_string(root.join(&solution_file))
            .map_err(|err| format!("cannot read {solution_file}: {err}"))?;
        let stubs = gated_functions(source);
        if stubs.is_empty() {
            return Err(format!("{file} has no stub gated by {STUB_GATE}"));
        }
        if !source.contains(&format!("// TODO(lab{})", lab.number)) {
            return Err(format!("{file} has no TODO(lab{}) comment", lab.number));
        }
        for stub in stubs {
            let prefix = format!("todo!(\"lab{} {} ({file}; book: ", lab.number, stub.name);
            let Some(at) = stub.body.find(&prefix) else {
                return Err(format!(
                    "{file}: {} is not an untouched stub (no {prefix}…\")): the export ships the lab files as they are; restore it (git checkout {file})",
                    stub.name
                ));
            };
            let chapter = stub.body[at + prefix.len()..].split(")\")").next().unwrap_or_default();
            let title = chapter.replacen(", ", ": ", 1);
            if !summary.contains(&format!("[{title}]")) {
                return Err(format!(
                    "{file}: the stub of {} names chapter {title:?}, which is not in book/src/SUMMARY.md",
                    stub.name
                ));
            }
            if !solution.contains(&format!("pub fn {}(", stub.name))
                && !solution.contains(&format!("pub fn {}<", stub.name))
            {
                return Err(format!("{solution_file} does not define pub fn {}", stub.name));
            }
        }
    }
    Ok(())
}

/// The lines of every function body of the reference that say something (see `MIN_LEAK_LINE`)
/// and that the stubs do not already show.
fn reference_lines(root: &Path, stubs: &Stubs) -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    for lab in LABS {
        let solution_file = format!("labs/{}/src/solution.rs", lab.dir);
        let solution = std::fs::read_to_string(root.join(&solution_file))
            .map_err(|err| format!("cannot read {solution_file}: {err}"))?;
        let stub = &stubs[lab.dir];
        let mut depth = 0usize;
        let mut in_fn = false;
        for line in solution.lines() {
            let trimmed = line.trim();
            if depth == 0 && (line.starts_with("pub fn ") || line.starts_with("fn ")) {
                in_fn = true;
            }
            let body_line = in_fn && depth > 0;
            depth = (depth + line.matches('{').count()).saturating_sub(line.matches('}').count());
            if in_fn && depth == 0 && line.starts_with('}') {
                in_fn = false;
            }
            if body_line
                && trimmed.len() >= MIN_LEAK_LINE
                && !trimmed.starts_with("//")
                && !stub.lines().any(|l| l.trim() == trimmed)
                && !GENERIC_LINES.contains(&trimmed)
                && !KIT_OVERLAP.contains(&trimmed)
                && !TAUGHT_LINES.contains(&trimmed)
            {
                found.push((solution_file.clone(), trimmed.to_owned()));
            }
        }
    }
    Ok(found)
}

/// The written copy mentions no reference, contains no line of a reference function body, and
/// no Rust file of it shares a run of lines with a reference file, alike but for names, numbers
/// and strings (`shape`): nothing in it, pasted into a lab file, solves a lab.
fn check_export(root: &Path, dir: &Path, stubs: &Stubs) -> Result<(), String> {
    let reference_lines = reference_lines(root, stubs)?;
    // Each line of a reference's body and the first file that has it.
    let mut reference: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (file, body) in &reference_lines {
        reference.entry(body.as_str()).or_insert(file.as_str());
    }
    let mut reference_shapes = Vec::new();
    for lab in LABS {
        let file = format!("labs/{}/src/solution.rs", lab.dir);
        let text = std::fs::read_to_string(root.join(&file)).map_err(|err| format!("cannot read {file}: {err}"))?;
        reference_shapes.push((file, shape::shapes(&text)));
    }
    let files = kit::files(dir).map_err(|err| kit::io_error("list the files of", dir, err))?;
    for relative in files {
        let Ok(text) = std::fs::read_to_string(dir.join(&relative)) else {
            continue;
        };
        if relative.extension().is_some_and(|ext| ext == "rs") {
            let shipped = shape::shapes(&text);
            for (file, shapes) in &reference_shapes {
                if let Some((at, line)) = shape::shared_run(shapes, &shipped) {
                    return Err(format!(
                        "the student copy's {}:{line} repeats {file}:{at}: {} lines alike but for names and numbers; a reference's code must not ship, renamed or not",
                        relative.display(),
                        shape::RUN
                    ));
                }
            }
        }
        for (number, line) in text.lines().enumerate() {
            if let Some(word) = FORBIDDEN.iter().find(|word| line.contains(*word)) {
                return Err(format!(
                    "the student copy's {}:{} still says {word:?}: mark it instructor-only (see the instructors chapter) or reword it",
                    relative.display(),
                    number + 1
                ));
            }
            if let Some(file) = reference.get(line.trim()) {
                return Err(format!(
                    "the student copy's {}:{} is a line of the reference in {file}: {}",
                    relative.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    Ok(())
}

/// The file of the hidden checks: instructor-only; the copy gets `hidden_stand_in`.
const HIDDEN_CHECKS: &str = "grader/src/checks/hidden.rs";

/// How many hidden checks the instructors' grader has, and their points: the judge's library,
/// which xtask links (no lab), counts them; no build of the grader is needed.
fn hidden_summary() -> (usize, u32) {
    let hidden: Vec<_> = grader::all_checks().into_iter().filter(|check| check.hidden).collect();
    (hidden.len(), hidden.iter().map(|check| check.points).sum())
}

/// The student copy's `grader/src/checks/hidden.rs`: no check, only how many there are.
fn hidden_stand_in(checks: usize, points: u32) -> String {
    format!(
        r#"//! Hidden checks: official grading (`cargo xtask grade-submissions`, the Gradescope package)
//! runs {checks} more check(s), worth {points} points, with inputs this copy does not hold. They grade
//! the rules of the public checks (your stubs and the book state them all), with other inputs.

use crate::Check;

/// How many checks this copy leaves out, and their points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withheld {{
    /// Hidden checks left out.
    pub checks: usize,
    /// Their points.
    pub points: u32,
}}

/// What this copy leaves out.
pub const WITHHELD: Withheld = Withheld {{ checks: {checks}, points: {points} }};

/// No hidden check is in this copy.
pub const VARIANT_OF: &[(&str, &str)] = &[];

/// No hidden check is in this copy.
pub const CHECKS: &[Check] = &[];
"#
    )
}

fn student_readme() -> String {
    STUDENT_README.replace("{labs}", STUDENT_LABS)
}

/// The README of a student copy.
const STUDENT_README: &str = r#"# The KVM lab kit

Build your own hypervisor in Rust on the Linux KVM API: a tiny VMM creates a VM, puts its vCPU in
64-bit long mode (or real, protected or paged 32-bit mode), lets the guest print "Hello, world!"
through port I/O and checks that it returns 42. You write the VMM one lab at a time, in `todo!`
stubs; `kvm-hello` runs your labs in order, and the grader tells you what is right to the bit.

## Requirements

- Linux on x86-64, with read/write access to `/dev/kvm` (the `kvm` group; the book's
  Troubleshooting chapter says how).
- Rust stable, 1.88 or newer; gcc and binutils (the guests are built from source).

## Start

```sh
cargo run -p kvm-hello         # runs your VMM; at first it stops at lab 1 with status 6:
# kvm-hello: not implemented yet: lab1 vm_init (labs/lab1-memory/src/lib.rs; book: Lab 1, Guest memory and the vCPU)
cargo test --workspace         # the kit's own tests (not your labs'): they pass while every lab file compiles
```

`cargo test --workspace` builds every lab file: a lab file that does not compile fails it (the
compiler names the line), while `cargo grade` still grades every other lab. Its tests check the
kit: kvm-hello stops at your first stub, KVM refuses what the book says it refuses, every graded
rule is written in your lab files or the book, and the book's includes resolve. `cargo grade`
grades your labs. Each rule it checks is in your lab file, in a `Graded (CHECK): ...` comment;
`cargo grade --hint CHECK` gives a hint, `--more` a second one.

Open the file it names, read its `TODO(labN)` comments and the book chapter, replace the
`todo!`s, and run it again: each run goes one step further, until the guest says hello.

## Grade your work

```sh
cargo grade            # every check, with points and what is wrong
cargo grade lab2       # one lab (or e2e, or part of a check's name)
cargo grade --json     # the same, as JSON
cargo grade --watch    # grades each lab file when you save it, in one line; Ctrl-C stops
```

A failing check says which lab, function and field is wrong and which book chapter explains it.
A check that reaches one of your stubs says `not implemented yet: …`; one whose lab
prerequisites fail says `blocked by lab N`; a lab file that does not compile costs only that
lab's checks (`does not compile: ` and the compiler's first error) and every other lab is still
graded. Your repository's CI (`.github/workflows/grade.yml`) runs `cargo grade` on every push
and keeps its JSON report. Your course grades the lab files only: change nothing else.

{labs}

## The book

`mdbook serve book` (mdBook 0.5: `cargo install mdbook --locked --version '^0.5'`), then open
http://localhost:3000: one chapter per lab, the assignment's questions, troubleshooting.
"#;

const STUDENT_LABS: &str = "\
| lab | file you edit | what you build |
| --- | --- | --- |
| 1 | `labs/lab1-memory/src/lib.rs` | open KVM, create the VM, its 2 MiB of memory and its vCPU; load the guest |
| 2 | `labs/lab2-paging/src/lib.rs` | the long-mode page tables, the paged32 directory, a software page walk |
| 3 | `labs/lab3-registers/src/lib.rs` | special and general registers for real, protected, paged32 and long mode |
| 4 | `labs/lab4-exit-loop/src/lib.rs` | the `KVM_RUN` loop: port 0xE9 output, exits counted by reason, HLT, the two 42 checks |
| 0 (extension) | `labs/lab0-lwn/src/lib.rs` | the VM of LWN's \"Using the KVM API\" (`cargo run -p kvm-hello -- --lab lwn`) |
| 5 (extension) | `labs/lab5-hypercalls/src/lib.rs` | the host side of six hypercalls (`cargo run -p kvm-hello -- --lab hypercalls`) |
| 6 (extension) | `labs/lab6-scheduling/src/lib.rs` | two VMs on one thread: a time-slice scheduler and its policies (`cargo run -p kvm-hello -- --lab schedule`) |
| 7 (extension) | `labs/lab7-migration/src/lib.rs` | move a running guest to a second process: snapshot, restore, pre-copy over KVM's dirty log (`cargo run -p kvm-hello -- --lab migrate`) |

You never need another file.";

/// The CI workflow of a student's repository: GitHub's Linux runners have `/dev/kvm`, readable by
/// the runner user once a udev rule says so.
const GRADE_WORKFLOW: &str = r#"# Grades the labs on every push: the scoreboard in the log, the JSON report as an artifact.
name: grade
on: [push, pull_request, workflow_dispatch]

jobs:
  grade:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@v4
      - name: Give the runner /dev/kvm
        run: |
          echo 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' | sudo tee /etc/udev/rules.d/99-kvm4all.rules
          sudo udevadm control --reload-rules
          sudo udevadm trigger --name-match=kvm
          ls -l /dev/kvm
      - name: Tools (gcc and binutils build the guests)
        run: sudo apt-get update && sudo apt-get install -y gcc binutils
      - uses: dtolnay/rust-toolchain@stable
      - uses: Swatinem/rust-cache@v2
      - name: cargo grade
        run: cargo grade --gradescope grade-report.json
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: grade-report
          path: grade-report.json
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_file_loses_its_gates_and_its_note() {
        let source = "//! Lab.\n//!\n//! (`--features solution` builds the reference instead of\n//! `#[cfg(not(feature = \"solution\"))]`; you never need it.)\n\n// TODO(lab1): x\n#[cfg(not(feature = \"solution\"))]\npub fn f() {\n    todo!(\"x\")\n}\n\n#[cfg(feature = \"solution\")]\nmod solution;\n#[cfg(feature = \"solution\")]\npub use solution::*;\n";
        assert_eq!(
            student_lab_file(source),
            "//! Lab.\n\n// TODO(lab1): x\npub fn f() {\n    todo!(\"x\")\n}\n"
        );
    }

    #[test]
    fn the_solution_feature_leaves_every_manifest() {
        let lab =
            "[package]\nname = \"l\"\n\n[features]\n# Build the reference.\nsolution = []\n\n[dependencies]\na = 1\n";
        assert_eq!(
            remove_feature(lab, "solution"),
            "[package]\nname = \"l\"\n\n[dependencies]\na = 1\n"
        );
        let vmm = "[features]\n# why\nsolution = [\n    \"a/solution\",\n]\nother = []\n\n[dependencies]\n";
        assert_eq!(
            remove_feature(vmm, "solution"),
            "[features]\nother = []\n\n[dependencies]\n"
        );
        let xtask = "[package]\n\n# instructor\n[features]\ndefault = [\"instructor\"]\ninstructor = []\n\n# deps\n[dependencies]\nclap = 1\n";
        assert_eq!(
            remove_table(xtask, "[features]"),
            "[package]\n\n# deps\n[dependencies]\nclap = 1\n"
        );
    }

    #[test]
    fn instructor_items_leave_main_with_their_docs() {
        let main = "mod grade;\n#[cfg(feature = \"instructor\")]\nmod student_kit;\nenum C {\n    /// Grades.\n    Grade,\n    /// Exports.\n    #[cfg(feature = \"instructor\")]\n    StudentKit,\n}\n";
        assert_eq!(
            remove_gated_items(main, INSTRUCTOR_GATE),
            "mod grade;\nenum C {\n    /// Grades.\n    Grade,\n}\n"
        );
    }

    #[test]
    fn chapters_lose_reference_code_and_answers_unless_asked() {
        let chapter = "Text.\n\n<details>\n<summary>Reference solution (open it after you tried)</summary>\n\ncode\n</details>\n\n## Q1\n\n<details>\n<summary>Answer</summary>\n\n42\n</details>\n\n<!-- instructors -->\nstaff only\n<!-- /instructors -->\n<!-- student:\nfor students\n-->\nEnd.\n";
        assert_eq!(
            student_chapter(chapter, false),
            "Text.\n\n## Q1\n\nfor students\nEnd.\n"
        );
        assert_eq!(
            student_chapter(chapter, true),
            "Text.\n\n## Q1\n\n<details>\n<summary>Answer</summary>\n\n42\n</details>\n\nfor students\nEnd.\n"
        );
    }
}
