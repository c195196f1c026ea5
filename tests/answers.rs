//! Every question of the assignment is answered in the book. Instructor-only: a student copy
//! has the answers (and this test) only when exported with `cargo xtask student-kit --with-answers`.

use std::path::{Path, PathBuf};

fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

#[test]
fn all_eight_questions_are_answered() {
    let questions = read(&book_src().join("questions.md"));
    let sections: Vec<&str> = questions.split("\n## ").skip(1).collect();
    assert_eq!(sections.len(), 8, "questions.md must have one section per question");
    for (i, section) in sections.iter().enumerate() {
        assert!(
            section.starts_with(&format!("Q{}: ", i + 1)),
            "section {} is {:?}",
            i + 1,
            &section[..20]
        );
        assert!(section.contains("\n> "), "Q{} does not quote the question", i + 1);
        assert!(
            section.contains("**Where to look:**"),
            "Q{} does not say where to look",
            i + 1
        );
        let answer = section
            .split("<details>")
            .nth(1)
            .unwrap_or_else(|| panic!("Q{} has no collapsible answer", i + 1));
        assert!(
            answer.contains("</details>") && answer.len() > 300,
            "Q{}'s answer is missing or short",
            i + 1
        );
    }
}
