//! `cargo xtask stability [--runs N] [--beside-build] [--check NAME] [--record]`: runs every
//! check N times on the reference build and counts the passes, so that a check whose verdict
//! depends on the machine's speed or load (and not on what the guest did) shows before a student
//! loses a point by chance.
//!
//! The reference is built once as `cargo grade --solution` builds it (the judge and the probe with
//! every lab's `solution` feature); each run is one grader process over all the checks, with a
//! fresh seed, jailed as official grading jails lab code (`--require-jail`) where this host can.
//! With `--beside-build`, a scratch copy of the workspace is built over and over in its own target
//! folder while the runs go, to load the machine as a student's build of the class would; its
//! target folder is removed at the end. `--record` writes the table, with the host, the date, N,
//! the mode and the machine's load, to `grader/stability.md` (one section per mode).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::grade;
use crate::kit::{self, status};
use crate::progress::Progress;

/// A check passed fewer than N of N runs (or a run of the grader failed).
const STATUS_UNSTABLE: u8 = 8;
/// Interrupted: 128 + the signal, as a shell reports it.
const STATUS_SIGNALLED: i32 = 128;
/// The committed record, relative to the kit's root.
const RECORD: &str = "grader/stability.md";
/// Where the runs' reports and the scratch copy live, under the kit's `target/`.
const WORK_DIR: &str = "stability";
/// The scratch copy's folder under `WORK_DIR` (its own `target/` lies inside it).
const SCRATCH: &str = "beside-build";
/// A beside build that fails this soon is broken, not busy: the loop stops rather than spin.
const QUICK_FAILURE: Duration = Duration::from_secs(20);
/// At most this many distinct failure messages per check are kept for the table.
const MESSAGES_KEPT: usize = 3;

/// `cargo xtask stability`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many times to run every check.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Meanwhile build a scratch copy of the workspace over and over (a class's build beside the grading).
    #[arg(long)]
    beside_build: bool,
    /// Run only the checks whose name contains NAME (lab3, lab7_, a check's name; repeatable).
    #[arg(long = "check", value_name = "NAME")]
    checks: Vec<String>,
    /// Write the table, with host, date, N, mode and load, to grader/stability.md.
    #[arg(long, conflicts_with = "checks")]
    record: bool,
}

/// One check's tally over the runs.
#[derive(Debug, Default)]
struct Tally {
    passed: u32,
    /// Runs in which this host could not run it.
    not_run: u32,
    /// Outcome kind of each failure (failed, timed_out, ...) and how often.
    kinds: BTreeMap<String, u32>,
    /// A few distinct failure messages, with the run's seed.
    messages: Vec<(String, u64)>,
}

/// What the runs found.
#[derive(Debug, Default)]
struct Tallies {
    /// By check, in the grader's order.
    checks: Vec<(String, Tally)>,
    /// Runs whose grader ended without a report: its status and last line.
    broken_runs: Vec<String>,
    /// The 1-minute load average before each run.
    loads: Vec<f64>,
    /// Seconds per run.
    seconds: Vec<f64>,
}

impl Tallies {
    fn tally(&mut self, check: &str) -> &mut Tally {
        let at = match self.checks.iter().position(|(name, _)| name == check) {
            Some(at) => at,
            None => {
                self.checks.push((check.to_owned(), Tally::default()));
                self.checks.len() - 1
            }
        };
        &mut self.checks[at].1
    }

    fn add(&mut self, report: &[Value]) {
        for result in report {
            let name = result["check"].as_str().unwrap_or("?");
            let outcome = result["outcome"].as_str().unwrap_or("?");
            let tally = self.tally(name);
            match outcome {
                "passed" => tally.passed += 1,
                "not_run" => tally.not_run += 1,
                kind => {
                    *tally.kinds.entry(kind.to_owned()).or_default() += 1;
                    let message = result["message"].as_str().unwrap_or_default().to_owned();
                    let seed = result["seed"].as_u64().unwrap_or_default();
                    if tally.messages.len() < MESSAGES_KEPT && !tally.messages.iter().any(|(m, _)| *m == message) {
                        tally.messages.push((message, seed));
                    }
                }
            }
        }
    }

    /// The checks that did not pass every run they ran in.
    fn unstable(&self, runs: u32) -> Vec<&(String, Tally)> {
        self.checks
            .iter()
            .filter(|(_, tally)| tally.passed + tally.not_run < runs)
            .collect()
    }
}

/// How the runs went: the host, jailed or not, beside a build or not.
#[derive(Debug)]
struct Mode {
    host: String,
    jailed: Result<(), String>,
    beside_build: bool,
}

impl Mode {
    /// The record's section heading.
    fn heading(&self) -> &'static str {
        if self.beside_build {
            "Beside a build"
        } else {
            "Without a build beside"
        }
    }

    fn describe(&self) -> String {
        let jail = match &self.jailed {
            Ok(()) => "lab code jailed as in official grading".to_owned(),
            Err(why) => format!("lab code unjailed ({why})"),
        };
        let build = if self.beside_build {
            "a scratch copy of the workspace built over and over beside the runs"
        } else {
            "no build of ours beside the runs"
        };
        format!("{}, {jail}, {build}", self.host)
    }
}

pub fn run(args: Args) -> u8 {
    let root = kit::root();
    if !root.join("labs/lab1-memory/src/solution.rs").is_file() {
        return fail(
            status::USAGE,
            "stability runs the reference solutions, which only the instructors' repository has",
        );
    }
    if let Err(message) = forward_interrupts() {
        return fail(status::IO, &message);
    }
    eprintln!("stability: building the reference (cargo grade --solution's build)");
    let prepared = match grade::prepare(&root, grade::local_plan(true)) {
        Ok(prepared) if prepared.broken.is_empty() => prepared,
        Ok(prepared) => {
            let (lab, error) = prepared.broken.iter().next().expect("not empty");
            return fail(
                status::KIT_BROKEN,
                &format!("the reference of lab {lab} does not compile: {error}"),
            );
        }
        Err((code, message)) => return fail(code, &message),
    };
    let mode = Mode {
        host: crate::svm_check::host_title(),
        jailed: kit_jail::Jail::detect().map(drop).map_err(|why| why.to_string()),
        beside_build: args.beside_build,
    };
    let work = root.join("target").join(WORK_DIR);
    if let Err(err) = std::fs::create_dir_all(&work) {
        return fail(status::IO, &kit::io_error("create", &work, err));
    }
    let beside = if args.beside_build {
        match BesideBuild::start(&root, &work.join(SCRATCH)) {
            Ok(beside) => Some(beside),
            Err(message) => return fail(status::IO, &message),
        }
    } else {
        None
    };
    eprintln!("stability: {} runs of every check, {}", args.runs, mode.describe());
    let started = Instant::now();
    let outcome = run_all(&prepared, &args, &mode, &work);
    let builds = beside.map(BesideBuild::stop);
    let tallies = match outcome {
        Ok(tallies) => tallies,
        Err(code) => return code,
    };
    let builds = match builds {
        Some(Err(message)) => return fail(status::IO, &message),
        Some(Ok(builds)) => Some(builds),
        None => None,
    };
    let table = table(&tallies, args.runs);
    print!("{table}");
    let summary = summary(&tallies, args.runs, &mode, builds.as_ref(), started.elapsed());
    println!("\n{summary}");
    if args.record {
        let path = root.join(RECORD);
        if let Err(message) = record(&path, &mode, &summary, &table) {
            return fail(status::IO, &message);
        }
        eprintln!("stability: recorded in {RECORD}");
    }
    let unstable = tallies.unstable(args.runs);
    if let Some(broken) = tallies.broken_runs.first() {
        return fail(
            STATUS_UNSTABLE,
            &format!(
                "{} of {} runs of the grader gave no report, the first: {broken}",
                tallies.broken_runs.len(),
                args.runs
            ),
        );
    }
    if !unstable.is_empty() {
        let names: Vec<String> = unstable
            .iter()
            .map(|(name, tally)| format!("{name} {}/{}", tally.passed, args.runs - tally.not_run))
            .collect();
        return fail(
            STATUS_UNSTABLE,
            &format!(
                "{} check(s) did not pass every run on the reference: {}",
                names.len(),
                names.join(", ")
            ),
        );
    }
    0
}

/// Runs the grader `args.runs` times; `Err` is the exit status when interrupted or when the
/// grader cannot be run at all.
fn run_all(prepared: &grade::Prepared, args: &Args, mode: &Mode, work: &Path) -> Result<Tallies, u8> {
    let mut tallies = Tallies::default();
    let progress = Progress::new(args.runs as usize, "runs");
    for run in 1..=args.runs {
        if let Some(code) = stopped() {
            progress.finish();
            return Err(code);
        }
        let load = load_average();
        tallies.loads.push(load);
        let report = work.join(format!("report-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&report);
        let mut grader_args: Vec<String> = vec!["--json".to_owned(), "--report".to_owned()];
        grader_args.push(report.to_string_lossy().into_owned());
        if mode.jailed.is_ok() {
            grader_args.push("--require-jail".to_owned());
        }
        grader_args.extend(args.checks.iter().cloned());
        let run_started = Instant::now();
        let out = prepared
            .command(&grader_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let seconds = run_started.elapsed().as_secs_f64();
        tallies.seconds.push(seconds);
        let out = match out {
            Ok(out) => out,
            Err(err) => {
                progress.finish();
                return Err(fail(status::IO, &format!("cannot run the grader: {err}")));
            }
        };
        if let Some(code) = stopped() {
            progress.finish();
            return Err(code);
        }
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        let _ = std::fs::remove_file(&report);
        let line = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(results)) if out.status.success() => {
                tallies.add(&results);
                let passed = results.iter().filter(|r| r["outcome"] == "passed").count();
                let ran = results.iter().filter(|r| r["outcome"] != "not_run").count();
                let failed: Vec<&str> = results
                    .iter()
                    .filter(|r| r["outcome"] != "passed" && r["outcome"] != "not_run")
                    .filter_map(|r| r["check"].as_str())
                    .collect();
                let failed = if failed.is_empty() {
                    String::new()
                } else {
                    format!(", did not pass: {}", failed.join(" "))
                };
                format!("{passed}/{ran} passed{failed}")
            }
            _ => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no line on stderr");
                let broken = format!("grader exited with {}: {last}", out.status);
                tallies.broken_runs.push(broken.clone());
                broken
            }
        };
        progress.line(&format!(
            "run {run}/{}: {line} in {seconds:.0} s (load {load:.1})",
            args.runs
        ));
        progress.set(run as usize, String::new());
    }
    progress.finish();
    Ok(tallies)
}

/// The table: one line per check, its passes over the runs it ran in, and why the others failed.
fn table(tallies: &Tallies, runs: u32) -> String {
    let mut out = String::from("| check | passed | did not pass |\n|---|---|---|\n");
    for (name, tally) in &tallies.checks {
        let ran = runs - tally.not_run;
        let passed = if ran == 0 {
            "not run on this host".to_owned()
        } else if tally.not_run > 0 {
            format!("{}/{ran} ({} not run)", tally.passed, tally.not_run)
        } else {
            format!("{}/{ran}", tally.passed)
        };
        let mut why = String::new();
        for (kind, count) in &tally.kinds {
            let _ = write!(why, "{count} {kind}; ");
        }
        for (message, seed) in &tally.messages {
            let short: String = message.chars().take(240).collect();
            let _ = write!(why, "seed {seed}: {}; ", short.replace('|', "\\|").replace('\n', " "));
        }
        let _ = writeln!(out, "| {name} | {passed} | {} |", why.trim_end_matches("; "));
    }
    out
}

/// The lines above the table in the record: host, date, N, mode, load, time.
fn summary(tallies: &Tallies, runs: u32, mode: &Mode, builds: Option<&Builds>, elapsed: Duration) -> String {
    let stats = |values: &[f64]| {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        (min, mean, max)
    };
    let (load_min, load_mean, load_max) = stats(&tallies.loads);
    let (_, seconds_mean, seconds_max) = stats(&tallies.seconds);
    let unstable = tallies.unstable(runs).len();
    let mut out = String::new();
    let _ = writeln!(out, "- Host: {}", host_details(&mode.host));
    let _ = writeln!(out, "- Date: {}", today());
    let _ = writeln!(out, "- Runs: {runs}, each a fresh seed over every check");
    let _ = writeln!(out, "- Mode: {}", mode.describe());
    let _ = writeln!(
        out,
        "- Load (1-minute average before each run): {load_min:.1} to {load_max:.1}, mean {load_mean:.1}, on {} CPUs",
        cpus()
    );
    if let Some(builds) = builds {
        let _ = writeln!(
            out,
            "- Beside: {} build(s) of the scratch copy started, {} finished, {} failed",
            builds.started, builds.finished, builds.failed
        );
    }
    let _ = writeln!(
        out,
        "- Time: {:.0} min in all, {seconds_mean:.0} s per run on average, {seconds_max:.0} s at most",
        elapsed.as_secs_f64() / 60.0
    );
    let verdict = if unstable == 0 && tallies.broken_runs.is_empty() {
        format!("every check that ran passed {runs} of {runs} runs")
    } else {
        format!(
            "{unstable} check(s) below {runs}/{runs}, {} run(s) without a report",
            tallies.broken_runs.len()
        )
    };
    let _ = write!(out, "- Verdict: {verdict}");
    out
}

/// Replaces (or adds) the mode's section of the record, keeping the other mode's.
fn record(path: &Path, mode: &Mode, summary: &str, table: &str) -> Result<(), String> {
    const HEADER: &str = "# Stability of the checks on the reference\n\n\
        Written by `cargo xtask stability --record` (and `--beside-build --record`): every check run \
        N times on the reference build, each run one grader process with a fresh seed. A check \
        below N/N loses an honest student a point by chance; the seeds of its failures repeat \
        its inputs (`cargo grade --solution --seed N`), though not the machine's timing.\n";
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut sections: Vec<(String, String)> = Vec::new();
    for part in old.split("\n## ").skip(1) {
        let (heading, body) = part.split_once('\n').unwrap_or((part, ""));
        sections.push((heading.trim().to_owned(), body.trim().to_owned()));
    }
    let body = format!("{summary}\n\n{table}").trim().to_owned();
    match sections.iter_mut().find(|(heading, _)| heading == mode.heading()) {
        Some(section) => section.1 = body,
        None => sections.push((mode.heading().to_owned(), body)),
    }
    // Without a build first, then beside one.
    sections.sort_by_key(|(heading, _)| heading != "Without a build beside");
    let mut text = String::from(HEADER);
    for (heading, body) in sections {
        let _ = write!(text, "\n## {heading}\n\n{body}\n");
    }
    std::fs::write(path, text).map_err(|err| kit::io_error("write", path, err))
}

/// The host's kind of KVM, its CPU model and its kernel.
fn host_details(kind: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{kind}, {model}, Linux {}", kernel.trim())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|first| first.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Today's date (UTC), YYYY-MM-DD.
fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// How the builds beside the runs went.
#[derive(Debug, Default)]
struct Builds {
    started: usize,
    finished: usize,
    failed: usize,
}

/// A scratch copy of the workspace built over and over, each build from a clean target folder
/// inside the copy, until stopped.
struct BesideBuild {
    scratch: PathBuf,
    stop: Arc<AtomicBool>,
    /// The running build's process group (0: none).
    group: Arc<AtomicI32>,
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    /// Why the loop gave up, if it did.
    broken: Arc<std::sync::Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BesideBuild {
    fn start(root: &Path, scratch: &Path) -> Result<BesideBuild, String> {
        let mut files = Vec::new();
        for relative in kit::files(root).map_err(|err| kit::io_error("list the files of", root, err))? {
            let from = root.join(&relative);
            let contents = std::fs::read(&from).map_err(|err| kit::io_error("read", &from, err))?;
            files.push((relative, contents));
        }
        kit::sync_tree(scratch, &files)?;
        let (stop, group) = (Arc::<AtomicBool>::default(), Arc::<AtomicI32>::default());
        let (started, finished, failed) = (
            Arc::<AtomicUsize>::default(),
            Arc::<AtomicUsize>::default(),
            Arc::<AtomicUsize>::default(),
        );
        let broken = Arc::<std::sync::Mutex<Option<String>>>::default();
        let mut beside = BesideBuild {
            scratch: scratch.to_path_buf(),
            stop: Arc::clone(&stop),
            group: Arc::clone(&group),
            started: Arc::clone(&started),
            finished: Arc::clone(&finished),
            failed: Arc::clone(&failed),
            broken: Arc::clone(&broken),
            thread: None,
        };
        let dir = scratch.to_path_buf();
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = std::fs::remove_dir_all(dir.join("target"));
                let began = Instant::now();
                let child = {
                    // The lock keeps `stop` from missing a build started just now.
                    let mut ours = kit::own_children().lock().unwrap_or_else(|e| e.into_inner());
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let spawned = build_command(&dir).spawn();
                    if let Ok(child) = &spawned {
                        ours.insert(child.id() as libc::pid_t);
                        group.store(child.id() as i32, Ordering::SeqCst);
                    }
                    spawned
                };
                let mut child: Child = match child {
                    Ok(child) => child,
                    Err(err) => {
                        *broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("cannot run cargo: {err}"));
                        break;
                    }
                };
                started.fetch_add(1, Ordering::SeqCst);
                let status = child.wait();
                group.store(0, Ordering::SeqCst);
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match status {
                    Ok(status) if status.success() => {
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        if began.elapsed() < QUICK_FAILURE {
                            *broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                                "the build beside the runs fails at once (cd {} && cargo build --workspace --all-targets shows why)",
                                dir.display()
                            ));
                            break;
                        }
                    }
                }
            }
        });
        beside.thread = Some(thread);
        Ok(beside)
    }

    /// Stops the build under way (its whole process group), removes the copy's target folder,
    /// and says how the builds went; `Err` when the loop gave up, which leaves the mode untrue.
    fn stop(self) -> Result<Builds, String> {
        self.stop.store(true, Ordering::SeqCst);
        {
            let _ours = kit::own_children().lock().unwrap_or_else(|e| e.into_inner());
            let group = self.group.load(Ordering::SeqCst);
            if group > 0 {
                // SAFETY: kill(2) on the process group of the build we started; no memory is touched.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
        }
        if let Some(thread) = self.thread {
            let _ = thread.join();
        }
        let target = self.scratch.join("target");
        let removed = std::fs::remove_dir_all(&target);
        if let Some(why) = self.broken.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(why);
        }
        if let Err(err) = removed
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(kit::io_error("remove", &target, err));
        }
        Ok(Builds {
            started: self.started.load(Ordering::SeqCst),
            finished: self.finished.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
        })
    }
}

/// A student's build of the class: the whole workspace, tests included, in the copy's own target.
fn build_command(dir: &Path) -> Command {
    let mut command = Command::new(kit::cargo());
    command
        .current_dir(dir)
        .args(["build", "--quiet", "--workspace", "--all-targets", "--target-dir"])
        .arg(dir.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group, so that stopping it stops every rustc it started.
        .process_group(0);
    command
}

/// The signal that stopped the runs (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_interrupt(signal: libc::c_int) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM reach the grader (same process group) and end the runs after it; the build
/// beside, in its own group, is stopped by us.
fn forward_interrupts() -> Result<(), String> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        let old = unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
        if old == libc::SIG_ERR {
            return Err(format!(
                "cannot handle signal {signal}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The exit status when a signal stopped the runs.
fn stopped() -> Option<u8> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        signal => {
            eprintln!("stability: interrupted (signal {signal}): no table");
            Some(u8::try_from(STATUS_SIGNALLED + signal).unwrap_or(u8::MAX))
        }
    }
}

fn fail(code: u8, message: &str) -> u8 {
    eprintln!("stability: {message}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(check: &str, outcome: &str, message: &str) -> Value {
        serde_json::json!({"check": check, "outcome": outcome, "message": message, "seed": 7})
    }

    #[test]
    fn a_check_below_every_run_is_unstable_and_not_run_is_not_a_failure() {
        let mut tallies = Tallies::default();
        for run in 0..3 {
            let flaky = if run == 1 { "timed_out" } else { "passed" };
            tallies.add(&[
                result("lab1_a", "passed", ""),
                result("lab7_b", flaky, "too slow"),
                result("lab3_paged32", "not_run", "PVM"),
            ]);
        }
        let unstable: Vec<&str> = tallies.unstable(3).iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(unstable, ["lab7_b"]);
        let table = table(&tallies, 3);
        assert!(table.contains("| lab1_a | 3/3 |"), "{table}");
        assert!(
            table.contains("| lab7_b | 2/3 | 1 timed_out; seed 7: too slow |"),
            "{table}"
        );
        assert!(table.contains("| lab3_paged32 | not run on this host |"), "{table}");
    }

    #[test]
    fn recording_one_mode_keeps_the_other() {
        let path = std::env::temp_dir().join(format!("xtask-stability-{}.md", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mode = |beside_build| Mode {
            host: "PVM host".to_owned(),
            jailed: Ok(()),
            beside_build,
        };
        record(&path, &mode(true), "- beside, first", "| t |").unwrap();
        record(&path, &mode(false), "- idle", "| t |").unwrap();
        record(&path, &mode(true), "- beside, second", "| t |").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(text.starts_with("# Stability"), "{text}");
        assert!(!text.contains("first"), "{text}");
        let idle = text.find("- idle").expect("the idle section is kept");
        let beside = text.find("- beside, second").expect("the new section is written");
        assert!(idle < beside, "{text}");
    }

    #[test]
    fn today_is_a_date() {
        let date = today();
        assert_eq!(date.len(), 10, "{date}");
        assert!(date.starts_with("20"), "{date}");
    }
}
