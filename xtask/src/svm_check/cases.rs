//! What runs on both sides (the host's KVM and the SVM guest), and how each result is judged.
//!
//! The same list drives the guest's init script and the host run, so the two columns of the
//! table always compare the same command lines.

use std::path::Path;

use guests::CorpusGuest;
use serde_json::Value;

/// The guest's greeting, printed by the kit's guest in every mode.
const GREETING: &str = "Hello, world!\n";
/// The modes of `kvm-hello --mode`.
const MODES: [&str; 4] = ["long", "protected", "paged32", "real"];
/// The extension labs of `kvm-hello --lab`.
const LABS: [&str; 3] = ["lwn", "hypercalls", "schedule"];
/// kvm-hello's own limit for the kit's guests: generous, an emulated CPU is slow.
const HELLO_TIMEOUT_SECS: &str = "20";
/// The limit for a corpus guest that must be stopped (status 5): the tests use 1 s too.
const SPIN_TIMEOUT_SECS: &str = "1";
/// The limit for the other corpus guests (some make 4,000 exits).
const CORPUS_TIMEOUT_SECS: &str = "10";
/// kvm-hello's status for a guest stopped at its time limit.
const STATUS_TIMEOUT: i32 = 5;
/// Guests whose outcome depends on the host, run to record it (as statuses.rs runs them):
/// MOVAPS in real mode: KVM's emulator (PVM hosts) decodes it but raises #UD (CR4.OSFXSR clear),
/// and an exception while it emulates real mode makes it give up (KVM_EXIT_INTERNAL_ERROR).
const PROBES: [(&str, &str, &[u8]); 1] = [("movaps-real", "real", &[0x0f, 0x28, 0xc1])];
/// The probes' time limit: enough to end by themselves on any host, short when they spin.
const PROBE_TIMEOUT_SECS: &str = "1";

/// Which release binary a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    KvmHello,
    Grader,
}

impl Program {
    pub fn file_name(self) -> &'static str {
        match self {
            Program::KvmHello => "kvm-hello",
            Program::Grader => "grader",
        }
    }
}

/// What a case must do to pass.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// `kvm-hello --json --mode M`: status 0, `ok`, and the greeting.
    Hello,
    /// `kvm-hello --json --lab L`: status 0 and `ok`.
    Lab,
    /// `kvm-hello --step --json --mode M`: the greeting in the steps' exits, HLT last, `ok`.
    Step,
    /// A hostile guest: the status, stdout and stderr its header promises.
    Corpus(&'static CorpusGuest),
    /// A probe: ends in time with one line on stderr, whatever its status.
    Probe,
    /// `grader --json`: every check passed.
    Grader,
}

/// One command line, run on both sides.
#[derive(Debug, Clone)]
pub struct Case {
    /// The table's label, e.g. `kvm-hello --mode paged32`.
    pub label: String,
    pub program: Program,
    /// Arguments; a corpus image is named by its file name, see [`Case::guest_image`].
    args: Vec<String>,
    /// The corpus image's file name, passed as `--guest DIR/NAME`.
    pub guest_image: Option<String>,
    pub expect: Expect,
}

impl Case {
    /// The arguments, with the corpus image found in `corpus_dir`.
    pub fn args(&self, corpus_dir: &Path) -> Vec<String> {
        let mut args = self.args.clone();
        if let Some(image) = &self.guest_image {
            args.push("--guest".to_owned());
            args.push(corpus_dir.join(image).display().to_string());
        }
        args
    }
}

/// The corpus image's file name.
pub fn image_name(guest: &CorpusGuest) -> String {
    format!("{}.bin", guest.name)
}

/// The images the cases load with `--guest`: the corpus and the probes, by file name.
pub fn images(corpus: &'static [CorpusGuest]) -> Vec<(String, &'static [u8])> {
    let corpus = corpus.iter().map(|guest| (image_name(guest), guest.image));
    let probes = PROBES.iter().map(|(name, _, image)| (format!("{name}.bin"), *image));
    corpus.chain(probes).collect()
}

/// Every case: the four modes, the two extension labs, the corpus, the probes, then the grader.
pub fn all(corpus: &'static [CorpusGuest]) -> Vec<Case> {
    let strings = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut cases = Vec::new();
    for mode in MODES {
        cases.push(Case {
            label: format!("kvm-hello --mode {mode}"),
            program: Program::KvmHello,
            args: strings(&["--json", "--timeout", HELLO_TIMEOUT_SECS, "--mode", mode]),
            guest_image: None,
            expect: Expect::Hello,
        });
    }
    // Single step differs between hosts (an OUT's debug exit, HLT's exit): --step must list the
    // same program on both.
    for mode in MODES {
        cases.push(Case {
            label: format!("kvm-hello --step --mode {mode}"),
            program: Program::KvmHello,
            args: strings(&["--step", "--json", "--timeout", HELLO_TIMEOUT_SECS, "--mode", mode]),
            guest_image: None,
            expect: Expect::Step,
        });
    }
    for lab in LABS {
        cases.push(Case {
            label: format!("kvm-hello --lab {lab}"),
            program: Program::KvmHello,
            args: strings(&["--json", "--timeout", HELLO_TIMEOUT_SECS, "--lab", lab]),
            guest_image: None,
            expect: Expect::Lab,
        });
    }
    for guest in corpus {
        // As crates/kvm-hello/tests/statuses.rs runs them.
        let timeout = if guest.expected_status() == STATUS_TIMEOUT {
            SPIN_TIMEOUT_SECS
        } else {
            CORPUS_TIMEOUT_SECS
        };
        let mut args = match guest.lab() {
            Some(lab) => strings(&["--lab", lab]),
            None => strings(&["--mode", guest.mode()]),
        };
        args.extend(strings(&["--timeout", timeout]));
        cases.push(Case {
            label: format!("corpus {}", guest.name),
            program: Program::KvmHello,
            args,
            guest_image: Some(image_name(guest)),
            expect: Expect::Corpus(guest),
        });
    }
    for (name, mode, _) in PROBES {
        cases.push(Case {
            label: format!("probe {name}"),
            program: Program::KvmHello,
            args: strings(&["--mode", mode, "--timeout", PROBE_TIMEOUT_SECS]),
            guest_image: Some(format!("{name}.bin")),
            expect: Expect::Probe,
        });
    }
    cases.push(Case {
        label: "grader".to_owned(),
        program: Program::Grader,
        args: strings(&["--json"]),
        guest_image: None,
        expect: Expect::Grader,
    });
    cases
}

/// What one run of a case left: its exit status (None: killed or never ran), stdout and stderr.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// One cell of the table: passed or not, a short summary, and the run's own one-line account
/// (kvm-hello's summary line or error, the grader's message), shown when it matters.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub passed: bool,
    pub summary: String,
    pub detail: Option<String>,
}

impl Cell {
    fn pass(summary: String, detail: &str) -> Self {
        Cell {
            passed: true,
            summary,
            detail: (!detail.trim().is_empty()).then(|| detail.trim().to_owned()),
        }
    }

    fn fail(summary: String, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Cell {
            passed: false,
            summary,
            detail: (!detail.trim().is_empty()).then(|| detail.trim().to_owned()),
        }
    }
}

/// The rows a case's run fills in: one for a kvm-hello case, one per check for the grader.
pub fn judge(case: &Case, run: &Run) -> Vec<(String, Cell)> {
    match case.expect {
        Expect::Hello => vec![(case.label.clone(), judge_hello(run, Some(GREETING)))],
        Expect::Lab => vec![(case.label.clone(), judge_hello(run, None))],
        Expect::Step => vec![(case.label.clone(), judge_step(run))],
        Expect::Corpus(guest) => vec![(case.label.clone(), judge_corpus(guest, run))],
        Expect::Probe => vec![(case.label.clone(), judge_probe(run))],
        Expect::Grader => judge_grader(run),
    }
}

/// kvm-hello's statuses a guest can cause: ok, wrong result, guest fault, timeout (as
/// statuses.rs's random images); 3, 6 and 7 are the host's or the labs' doing.
const GUEST_STATUSES: [i32; 4] = [0, 1, 4, STATUS_TIMEOUT];

/// A probe passes when the guest ran and ended with a status a guest can cause and kvm-hello's
/// one summary line (no panic).
fn judge_probe(run: &Run) -> Cell {
    let stderr = run.stderr.trim();
    let one_line = stderr.lines().count() == 1 && stderr.starts_with("kvm-hello: ");
    match run.status {
        Some(status) if GUEST_STATUSES.contains(&status) && one_line && !stderr.contains("panicked") => {
            Cell::pass(format!("status {status}"), stderr)
        }
        status => Cell::fail(status_text(status), stderr),
    }
}

fn status_text(status: Option<i32>) -> String {
    status.map_or_else(|| "killed".to_owned(), |code| format!("status {code}"))
}

/// `kvm-hello --json`: status 0, `"ok": true`, and the expected output if one is given.
fn judge_hello(run: &Run, greeting: Option<&str>) -> Cell {
    let report: Option<Value> = serde_json::from_slice(&run.stdout).ok();
    let field = |key: &str| report.as_ref().and_then(|r| r.get(key)).cloned();
    let exits = field("exits").and_then(|e| e.get("total").and_then(Value::as_u64));
    let output = field("output").and_then(|o| o.as_str().map(str::to_owned));
    let error = field("error")
        .and_then(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| run.stderr.trim().to_owned());
    if run.status != Some(0) || field("ok") != Some(Value::Bool(true)) {
        return Cell::fail(status_text(run.status), error);
    }
    if let Some(greeting) = greeting
        && output.as_deref() != Some(greeting)
    {
        return Cell::fail(
            "wrong output".to_owned(),
            format!("printed {output:?}, expected {greeting:?}"),
        );
    }
    let summary = exits.map_or_else(|| "ok".to_owned(), |n| format!("ok, {}", plural(n, "exit")));
    Cell::pass(summary, &run.stderr)
}

/// `kvm-hello --step --json`: one record per instruction, then the report. Passes when the report
/// is a hello run's and the records' OUT bytes spell the greeting, with HLT as the last step.
fn judge_step(run: &Run) -> Cell {
    let text = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let Some((report, steps)) = lines.split_last() else {
        return Cell::fail(status_text(run.status), run.stderr.trim());
    };
    let hello = judge_hello(
        &Run {
            stdout: report.as_bytes().to_vec(),
            ..run.clone()
        },
        Some(GREETING),
    );
    if !hello.passed {
        return hello;
    }
    let records: Vec<Value> = steps
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let printed: String = records
        .iter()
        .flat_map(|r| r["exits"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["kind"] == "io out")
        .filter_map(|e| e["data"].as_str().map(str::to_owned))
        .collect();
    let last = records.last().and_then(|r| r["text"].as_str().map(str::to_owned));
    if records.len() != steps.len() || printed != GREETING || last.as_deref() != Some("hlt") {
        return Cell::fail(
            "wrong listing".to_owned(),
            format!("{} steps printing {printed:?}, the last {last:?}", records.len()),
        );
    }
    Cell::pass(plural(records.len() as u64, "step"), &run.stderr)
}

/// `1 exit`, `15 exits`.
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `after 15 exits` in kvm-hello's summary line, for the table.
fn exits_in(stderr: &str) -> Option<u64> {
    let (_, rest) = stderr.split_once("after ")?;
    rest.split_once(" exit")?.0.parse().ok()
}

/// A corpus guest: the status, stdout and stderr its header promises (as statuses.rs checks).
fn judge_corpus(guest: &CorpusGuest, run: &Run) -> Cell {
    let expected = guest.expected_status();
    let stderr = run.stderr.trim();
    let exits = exits_in(stderr).map_or_else(String::new, |n| format!(", {}", plural(n, "exit")));
    if run.status != Some(expected) {
        return Cell::fail(format!("{}, expected {expected}", status_text(run.status)), stderr);
    }
    if let Some(needle) = guest.expected_stderr()
        && !stderr.contains(needle)
    {
        return Cell::fail(
            format!("status {expected}, other message"),
            format!("expected {needle:?} in {stderr:?}"),
        );
    }
    if let Some(stdout) = guest.expected_stdout()
        && run.stdout != stdout.as_bytes()
    {
        return Cell::fail(
            format!("status {expected}, other output"),
            format!(
                "printed {:?}, expected {stdout:?}",
                String::from_utf8_lossy(&run.stdout)
            ),
        );
    }
    Cell::pass(format!("ok (status {expected}{exits})"), stderr)
}

/// One check of the grader's `--json` output.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub check: String,
    pub outcome: String,
    pub message: String,
}

/// The grader's `--json` output, read tolerantly: an array of checks, an object holding one
/// (`checks` or `results`), or one JSON object per line. Each check needs `check` and
/// `outcome`; `message`, `points`, `part` and anything else are optional.
pub fn parse_grader_json(stdout: &str) -> Option<Vec<CheckOutcome>> {
    let items: Vec<Value> = match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Object(object)) => ["checks", "results"]
            .iter()
            .find_map(|key| object.get(*key).and_then(Value::as_array).cloned())?,
        Ok(_) => return None,
        Err(_) => stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
            .filter(Value::is_object)
            .collect(),
    };
    let checks: Vec<CheckOutcome> = items
        .iter()
        .filter_map(|item| {
            let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
            Some(CheckOutcome {
                check: text("check").or_else(|| text("name"))?,
                outcome: text("outcome")?,
                message: text("message").unwrap_or_default(),
            })
        })
        .collect();
    (!checks.is_empty()).then_some(checks)
}

/// The grader's checks: each passes only with the outcome `passed` (`not_run` is not a pass).
fn judge_grader(run: &Run) -> Vec<(String, Cell)> {
    let stdout = String::from_utf8_lossy(&run.stdout);
    let Some(checks) = parse_grader_json(&stdout) else {
        let tail: Vec<&str> = run.stderr.lines().rev().take(3).collect();
        let detail = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
        return vec![(
            "grader".to_owned(),
            Cell::fail(format!("{}, no JSON", status_text(run.status)), detail),
        )];
    };
    checks
        .into_iter()
        .map(|c| {
            let cell = if c.outcome == "passed" {
                Cell::pass(c.outcome, &c.message)
            } else {
                Cell::fail(c.outcome, c.message)
            };
            (format!("grader {}", c.check), cell)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: i32, stdout: &str, stderr: &str) -> Run {
        Run {
            status: Some(status),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.to_owned(),
        }
    }

    fn corpus(name: &str) -> &'static CorpusGuest {
        guests::CORPUS.iter().find(|g| g.name == name).expect(name)
    }

    #[test]
    fn every_mode_every_lab_every_corpus_guest_and_the_grader_run() {
        let cases = all(guests::CORPUS);
        let labels: Vec<&str> = cases.iter().map(|c| c.label.as_str()).collect();
        for label in [
            "kvm-hello --mode paged32",
            "kvm-hello --mode real",
            "kvm-hello --lab hypercalls",
            "kvm-hello --lab schedule",
            "grader",
        ] {
            assert!(labels.contains(&label), "{label} in {labels:?}");
        }
        assert_eq!(
            cases.len(),
            4 + 4 + LABS.len() + guests::CORPUS.len() + PROBES.len() + 1
        );
        let files: Vec<String> = images(guests::CORPUS).into_iter().map(|(name, _)| name).collect();
        for case in &cases {
            if let Some(image) = &case.guest_image {
                assert!(files.contains(image), "{image} is among the images");
            }
        }
        let rep = cases.iter().find(|c| c.label == "corpus rep-outsb").unwrap();
        assert_eq!(
            rep.args(Path::new("/corpus")),
            ["--mode", "long", "--timeout", "10", "--guest", "/corpus/rep-outsb.bin"]
        );
        let spin = cases.iter().find(|c| c.label == "corpus spin-long").unwrap();
        assert!(spin.args(Path::new("/c")).windows(2).any(|w| w == ["--timeout", "1"]));
    }

    #[test]
    fn a_step_listing_passes_only_when_its_outs_spell_the_greeting_and_it_ends_at_hlt() {
        let report = r#"{"ok":true,"status":0,"output":"Hello, world!\n","exits":{"total":15}}"#;
        let out =
            |data: &str| format!(r#"{{"step":1,"text":"out dx, al","exits":[{{"kind":"io out","data":"{data}"}}]}}"#);
        let hlt = r#"{"step":2,"text":"hlt","exits":[{"kind":"hlt"}]}"#;
        let listing = format!("{}\n{hlt}\n{report}\n", out("Hello, world!\\n"));
        assert_eq!(judge_step(&run(0, &listing, "")), Cell::pass("2 steps".into(), ""));
        let short = format!("{}\n{hlt}\n{report}\n", out("Hello"));
        assert_eq!(judge_step(&run(0, &short, "")).summary, "wrong listing");
        let no_hlt = format!("{}\n{report}\n", out("Hello, world!\\n"));
        assert!(!judge_step(&run(0, &no_hlt, "")).passed);
        assert!(!judge_step(&run(5, "", "kvm-hello: step limit")).passed);
    }

    #[test]
    fn a_hello_run_passes_only_with_status_0_ok_and_the_greeting() {
        let ok = r#"{"ok":true,"status":0,"output":"Hello, world!\n","exits":{"total":15}}"#;
        assert_eq!(
            judge_hello(&run(0, ok, ""), Some(GREETING)),
            Cell::pass("ok, 15 exits".into(), "")
        );
        let pvm = r#"{"ok":false,"status":4,"output":"","error":{"kind":"guest_fault","message":"triple fault (KVM_EXIT_SHUTDOWN) at RIP 0x0: this host's KVM is PVM"}}"#;
        let cell = judge_hello(&run(4, pvm, "kvm-hello: triple fault"), Some(GREETING));
        assert!(!cell.passed);
        assert_eq!(cell.summary, "status 4");
        assert!(cell.detail.unwrap().contains("this host's KVM is PVM"));
        let twice = r#"{"ok":true,"status":0,"output":"Hello, world!\nHello, world!\n","exits":{"total":29}}"#;
        assert_eq!(judge_hello(&run(0, twice, ""), Some(GREETING)).summary, "wrong output");
        let stub = judge_hello(&run(6, "", "kvm-hello: not implemented yet: lab1 vm_init\n"), None);
        assert_eq!(
            stub.detail.as_deref(),
            Some("kvm-hello: not implemented yet: lab1 vm_init")
        );
        assert_eq!(judge_hello(&Run::default(), None).summary, "killed");
        let lwn = r#"{"ok":true,"status":0,"output":"4\n","exits":{"total":1}}"#;
        assert_eq!(judge_hello(&run(0, lwn, ""), None).summary, "ok, 1 exit");
    }

    #[test]
    fn a_corpus_guest_is_held_to_its_header() {
        let rep = corpus("rep-outsb");
        let summary = "kvm-hello: guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42\n";
        let cell = judge_corpus(rep, &run(0, "Hello, world!\n", summary));
        assert_eq!(cell, Cell::pass("ok (status 0, 15 exits)".into(), summary));
        assert_eq!(
            judge_corpus(rep, &run(0, "Hello", summary)).summary,
            "status 0, other output"
        );
        assert_eq!(
            judge_corpus(rep, &run(4, "", "kvm-hello: x")).summary,
            "status 4, expected 0"
        );
        let wrong_rax = corpus("wrong-rax");
        assert!(judge_corpus(wrong_rax, &run(1, "", "kvm-hello: RAX is 41, expected 42")).passed);
        assert_eq!(
            judge_corpus(wrong_rax, &run(1, "", "kvm-hello: RAX is 40")).summary,
            "status 1, other message"
        );
    }

    #[test]
    fn a_probe_needs_only_to_end_with_one_line() {
        let internal = "kvm-hello: KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror 1) at RIP 0x0\n";
        assert_eq!(judge_probe(&run(4, "", internal)).summary, "status 4");
        assert!(judge_probe(&run(5, "", "kvm-hello: timeout: the guest did not halt within 5 s\n")).passed);
        assert!(!judge_probe(&run(101, "", "thread 'main' panicked at x\nnote: backtrace\n")).passed);
        assert!(!judge_probe(&Run::default()).passed);
        let stub = "kvm-hello: not implemented yet: lab1 vm_init (labs/lab1-memory/src/lib.rs)\n";
        assert!(!judge_probe(&run(6, "", stub)).passed, "a stub never ran the guest");
    }

    #[test]
    fn grader_json_is_read_in_every_shape_it_may_take() {
        let array = r#"[{"check":"lab1_vcpu_init","message":"","outcome":"passed","points":2},
            {"check":"lab3_paged32_mode","message":"lab3 special_registers: CR4 in paged32 mode","outcome":"failed","points":2}]"#;
        let expected = vec![
            CheckOutcome {
                check: "lab1_vcpu_init".into(),
                outcome: "passed".into(),
                message: String::new(),
            },
            CheckOutcome {
                check: "lab3_paged32_mode".into(),
                outcome: "failed".into(),
                message: "lab3 special_registers: CR4 in paged32 mode".into(),
            },
        ];
        assert_eq!(parse_grader_json(array).as_ref(), Some(&expected));
        let object = format!(r#"{{"seed":7,"score":2,"checks":{array}}}"#);
        assert_eq!(parse_grader_json(&object).as_ref(), Some(&expected));
        let lines = "{\"check\":\"lab1_vcpu_init\",\"outcome\":\"passed\",\"part\":\"lab1\"}\nnoise\n{\"check\":\"lab3_paged32_mode\",\"outcome\":\"failed\",\"message\":\"lab3 special_registers: CR4 in paged32 mode\"}\n";
        assert_eq!(parse_grader_json(lines).as_ref(), Some(&expected));
        assert_eq!(parse_grader_json("grader: cannot run"), None);
        assert_eq!(parse_grader_json("[]"), None);
    }

    #[test]
    fn only_passed_is_a_pass_and_a_grader_without_json_is_one_failed_row() {
        let out = r#"[{"check":"a","outcome":"passed"},{"check":"b","outcome":"not_run","message":"no KVM"}]"#;
        let rows = judge_grader(&run(0, out, ""));
        assert_eq!(rows[0], ("grader a".into(), Cell::pass("passed".into(), "")));
        assert_eq!(rows[1].0, "grader b");
        assert!(!rows[1].1.passed);
        assert_eq!(rows[1].1.detail.as_deref(), Some("no KVM"));
        let broken = judge_grader(&run(
            101,
            "",
            "thread 'main' panicked\nnote: run with RUST_BACKTRACE=1\n",
        ));
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].1.summary, "status 101, no JSON");
    }
}
