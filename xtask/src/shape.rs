//! Runs of lines that two Rust texts share, "the same or alike but for names and numbers": each
//! line is reduced to its shape (identifiers, numbers, strings and chars become one token each;
//! keywords, operators and punctuation stay), lines that say nothing (blank, comments, lone
//! punctuation, `use`, attributes, and function signatures, which are the labs' given API) are
//! passed over, and two texts share a run when `RUN` consecutive shapes
//! of one stand in the other. The export uses it to refuse a student copy that holds a reference
//! solution's code, renamed or not.

use std::collections::HashMap;

/// How many consecutive lines make a shared run.
pub const RUN: usize = 6;

const KEYWORDS: [&str; 38] = [
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl", "in",
    "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
    "trait", "true", "type", "unsafe", "use", "where", "while", "dyn", "Some", "None",
];

/// One line of a text, reduced to its shape, with its line number (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The line's number in its text.
    pub line: usize,
    /// The line's shape.
    pub shape: String,
}

/// The shapes of the lines of `text` that say something.
pub fn shapes(text: &str) -> Vec<Shape> {
    let mut found = Vec::new();
    let mut in_block_comment = false;
    let mut in_signature = false;
    for (i, line) in text.lines().enumerate() {
        let shape = line_shape(line, &mut in_block_comment);
        let trimmed = line.trim_start();
        if shape.starts_with("fn ") || shape.starts_with("pub fn ") || shape.starts_with("pub(crate)fn ") {
            in_signature = true;
        }
        if in_signature {
            in_signature = !(shape.ends_with('{') || shape.ends_with(';'));
            continue;
        }
        let says_nothing = shape.chars().all(|c| "{}()[];,.".contains(c))
            || trimmed.starts_with("use ")
            || trimmed.starts_with("pub use ")
            || trimmed.starts_with("#[")
            || trimmed.starts_with("#![");
        if !says_nothing {
            found.push(Shape { line: i + 1, shape });
        }
    }
    found
}

/// A line's tokens with names, numbers and literals folded; comments dropped.
fn line_shape(line: &str, in_block_comment: &mut bool) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if *in_block_comment {
            if c == '*' && next == Some('/') {
                *in_block_comment = false;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        match c {
            '/' if next == Some('/') => break,
            '/' if next == Some('*') => {
                *in_block_comment = true;
                i += 2;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push('S');
            }
            '\'' if chars.get(i + 2) == Some(&'\'') || (next == Some('\\') && chars.get(i + 3) == Some(&'\'')) => {
                i += if next == Some('\\') { 4 } else { 3 };
                out.push('S');
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push('N');
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if KEYWORDS.contains(&word.as_str()) {
                    out.push_str(&word);
                    out.push(' ');
                } else {
                    out.push('I');
                }
            }
            c if c.is_whitespace() => i += 1,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A run of `RUN` lines of `reference` that stands in `shipped`: (line in `reference`, line in
/// `shipped`), the first one found.
pub fn shared_run(reference: &[Shape], shipped: &[Shape]) -> Option<(usize, usize)> {
    if reference.len() < RUN || shipped.len() < RUN {
        return None;
    }
    let mut windows: HashMap<Vec<&str>, usize> = HashMap::new();
    for window in shipped.windows(RUN) {
        let key: Vec<&str> = window.iter().map(|s| s.shape.as_str()).collect();
        windows.entry(key).or_insert(window[0].line);
    }
    reference.windows(RUN).find_map(|window| {
        let key: Vec<&str> = window.iter().map(|s| s.shape.as_str()).collect();
        windows.get(&key).map(|&line| (window[0].line, line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up function, of the kind a reference holds.
    const REFERENCE: &str = r#"
pub fn checksum(blocks: &[Block], seed: u64, limit: u64) -> Sum {
    let mut total = seed & SEED_MASK;
    for block in blocks.iter().take(limit as usize) {
        let weight = (block.tag >> block.level()) & 0x3f;
        let offset = total + weight * 16;
        // fold the block in
        let value: u64 = block.read(Offset(offset)).unwrap();
        if value & FLAG_LAST == 0 {
            return early(block);
        }
        total = value ^ SEED_MASK;
    }
}
"#;

    #[test]
    fn signatures_say_nothing() {
        let stub =
            "pub fn run(\n    vcpu: &mut VcpuFd,\n    console: &mut dyn Write,\n) -> Result<(), E> {\n    todo!()\n}\n";
        assert_eq!(shapes(stub).iter().map(|s| s.line).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn a_renamed_copy_shares_a_run() {
        let renamed = REFERENCE
            .replace("total", "acc")
            .replace("block", "b")
            .replace("0x3f", "63")
            .replace("// fold the block in", "");
        let found = shared_run(&shapes(REFERENCE), &shapes(&renamed));
        assert!(found.is_some());
    }

    #[test]
    fn other_code_shares_none() {
        let other = r#"
fn expect_sum(found: &Sum, expected: &Sum) -> Result<(), String> {
    if found.parts != expected.parts {
        return Err(format!("parts differ: {:?}", found.parts));
    }
    match (&found.total, &expected.total) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        _ => Err("totals differ".into()),
    }
}
"#;
        assert_eq!(shared_run(&shapes(REFERENCE), &shapes(other)), None);
    }

    #[test]
    fn comments_blank_lines_and_lone_braces_say_nothing() {
        let shapes = shapes("// a comment\n\n    }\n/* block\n still */ let x = 1;\nuse std::fs;\n");
        assert_eq!(
            shapes,
            vec![Shape {
                line: 5,
                shape: "let I=N;".into()
            }]
        );
    }
}
