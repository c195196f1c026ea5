//! The vCPU thread and the watch over it: a session's lab code runs on a thread of its own,
//! measured by its CPU time; the calling thread waits, stops the vCPU when a limit is reached,
//! and always comes back with a report.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::diagnosis;
use super::panics::{self, VCPU_THREAD};
use super::watchdog::{Limit, Limits, Watchdog};
use super::{Failure, RunReport};
use kit_common::Status;

/// How long a stopped vCPU thread gets to come back before the run is reported without it (a lab
/// loop that spins without calling KVM_RUN cannot be interrupted; its thread ends with the process).
pub const KICK_GRACE: Duration = Duration::from_secs(2);
/// The shortest wait between two looks at the vCPU thread's CPU clock.
const MIN_POLL: Duration = Duration::from_millis(1);
/// The output buffer when stdout is not a terminal: no write per byte of the guest's output.
const STDOUT_BUFFER: usize = 64 * 1024;

/// A session's work on the vCPU thread: it tells the watchdog which lab function runs and arms
/// it around `KVM_RUN`, writes the guest's output to the console and what it finds to the report.
pub trait Session: FnOnce(&Watchdog, &mut dyn Write, &mut RunReport) -> Result<(), Failure> + Send + 'static {}
impl<F: FnOnce(&Watchdog, &mut dyn Write, &mut RunReport) -> Result<(), Failure> + Send + 'static> Session for F {}

/// Where the guest's console bytes go.
enum Console {
    /// Straight to stdout, line by line on a terminal, in large blocks otherwise.
    Stdout(Box<dyn Write + Send>),
    /// Into the report.
    Capture(Vec<u8>),
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Console::Stdout(out) => out.write(buf),
            Console::Capture(bytes) => bytes.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Console::Stdout(out) => out.write_all(buf),
            Console::Capture(bytes) => bytes.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Console::Stdout(out) => out.flush(),
            Console::Capture(_) => Ok(()),
        }
    }
}

fn console(capture_output: bool) -> Console {
    if capture_output {
        return Console::Capture(Vec::new());
    }
    let stdout = io::stdout();
    if stdout.is_terminal() {
        Console::Stdout(Box::new(io::LineWriter::new(stdout)))
    } else {
        Console::Stdout(Box::new(io::BufWriter::with_capacity(STDOUT_BUFFER, stdout)))
    }
}

/// Runs `session` on a vCPU thread with its own watchdog: the vCPU is stopped when the thread
/// has used `limits.budget` (`--timeout`) of CPU time, or has not run at all for `BLOCKED_FACTOR` x `timeout`, or
/// after `CEILING_FACTOR` x `timeout` of wall-clock time (`Limits`); then the thread gets
/// `KICK_GRACE` to come back. Never hangs, never returns without a report.
pub(crate) fn run_session(limits: Limits, capture_output: bool, session: impl Session) -> RunReport {
    let watchdog = Arc::new(Watchdog::new());
    let (done_tx, done_rx) = mpsc::channel();
    let on_thread = Arc::clone(&watchdog);
    let spawned = thread::Builder::new().name(VCPU_THREAD.into()).spawn(move || {
        let report = vcpu_thread(&on_thread, capture_output, session);
        let _ = done_tx.send(());
        report
    });
    let vcpu_thread = match spawned {
        Ok(handle) => handle,
        Err(err) => {
            let failure = Failure::new(Status::GuestFault, format!("cannot start the vCPU thread: {err}"));
            return RunReport::failed(failure);
        }
    };

    let started = Instant::now();
    if let Some(limit) = watch(&watchdog, limits, started, &done_rx) {
        let stop = watchdog.stop(limit, limits, started.elapsed());
        if done_rx.recv_timeout(KICK_GRACE) == Err(mpsc::RecvTimeoutError::Timeout) {
            // The lab code does not come back: leave its thread behind (it ends with the
            // process) and report what is known.
            return RunReport::failed(diagnosis::did_not_return(&stop, KICK_GRACE));
        }
    }
    match vcpu_thread.join() {
        Ok(report) => report,
        // Lab code runs under `panics::capture`; this is a panic of kvm-hello's own code.
        Err(payload) => {
            let panic = panics::of_payload(&*payload);
            RunReport::failed(Failure::new(panics::panic_status(&panic), panic.to_string()))
        }
    }
}

/// Waits for the vCPU thread; returns the limit it reached, or None when it finished first.
fn watch(watchdog: &Watchdog, limits: Limits, started: Instant, done: &mpsc::Receiver<()>) -> Option<Limit> {
    let (mut last_cpu, mut last_ran) = (Duration::ZERO, started);
    loop {
        let cpu = watchdog.cpu_time().unwrap_or_default();
        let now = Instant::now();
        if cpu > last_cpu {
            (last_cpu, last_ran) = (cpu, now);
        }
        let (idle, wall) = (now - last_ran, now - started);
        if cpu >= limits.budget {
            return Some(Limit::Cpu);
        }
        if idle >= limits.blocked {
            return Some(Limit::Blocked);
        }
        if wall >= limits.ceiling {
            return Some(Limit::Wall);
        }
        // A thread's CPU time grows no faster than the wall clock: no limit can pass before
        // this wait is over.
        let wait = (limits.budget - cpu)
            .min(limits.blocked - idle)
            .min(limits.ceiling - wall)
            .max(MIN_POLL);
        if done.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout) {
            return None;
        }
    }
}

/// The vCPU thread's body: the session, with its panics and its output's last flush reported.
fn vcpu_thread(watchdog: &Watchdog, capture_output: bool, session: impl Session) -> RunReport {
    let _measured = watchdog.measure_this_thread();
    let mut report = RunReport::default();
    let mut console = console(capture_output);
    let result = panics::capture(|| session(watchdog, &mut console, &mut report));
    let flushed = console.flush();
    if let Console::Capture(bytes) = console {
        report.output = bytes;
    }
    report.failure = match result {
        Ok(Ok(())) => flushed
            .err()
            .map(|err| Failure::new(Status::GuestFault, format!("cannot write the guest's output: {err}"))),
        Ok(Err(failure)) => Some(failure),
        Err(panic) => Some(Failure::new(panics::panic_status(&panic), panic.to_string())),
    };
    report
}
