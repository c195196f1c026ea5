//! Running checks: in lab order, with checks blocked when a lab they need has failed and "not
//! run" when this host cannot run them. Each request of a check goes to a fresh probe process
//! (so no stub, panic, hang or forgery can take the grader down), within the check's limits.
//!
//! The channel: the judge writes one request on the probe's stdin (the probe reads it before any
//! lab code runs; stdin then reads /dev/null) and reads one answer on the pipe at the probe's
//! descriptor `ANSWER_FD`. The answer carries observations only, never a verdict: the judge
//! decides. What the probe prints on stdout and stderr is never parsed: its tail is shown to the
//! student as what their code printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::rng::Rng;
use crate::sandbox::{self, Sandbox};
use crate::{Backend, Check, Ctx, Part, Stop, all_checks};

/// The probe's descriptor for its answer.
pub const RESULT_FD: RawFd = grader_protocol::ANSWER_FD;
/// How much of what lab code printed is kept (its first and its last bytes) for a message.
const OUTPUT_TAIL: usize = 2048;
/// How much of it a message shows.
const OUTPUT_SHOWN: usize = 300;
/// How often the runner looks at a running check's CPU time.
const POLL: Duration = Duration::from_millis(10);

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
    /// It ran past its time limit and was stopped with everything it started.
    TimedOut(String),
    /// This host cannot run it (the reason and the fix): it counts neither in the score nor in
    /// the maximum.
    NotRun(String),
}

impl Outcome {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        *self == Outcome::Passed
    }

    /// Whether it was not run on this host.
    pub fn not_run(&self) -> bool {
        matches!(self, Outcome::NotRun(_))
    }

    /// One word for reports: passed, failed, not_implemented, blocked, timed_out, not_run.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::NotImplemented(_) => "not_implemented",
            Outcome::Blocked(_) => "blocked",
            Outcome::TimedOut(_) => "timed_out",
            Outcome::NotRun(_) => "not_run",
        }
    }

    /// What a student reads.
    pub fn message(&self) -> String {
        match self {
            Outcome::Passed => String::new(),
            Outcome::Failed(message) | Outcome::NotImplemented(message) | Outcome::TimedOut(message) => message.clone(),
            Outcome::Blocked(lab) => {
                format!("blocked by lab {lab}: make lab {lab} pass first (cargo grade lab{lab})")
            }
            Outcome::NotRun(reason) => format!("not run: {reason}"),
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
    /// The seed of its inputs (`--seed` repeats the run).
    pub seed: u64,
}

/// What a whole run was asked and found.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Each check's result, in order.
    pub results: Vec<CheckResult>,
    /// The run's seed.
    pub seed: u64,
    /// Why checks were not run on this host, if any were.
    pub host_limits: Vec<String>,
    /// Set when SIGINT or SIGTERM stopped the run (the signal's number).
    pub interrupted: Option<i32>,
}

/// A child process that ended in time.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// The first and the last bytes it wrote on stdout.
    pub stdout: Vec<u8>,
    /// The first and the last bytes it wrote on stderr.
    pub stderr: Vec<u8>,
    /// What it wrote on the result pipe.
    pub result: Vec<u8>,
}

/// Why a child gave no result.
#[derive(Debug)]
pub enum RunError {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It and every process it started were stopped at a limit: the message says which.
    TimedOut(String),
    /// SIGINT or SIGTERM reached the grader: the check and its processes were stopped.
    Interrupted(i32),
}

/// The limits of one child.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPU time of the child and everything it starts.
    pub cpu: Duration,
    /// Wall-clock backstop.
    pub wall: Duration,
}

impl Check {
    /// Its limits: CPU time, then twice that of wall clock as a backstop.
    pub fn limits(&self) -> Limits {
        let cpu = self.time_limit();
        Limits { cpu, wall: cpu * 2 }
    }
}

/// Set by the SIGINT/SIGTERM handler.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_interrupt(signal: libc::c_int) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM stop the running check (forwarded to it, then everything it started
/// is killed) and the run, instead of leaving the check orphaned.
pub fn forward_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
}

/// The signal that interrupted the run, if one did.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// One check at a time per process: a check's processes are found among this process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// A stream read without ever blocking; keeps its first and its last `cap` bytes.
struct Drain {
    fd: Option<OwnedFd>,
    head: Vec<u8>,
    tail: Vec<u8>,
    /// Whether bytes between the head and the tail were dropped.
    cut: bool,
    cap: usize,
}

impl Drain {
    fn new(fd: OwnedFd, cap: usize) -> Drain {
        set_nonblocking(fd.as_raw_fd());
        Drain {
            fd: Some(fd),
            head: Vec::new(),
            tail: Vec::new(),
            cut: false,
            cap,
        }
    }

    /// Reads what is there now; closes the stream at its end.
    fn read_available(&mut self) {
        let Some(fd) = &self.fd else { return };
        let mut buffer = [0u8; 8192];
        loop {
            // SAFETY: read into a buffer of the given length from a descriptor we own.
            let n = unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
            if n > 0 {
                let mut bytes = &buffer[..n as usize];
                let room = self.cap.saturating_sub(self.head.len());
                let to_head = room.min(bytes.len());
                self.head.extend_from_slice(&bytes[..to_head]);
                bytes = &bytes[to_head..];
                self.tail.extend_from_slice(bytes);
                if self.tail.len() > self.cap {
                    self.tail.drain(..self.tail.len() - self.cap);
                    self.cut = true;
                }
            } else if n == 0 {
                self.fd = None;
                return;
            } else {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
        }
    }

    /// What was kept: the head, then the tail (with `…` where bytes were dropped).
    fn kept(self) -> Vec<u8> {
        let mut bytes = self.head;
        if self.cut {
            bytes.extend_from_slice("…".as_bytes());
        }
        bytes.extend_from_slice(&self.tail);
        bytes
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }
}

/// Runs `command` with `input` on its stdin, stdout and stderr kept (their tails), a result pipe
/// on `RESULT_FD`, its own process group, the sandbox's limits, and a parent-death signal. Stops
/// it and everything it started when its CPU time (summed over them all) or the wall-clock
/// backstop runs out, or when the grader is interrupted; never waits on a pipe past that.
pub fn run_with_limit(command: Command, input: &[u8], limits: Limits) -> Result<Finished, RunError> {
    run_contained(command, input, limits, true)
}

/// `run_with_limit`, with or without trying a pids cgroup (without, the process tree alone finds
/// the check's processes: what a machine without cgroups gets).
pub fn run_contained(
    mut command: Command,
    input: &[u8],
    limits: Limits,
    try_cgroup: bool,
) -> Result<Finished, RunError> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    sandbox::become_subreaper();
    let (result_read, result_write) = pipe().map_err(RunError::Spawn)?;
    let result_write_fd = result_write.as_raw_fd();
    let nproc = sandbox::nproc_limit();
    let cpu_seconds = limits.cpu.as_secs() + 2;
    let cgroup = if try_cgroup { sandbox::Cgroup::prepare() } else { None };
    let procs = cgroup.as_ref().map(sandbox::Cgroup::procs_path);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (dup2, fcntl, prctl, setrlimit).
    unsafe {
        command.pre_exec(move || {
            if result_write_fd == RESULT_FD {
                libc::fcntl(RESULT_FD, libc::F_SETFD, 0);
            } else if libc::dup2(result_write_fd, RESULT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            sandbox::limit_child(procs.as_deref(), nproc, cpu_seconds)
        });
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(RunError::Spawn)?;
    drop(result_write);
    let mut sandbox = Sandbox::new(child.id(), cgroup);
    if let Some(mut stdin) = child.stdin.take() {
        // The child reads this before it runs lab code; a write error means it is already gone.
        let _ = stdin.write_all(input);
    }
    let mut streams = [
        Drain::new(
            OwnedFd::from(child.stdout.take().expect("stdout is piped")),
            OUTPUT_TAIL,
        ),
        Drain::new(
            OwnedFd::from(child.stderr.take().expect("stderr is piped")),
            OUTPUT_TAIL,
        ),
        Drain::new(result_read, 64 * 1024),
    ];
    let started = Instant::now();
    let stop = |sandbox: &Sandbox, child: &mut std::process::Child| {
        sandbox.kill_all();
        let _ = child.kill();
        let _ = child.wait();
    };
    let status = loop {
        for stream in &mut streams {
            stream.read_available();
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(err) => {
                stop(&sandbox, &mut child);
                return Err(RunError::Spawn(err));
            }
        }
        if let Some(signal) = interrupted() {
            sandbox.signal(signal);
            std::thread::sleep(Duration::from_millis(50));
            stop(&sandbox, &mut child);
            return Err(RunError::Interrupted(signal));
        }
        let cpu = sandbox.cpu_time();
        let wall = started.elapsed();
        if cpu > limits.cpu || wall > limits.wall {
            stop(&sandbox, &mut child);
            let message = if cpu > limits.cpu {
                format!(
                    "used more than {} s of CPU time and was stopped with everything it started: does a loop of yours never end (run_until_halt without a way out, a page walk that never stops)?",
                    limits.cpu.as_secs()
                )
            } else {
                format!(
                    "did not finish within {} s (it used {:.1} s of CPU time) and was stopped with everything it started: does your code wait for something that never comes (a sleep, a read, a lock, a child process)?",
                    limits.wall.as_secs(),
                    cpu.as_secs_f64()
                )
            };
            return Err(RunError::TimedOut(message));
        }
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .map(|s| libc::pollfd {
                fd: s.raw(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll reads and writes the array we pass, of the length we pass.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL.as_millis() as i32) };
    };
    // The check is over: whatever it left behind goes now, then what reached the pipes is read
    // without waiting for their ends.
    sandbox.kill_all();
    for stream in &mut streams {
        stream.read_available();
    }
    let [stdout, stderr, result] = streams;
    Ok(Finished {
        status,
        stdout: stdout.kept(),
        stderr: stderr.kept(),
        result: result.kept(),
    })
}

/// What lab code printed, trimmed for a message: `""` when nothing.
pub fn printed(stdout: &[u8], stderr: &[u8]) -> String {
    let mut parts = Vec::new();
    for (name, bytes) in [("stdout", stdout), ("stderr", stderr)] {
        let text = String::from_utf8_lossy(bytes);
        // A backtrace says nothing to a student that the line before it does not.
        let text = text.split("\nstack backtrace:").next().unwrap_or_default();
        let text = text
            .split("\nnote: run with `RUST_BACKTRACE")
            .next()
            .unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let chars: Vec<char> = text.chars().collect();
        let half = OUTPUT_SHOWN / 2;
        let shown: String = if chars.len() > OUTPUT_SHOWN {
            let head: String = chars[..half].iter().collect();
            let tail: String = chars[chars.len() - half..].iter().collect();
            format!("{head}…{tail}")
        } else {
            text.to_owned()
        };
        parts.push(format!("on {name}: {shown:?}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" (your code printed {})", parts.join(", "))
    }
}

/// How a process ended, in words.
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (_, Some(libc::SIGKILL)) => "was killed (SIGKILL: out of memory, or a limit)".to_owned(),
        (_, Some(libc::SIGXCPU)) => "was killed at its CPU-time limit (SIGXCPU)".to_owned(),
        (_, Some(libc::SIGSEGV)) => "crashed (SIGSEGV: a bad memory access or a stack overflow)".to_owned(),
        (_, Some(libc::SIGABRT)) => {
            "aborted (SIGABRT: a failed allocation, abort(), or a panic while panicking)".to_owned()
        }
        (_, Some(signal)) => format!("was killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// The probe as a program: each request runs in a fresh process of it, jailed when a jail is
/// given (its own namespaces, only the probe and /dev/kvm in view, a private /tmp, no network,
/// the seccomp filter: see `kit-jail`).
#[derive(Debug, Clone)]
pub struct ProbeProgram {
    /// The `grader-probe` executable.
    pub exe: PathBuf,
    /// The jail, or `None` to run the probe as this user, unjailed (local grading where this
    /// host cannot jail; never an official grade).
    pub jail: Option<kit_jail::Jail>,
}

impl ProbeProgram {
    /// The probe at `exe`, unjailed.
    pub fn unjailed(exe: impl Into<PathBuf>) -> ProbeProgram {
        ProbeProgram {
            exe: exe.into(),
            jail: None,
        }
    }

    /// The command that runs the probe once.
    fn command(&self) -> std::io::Result<Command> {
        let Some(jail) = &self.jail else {
            return Ok(Command::new(&self.exe));
        };
        jail.command(&self.exe)
            .read_only(&self.exe)
            .kvm(std::path::Path::new("/dev/kvm").exists())
            .build()
            .map_err(|err| std::io::Error::other(err.to_string()))
    }
}

impl Backend for ProbeProgram {
    fn exchange(&mut self, input: &[u8], limits: Limits) -> Result<Finished, RunError> {
        let command = self.command().map_err(RunError::Spawn)?;
        run_with_limit(command, input, limits)
    }
}

/// Runs one check's judge with its requests going to `backend`; `Err(signal)` when SIGINT or
/// SIGTERM interrupted it.
pub fn run_check(backend: &mut dyn Backend, check: &Check, seed: u64) -> Result<Outcome, i32> {
    let mut ctx = Ctx::new(seed, backend, check.limits());
    let result = catch_unwind(AssertUnwindSafe(|| (check.run)(&mut ctx)));
    Ok(match result {
        Ok(Ok(())) => Outcome::Passed,
        Ok(Err(Stop::Failed(message))) => Outcome::Failed(format!("{message}{}", ctx.printed())),
        Ok(Err(Stop::NotImplemented(message))) => Outcome::NotImplemented(message),
        Ok(Err(Stop::TimedOut(message))) => Outcome::TimedOut(message),
        Ok(Err(Stop::Interrupted(signal))) => return Err(signal),
        Err(_) => Outcome::Failed(format!(
            "the grader itself failed in {} (a fault of the kit, not of your labs: report it with the seed {seed})",
            check.name
        )),
    })
}

/// Runs the selected checks (and, silently, those of the labs they need and those that explain
/// their failures) in order, each with its own seed drawn from `seed`. Returns the results of the
/// selected ones.
pub fn run_suite(backend: &mut dyn Backend, seed: u64, selected: impl Fn(&Check) -> bool) -> Suite {
    let host = Host::probe();
    let checks = all_checks();
    let wanted: Vec<bool> = checks.iter().map(&selected).collect();
    let needed_labs: BTreeSet<u8> = checks
        .iter()
        .zip(&wanted)
        .filter(|(_, w)| **w)
        .flat_map(|(c, _)| c.needs.iter().copied())
        .collect();
    let explainers = explainers_of(&checks, &wanted);
    let mut failed_labs = BTreeSet::new();
    // The failed checks of this run: name -> the check and the message a pointer to it shows
    // (the root of a chain of pointers).
    let mut failed: BTreeMap<&'static str, (&'static str, String)> = BTreeMap::new();
    let mut suite = Suite {
        results: Vec::new(),
        seed,
        host_limits: Vec::new(),
        interrupted: None,
    };
    for (check, wanted) in checks.into_iter().zip(wanted) {
        let needed = matches!(check.part, Part::Lab(n) if needed_labs.contains(&n)) || explainers.contains(check.name);
        if !wanted && !needed {
            continue;
        }
        let check_seed = check_seed(seed, check.name);
        // A failed lab blocks a check before the host is asked: the student's next step comes first.
        let outcome = if let Some(lab) = check.needs.iter().find(|lab| failed_labs.contains(*lab)) {
            Outcome::Blocked(*lab)
        } else if let Some(outcome) = does_not_compile(check.part) {
            outcome
        } else if let Some(reason) = host.cannot_run(check.host) {
            if wanted && !suite.host_limits.contains(&reason) {
                suite.host_limits.push(reason.clone());
            }
            Outcome::NotRun(reason)
        } else {
            match run_check(backend, &check, check_seed) {
                Ok(outcome) => outcome,
                Err(signal) => {
                    suite.interrupted = Some(signal);
                    return suite;
                }
            }
        };
        let outcome = explained(&check, outcome, &mut failed);
        if let (Part::Lab(n), false) = (check.part, outcome.passed() || outcome.not_run()) {
            failed_labs.insert(n);
        }
        if wanted {
            suite.results.push(CheckResult {
                check,
                outcome,
                seed: check_seed,
            });
        }
    }
    suite
}

/// The checks that explain the failures of the wanted ones, and those that explain theirs.
fn explainers_of(checks: &[Check], wanted: &[bool]) -> BTreeSet<&'static str> {
    let mut explainers: BTreeSet<&'static str> = checks
        .iter()
        .zip(wanted)
        .filter(|(_, w)| **w)
        .flat_map(|(c, _)| c.explained_by.iter().copied())
        .collect();
    // Explainers come before the checks they explain: one pass from the last check back finds
    // the explainers of explainers.
    for check in checks.iter().rev() {
        if explainers.contains(check.name) {
            explainers.extend(check.explained_by.iter().copied());
        }
    }
    explainers
}

/// A check's outcome as the run reports it: a failure that a check in `explained_by` explains
/// (it failed in this run) becomes a pointer to that check with its cause, and a failure is
/// recorded in `failed` for the checks after it.
fn explained(check: &Check, outcome: Outcome, failed: &mut BTreeMap<&'static str, (&'static str, String)>) -> Outcome {
    let message = match &outcome {
        Outcome::Failed(message) | Outcome::TimedOut(message) => message.clone(),
        _ => return outcome,
    };
    let explainer = check.explained_by.iter().find_map(|name| failed.get(name).cloned());
    match explainer {
        Some((root, root_message)) => {
            failed.insert(check.name, (root, root_message.clone()));
            Outcome::Failed(crate::checks::see(root, &root_message))
        }
        None => {
            failed.insert(check.name, (check.name, message));
            outcome
        }
    }
}

/// The seed a check's inputs come from, in a run with `seed`.
pub fn check_seed(seed: u64, check: &str) -> u64 {
    Rng::for_check(seed, check).next_u64()
}

/// `--strict`: a check this host could not run fails, with the same reason.
pub fn strict(mut suite: Suite) -> Suite {
    for result in &mut suite.results {
        if let Outcome::NotRun(reason) = &result.outcome {
            result.outcome = Outcome::Failed(format!("not run on this host (--strict): {reason}"));
        }
    }
    suite
}

/// Set by `cargo grade` (xtask's `grade`), suffixed with a lab's number, when that lab's file does
/// not compile: the grader was then built with the lab's untouched stub in its place, and the
/// variable holds the compiler's first error.
pub const DOES_NOT_COMPILE_ENV: &str = "KIT_DOES_NOT_COMPILE_LAB";

/// The outcome of every check of a lab whose file does not compile (see `DOES_NOT_COMPILE_ENV`).
fn does_not_compile(part: Part) -> Option<Outcome> {
    let Part::Lab(n) = part else { return None };
    let error = std::env::var(format!("{DOES_NOT_COMPILE_ENV}{n}")).ok()?;
    Some(Outcome::Failed(format!("does not compile: {error} (book: Grading)")))
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

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    /// The timing tests run one at a time, so none waits for another inside its measurement.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    const SHORT: Limits = Limits {
        cpu: Duration::from_secs(1),
        wall: Duration::from_secs(2),
    };

    #[test]
    fn a_hanging_child_and_its_escaped_children_are_killed_at_the_limit() {
        let _serial = serial();
        let pid_file = std::env::temp_dir().join(format!("grader-runner-test-{}", std::process::id()));
        let script = format!(
            "setsid sh -c 'sleep 30' & echo $! > {}; while :; do :; done",
            pid_file.display()
        );
        let started = Instant::now();
        let result = run_with_limit(sh(&script), b"", SHORT);
        assert!(
            matches!(result, Err(RunError::TimedOut(ref m)) if m.contains("CPU time")),
            "{result:?}"
        );
        assert!(
            started.elapsed() < SHORT.wall + Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_escaped_process_gone(&pid_file);
    }

    /// The process whose pid the check wrote to `pid_file` is gone (or a zombie).
    fn assert_escaped_process_gone(pid_file: &std::path::Path) {
        let escaped = std::fs::read_to_string(pid_file).unwrap().trim().to_owned();
        let _ = std::fs::remove_file(pid_file);
        let stat = std::fs::read_to_string(format!("/proc/{escaped}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "the escaped process {escaped} still runs: {stat}"
        );
    }

    #[test]
    fn without_a_cgroup_the_process_tree_finds_escaped_children() {
        let _serial = serial();
        let pid_file = std::env::temp_dir().join(format!("grader-runner-tree-{}", std::process::id()));
        let script = format!(
            "setsid sh -c 'sleep 30' & echo $! > {}; (sh -c 'sleep 30' &) ; while :; do :; done",
            pid_file.display()
        );
        let result = run_contained(sh(&script), b"", SHORT, false);
        assert!(matches!(result, Err(RunError::TimedOut(_))), "{result:?}");
        assert_escaped_process_gone(&pid_file);
    }

    #[test]
    fn a_sleeping_child_is_stopped_at_the_wall_clock_backstop() {
        let _serial = serial();
        let started = Instant::now();
        // A child that uses no CPU time: a second of wall clock is enough to show the backstop.
        let limits = Limits {
            cpu: Duration::from_secs(1),
            wall: Duration::from_secs(1),
        };
        let result = run_with_limit(sh("sleep 30"), b"", limits);
        assert!(
            matches!(result, Err(RunError::TimedOut(ref m)) if m.contains("did not finish within 1 s")),
            "{result:?}"
        );
        assert!(started.elapsed() < limits.wall + Duration::from_secs(1));
    }

    #[test]
    fn output_input_and_the_result_pipe_of_a_finished_child_are_kept() {
        let _serial = serial();
        let finished = run_with_limit(sh("read a; echo out $a; echo err >&2; echo res >&3"), b"hi\n", SHORT).unwrap();
        assert!(finished.status.success());
        assert_eq!(finished.stdout, b"out hi\n");
        assert_eq!(finished.stderr, b"err\n");
        assert_eq!(finished.result, b"res\n");
    }

    #[test]
    fn a_child_that_leaves_a_writer_behind_is_not_waited_for() {
        let _serial = serial();
        let started = Instant::now();
        let finished = run_with_limit(sh("(sleep 30; echo late) & echo early"), b"", SHORT).unwrap();
        assert_eq!(finished.stdout, b"early\n");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[test]
    fn printed_output_is_trimmed_and_shown_as_the_students() {
        assert_eq!(printed(b"", b""), "");
        assert_eq!(printed(b"dbg\n", b""), " (your code printed on stdout: \"dbg\")");
        let long = vec![b'x'; 1000];
        assert!(printed(&long, b"").len() < 400);
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
