//! The book is whole: every `{{#include}}` names a file and a non-empty anchor that exist (mdBook
//! would leave a missing one silently in the output), every picture and chapter exists and is
//! readable. A student copy has this file too; what only the instructors' book has is checked by
//! `answers.rs` (every question answered; a student copy has it only with its answers) and
//! `reference_blocks.rs` (the reference solution blocks).

use std::path::{Path, PathBuf};

/// The includes of a student copy's book (the instructors' book has more: the reference code).
const MIN_INCLUDES: usize = 10;

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
            if let Some(lines) = anchor.filter(|anchor| anchor.chars().all(|c| c.is_ascii_digit() || c == ':')) {
                // A line range, `FILE:N` or `FILE:N:M` (1-based, inclusive).
                let mut bounds = lines.split(':').map(|n| n.parse::<usize>().expect("a line number"));
                let first = bounds.next().expect("a first line");
                let last = bounds.next().unwrap_or(first);
                let text = read(&target);
                let picked: Vec<&str> = text.lines().skip(first - 1).take(last + 1 - first).collect();
                assert!(
                    picked.len() == last + 1 - first && picked.iter().all(|line| !line.trim().is_empty()),
                    "{name}: {{{{#include {spec}}}}}: the lines are missing or blank"
                );
            } else if let Some(anchor) = anchor {
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
        includes >= MIN_INCLUDES,
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

/// The warm-up walks through the KVM API without giving Lab 0's answer away.
#[test]
fn the_warm_up_covers_the_api_without_lab0s_answer() {
    let warm_up = read(&book_src().join("kvm-api.md"));
    for needle in ["0x1000", "0x3f8", "3 exits: 2 io, 1 hlt", "KVM_SET_USER_MEMORY_REGION"] {
        assert!(warm_up.contains(needle), "the warm-up does not mention {needle}");
    }
    // Lab 0 is the warm-up as an exercise: its answer is shown only after it, collapsed.
    assert!(
        !warm_up.contains("lwn.rs:run") && !warm_up.contains("lwn.rs:vm}"),
        "the warm-up shows Lab 0's answer before the exercise"
    );
}

/// The numbered chapters are the labs, so "Lab N" is chapter N in the book's table of contents.
#[test]
fn chapter_numbers_are_lab_numbers() {
    let summary = read(&book_src().join("SUMMARY.md"));
    let numbered: Vec<&str> = summary
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- ["))
        .collect();
    assert!(!numbered.is_empty(), "SUMMARY.md numbers no chapter");
    for (i, title) in numbered.iter().enumerate() {
        assert!(
            title.starts_with(&format!("Lab {}:", i + 1)),
            "chapter {} is {title:?}: mdBook would number it {}, not its lab number",
            i + 1,
            i + 1
        );
    }
}

/// Every lab chapter ends with experiments and reading.
#[test]
fn every_lab_chapter_has_try_it_and_further_reading() {
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
        for heading in ["\n## Try it\n", "\n## Further reading\n"] {
            assert!(text.contains(heading), "{lab}.md has no {}", heading.trim());
        }
        assert_eq!(
            text.matches("<details>").count(),
            text.matches("</details>").count(),
            "{lab}.md: an unclosed <details>"
        );
    }
    let under = read(&book_src().join("under-kvm-run.md"));
    for needle in [
        "VMCS",
        "VMCB",
        "EPT",
        "NPT",
        "shadow paging",
        "PVM",
        "EINVAL",
        "GDT",
        "IDT",
        "set_sregs.rs:cases",
    ] {
        assert!(under.contains(needle), "Under KVM_RUN does not mention {needle}");
    }
}

/// mdBook shows a picture at its natural size only up to the column's width (about 750 px) and
/// scales wider ones down, text with them: every picture fits, with text of 12 px or more.
#[test]
fn every_picture_is_readable_at_the_size_the_book_shows_it() {
    let attr = |tag: &str, key: &str| -> Option<u32> {
        let at = tag.find(&format!("{key}=\""))? + key.len() + 2;
        tag[at..].split('"').next()?.parse().ok()
    };
    let mut pictures = 0;
    for entry in std::fs::read_dir(book_src().join("img")).expect("book/src/img exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "svg") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let svg = read(&path);
        let width = attr(&svg, "width").unwrap_or_else(|| panic!("{name} has no width"));
        assert!(
            width <= 740,
            "{name} is {width} px wide: the book would shrink its text"
        );
        for text in svg.split("<text ").skip(1) {
            let size = attr(text, "font-size").unwrap_or_else(|| panic!("{name}: a text without a font-size"));
            assert!(size >= 12, "{name}: text of {size} px");
        }
        pictures += 1;
    }
    assert!(pictures >= 7, "only {pictures} pictures in book/src/img");
}
