//! One run of the VMM: the labs called in the order of kvm-hello-world's `main`, on a vCPU
//! thread with a watchdog of its own. Four jobs, a file each:
//! - `vcpu_thread` and `watchdog`: the vCPU thread, its CPU-time budget and how it is stopped;
//! - `panics`: panic capture, per thread;
//! - `session`: the kvm-hello-world (and LWN) session, one lab function after the other;
//! - `diagnosis`: what a failed run tells the student.
//!
//! Nothing here is process-wide but the panic hook and the kick signal's handler (both installed
//! once, both stateless): runs in one process do not see each other.

mod diagnosis;
mod gdb;
mod panics;
mod schedule;
mod session;
mod stepper;
mod vcpu_thread;
mod watchdog;

use std::time::Duration;

use kit_common::{Mode, Status};
use lab1_memory::KvmRunMapping;
use lab4_exit_loop::ExitCounts;

use crate::explain::Explanation;
use crate::labs::Labs;

pub use gdb::GdbOptions;
pub use panics::{install_panic_hook, panic_status, take_last_panic};
pub use schedule::{LAB6, ScheduleReport};
pub use stepper::StepOptions;
pub use vcpu_thread::KICK_GRACE;
pub use watchdog::{BLOCKED_FACTOR, CEILING_FACTOR};

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The lab functions to call.
    pub labs: Labs,
    /// The CPU mode.
    pub mode: Mode,
    /// The flat guest image.
    pub image: Vec<u8>,
    /// Keep the guest's output for the report instead of writing it to stdout.
    pub capture_output: bool,
    /// Print every exit on stderr.
    pub trace: bool,
    /// The watchdog's limit: CPU time of the vCPU thread (`--timeout`).
    pub timeout: Duration,
    /// `Some(gva)`: record an `Explanation` of the run, with a page walk of `gva`.
    pub explain_walk: Option<u64>,
    /// Which exit loop serves the guest.
    pub program: Program,
}

/// The host side a guest runs against, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Labs 1 to 4: the console on port 0xE9 (kvm-hello-world).
    Hello,
    /// Labs 1 to 3 and lab 5's hypercalls, in long mode.
    Hypercalls,
    /// Labs 1 to 3 and lab 4's `handle_exit`, one instruction at a time (`--step`): the listing
    /// goes to stdout, the guest's output into the report.
    Step(StepOptions),
    /// Labs 1 to 3 and lab 4's `handle_exit` under gdb (`--gdb`): the GDB remote protocol on a
    /// loopback address, the guest's output on stdout.
    Gdb(GdbOptions),
}

/// Why a run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit status it ends with.
    pub status: Status,
    /// The one-line explanation.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// Everything a run found out, as far as it got.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// The guest's console bytes (only when captured).
    pub output: Vec<u8>,
    /// Exits by reason.
    pub counts: ExitCounts,
    /// RAX when the guest stopped.
    pub rax: Option<u64>,
    /// RIP when the guest stopped.
    pub rip: Option<u64>,
    /// The value at 0x400, as wide as the mode's word.
    pub memory_0x400: Option<u64>,
    /// Host virtual address of guest physical 0.
    pub memory_host_base: Option<u64>,
    /// The vCPU's kvm_run mapping.
    pub kvm_run: Option<KvmRunMapping>,
    /// Why the run failed, if it did.
    pub failure: Option<Failure>,
    /// What `--explain` shows (only when asked for).
    pub explanation: Option<Explanation>,
    /// The hypercalls served (only for `Program::Hypercalls`).
    pub hypercalls: Option<Vec<lab5_hypercalls::HypercallRecord>>,
    /// What the scheduler did (only for lab 6's schedule).
    pub schedule: Option<ScheduleReport>,
}

impl RunReport {
    /// The report of a run that ended before it found anything out.
    fn failed(failure: Failure) -> RunReport {
        RunReport {
            failure: Some(failure),
            ..RunReport::default()
        }
    }
}

/// Runs the guest on a vCPU thread under its own watchdog (`config.timeout` of vCPU time, a
/// wall-clock backstop and ceiling far above it, then a grace period to collect the thread's report).
/// Never hangs, never returns without a report.
pub fn run(config: RunConfig) -> RunReport {
    let (timeout, capture_output) = (config.timeout, config.capture_output);
    // Under gdb the vCPU thread waits for the person at the debugger: only CPU time counts.
    let limits = match config.program {
        Program::Gdb(_) => watchdog::Limits::interactive(timeout),
        _ => watchdog::Limits::of_timeout(timeout),
    };
    vcpu_thread::run_session(limits, capture_output, move |watchdog, console, report| {
        session::session(&config, watchdog, console, report)
    })
}

/// Runs lab 0, the LWN warm-up VM, on a vCPU thread under its own watchdog.
pub fn run_lwn(labs: Labs, image: Option<Vec<u8>>, capture_output: bool, trace: bool, timeout: Duration) -> RunReport {
    vcpu_thread::run_session(
        watchdog::Limits::of_timeout(timeout),
        capture_output,
        move |watchdog, console, report| {
            session::lwn_session(&labs, image.as_deref(), trace, watchdog, console, report)
        },
    )
}

/// Runs lab 6: two worker VMs scheduled by the student's loop on one vCPU thread, for `duration`
/// of guest time. The watchdog's budget is `timeout` on top of the duration.
pub fn run_schedule(
    labs: Labs,
    policy: lab6_scheduling::Policy,
    duration: Duration,
    capture_output: bool,
    timeout: Duration,
) -> RunReport {
    let budget = timeout.saturating_add(duration);
    vcpu_thread::run_session(
        watchdog::Limits::of_timeout(budget),
        capture_output,
        move |watchdog, console, report| schedule::schedule_session(&labs, policy, duration, watchdog, console, report),
    )
}

/// The one-line summary of a schedule run that succeeded.
pub fn schedule_summary(schedule: &ScheduleReport) -> String {
    schedule::summary(schedule)
}
