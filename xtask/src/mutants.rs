//! `cargo xtask mutants`: mutation testing of the labs' references with cargo-mutants. Each mutant
//! is a `labs/*/src/solution.rs` with one small change; its test is the grader's checks (`cargo
//! test -p grader --features solution --test grade`), so the catch rate measures grading, not the
//! labs' own unit tests. `--record` writes `grader/mutants.md` (per-lab counts, every mutant by a
//! name that survives edits elsewhere in the file, and the hand-written "Equivalent mutants"
//! answers, which it keeps); `--check` (CI) runs one shard and fails only if a mutant the record
//! lists as caught is missed now.
//!
//! cargo-mutants runs `--in-place` in a copy of the kit under `target/mutants/tree`, built in its
//! own `target/` (never this kit's: cargo hashes members by path) and kept between runs: no copy of
//! a many-gigabyte `target/` per run, and the copy's dependencies are built once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::kit::{self, LABS};

/// The record, relative to the kit's root.
const RECORD: &str = "grader/mutants.md";
/// Where the copy, its build and cargo-mutants' output live, under the kit's `target/`.
const WORK_DIR: &str = "mutants";
/// How many shards `--check` splits the mutants into: 288 mutants of labs 0 to 7 in 16 shards are
/// 18 each, at 15 to 50 s each (PVM, 2 cores, idle to loaded, December 2026) 5 to 15 minutes; every
/// mutant is checked once in 16 days of daily CI runs.
const CHECK_SHARDS: u64 = 16;
/// The test timeout of one mutant: the grader's checks take 1 to 20 s on the reference (PVM, 2
/// cores, December 2026); a mutant that makes a check wait out its watchdog takes longer.
const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// The record's section that people write and the tool keeps.
const EQUIVALENT_HEADING: &str = "## Equivalent mutants";
/// Exit status: mutants left unanswered (a run), or caught before and missed now (`--check`).
const FINDINGS: u8 = 1;

/// `cargo xtask mutants [--lab N]... [--record | --check]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these labs (0 to 7; repeat the option for several); every lab when none.
    #[arg(long = "lab", value_name = "N", value_parser = clap::value_parser!(u8).range(0..=7))]
    labs: Vec<u8>,
    /// Write the result into grader/mutants.md (the labs run replace theirs; the others and the
    /// hand-written "Equivalent mutants" section are kept).
    #[arg(long, conflicts_with = "check")]
    record: bool,
    /// CI: run one shard of the mutants (chosen by the date) and fail only if a mutant that
    /// grader/mutants.md lists as caught is missed now; prints the catch rate.
    #[arg(long)]
    check: bool,
    /// With --check: run this shard, K/N (K from 0), instead of the date's.
    #[arg(long, value_name = "K/N", requires = "check")]
    shard: Option<String>,
    /// Read an earlier run's outcomes (a mutants.out folder of cargo-mutants; repeat for several)
    /// instead of running cargo-mutants; its host is taken to be this one.
    #[arg(long, value_name = "DIR", conflicts_with = "check")]
    from: Vec<PathBuf>,
    /// Seconds a mutant's checks may take before it counts as a timeout.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
}

/// What the checks did with one mutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// A check failed.
    Caught,
    /// Every check passed.
    Missed,
    /// The checks took longer than the timeout.
    Timeout,
    /// It does not compile: nothing to grade.
    Unviable,
}

impl Verdict {
    const ALL: [Verdict; 4] = [Verdict::Missed, Verdict::Timeout, Verdict::Unviable, Verdict::Caught];

    fn from_summary(summary: &str) -> Option<Verdict> {
        match summary {
            "CaughtMutant" => Some(Verdict::Caught),
            "MissedMutant" => Some(Verdict::Missed),
            "Timeout" => Some(Verdict::Timeout),
            "Unviable" => Some(Verdict::Unviable),
            _ => None,
        }
    }

    /// The record's section of this verdict.
    fn heading(self) -> &'static str {
        match self {
            Verdict::Caught => "## Caught",
            Verdict::Missed => "## Missed",
            Verdict::Timeout => "## Timeout",
            Verdict::Unviable => "## Unviable",
        }
    }

    /// Whether it needs an answer (a check that catches it, or an equivalence line).
    fn needs_answer(self) -> bool {
        matches!(self, Verdict::Missed | Verdict::Timeout)
    }
}

/// One mutant's outcome in a run.
#[derive(Debug, Clone)]
struct Outcome {
    /// The stable name (see [`stable_names`]).
    name: String,
    /// Where cargo-mutants put it now (`file:line:col`), for people.
    at: String,
    lab: u8,
    verdict: Verdict,
    /// The mutation as a diff of the reference.
    diff: String,
    /// Build and test time.
    seconds: f64,
}

/// A run of cargo-mutants, read back.
#[derive(Debug, Default)]
struct Run {
    outcomes: Vec<Outcome>,
    /// The day it started (YYYY-MM-DD).
    date: String,
    version: String,
}

/// The committed record, read back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record {
    /// Each recorded mutant's verdict, by stable name.
    pub verdicts: BTreeMap<String, Verdict>,
    /// Each recorded lab's run: date, host, tool version, time.
    pub runs: BTreeMap<u8, String>,
    /// The hand-written section, verbatim (from its heading to the end of the file).
    pub equivalent_section: String,
}

impl Record {
    /// The equivalence answers: stable name and reason.
    pub fn equivalents(&self) -> BTreeMap<String, String> {
        let mut answers = BTreeMap::new();
        let mut in_comment = false;
        for line in self.equivalent_section.lines() {
            // A line inside an HTML comment is no answer (a commented-out one, or the instructions).
            let was_in_comment = in_comment;
            if line.contains("<!--") {
                in_comment = true;
            }
            if line.contains("-->") {
                in_comment = false;
                continue;
            }
            if was_in_comment || in_comment {
                continue;
            }
            let Some(rest) = line.trim_start().strip_prefix("- ") else {
                continue;
            };
            let Some((name, after)) = code_span(rest) else {
                continue;
            };
            let reason = after.trim_start().strip_prefix(':').unwrap_or("").trim();
            if !reason.is_empty() {
                answers.insert(name, reason.to_owned());
            }
        }
        answers
    }
}

/// What `--check` found: the record against a run of some of its mutants.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Caught in the record, missed now: a check got weaker. The only failure.
    pub regressions: Vec<String>,
    /// Caught in the record, a timeout now (a slower host or a busy one; reported, not a failure).
    pub timeouts_now: Vec<String>,
    /// Missed or a timeout in the record, caught now: record it.
    pub newly_caught: Vec<String>,
    /// Not in the record (new code, or a newer cargo-mutants).
    pub unrecorded: Vec<String>,
}

/// Compares a run's verdicts with the record's: a mutant the record lists as caught and the run
/// as missed is a regression; nothing else fails.
pub fn compare(record: &BTreeMap<String, Verdict>, now: &[(String, Verdict)]) -> Comparison {
    let mut comparison = Comparison::default();
    for (name, verdict) in now {
        match (record.get(name), verdict) {
            (None, _) => comparison.unrecorded.push(name.clone()),
            (Some(Verdict::Caught), Verdict::Missed) => comparison.regressions.push(name.clone()),
            (Some(Verdict::Caught), Verdict::Timeout) => comparison.timeouts_now.push(name.clone()),
            (Some(before), Verdict::Caught) if before.needs_answer() => comparison.newly_caught.push(name.clone()),
            _ => {}
        }
    }
    comparison
}

/// Splits cargo-mutants' `file:line:col: description` into the file, the position and the
/// description.
fn split_name(name: &str) -> Option<(&str, (u32, u32), &str)> {
    let (file, rest) = name.split_once(':')?;
    let (line, rest) = rest.split_once(':')?;
    let (column, description) = rest.split_once(": ")?;
    Some((file, (line.parse().ok()?, column.parse().ok()?), description))
}

/// Names that survive edits elsewhere in a file: cargo-mutants' `file: description` without line
/// and column, and, where a file has several mutants of that description, `#k` for the k-th in
/// source order. Maps each full name (as cargo-mutants prints it) to its stable name.
fn stable_names<'a>(names: impl IntoIterator<Item = &'a str>) -> HashMap<String, String> {
    // (file, description) -> each such mutant's (line, column) and full name.
    type Places = Vec<((u32, u32), String)>;
    let mut alike: BTreeMap<(String, String), Places> = BTreeMap::new();
    let mut stable = HashMap::new();
    for name in names {
        match split_name(name) {
            Some((file, position, description)) => alike
                .entry((file.to_owned(), description.to_owned()))
                .or_default()
                .push((position, name.to_owned())),
            None => {
                stable.insert(name.to_owned(), name.to_owned());
            }
        }
    }
    for ((file, description), mut places) in alike {
        places.sort();
        places.dedup();
        let several = places.len() > 1;
        for (index, (_, full)) in places.into_iter().enumerate() {
            let name = if several {
                format!("{file}: {description} #{}", index + 1)
            } else {
                format!("{file}: {description}")
            };
            stable.insert(full, name);
        }
    }
    stable
}

/// The lab whose reference a file is.
fn lab_of(file: &str) -> Option<u8> {
    LABS.iter()
        .find(|lab| lab.solution_file() == file)
        .map(|lab| lab.number)
}

/// The lab of a stable name.
fn lab_of_name(name: &str) -> Option<u8> {
    lab_of(name.split(':').next()?)
}

/// A markdown code span at the start of `text`: its content and what follows it.
fn code_span(text: &str) -> Option<(String, &str)> {
    let ticks = text.len() - text.trim_start_matches('`').len();
    if ticks == 0 {
        return None;
    }
    let fence = &text[..ticks];
    let rest = &text[ticks..];
    let end = rest.find(fence)?;
    Some((rest[..end].trim().to_owned(), &rest[end + ticks..]))
}

/// `name` as a markdown code span (longer fences when it holds backticks).
fn as_code(name: &str) -> String {
    if name.contains('`') {
        format!("`` {name} ``")
    } else {
        format!("`{name}`")
    }
}

/// Reads a record's text.
pub fn parse_record(text: &str) -> Record {
    let mut record = Record::default();
    let (generated, equivalent_section) = match text.find(EQUIVALENT_HEADING) {
        Some(at) => (&text[..at], text[at..].to_owned()),
        None => (text, String::new()),
    };
    record.equivalent_section = equivalent_section;
    let mut section = None;
    for line in generated.lines() {
        if line.starts_with("## ") {
            section = Verdict::ALL
                .into_iter()
                .find(|verdict| verdict.heading() == line.trim_end());
            continue;
        }
        if let Some(row) = line.strip_prefix('|') {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            if let (Some(lab), Some(run)) = (cells.first().and_then(|cell| cell.parse::<u8>().ok()), cells.get(8))
                && !run.is_empty()
                && *run != "not recorded"
            {
                record.runs.insert(lab, (*run).to_owned());
            }
            continue;
        }
        if let (Some(verdict), Some(item)) = (section, line.strip_prefix("- "))
            && let Some((name, _)) = code_span(item)
        {
            record.verdicts.insert(name, verdict);
        }
    }
    record
}

/// The record with `run`'s labs replaced by its outcomes.
fn merge(mut record: Record, run: &Run, labs: &BTreeSet<u8>, host: &str) -> Record {
    record
        .verdicts
        .retain(|name, _| lab_of_name(name).is_none_or(|lab| !labs.contains(&lab)));
    for outcome in &run.outcomes {
        record.verdicts.insert(outcome.name.clone(), outcome.verdict);
    }
    for &lab in labs {
        let seconds: f64 = run.outcomes.iter().filter(|o| o.lab == lab).map(|o| o.seconds).sum();
        record.runs.insert(
            lab,
            format!(
                "{}, {host}, cargo-mutants {}, {:.0} min",
                run.date,
                run.version,
                (seconds / 60.0).ceil()
            ),
        );
    }
    record
}

/// The mutants that need an answer and have none, sorted.
fn unanswered(verdicts: &BTreeMap<String, Verdict>, equivalents: &BTreeMap<String, String>) -> Vec<String> {
    verdicts
        .iter()
        .filter(|(name, verdict)| verdict.needs_answer() && !equivalents.contains_key(*name))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The record's text.
pub fn render_record(record: &Record) -> String {
    let equivalents = record.equivalents();
    let open = unanswered(&record.verdicts, &equivalents);
    let mut text = String::new();
    text.push_str("# Mutation testing of the labs' references\n\n");
    text.push_str(
        "<!-- Written by `cargo xtask mutants --record`: edit only the section \"Equivalent mutants\", which it keeps. -->\n\n",
    );
    text.push_str(
        "What the grader's checks catch of small changes to each lab's reference (`labs/*/src/solution.rs`), as\n\
         [cargo-mutants](https://mutants.rs/) makes them: each mutant is the reference with one change (an operator\n\
         swapped, a function's body replaced by a default value, a match arm deleted), built and graded by every check\n\
         (`cargo test -p grader --features solution --test grade`). *Caught*: a check failed. *Missed*: every check\n\
         passed. *Timeout*: the checks ran past the timeout. *Unviable*: it does not compile. A missed mutant (or a\n\
         timeout) is answered by a check that catches it or by a line under \"Equivalent mutants\" saying why no host can\n\
         observe a difference; the instructors' chapter of the book says how. Names are cargo-mutants' without line and\n\
         column (which move with every edit above them); where a file has several mutants of one description, `#k` is\n\
         the k-th in source order.\n\n",
    );
    if open.is_empty() {
        text.push_str("**Every non-equivalent mutant caught.**\n\n");
    } else {
        let _ = writeln!(
            text,
            "**{} unanswered** (missed or timed out, with no equivalence line): marked below.\n",
            plural(open.len(), "mutant")
        );
    }
    text.push_str("| Lab | Mutants | Caught | Missed | Timeout | Unviable | Equivalent | Unanswered | Run |\n");
    text.push_str("|----:|--------:|-------:|-------:|--------:|---------:|-----------:|-----------:|-----|\n");
    for lab in LABS {
        let count = |verdict: Verdict| {
            record
                .verdicts
                .iter()
                .filter(|(name, v)| **v == verdict && lab_of_name(name) == Some(lab.number))
                .count()
        };
        let of_lab = |names: &mut dyn Iterator<Item = &String>| {
            names.filter(|name| lab_of_name(name) == Some(lab.number)).count()
        };
        let total: usize = Verdict::ALL.into_iter().map(count).sum();
        let equivalent = of_lab(
            &mut record
                .verdicts
                .iter()
                .filter(|(name, v)| v.needs_answer() && equivalents.contains_key(*name))
                .map(|(name, _)| name),
        );
        match record.runs.get(&lab.number) {
            Some(run) => {
                let _ = writeln!(
                    text,
                    "| {} | {total} | {} | {} | {} | {} | {equivalent} | {} | {run} |",
                    lab.number,
                    count(Verdict::Caught),
                    count(Verdict::Missed),
                    count(Verdict::Timeout),
                    count(Verdict::Unviable),
                    of_lab(&mut open.iter()),
                );
            }
            None => {
                let _ = writeln!(text, "| {} | | | | | | | | not recorded |", lab.number);
            }
        }
    }
    for verdict in Verdict::ALL {
        let _ = writeln!(text, "\n{}\n", verdict.heading());
        let names: Vec<&String> = record
            .verdicts
            .iter()
            .filter(|(_, v)| **v == verdict)
            .map(|(name, _)| name)
            .collect();
        if names.is_empty() {
            text.push_str("None.\n");
        }
        for name in names {
            let mark = if !verdict.needs_answer() {
                ""
            } else if equivalents.contains_key(name) {
                " (equivalent)"
            } else {
                " (unanswered)"
            };
            let _ = writeln!(text, "- {}{mark}", as_code(name));
        }
    }
    text.push('\n');
    if record.equivalent_section.trim().is_empty() {
        text.push_str(EQUIVALENT_HEADING);
        text.push_str(
            "\n\n<!-- Hand-written, reviewed by hand; `cargo xtask mutants --record` keeps this section as it is. One line\n\
             per mutant, a list item: the mutant's name as a code span, a colon, and why no host (VMX, SVM, PVM) can\n\
             observe a difference. -->\n",
        );
    } else {
        text.push_str(record.equivalent_section.trim_end());
        text.push('\n');
    }
    text
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// This host's KVM, from the loaded module: the record says where its figures hold.
fn host() -> String {
    [("kvm_pvm", "PVM"), ("kvm_intel", "VMX"), ("kvm_amd", "SVM")]
        .into_iter()
        .find(|(module, _)| Path::new("/sys/module").join(module).exists())
        .map_or_else(
            || "unknown KVM".to_owned(),
            |(module, name)| format!("{name} ({module})"),
        )
}

/// Reads cargo-mutants' `outcomes.json` in `dir` (a mutants.out folder). `full_names`, when given,
/// is every mutant's full name (a shard's outcomes hold only some of a file's mutants, and the
/// stable names count them all).
fn read_run(dir: &Path, full_names: Option<&[String]>) -> Result<Run, String> {
    let path = dir.join("outcomes.json");
    let text = std::fs::read_to_string(&path).map_err(|err| kit::io_error("read", &path, err))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| format!("{} is not cargo-mutants' outcomes: {err}", path.display()))?;
    if json["end_time"].is_null() {
        return Err(format!(
            "{}: that run has not finished (no end_time): wait for it, or run again",
            path.display()
        ));
    }
    let mut mutants = Vec::new();
    for outcome in json["outcomes"].as_array().into_iter().flatten() {
        let mutant = &outcome["scenario"]["Mutant"];
        let (Some(name), Some(file)) = (mutant["name"].as_str(), mutant["file"].as_str()) else {
            continue; // the baseline
        };
        let summary = outcome["summary"].as_str().unwrap_or_default();
        let verdict = Verdict::from_summary(summary)
            .ok_or_else(|| format!("{}: {name}: unknown outcome {summary:?}", path.display()))?;
        let lab = lab_of(file).ok_or_else(|| format!("{}: {name}: not a lab's reference", path.display()))?;
        let diff = outcome["diff_path"]
            .as_str()
            .and_then(|diff| std::fs::read_to_string(dir.join(diff)).ok())
            .unwrap_or_default();
        let seconds = outcome["phase_results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|phase| phase["duration"].as_f64())
            .sum();
        mutants.push((name.to_owned(), lab, verdict, diff, seconds));
    }
    let stable = match full_names {
        Some(names) => stable_names(names.iter().map(String::as_str)),
        None => stable_names(mutants.iter().map(|(name, ..)| name.as_str())),
    };
    let outcomes = mutants
        .into_iter()
        .map(|(full, lab, verdict, diff, seconds)| Outcome {
            name: stable.get(&full).cloned().unwrap_or_else(|| full.clone()),
            at: full.split(": ").next().unwrap_or_default().to_owned(),
            lab,
            verdict,
            diff,
            seconds,
        })
        .collect();
    Ok(Run {
        outcomes,
        date: json["start_time"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(10)
            .collect(),
        version: json["cargo_mutants_version"].as_str().unwrap_or("?").to_owned(),
    })
}

/// Runs `command`, failing with a line that names what could not run.
fn status_of(command: &mut Command, what: &str) -> Result<std::process::ExitStatus, (u8, String)> {
    command
        .status()
        .map_err(|err| (kit::status::IO, format!("cannot run {what}: {err}")))
}

/// cargo-mutants' version, installing it when missing.
fn ensure_cargo_mutants() -> Result<String, (u8, String)> {
    let version = || {
        Command::new(kit::cargo())
            .args(["mutants", "--version"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    if let Some(version) = version() {
        return Ok(version);
    }
    eprintln!("mutants: cargo-mutants is missing: installing it (cargo install --locked cargo-mutants)");
    let out = Command::new(kit::cargo())
        .args(["install", "--quiet", "--locked", "cargo-mutants"])
        .output()
        .map_err(|err| (kit::status::IO, format!("cannot run cargo install: {err}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let cause = stderr
            .lines()
            .find(|line| line.starts_with("error"))
            .unwrap_or("see cargo install's output");
        return Err((
            kit::status::IO,
            format!("cargo install --locked cargo-mutants failed: {cause}"),
        ));
    }
    version().ok_or((
        kit::status::IO,
        "cargo-mutants was installed but `cargo mutants --version` does not run: is ~/.cargo/bin on the PATH?".into(),
    ))
}

/// The options that select the labs: cargo-mutants' config examines every reference, and these
/// exclude the others.
fn lab_filters(labs: &BTreeSet<u8>) -> Vec<String> {
    LABS.iter()
        .filter(|lab| !labs.contains(&lab.number))
        .flat_map(|lab| ["--exclude".to_owned(), lab.solution_file()])
        .collect()
}

/// Copies the kit into the work folder's tree (files that did not change keep their times, so
/// its build stays incremental; a mutated file left by an interrupted run is put back).
fn prepare_tree(root: &Path, tree: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    for relative in kit::files(root).map_err(|err| kit::io_error("list the files of", root, err))? {
        // The book is no input of the grader; a mutants.out of a plain `cargo mutants` is output.
        if relative.starts_with("book")
            || relative.starts_with("mutants.out")
            || relative.starts_with("mutants.out.old")
        {
            continue;
        }
        let from = root.join(&relative);
        let contents = std::fs::read(&from).map_err(|err| kit::io_error("read", &from, err))?;
        files.push((relative, contents));
    }
    kit::sync_tree(tree, &files)
}

/// A cargo command in the copy, building into the copy's own `target/`.
fn cargo_in(tree: &Path) -> Command {
    let mut command = Command::new(kit::cargo());
    command.current_dir(tree).env("CARGO_TARGET_DIR", tree.join("target"));
    command
}

/// Which shard `--check` runs: `--shard K/N`, or the day's.
fn check_shard(given: Option<&str>) -> Result<(u64, u64), String> {
    match given {
        Some(text) => {
            let parsed = text
                .split_once('/')
                .and_then(|(k, n)| Some((k.trim().parse::<u64>().ok()?, n.trim().parse::<u64>().ok()?)));
            match parsed {
                Some((k, n)) if k < n => Ok((k, n)),
                _ => Err(format!("--shard {text}: expected K/N with 0 <= K < N, e.g. 3/16")),
            }
        }
        None => {
            let days = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|since| since.as_secs() / 86_400)
                .unwrap_or(0);
            Ok((days % CHECK_SHARDS, CHECK_SHARDS))
        }
    }
}

/// Runs cargo-mutants over `labs` (one shard of them with `shard`) in the copy and reads the run.
fn run_cargo_mutants(
    root: &Path,
    labs: &BTreeSet<u8>,
    shard: Option<(u64, u64)>,
    timeout: u64,
) -> Result<Run, (u8, String)> {
    let version = ensure_cargo_mutants()?;
    let work = root.join("target").join(WORK_DIR);
    let tree = work.join("tree");
    prepare_tree(root, &tree).map_err(|err| (kit::status::IO, err))?;
    let filters = lab_filters(labs);

    // Every mutant's full name, for the stable names (a shard holds only some of a file's).
    let listing = cargo_in(&tree)
        .args(["mutants", "--workspace", "--list", "--json"])
        .args(&filters)
        .output()
        .map_err(|err| (kit::status::IO, format!("cannot run cargo mutants --list: {err}")))?;
    if !listing.status.success() {
        let stderr = String::from_utf8_lossy(&listing.stderr);
        return Err((
            kit::status::KIT_BROKEN,
            format!(
                "cargo mutants --list failed: {}",
                stderr.lines().last().unwrap_or("no output")
            ),
        ));
    }
    let all: Vec<String> = serde_json::from_slice::<serde_json::Value>(&listing.stdout)
        .ok()
        .and_then(|json| {
            json.as_array().map(|list| {
                list.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .ok_or((
            kit::status::KIT_BROKEN,
            "cargo mutants --list --json printed no list".into(),
        ))?;
    let planned = match shard {
        Some((k, n)) => (0..all.len() as u64).filter(|i| i % n == k).count(),
        None => all.len(),
    };
    let lab_names: Vec<String> = labs.iter().map(u8::to_string).collect();
    eprintln!(
        "mutants: {version}: {} of {} {}{}, each built and graded by every check (15 to 50 s each here)",
        plural(planned, "mutant"),
        if labs.len() == 1 { "lab" } else { "labs" },
        lab_names.join(", "),
        shard.map(|(k, n)| format!(" (shard {k}/{n})")).unwrap_or_default()
    );

    // cargo-mutants' own baseline would run the grader's test in the lab crates (it ignores
    // --test-package), so the copy's checks run here first: on a failing reference every mutant
    // would count as caught. This also builds the copy.
    eprintln!(
        "mutants: the grader's checks on the unmutated references (builds the copy under target/mutants/ the first time)"
    );
    let baseline = cargo_in(&tree)
        .args([
            "test",
            "--quiet",
            "--package",
            "grader",
            "--features",
            "solution",
            "--test",
            "grade",
        ])
        .output()
        .map_err(|err| (kit::status::IO, format!("cannot run cargo test: {err}")))?;
    if !baseline.status.success() {
        let stdout = String::from_utf8_lossy(&baseline.stdout);
        let stderr = String::from_utf8_lossy(&baseline.stderr);
        for line in stdout.lines().chain(stderr.lines()).filter(|line| {
            line.contains("panicked")
                || line.starts_with("error")
                || line.contains("FAILED")
                || line.starts_with("    ")
        }) {
            eprintln!("  {line}");
        }
        return Err((
            kit::status::KIT_BROKEN,
            "the grader's checks fail on the unmutated references (above): fix that first, or every mutant would count as caught".into(),
        ));
    }

    let mut mutants = cargo_in(&tree);
    mutants
        .args([
            "mutants",
            "--in-place",
            "--workspace",
            "--baseline",
            "skip",
            "--colors",
            "never",
        ])
        .arg("--timeout")
        .arg(timeout.to_string())
        .arg("--output")
        .arg(&work)
        .args(&filters);
    if let Some((k, n)) = shard {
        mutants.args(["--sharding", "round-robin", "--shard", &format!("{k}/{n}")]);
    }
    let status = status_of(&mut mutants, "cargo mutants")?;
    // 0: all caught; 2: some missed; 3: some timed out. Anything else is no result.
    if !matches!(status.code(), Some(0 | 2 | 3)) {
        return Err((
            kit::status::KIT_BROKEN,
            format!("cargo mutants failed ({status}): see its output above"),
        ));
    }
    read_run(&work.join("mutants.out"), Some(&all)).map_err(|err| (kit::status::IO, err))
}

/// Prints the per-lab counts of a run and each missed mutant (with its diff unless answered).
fn print_run(run: &Run, labs: &BTreeSet<u8>, equivalents: &BTreeMap<String, String>) {
    for &lab in labs {
        let of_lab: Vec<&Outcome> = run.outcomes.iter().filter(|o| o.lab == lab).collect();
        if of_lab.is_empty() {
            continue;
        }
        let count = |verdict| of_lab.iter().filter(|o| o.verdict == verdict).count();
        let seconds: f64 = of_lab.iter().map(|o| o.seconds).sum();
        println!(
            "lab {lab}: {}: {} caught, {} missed, {} timeout, {} unviable ({:.0} min)",
            plural(of_lab.len(), "mutant"),
            count(Verdict::Caught),
            count(Verdict::Missed),
            count(Verdict::Timeout),
            count(Verdict::Unviable),
            (seconds / 60.0).ceil()
        );
    }
    for outcome in run.outcomes.iter().filter(|o| o.verdict.needs_answer()) {
        let what = if outcome.verdict == Verdict::Timeout {
            "timeout"
        } else {
            "missed"
        };
        if equivalents.contains_key(&outcome.name) {
            println!("{what} (answered as equivalent in {RECORD}): {}", outcome.name);
        } else {
            println!(
                "\n{what}: {} (now at {})\n{}",
                outcome.name,
                outcome.at,
                outcome.diff.trim_end()
            );
        }
    }
}

/// The catch rate of some verdicts: caught of those that compile.
fn catch_rate<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> String {
    let (mut caught, mut viable) = (0usize, 0usize);
    for verdict in verdicts {
        if *verdict != Verdict::Unviable {
            viable += 1;
            caught += usize::from(*verdict == Verdict::Caught);
        }
    }
    if viable == 0 {
        return "no viable mutant".into();
    }
    format!(
        "{:.1}% ({caught} of {viable} viable mutants caught)",
        100.0 * caught as f64 / viable as f64
    )
}

pub fn run(args: Args) -> u8 {
    match run_inner(args) {
        Ok(status) => status,
        Err((status, message)) => {
            eprintln!("mutants: {message}");
            status
        }
    }
}

fn run_inner(args: Args) -> Result<u8, (u8, String)> {
    let root = kit::root();
    let record_path = root.join(RECORD);
    let record = match std::fs::read_to_string(&record_path) {
        Ok(text) => parse_record(&text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !args.check => Record::default(),
        Err(err) => return Err((kit::status::IO, kit::io_error("read", &record_path, err))),
    };
    let mut labs: BTreeSet<u8> = args.labs.iter().copied().collect();
    if labs.is_empty() {
        labs = LABS.iter().map(|lab| lab.number).collect();
    }

    let run = if args.from.is_empty() {
        let shard = if args.check {
            Some(check_shard(args.shard.as_deref()).map_err(|err| (kit::status::USAGE, err))?)
        } else {
            None
        };
        run_cargo_mutants(&root, &labs, shard, args.timeout)?
    } else {
        let mut merged = Run::default();
        for dir in &args.from {
            let run = read_run(dir, None).map_err(|err| (kit::status::IO, err))?;
            merged
                .outcomes
                .extend(run.outcomes.into_iter().filter(|o| labs.contains(&o.lab)));
            merged.date = merged.date.max(run.date);
            merged.version = run.version;
        }
        // The labs recorded are those the outcomes cover.
        labs = merged.outcomes.iter().map(|o| o.lab).collect();
        merged
    };

    let equivalents = record.equivalents();
    print_run(&run, &labs, &equivalents);

    if args.check {
        let now: Vec<(String, Verdict)> = run.outcomes.iter().map(|o| (o.name.clone(), o.verdict)).collect();
        let comparison = compare(&record.verdicts, &now);
        println!(
            "\nmutants: catch rate of this shard: {}",
            catch_rate(now.iter().map(|(_, verdict)| verdict))
        );
        println!(
            "mutants: catch rate in {RECORD}: {}",
            catch_rate(record.verdicts.values())
        );
        for name in &comparison.timeouts_now {
            println!("mutants: caught in {RECORD}, a timeout now (a busy or slow host?): {name}");
        }
        for name in &comparison.newly_caught {
            println!("mutants: caught now, not in {RECORD} (record it with --record): {name}");
        }
        if !comparison.unrecorded.is_empty() {
            println!(
                "mutants: {} not in {RECORD} (new code or a newer cargo-mutants; record them with --record)",
                plural(comparison.unrecorded.len(), "mutant")
            );
        }
        if comparison.regressions.is_empty() {
            println!("mutants: no mutant that {RECORD} lists as caught is missed now");
            return Ok(0);
        }
        for name in &comparison.regressions {
            println!("mutants: caught in {RECORD}, missed now: {name}");
        }
        eprintln!(
            "mutants: {} that {RECORD} lists as caught missed now: a check got weaker (diffs above)",
            plural(comparison.regressions.len(), "mutant")
        );
        return Ok(FINDINGS);
    }

    let verdicts: BTreeMap<String, Verdict> = if args.record {
        let merged = merge(record, &run, &labs, &host());
        kit::write_if_changed(&record_path, render_record(&merged).as_bytes())
            .map_err(|err| (kit::status::IO, kit::io_error("write", &record_path, err)))?;
        println!(
            "mutants: wrote {RECORD} (labs {})",
            labs.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
        );
        merged.verdicts
    } else {
        run.outcomes.iter().map(|o| (o.name.clone(), o.verdict)).collect()
    };
    for (name, _) in equivalents
        .iter()
        .filter(|(name, _)| verdicts.get(*name) == Some(&Verdict::Caught))
    {
        println!("mutants: {RECORD} answers {name} as equivalent, but a check catches it: the answer is wrong");
    }
    let open = unanswered(&verdicts, &equivalents);
    println!("\nmutants: catch rate: {}", catch_rate(verdicts.values()));
    if open.is_empty() {
        println!("mutants: every non-equivalent mutant caught");
        return Ok(0);
    }
    println!(
        "mutants: {} unanswered (missed or timed out, no equivalence line in {RECORD}): a check that catches each, or a line saying why no host can observe it:",
        plural(open.len(), "mutant")
    );
    for name in &open {
        println!("  {name}");
    }
    Ok(FINDINGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(pairs: &[(&str, Verdict)]) -> BTreeMap<String, Verdict> {
        pairs
            .iter()
            .map(|(name, verdict)| ((*name).to_owned(), *verdict))
            .collect()
    }

    fn now(pairs: &[(&str, Verdict)]) -> Vec<(String, Verdict)> {
        pairs
            .iter()
            .map(|(name, verdict)| ((*name).to_owned(), *verdict))
            .collect()
    }

    #[test]
    fn only_a_caught_mutant_missed_now_is_a_regression() {
        let record = verdicts(&[
            ("a", Verdict::Caught),
            ("b", Verdict::Missed),
            ("c", Verdict::Caught),
            ("d", Verdict::Timeout),
            ("e", Verdict::Caught),
            ("f", Verdict::Unviable),
        ]);
        let run = now(&[
            ("a", Verdict::Missed),
            ("b", Verdict::Missed),
            ("c", Verdict::Timeout),
            ("d", Verdict::Caught),
            ("e", Verdict::Unviable),
            ("f", Verdict::Missed),
            ("g", Verdict::Missed),
        ]);
        assert_eq!(
            compare(&record, &run),
            Comparison {
                regressions: vec!["a".into()],
                timeouts_now: vec!["c".into()],
                newly_caught: vec!["d".into()],
                unrecorded: vec!["g".into()],
            }
        );
    }

    #[test]
    fn a_run_like_the_record_finds_nothing() {
        let record = verdicts(&[("a", Verdict::Caught), ("b", Verdict::Missed)]);
        let run = now(&[("a", Verdict::Caught), ("b", Verdict::Missed)]);
        assert_eq!(compare(&record, &run), Comparison::default());
    }

    #[test]
    fn stable_names_drop_the_position_and_number_alike_mutants_in_source_order() {
        let names = [
            "labs/lab0-lwn/src/solution.rs:40:20: replace += with -= in run",
            "labs/lab0-lwn/src/solution.rs:9:5: replace != with == in create_vm",
            "labs/lab0-lwn/src/solution.rs:38:20: replace += with -= in run",
            "labs/lab1-memory/src/solution.rs:38:20: replace += with -= in run",
        ];
        let stable = stable_names(names);
        assert_eq!(
            stable[names[0]],
            "labs/lab0-lwn/src/solution.rs: replace += with -= in run #2"
        );
        assert_eq!(
            stable[names[1]],
            "labs/lab0-lwn/src/solution.rs: replace != with == in create_vm"
        );
        assert_eq!(
            stable[names[2]],
            "labs/lab0-lwn/src/solution.rs: replace += with -= in run #1"
        );
        assert_eq!(
            stable[names[3]],
            "labs/lab1-memory/src/solution.rs: replace += with -= in run"
        );
    }

    #[test]
    fn the_record_reads_back_what_it_wrote_and_keeps_the_answers() {
        let equivalent_section = "## Equivalent mutants\n\n<!-- people write here:\n- `labs/lab1-memory/src/solution.rs: x`: commented out.\n-->\n- `labs/lab2-paging/src/solution.rs: replace | with ^ in setup #2`: the bit is clear before, so | and ^ agree.\n- `labs/lab2-paging/src/solution.rs: replace clear_table -> Result<(), Lab2Error> with Ok(())`:\n";
        let record = Record {
            verdicts: verdicts(&[
                (
                    "labs/lab2-paging/src/solution.rs: replace | with ^ in setup #2",
                    Verdict::Missed,
                ),
                (
                    "labs/lab2-paging/src/solution.rs: replace clear_table -> Result<(), Lab2Error> with Ok(())",
                    Verdict::Missed,
                ),
                (
                    "labs/lab1-memory/src/solution.rs: replace > with < in load_image",
                    Verdict::Caught,
                ),
                (
                    "labs/lab1-memory/src/solution.rs: replace vm_init -> Result<Vm, Lab1Error> with Ok(Default::default())",
                    Verdict::Unviable,
                ),
                (
                    "labs/lab3-registers/src/solution.rs: replace x with `y`",
                    Verdict::Timeout,
                ),
            ]),
            runs: [(1, "2026-12-04, PVM (kvm_pvm), cargo-mutants 27.1.0, 3 min".to_owned())].into(),
            equivalent_section: equivalent_section.to_owned(),
        };
        let text = render_record(&record);
        assert_eq!(parse_record(&text), record);
        // An answer needs a reason: the line without one does not count.
        assert_eq!(record.equivalents().len(), 1);
        assert!(text.contains("**2 mutants unanswered**"), "{text}");
        assert!(text.ends_with(equivalent_section), "{text}");
    }

    #[test]
    fn a_record_of_some_labs_keeps_the_others() {
        let old = Record {
            verdicts: verdicts(&[
                ("labs/lab1-memory/src/solution.rs: a", Verdict::Missed),
                ("labs/lab2-paging/src/solution.rs: b", Verdict::Caught),
            ]),
            runs: [(1, "old".to_owned()), (2, "old".to_owned())].into(),
            equivalent_section: String::new(),
        };
        let run = Run {
            outcomes: vec![Outcome {
                name: "labs/lab1-memory/src/solution.rs: c".into(),
                at: String::new(),
                lab: 1,
                verdict: Verdict::Caught,
                diff: String::new(),
                seconds: 90.0,
            }],
            date: "2026-12-04".into(),
            version: "27.1.0".into(),
        };
        let merged = merge(old, &run, &BTreeSet::from([1]), "PVM (kvm_pvm)");
        assert_eq!(
            merged.verdicts,
            verdicts(&[
                ("labs/lab1-memory/src/solution.rs: c", Verdict::Caught),
                ("labs/lab2-paging/src/solution.rs: b", Verdict::Caught),
            ])
        );
        assert_eq!(
            merged.runs[&1],
            "2026-12-04, PVM (kvm_pvm), cargo-mutants 27.1.0, 2 min"
        );
        assert_eq!(merged.runs[&2], "old");
        let text = render_record(&merged);
        assert!(text.contains("**Every non-equivalent mutant caught.**"), "{text}");
        assert!(text.contains("| 0 | | | | | | | | not recorded |"), "{text}");
    }

    #[test]
    fn check_shards_are_given_or_the_days() {
        assert_eq!(check_shard(Some("3/12")), Ok((3, 12)));
        assert!(check_shard(Some("12/12")).is_err());
        assert!(check_shard(Some("x")).is_err());
        let (k, n) = check_shard(None).unwrap();
        assert!(k < n && n == CHECK_SHARDS);
    }
}
