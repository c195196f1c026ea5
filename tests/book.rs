//! The book is whole: every `{{#include}}` names a file and a non-empty anchor that exist (mdBook
//! would leave a missing one silently in the output), every picture and chapter exists, and every
//! question of the assignment is answered.

use std::path::{Path, PathBuf};

fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src")
}

fn chapters() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(book_src())
        .expect("book/src exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// The lines between `ANCHOR: name` and `ANCHOR_END: name`, as mdBook takes them.
fn anchor_body(source: &str, name: &str) -> Option<Vec<String>> {
    let start = format!("ANCHOR: {name}");
    let end = format!("ANCHOR_END: {name}");
    let mut lines = source.lines().skip_while(|line| !line.trim_end().ends_with(&start));
    lines.next()?;
    let body: Vec<String> = lines
        .by_ref()
        .take_while(|line| !line.trim_end().ends_with(&end))
        .map(str::to_owned)
        .collect();
    source
        .lines()
        .any(|line| line.trim_end().ends_with(&end))
        .then_some(body)
}

#[test]
fn every_include_resolves_to_a_non_empty_anchor() {
    let mut includes = 0;
    for chapter in chapters() {
        let text = read(&chapter);
        for (at, _) in text.match_indices("{{#include ") {
            let spec = &text[at + "{{#include ".len()..];
            let spec = &spec[..spec.find("}}").expect("an include ends with }}")];
            let (file, anchor) = match spec.split_once(':') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (spec, None),
            };
            let target = chapter.parent().unwrap().join(file);
            let name = chapter.file_name().unwrap().to_string_lossy();
            assert!(
                target.is_file(),
                "{name}: {{{{#include {spec}}}}}: no file {}",
                target.display()
            );
            if let Some(anchor) = anchor {
                let body = anchor_body(&read(&target), anchor)
                    .unwrap_or_else(|| panic!("{name}: {{{{#include {spec}}}}}: no anchor '{anchor}' in {file}"));
                let code = body
                    .iter()
                    .filter(|line| !line.contains("ANCHOR") && !line.trim().is_empty())
                    .count();
                assert!(code > 0, "{name}: {{{{#include {spec}}}}}: the anchor is empty");
            } else {
                assert!(!read(&target).trim().is_empty(), "{name}: {file} is empty");
            }
            includes += 1;
        }
    }
    assert!(
        includes >= 20,
        "only {includes} includes: the book must show code from the real files"
    );
}

#[test]
fn every_chapter_and_picture_exists() {
    let summary = read(&book_src().join("SUMMARY.md"));
    for (at, _) in summary.match_indices("](") {
        let target = &summary[at + 2..];
        let target = &target[..target.find(')').unwrap()];
        assert!(
            book_src().join(target).is_file(),
            "SUMMARY.md links to a missing {target}"
        );
    }
    let mut pictures = 0;
    for chapter in chapters() {
        let text = read(&chapter);
        for (at, _) in text.match_indices("](img/") {
            let target = &text[at + 2..];
            let target = &target[..target.find(')').unwrap()];
            assert!(
                book_src().join(target).is_file(),
                "{}: missing picture {target}",
                chapter.display()
            );
            pictures += 1;
        }
    }
    assert!(pictures >= 4, "the book shows {pictures} pictures");
}

#[test]
fn all_eight_questions_and_the_warm_up_are_answered() {
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
    let warm_up = read(&book_src().join("kvm-api.md"));
    for needle in [
        "0x1000",
        "0x3f8",
        "3 exits: 2 io, 1 hlt",
        "{{#include ../../crates/kvm-hello/tests/lwn.rs:run}}",
    ] {
        assert!(warm_up.contains(needle), "the warm-up does not mention {needle}");
    }
}
