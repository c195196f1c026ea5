//! Every command the book shows with its output is run here, so the book cannot drift from the
//! kit. The book's ```` ```console ```` blocks use trycmd's Markdown syntax:
//!
//! - `$ kvm-hello ARGS` runs the reference kvm-hello (this test is built with `solution`) in a
//!   scratch folder that holds the guest images the book names (`spin.bin`, `big.bin`, and every
//!   corpus guest as `NAME.bin`);
//! - an optional `? STATUS` line right after the command gives the exit status (default 0);
//! - the lines after it are stdout then stderr; `[..]` matches anything within a line (host
//!   addresses, timings) and a line `...` any number of lines.
#![cfg(feature = "solution")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::require_kvm;

/// One command of a console block and what it must print.
#[derive(Debug)]
struct Example {
    chapter: String,
    line: usize,
    args: Vec<String>,
    status: i32,
    expected: Vec<String>,
}

/// The console blocks of one chapter, as examples.
fn examples_in(chapter: &str, text: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut in_console = false;
    let mut fence_indent = 0;
    for (number, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.starts_with("```") {
            in_console = !in_console && trimmed.trim_end() == "```console";
            fence_indent = raw.len() - trimmed.len();
            continue;
        }
        if !in_console {
            continue;
        }
        // Lines of a block inside a list item carry the fence's indentation.
        let line = raw.get(fence_indent.min(raw.len())..).unwrap_or_default();
        if let Some(command) = line.strip_prefix("$ ") {
            let mut words = command.split_whitespace().map(str::to_owned);
            let program = words.next().unwrap_or_default();
            assert_eq!(
                program,
                "kvm-hello",
                "{chapter}:{}: the book shows `{command}` with output, and this test runs only kvm-hello",
                number + 1
            );
            examples.push(Example {
                chapter: chapter.to_owned(),
                line: number + 1,
                args: words.collect(),
                status: 0,
                expected: Vec::new(),
            });
        } else if let Some(example) = examples.last_mut() {
            match line.strip_prefix("? ") {
                Some(status) if example.expected.is_empty() => {
                    example.status = status.trim().parse().expect("`? STATUS` is a number");
                }
                _ => example.expected.push(line.to_owned()),
            }
        } else {
            panic!("{chapter}:{}: a console block must start with `$ `", number + 1);
        }
    }
    for example in &mut examples {
        while example.expected.last().is_some_and(|line| line.trim().is_empty()) {
            example.expected.pop();
        }
    }
    examples
}

/// Whether `text` matches `pattern`, where `[..]` stands for any run of characters.
fn line_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether the output lines match the expected ones, where a line `...` stands for any lines.
fn lines_match(expected: &[String], found: &[&str]) -> bool {
    match expected.split_first() {
        None => found.is_empty(),
        Some((first, rest)) if first == "..." => (0..=found.len()).any(|skip| lines_match(rest, &found[skip..])),
        Some((first, rest)) => {
            found.first().is_some_and(|line| line_matches(first, line)) && lines_match(rest, &found[1..])
        }
    }
}

fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../book/src")
}

/// A scratch folder with the images the book's commands name.
fn scratch_folder() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("book-console");
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    std::fs::write(dir.join("spin.bin"), [0xeb, 0xfe]).expect("write spin.bin"); // jmp .
    std::fs::write(dir.join("big.bin"), [0u8; 9000]).expect("write big.bin"); // over 8 KiB
    for guest in guests::CORPUS {
        std::fs::write(dir.join(format!("{}.bin", guest.name)), guest.image).expect("write a corpus guest");
    }
    dir
}

fn run(example: &Example, dir: &Path) -> (i32, String) {
    let mut cmd = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("kvm-hello"));
    cmd.current_dir(dir)
        .args(&example.args)
        .timeout(Duration::from_secs(30));
    let out = cmd.output().expect("run kvm-hello");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn every_console_example_in_the_book_prints_what_the_book_shows() {
    require_kvm();
    let dir = scratch_folder();
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(book_src())
        .expect("book/src exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    chapters.sort();
    let mut ran = 0;
    let mut failures = Vec::new();
    for chapter in chapters {
        let name = chapter.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&chapter).expect("read a chapter");
        for example in examples_in(&name, &text) {
            let (status, output) = run(&example, &dir);
            let found: Vec<&str> = output.lines().collect();
            if status != example.status || !lines_match(&example.expected, &found) {
                failures.push(format!(
                    "{}:{}: kvm-hello {}\n  expected status {}, got {status}\n  expected:\n    {}\n  found:\n    {}",
                    example.chapter,
                    example.line,
                    example.args.join(" "),
                    example.status,
                    example.expected.join("\n    "),
                    found.join("\n    ")
                ));
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "the book is stale:\n{}", failures.join("\n\n"));
    assert!(
        ran >= 8,
        "only {ran} console examples: the book's commands are not being tested"
    );
}

#[test]
fn the_matcher_takes_wildcards_and_nothing_else() {
    assert!(line_matches("at 0x[..] in [..] s", "at 0x7f00 in 0.5 s"));
    assert!(!line_matches("at 0x[..] in [..] s", "at 0x7f00 in 0.5 ms!"));
    assert!(line_matches("exact", "exact"));
    assert!(!line_matches("exact", "exactly"));
    let expected: Vec<String> = ["a", "...", "d"].map(str::to_owned).to_vec();
    assert!(lines_match(&expected, &["a", "b", "c", "d"]));
    assert!(lines_match(&expected, &["a", "d"]));
    assert!(!lines_match(&expected, &["a", "b"]));
    let examples = examples_in("x.md", "```console\n$ kvm-hello --mode real\n? 4\nline\n\n```\n");
    assert_eq!(examples.len(), 1);
    assert_eq!(
        (examples[0].status, examples[0].expected.clone()),
        (4, vec!["line".to_owned()])
    );
}
