//! `cargo xtask grade-submissions`: a class of made-up submissions, graded into a CSV checked row
//! by row: solved (a clone of the repository), untouched (just the lab files), one lab file that
//! does not compile (flat files), one lab that hangs, one that starts processes in a loop, one
//! that edits the grader, and one that snoops: at compile time and at run time its labs read
//! another student's lab file and write the gradebook and that file. Graded two at a time and one
//! at a time, with the same scores.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

/// How many processes the forker starts (bounded: a machine without cgroups has no `pids.max`),
/// and the argument of its
/// `sleep`s, so that the test can look for any left behind.
const FORKS: usize = 3000;
const SLEEP: &str = "4321.5";
/// A line only the solved student's lab 2 holds: the snoop must never see it.
const MARKER: &str = "// the solved student's own line: 7f3c9a";

/// The `sleep SLEEP` processes still running.
fn forked_left() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| cmdline == format!("sleep\0{SLEEP}\0").as_bytes())
        })
        .count()
}

/// A student's CSV row, by column name.
type Row = BTreeMap<String, String>;

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "target" {
            continue;
        }
        let to = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

fn put(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// The class: five students, in the layouts a course meets.
fn make_class(dir: &Path) {
    let kit = export(&dir.join("kit"));
    let untouched: BTreeMap<&str, String> = LABS
        .iter()
        .map(|lab| (*lab, read(&kit.join(format!("labs/{lab}/src/lib.rs")))))
        .collect();
    for lab in LABS {
        solve(&kit, lab);
    }
    let solved: BTreeMap<&str, String> = LABS
        .iter()
        .map(|lab| (*lab, read(&kit.join(format!("labs/{lab}/src/lib.rs")))))
        .collect();
    let class = dir.join("class");

    // solved: a clone of the whole repository
    copy_tree(&kit, &class.join("solved"));
    for lab in LABS {
        // untouched: only the lab files, where the kit has them
        put(&class.join(format!("untouched/labs/{lab}/src/lib.rs")), &untouched[lab]);
        // broken: flat files, lab 3 half-typed
        let text = if lab == "lab3-registers" {
            format!("{}\npub fn half_typed( {{\n", solved[lab])
        } else {
            solved[lab].clone()
        };
        put(&class.join(format!("broken/{lab}.rs")), &text);
        // hanging: lab 2's page walk never ends
        let text = if lab == "lab2-paging" {
            let at = solved[lab].find("pub fn translate(").unwrap();
            let body = at + solved[lab][at..].find("{\n").unwrap() + 2;
            let mut text = solved[lab].clone();
            text.insert_str(
                body,
                "    #[allow(clippy::empty_loop)]\n    loop {}\n    #[allow(unreachable_code)]\n",
            );
            text
        } else {
            solved[lab].clone()
        };
        put(&class.join(format!("hanging/labs/{lab}/src/lib.rs")), &text);
        // forker: lab 2's page walk starts processes in a loop (bounded, in case no cgroup holds it)
        let text = if lab == "lab2-paging" {
            let at = solved[lab].find("pub fn translate(").unwrap();
            let body = at + solved[lab][at..].find("{\n").unwrap() + 2;
            let mut text = solved[lab].clone();
            text.insert_str(
                body,
                &format!("    for _ in 0..{FORKS} {{\n        let _ = std::process::Command::new(\"sleep\").arg(\"{SLEEP}\").spawn();\n    }}\n    #[allow(clippy::empty_loop)]\n    loop {{}}\n    #[allow(unreachable_code)]\n"),
            );
            text
        } else {
            solved[lab].clone()
        };
        put(&class.join(format!("forker/labs/{lab}/src/lib.rs")), &text);
        // snoop: lab 1 includes the solved student's lab 1 when it compiles; lab 2's walk reads
        // the solved student's lab 2 (and prints it), and writes it and the gradebook
        let solved_file = |lab: &str| class.join(format!("solved/labs/{lab}/src/lib.rs"));
        let text = match lab {
            "lab1-memory" => format!(
                "{}\nconst _STOLEN: &str = include_str!({:?});\n",
                solved[lab],
                solved_file(lab)
            ),
            "lab2-paging" => {
                let at = solved[lab].find("pub fn translate(").unwrap();
                let body = at + solved[lab][at..].find("{\n").unwrap() + 2;
                let mut text = solved[lab].clone();
                text.insert_str(
                    body,
                    &format!(
                        "    if let Ok(stolen) = std::fs::read_to_string({victim:?}) {{\n        println!(\"{{stolen}}\");\n    }}\n    let _ = std::fs::write({victim:?}, \"\");\n    let _ = std::fs::write({csv:?}, \"snoop,999\\n\");\n",
                        victim = solved_file(lab),
                        csv = dir.join("grades.csv"),
                    ),
                );
                text
            }
            _ => solved[lab].clone(),
        };
        put(&class.join(format!("snoop/labs/{lab}/src/lib.rs")), &text);
    }
    let victim = class.join("solved/labs/lab2-paging/src/lib.rs");
    put(&victim, &format!("{}\n{MARKER}\n", read(&victim)));
    // cheater: untouched labs, a grader that passes everything and an alias that prints full marks
    copy_tree(&kit, &class.join("cheater"));
    for lab in LABS {
        put(&class.join(format!("cheater/labs/{lab}/src/lib.rs")), &untouched[lab]);
    }
    let runner = class.join("cheater/grader/src/runner.rs");
    put(
        &runner,
        &read(&runner).replace(
            "let outcome = match check.needs",
            "let outcome = Outcome::Passed;\n        let _ = match check.needs",
        ),
    );
    put(
        &class.join("cheater/.cargo/config.toml"),
        "[alias]\ngrade = \"version\"\n",
    );
    let _ = std::fs::remove_dir_all(&kit);
}

fn grade_class(class: &Path, csv: &Path, jobs: &str) -> Vec<Row> {
    let _ = std::fs::remove_file(csv);
    let out = xtask(&[
        "grade-submissions",
        class.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--jobs",
        jobs,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grade-submissions failed: {stderr}");
    assert!(stderr.contains("[7/7] "), "no progress shown: {stderr}");
    assert_eq!(forked_left(), 0, "processes of the forker outlived its grading");
    let text = read(csv);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "student", "lab1", "lab2", "lab3", "lab4", "e2e", "lab0", "lab5", "lab6", "lab7", "total", "max",
            "not_run", "error"
        ]
    );
    lines
        .map(|line| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(line.splitn(header.len(), ',').map(str::to_owned))
                .collect()
        })
        .collect()
}

fn points(row: &Row, column: &str) -> u64 {
    row[column].parse().unwrap_or_else(|_| panic!("{column} of {row:?}"))
}

fn report(dir: &Path, student: &str) -> Vec<serde_json::Value> {
    let report: serde_json::Value =
        serde_json::from_str(&read(&dir.join(format!("grades-reports/{student}.json")))).unwrap();
    report["checks"].as_array().expect("a report lists its checks").clone()
}

/// The points of every check, run or not.
fn full_max(dir: &Path, student: &str) -> u64 {
    report(dir, student).iter().map(|c| c["points"].as_u64().unwrap()).sum()
}

/// How many checks of a student's report were not run, and their points; only the checks this
/// host cannot run (paged32 on a PVM host) may be.
fn not_run(dir: &Path, student: &str) -> (u64, u64) {
    let (mut count, mut points) = (0, 0);
    for check in report(dir, student).iter().filter(|c| c["outcome"] == "not_run") {
        assert!(
            Path::new("/sys/module/kvm_pvm").exists() && check["check"].as_str().unwrap().contains("paged32"),
            "{student}: a check not run on a host that can run it: {check}"
        );
        count += 1;
        points += check["points"].as_u64().unwrap();
    }
    (count, points)
}

/// The student's page walk never ends: the report names lab 2's translate checks as stopped for
/// their time, in the JSON and in the text.
fn assert_lab2_timed_out(dir: &Path, student: &str) {
    let timed_out: Vec<String> = report(dir, student)
        .iter()
        .filter(|c| c["outcome"] == "timed_out")
        .map(|c| c["check"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !timed_out.is_empty() && timed_out.iter().all(|c| c.starts_with("lab2_translate")),
        "{student}: timed out: {timed_out:?}"
    );
    let text = read(&dir.join(format!("grades-reports/{student}.txt")));
    assert!(
        text.contains(&timed_out[0])
            && (text.contains("of CPU time and was stopped") || text.contains("did not finish within")),
        "{text}"
    );
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_class_is_graded_row_by_row_and_in_parallel_as_in_series() {
    let dir = scratch("grade-submissions");
    make_class(&dir);
    let class = dir.join("class");
    let rows = grade_class(&class, &dir.join("grades.csv"), "2");
    let names: Vec<&str> = rows.iter().map(|r| r["student"].as_str()).collect();
    assert_eq!(
        names,
        ["broken", "cheater", "forker", "hanging", "snoop", "solved", "untouched"]
    );
    let row = |name: &str| rows.iter().find(|r| r["student"] == name).unwrap().clone();
    let (solved, untouched, cheater, broken, hanging, forker) = (
        row("solved"),
        row("untouched"),
        row("cheater"),
        row("broken"),
        row("hanging"),
        row("forker"),
    );
    let max = points(&solved, "max");
    assert!(max >= 90, "{solved:?}");
    let full_max = full_max(&dir, "solved");
    for row in &rows {
        // As in the grader: a check this host could not run (paged32 on PVM) is in neither the
        // total nor the maximum, and only such checks are left out.
        let (not_run, not_run_points) = not_run(&dir, &row["student"]);
        assert_eq!(points(row, "max"), full_max - not_run_points, "{row:?}");
        assert_eq!(points(row, "not_run"), not_run, "{row:?}");
        assert_eq!(row["error"], "", "{row:?}");
        let by_part: u64 = ["lab1", "lab2", "lab3", "lab4", "e2e", "lab0", "lab5", "lab6", "lab7"]
            .iter()
            .map(|p| points(row, p))
            .sum();
        assert_eq!(by_part, points(row, "total"), "{row:?}");
    }
    assert_eq!(points(&solved, "total"), max, "{solved:?}");
    assert_eq!(points(&untouched, "total"), 0, "{untouched:?}");
    assert_eq!(points(&cheater, "total"), 0, "only the lab files count: {cheater:?}");
    // Lab 3 does not compile: its checks say so, those that need it are blocked, every other
    // check passes (labs 1, 2 and 0 in full).
    assert_eq!(points(&broken, "lab3"), 0, "{broken:?}");
    for part in ["lab1", "lab2", "lab0"] {
        assert_eq!(points(&broken, part), points(&solved, part), "{part}: {broken:?}");
    }
    let report: serde_json::Value = serde_json::from_str(&read(&dir.join("grades-reports/broken.json"))).unwrap();
    for check in report["checks"].as_array().unwrap() {
        let message = check["message"].as_str().unwrap_or_default();
        let name = check["check"].as_str().unwrap();
        if name.starts_with("lab3_") {
            assert!(
                message.starts_with("does not compile: labs/lab3-registers/src/lib.rs:"),
                "{check}"
            );
        } else {
            assert!(
                check["outcome"] == "passed" || message.starts_with("blocked by lab 3"),
                "{check}"
            );
        }
    }
    let report = read(&dir.join("grades-reports/broken.txt"));
    assert!(
        report.contains("does not compile: labs/lab3-registers/src/lib.rs:"),
        "{report}"
    );
    // Lab 2's walk hangs: its translate checks time out; lab 1 still scores in full.
    assert_eq!(points(&hanging, "lab1"), points(&solved, "lab1"), "{hanging:?}");
    assert!(points(&hanging, "lab2") < points(&solved, "lab2"), "{hanging:?}");
    assert_lab2_timed_out(&dir, "hanging");
    // The forker's page walk starts processes and never returns: it scores as the hanging one
    // (its processes count against no other check), and nothing it started is left.
    for part in [
        "lab1", "lab2", "lab3", "lab4", "e2e", "lab0", "lab5", "lab6", "lab7", "total",
    ] {
        assert_eq!(points(&forker, part), points(&hanging, part), "{part}: {forker:?}");
    }
    assert_lab2_timed_out(&dir, "forker");
    // The snoop saw nothing of the solved student's (its lab 1 does not compile where the other
    // file is out of view; its walk read nothing), changed nothing of theirs or of the gradebook,
    // and keeps its own honest points (lab 0 needs no lab 1 or 2).
    let snoop = row("snoop");
    let victim = class.join("solved/labs/lab2-paging/src/lib.rs");
    assert_eq!(points(&snoop, "lab1"), 0, "{snoop:?}");
    assert_eq!(points(&snoop, "lab0"), points(&solved, "lab0"), "{snoop:?}");
    for file in ["snoop.txt", "snoop.json"] {
        let report = read(&dir.join(format!("grades-reports/{file}")));
        assert!(
            !report.contains(MARKER),
            "the snoop read another student's file: {report}"
        );
    }
    assert!(
        read(&victim).contains(MARKER),
        "the snoop changed another student's file"
    );
    let json: serde_json::Value = serde_json::from_str(&read(&dir.join("grades-reports/solved.json"))).unwrap();
    assert_eq!(json["total"], max);
    assert!(json["checks"].as_array().unwrap().len() >= 40);

    let serial = grade_class(&class, &dir.join("serial.csv"), "1");
    assert_eq!(serial, rows, "one at a time and two at a time disagree");
}
