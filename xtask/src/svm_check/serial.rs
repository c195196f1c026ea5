//! What the guest's init script reports on its own serial port, read back on the host.
//!
//! Lines start with [`MARK`]: `begin`, `insmod-failed NAME`, `kvm yes|no`, then per case
//! `case ID STATUS`, `stdout`, hex lines, `stderr`, hex lines, `end ID`, and finally `done`.
//! The tty may turn `\n` into `\r\n`; carriage returns are ignored.

use std::collections::BTreeMap;

use super::cases::Run;

/// The prefix of every protocol line.
pub const MARK: &str = "@svm-check:";

/// Everything the guest reported.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub begun: bool,
    pub insmod_failed: Vec<String>,
    /// `Some(true)` once the guest saw `/dev/kvm`.
    pub kvm: Option<bool>,
    /// Finished cases by id.
    pub runs: BTreeMap<usize, Run>,
    pub done: bool,
}

enum Section {
    None,
    Stdout,
    Stderr,
}

/// Reads the results port's log; a case cut short (no `end`) is left out.
pub fn parse(log: &str) -> Report {
    let mut report = Report::default();
    let mut current: Option<(usize, i32, String, String)> = None;
    let mut section = Section::None;
    for line in log.lines().map(|l| l.trim_end_matches('\r')) {
        let Some(message) = line.strip_prefix(MARK) else {
            if let Some((_, _, out, err)) = current.as_mut() {
                match section {
                    Section::Stdout => out.push_str(line.trim()),
                    Section::Stderr => err.push_str(line.trim()),
                    Section::None => {}
                }
            }
            continue;
        };
        let words: Vec<&str> = message.split_whitespace().collect();
        match words.as_slice() {
            ["begin"] => report.begun = true,
            ["insmod-failed", name] => report.insmod_failed.push((*name).to_owned()),
            ["kvm", answer] => report.kvm = Some(*answer == "yes"),
            ["case", id, status] => {
                current = id
                    .parse()
                    .ok()
                    .zip(status.parse().ok())
                    .map(|(id, status)| (id, status, String::new(), String::new()));
                section = Section::None;
            }
            ["stdout"] => section = Section::Stdout,
            ["stderr"] => section = Section::Stderr,
            ["end", id] => {
                if let Some((case, status, out, err)) = current.take()
                    && id.parse() == Ok(case)
                    && let (Some(stdout), Some(stderr)) = (from_hex(&out), from_hex(&err))
                {
                    let stderr = String::from_utf8_lossy(&stderr).into_owned();
                    report.runs.insert(
                        case,
                        Run {
                            status: Some(status),
                            stdout,
                            stderr,
                        },
                    );
                }
                section = Section::None;
            }
            ["done"] => report.done = true,
            _ => {}
        }
    }
    report
}

/// `xxd -p`'s output (hex digits, any line breaks) as bytes.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_report_reads_back_with_every_byte() {
        // "Hello\n" and a byte that is no UTF-8, as xxd -p wraps them, with the tty's \r\n.
        let log = "@svm-check:begin\r\n@svm-check:kvm yes\r\n\
                   @svm-check:case 0 0\r\n@svm-check:stdout\r\n48656c6c\r\n6f0aff\r\n@svm-check:stderr\r\n\
                   6b766d2d68656c6c6f3a206f6b0a\r\n@svm-check:end 0\r\n\
                   @svm-check:case 1 5\r\n@svm-check:stdout\r\n@svm-check:stderr\r\n@svm-check:end 1\r\n\
                   @svm-check:done\r\n";
        let report = parse(log);
        assert!(report.begun && report.done);
        assert_eq!(report.kvm, Some(true));
        assert_eq!(
            report.runs[&0],
            Run {
                status: Some(0),
                stdout: b"Hello\n\xff".to_vec(),
                stderr: "kvm-hello: ok\n".into()
            }
        );
        assert_eq!(report.runs[&1].status, Some(5));
        assert!(report.runs[&1].stdout.is_empty());
    }

    #[test]
    fn a_cut_off_report_keeps_what_finished() {
        let log = "@svm-check:begin\n@svm-check:insmod-failed kvm-amd.ko\n@svm-check:kvm no\n";
        let report = parse(log);
        assert_eq!(report.insmod_failed, ["kvm-amd.ko"]);
        assert_eq!(report.kvm, Some(false));
        assert!(!report.done);
        let cut = "@svm-check:case 0 0\n@svm-check:stdout\n4865\n@svm-check:case 1 0\n@svm-check:stdout\n\
                   @svm-check:stderr\n@svm-check:end 1\n@svm-check:case 2 0\n@svm-check:stdout\n48";
        let report = parse(cut);
        assert_eq!(report.runs.keys().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn hex_is_decoded_or_refused() {
        assert_eq!(from_hex("00ff\n10"), Some(vec![0, 0xff, 0x10]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
