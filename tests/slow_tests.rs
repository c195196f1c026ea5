//! The README's test command leaves the slow tests to `cargo xtask ci`, which runs every ignored
//! test of the workspace (`cargo test --workspace --features solution -- --ignored`): so a test
//! may be ignored for that reason only, said in the same words, which the test command prints.

use std::path::{Path, PathBuf};

/// The only reason a test may be ignored for.
const SLOW: &str = "#[ignore = \"slow: cargo xtask ci runs it\"]";

/// The Rust files of the workspace, outside build output.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_ignored_test_is_ignored_as_slow_and_left_to_cargo_xtask_ci() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (number, line) in text.lines().enumerate() {
            let attribute = line.trim();
            if attribute.starts_with("#[ignore") {
                assert_eq!(
                    attribute,
                    SLOW,
                    "{}:{}: a test is ignored only as slow, in these words (cargo xtask ci runs every ignored test)",
                    file.strip_prefix(root).unwrap_or(&file).display(),
                    number + 1
                );
            }
        }
    }
}
