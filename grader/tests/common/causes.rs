//! The wrong-cause sweep: each seeded mistake runs against every check that calls lab code of
//! its lab or a later one, as `cargo grade` runs them (blocking, pointers to explaining checks),
//! and no failed check may name a cause other than the seeded one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use grader::checks::{causes_named, pointed_to};
use grader::runner::{Finished, Limits, Outcome, RunError, run_suite};
use grader::{Backend, Check, Part};
use grader_probe::{Labs, Probe};

use super::probe_exe;

/// The probe library with a seeded mistake, each request answered in a child forked from this
/// process (the mistake is a function of this process, so no other program can run it): a
/// request that does not end in time (a guest that never exits) is killed, as the runner kills
/// a probe, instead of hanging the test.
pub struct Forked {
    /// The labs and the VMM program the probe uses.
    pub probe: Probe,
}

impl Backend for Forked {
    fn exchange(&mut self, input: &[u8], limits: Limits) -> Result<Finished, RunError> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(RunError::Spawn(std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only answers the request (glibc's malloc is fork-safe), writes the
        // answer on its pipe and leaves with _exit, running no destructor of this process.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(RunError::Spawn(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(read);
            let answer = grader_probe::answer(&self.probe, &String::from_utf8_lossy(input));
            let bytes = serde_json::to_vec(&answer).unwrap_or_default();
            let mut file = std::fs::File::from(write);
            let _ = std::io::Write::write_all(&mut file, &bytes);
            // SAFETY: ends the child without unwinding into the test harness.
            unsafe { libc::_exit(0) };
        }
        drop(write);
        let result = read_until(&read, Instant::now() + limits.cpu);
        let mut status = 0;
        if result.is_none() {
            // SAFETY: the child is ours and not yet waited for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        match result {
            Some(result) => Ok(Finished {
                status: ExitStatus::from_raw(status),
                stdout: Vec::new(),
                stderr: Vec::new(),
                result,
            }),
            None => Err(RunError::TimedOut(format!(
                "did not answer within {} s and was stopped",
                limits.cpu.as_secs()
            ))),
        }
    }
}

/// Everything written on `fd` until its end, or `None` at `deadline`.
fn read_until(fd: &OwnedFd, deadline: Instant) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let wait = left.min(Duration::from_millis(100)).as_millis() as i32;
        // SAFETY: polls one descriptor we own.
        if unsafe { libc::poll(&mut poll, 1, wait) } <= 0 {
            continue;
        }
        // SAFETY: reads into a buffer of the given length from a descriptor we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        match n {
            0 => return Some(bytes),
            n if n > 0 => bytes.extend_from_slice(&buffer[..n as usize]),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Some(bytes),
        }
    }
}

/// A seeded mistake: one lab function swapped, and the place it seeds.
#[derive(Clone, Copy)]
pub struct Mistake {
    /// The mistake (the test that checks its exact message has this name).
    pub name: &'static str,
    /// Where the mistake is: `labN function`.
    pub place: &'static str,
    /// Swaps the function on the reference.
    pub seed: fn(&mut Labs),
}

impl Mistake {
    /// The mistake `name`, seeded in `place` (`labN function`) by `seed`.
    pub const fn new(name: &'static str, place: &'static str, seed: fn(&mut Labs)) -> Mistake {
        Mistake { name, place, seed }
    }

    /// The lab of the place.
    fn lab(&self) -> u8 {
        self.place
            .strip_prefix("lab")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: the place {:?} is not `labN function`", self.name, self.place))
    }

    /// `(lab, function)` of the place.
    fn cause(&self) -> (u8, String) {
        let function = self.place.split(' ').nth(1).unwrap_or_default();
        (self.lab(), function.to_owned())
    }
}

/// Whether a mistake in lab `lab` reaches `check`: the checks of that lab and those of later
/// labs that call its code (the labs a check `needs` are the ones whose code it runs). The
/// end-to-end checks run a VMM built from the references (a separate program), which a mistake
/// swapped in this process cannot reach.
pub fn reaches(lab: u8, check: &Check) -> bool {
    let Part::Lab(part) = check.part else { return false };
    (part == lab || check.needs.contains(&lab)) && !check.name.starts_with("e2e_")
}

/// What is wrong with the failed checks' messages of one run of `mistake` (empty: nothing), and
/// how many checks failed.
pub fn wrong_causes(mistake: &Mistake, seed: u64) -> (Vec<String>, usize) {
    let mut labs = Labs::BUILT;
    (mistake.seed)(&mut labs);
    let mut backend = Forked {
        probe: Probe {
            labs,
            vmm: (probe_exe(), vec![grader_protocol::VMM_ARG.to_owned()]),
        },
    };
    let lab = mistake.lab();
    let suite = run_suite(&mut backend, seed, |check| reaches(lab, check));
    let failed: Vec<&str> = suite
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::TimedOut(_)))
        .map(|r| r.check.name)
        .collect();
    let mut wrong = Vec::new();
    for result in &suite.results {
        let message = match &result.outcome {
            Outcome::Failed(message) => message,
            // The runner's stop of a probe that ran out of time names no cause unless a
            // check's pointer made it one.
            Outcome::TimedOut(message) if causes_named(message).is_empty() => continue,
            Outcome::TimedOut(message) => message,
            _ => continue,
        };
        if let Some(why) = names_another_cause(mistake, message, &failed) {
            wrong.push(format!("{} ({}): {why}: {message:?}", mistake.name, result.check.name));
        }
    }
    (wrong, failed.len())
}

/// Why `message` names a cause other than the mistake's place, if it does.
fn names_another_cause(mistake: &Mistake, message: &str, failed: &[&str]) -> Option<String> {
    if let Some(check) = pointed_to(message) {
        if !failed.contains(&check) {
            return Some(format!("it points to {check}, which did not fail in this run"));
        }
        // The pointer shows that check's cause: it must be the seeded one too.
        let cause = message.split_once(" (").map_or("", |(_, cause)| cause);
        return names_another_cause(mistake, cause, failed);
    }
    // A panic's own words and location are lab code's: the grader adds no cause.
    if message.starts_with("lab code panicked: ") {
        return None;
    }
    let causes = causes_named(message);
    let seeded = mistake.cause();
    match causes.as_slice() {
        [] => Some("it names no lab function".to_owned()),
        [only] if *only == seeded => None,
        [_] => Some(format!("it names another cause than {}", mistake.place)),
        several if several.contains(&seeded) => None,
        _ => Some(format!("none of the causes it lists is {}", mistake.place)),
    }
}

/// Runs every mistake of `mistakes` and fails with every message that names a wrong cause.
pub fn assert_no_wrong_cause(mistakes: &[Mistake]) {
    let seed = super::seed();
    let mut wrong = Vec::new();
    for mistake in mistakes {
        let started = std::time::Instant::now();
        let (found, failed) = wrong_causes(mistake, seed);
        eprintln!(
            "{}: {failed} failed check(s), {} naming a wrong cause ({:.1} s)",
            mistake.name,
            found.len(),
            started.elapsed().as_secs_f64()
        );
        wrong.extend(found);
    }
    assert!(
        wrong.is_empty(),
        "with seed {seed} (GRADER_SEED repeats it), {} message(s) name a wrong cause:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
