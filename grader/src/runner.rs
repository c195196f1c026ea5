//! Running checks: each in its own process (so no stub, panic or hang can take the grader down),
//! killed with everything it started when its time is up, in lab order, with checks blocked when
//! a lab they need has failed.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kit_common::LabPanic;
use serde_json::{Value, json};

use crate::{Check, Ctx, Part, all_checks};

/// The argument that makes the grader run one check in-process (used by `run_isolated`).
pub const RUN_CHECK_ARG: &str = "--run-check";

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed: the message says what, where and which chapter.
    Failed(String),
    /// It reached a `todo!` stub.
    NotImplemented(String),
    /// A lab it needs has failed, so it did not run.
    Blocked(u8),
    /// Its process ran past its time limit and was killed.
    TimedOut(Duration),
}

impl Outcome {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        *self == Outcome::Passed
    }

    /// One word for reports: passed, failed, not_implemented, blocked, timed_out.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::NotImplemented(_) => "not_implemented",
            Outcome::Blocked(_) => "blocked",
            Outcome::TimedOut(_) => "timed_out",
        }
    }

    /// What a student reads.
    pub fn message(&self) -> String {
        match self {
            Outcome::Passed => String::new(),
            Outcome::Failed(message) => message.clone(),
            Outcome::NotImplemented(message) => message.clone(),
            Outcome::Blocked(lab) => {
                format!("blocked by lab {lab}: make lab {lab} pass first (cargo grade lab{lab})")
            }
            Outcome::TimedOut(limit) => format!(
                "timed out after {} s and was stopped: does a loop of yours never end (run_until_halt without a way out, a page walk that never stops)?",
                limit.as_secs()
            ),
        }
    }
}

/// A check and how it ended.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check.
    pub check: Check,
    /// How it ended.
    pub outcome: Outcome,
}

/// Runs one check in this process and prints its outcome as one JSON line (the child's side of
/// `run_isolated`).
pub fn run_check_here(check: &Check, ctx: &Ctx) -> Value {
    kvm_hello::vmm::install_panic_hook(false);
    let result = catch_unwind(AssertUnwindSafe(|| (check.run)(ctx)));
    let (outcome, message) = match result {
        Ok(Ok(())) => ("passed", String::new()),
        Ok(Err(message)) => ("failed", message),
        Err(_) => match kvm_hello::vmm::take_last_panic() {
            Some(LabPanic::NotImplemented(stub)) => ("not_implemented", format!("not implemented yet: {stub}")),
            Some(LabPanic::Other(message)) => ("failed", format!("lab code panicked: {message}")),
            None => ("failed", "the check panicked".to_owned()),
        },
    };
    json!({"check": check.name, "outcome": outcome, "message": message})
}

fn parse_child_line(stdout: &str) -> Option<Outcome> {
    let line: Value = serde_json::from_str(stdout.lines().rev().find(|l| l.starts_with('{'))?).ok()?;
    let message = line["message"].as_str().unwrap_or_default().to_owned();
    match line["outcome"].as_str()? {
        "passed" => Some(Outcome::Passed),
        "not_implemented" => Some(Outcome::NotImplemented(message)),
        _ => Some(Outcome::Failed(message)),
    }
}

/// Runs one check in a child process of `grader_exe`, killed with everything it started when the
/// check's time limit is up.
pub fn run_isolated(grader_exe: &Path, check: &Check) -> Outcome {
    let mut command = Command::new(grader_exe);
    command.args([RUN_CHECK_ARG, check.name]);
    match run_with_limit(command, check.time_limit()) {
        Ok(Finished { status, stdout }) => parse_child_line(&stdout).unwrap_or_else(|| {
            Outcome::Failed(format!(
                "the check's process ended ({status}) without a result: did lab code abort the process?"
            ))
        }),
        Err(RunError::TimedOut(limit)) => Outcome::TimedOut(limit),
        Err(RunError::Spawn(err)) => {
            Outcome::Failed(format!("the grader cannot start {}: {err}", grader_exe.display()))
        }
    }
}

/// A child process that ended in time.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// All it wrote on stdout.
    pub stdout: String,
}

/// Why a child gave no result.
#[derive(Debug)]
pub enum RunError {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It ran past the limit; it and every process it started were killed.
    TimedOut(Duration),
}

/// Runs `command` in a process group of its own, with stdout captured (drained as it comes, so a
/// chatty child cannot block) and stderr discarded; kills the whole group at `limit`.
pub fn run_with_limit(mut command: Command, limit: Duration) -> Result<Finished, RunError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(RunError::Spawn)?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // A grandchild that outlives the child keeps the pipe open: kill the group first.
                kill_group(child.id());
                return Ok(Finished {
                    status,
                    stdout: reader.join().unwrap_or_default(),
                });
            }
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(2)),
            _ => break,
        }
    }
    kill_group(child.id());
    let _ = child.wait();
    let _ = reader.join();
    Err(RunError::TimedOut(limit))
}

fn kill_group(leader: u32) {
    // SAFETY: kill(2) sends a signal to our child's process group; it touches no memory here.
    unsafe { libc::kill(-(leader as libc::pid_t), libc::SIGKILL) };
}

/// Runs the selected checks (and, silently, those of the labs they need) in order. Returns the
/// results of the selected ones.
pub fn run_suite(grader_exe: &Path, selected: impl Fn(&Check) -> bool) -> Vec<CheckResult> {
    let checks = all_checks();
    let wanted: Vec<bool> = checks.iter().map(&selected).collect();
    let needed_labs: BTreeSet<u8> = checks
        .iter()
        .zip(&wanted)
        .filter(|(_, w)| **w)
        .flat_map(|(c, _)| c.needs.iter().copied())
        .collect();
    let mut failed_labs = BTreeSet::new();
    let mut results = Vec::new();
    for (check, wanted) in checks.into_iter().zip(wanted) {
        let needed = matches!(check.part, Part::Lab(n) if needed_labs.contains(&n));
        if !wanted && !needed {
            continue;
        }
        let outcome = match check.needs.iter().find(|lab| failed_labs.contains(*lab)) {
            Some(lab) => Outcome::Blocked(*lab),
            None => run_isolated(grader_exe, &check),
        };
        if let (Part::Lab(n), false) = (check.part, outcome.passed()) {
            failed_labs.insert(n);
        }
        if wanted {
            results.push(CheckResult { check, outcome });
        }
    }
    results
}

/// Whether a check is selected by the words on the command line (`lab2`, `e2e`, a check's name,
/// or part of one); no words select everything.
pub fn matches_filter(check: &Check, words: &[String]) -> bool {
    words.is_empty()
        || words
            .iter()
            .any(|w| check.part.key() == *w || check.name.contains(w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_lines_are_read_back() {
        assert_eq!(
            parse_child_line("noise\n{\"outcome\":\"passed\",\"message\":\"\"}\n"),
            Some(Outcome::Passed)
        );
        assert_eq!(
            parse_child_line("{\"outcome\":\"not_implemented\",\"message\":\"m\"}"),
            Some(Outcome::NotImplemented("m".into()))
        );
        assert_eq!(parse_child_line(""), None);
    }

    #[test]
    fn a_hanging_child_and_its_children_are_killed_at_the_limit() {
        let pid_file = std::env::temp_dir().join(format!("grader-runner-test-{}", std::process::id()));
        let mut command = Command::new("sh");
        command.args(["-c", &format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display())]);
        let started = Instant::now();
        let result = run_with_limit(command, Duration::from_millis(300));
        assert!(matches!(result, Err(RunError::TimedOut(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let grandchild = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let _ = std::fs::remove_file(&pid_file);
        let gone = (0..100).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|rest| rest.chars().next());
            std::thread::sleep(Duration::from_millis(10));
            matches!(state, None | Some('Z'))
        });
        assert!(gone, "the grandchild {grandchild} is still running");
    }

    #[test]
    fn output_of_a_finished_child_is_kept() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo two"]);
        let finished = run_with_limit(command, Duration::from_secs(10)).unwrap();
        assert!(finished.status.success());
        assert_eq!(finished.stdout, "one\ntwo\n");
    }

    #[test]
    fn filters_pick_parts_and_names() {
        let check = crate::find_check("lab2_pd_entry").unwrap();
        assert!(matches_filter(&check, &[]));
        assert!(matches_filter(&check, &["lab2".into()]));
        assert!(matches_filter(&check, &["pd_entry".into()]));
        assert!(!matches_filter(&check, &["lab3".into()]));
    }
}
