//! The book's reference solutions: every lab chapter has one, whole in one `<details>` block with
//! its imports, so that `cargo xtask student-kit` removes it whole. Instructor-only: a student
//! copy has no reference code.

use std::path::{Path, PathBuf};

fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

#[test]
fn every_lab_chapter_has_a_whole_reference_solution_block() {
    for lab in [
        "lab0-lwn",
        "lab1-memory",
        "lab2-paging",
        "lab3-registers",
        "lab4-exit-loop",
        "lab5-hypercalls",
        "lab6-scheduling",
        "lab7-migration",
    ] {
        let text = read(&book_src().join(format!("{lab}.md")));
        let solution = text
            .split("<details>")
            .find(|block| block.contains("Reference solution"))
            .unwrap_or_else(|| panic!("{lab}.md has no reference solution block"));
        assert!(
            solution.contains("</details>") && solution.contains("solution.rs:imports}}"),
            "{lab}.md: the solution leaves out its imports"
        );
    }
    // Lab 0's answer is the warm-up's whole program, collapsed after the exercise.
    let lab0 = read(&book_src().join("lab0-lwn.md"));
    let answer = lab0.split("<details>").nth(1).expect("Lab 0 has a collapsed answer");
    assert!(
        answer.contains("lwn.rs:run}}"),
        "Lab 0's answer shows the whole program"
    );
}
