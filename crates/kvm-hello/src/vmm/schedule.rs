//! Lab 6's session: two VMs of the worker guest on this one vCPU thread, scheduled by the
//! student's loop, each lab function announced to the run's watchdog so that a timeout names it.
//!
//! The watchdog is not armed around the loop (two vCPUs take turns on the thread and the kick
//! stops one `KVM_RUN`); a loop that never ends is reported by the watchdog's grace period.

use std::io::Write;
use std::time::{Duration, Instant};

use kit_common::Status;
use lab4_exit_loop::ExitCounts;
use lab6_scheduling::{Account, GuestVm, Lab6Error, Policy, Slice, VM_NAMES};

use super::diagnosis::{self, lab1_failure, refused};
use super::watchdog::{LabFn, Watchdog};
use super::{Failure, RunReport};
use crate::labs::Labs;

/// The chapter of lab 6.
pub const LAB6: &str = "Lab 6, Scheduling two VMs";

const CREATE_GUEST_VM: LabFn = LabFn {
    name: "lab6 create_guest_vm",
    book: LAB6,
    runs_the_guest: false,
};
const RUN_SCHEDULE: LabFn = LabFn {
    name: "lab6 run_schedule",
    book: LAB6,
    runs_the_guest: false,
};

/// What a schedule run did, per VM and per slice.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleReport {
    /// The policy, its quantum and shares.
    pub policy: Policy,
    /// The guest time asked for (both VMs together).
    pub duration: Duration,
    /// The wall-clock time the loop took.
    pub wall: Duration,
    /// The thread's CPU time the loop took: guest time plus the host's own work (exits,
    /// switches, timers).
    pub cpu: Duration,
    /// The two VMs' names.
    pub names: [u8; 2],
    /// The two VMs' accounts at the end.
    pub accounts: [Account; 2],
    /// Every slice, in order (empty when the loop failed).
    pub slices: Vec<Slice>,
}

impl ScheduleReport {
    /// VM `vm`'s share of the guest time, 0.0 to 1.0.
    pub fn share(&self, vm: usize) -> f64 {
        let total = self.accounts[0].guest_time + self.accounts[1].guest_time;
        if total.is_zero() {
            return 0.0;
        }
        self.accounts[vm].guest_time.as_secs_f64() / total.as_secs_f64()
    }
}

/// Tells the watchdog that `function` starts; a run that was stopped goes no further.
fn enter(watchdog: &Watchdog, function: LabFn, report: &RunReport) -> Result<(), Failure> {
    watchdog
        .enter(function)
        .map_err(|stop| diagnosis::timeout(&stop, report))
}

/// A lab 6 error as the one line the student reads.
fn lab6_failure(err: Lab6Error) -> Failure {
    match err {
        Lab6Error::Lab1(err) => lab1_failure(err),
        Lab6Error::Registers { ioctl, source } => refused(ioctl, source),
        Lab6Error::Lab2(err) => Failure::new(Status::GuestFault, format!("{err} (book: Lab 2, Page tables)")),
        other => Failure::new(Status::GuestFault, format!("{other} (book: {LAB6})")),
    }
}

// ANCHOR: schedule_session
/// Two worker VMs built by labs 1 to 3, then the student's scheduler loop for `duration`.
pub(crate) fn schedule_session(
    labs: &Labs,
    policy: Policy,
    duration: Duration,
    watchdog: &Watchdog,
    console: &mut dyn Write,
    report: &mut RunReport,
) -> Result<(), Failure> {
    let base = labs.base();
    let create = |name| -> Result<GuestVm, Failure> {
        enter(watchdog, CREATE_GUEST_VM, report)?;
        (labs.create_guest_vm)(&base, name, guests::WORKER64).map_err(lab6_failure)
    };
    let mut vms = [create(VM_NAMES[0])?, create(VM_NAMES[1])?];
    enter(watchdog, RUN_SCHEDULE, report)?;
    let (started, cpu_before) = (Instant::now(), lab6_scheduling::thread_cpu_time());
    let ran = (labs.run_schedule)(&labs.scheduler_parts(), &mut vms, &policy, duration, console);
    let accounts = [vms[0].account, vms[1].account];
    report.counts = add_counts(&accounts[0].exits, &accounts[1].exits);
    report.schedule = Some(ScheduleReport {
        policy,
        duration,
        wall: started.elapsed(),
        cpu: lab6_scheduling::thread_cpu_time().saturating_sub(cpu_before),
        names: [vms[0].name, vms[1].name],
        accounts,
        slices: ran.as_ref().map(Clone::clone).unwrap_or_default(),
    });
    ran.map(drop).map_err(lab6_failure)
}
// ANCHOR_END: schedule_session

/// The two VMs' exits together.
fn add_counts(a: &ExitCounts, b: &ExitCounts) -> ExitCounts {
    ExitCounts {
        io_out: a.io_out.saturating_add(b.io_out),
        io_in: a.io_in.saturating_add(b.io_in),
        hlt: a.hlt.saturating_add(b.hlt),
        mmio: a.mmio.saturating_add(b.mmio),
        shutdown: a.shutdown.saturating_add(b.shutdown),
        other: a.other.saturating_add(b.other),
    }
}

/// The one-line summary of a schedule run that succeeded.
pub fn summary(schedule: &ScheduleReport) -> String {
    let policy = match schedule.policy {
        Policy::Cooperative => "cooperative".to_owned(),
        Policy::RoundRobin { quantum } => format!("round-robin, quantum {} ms", quantum.as_millis()),
        Policy::Weighted { quantum, shares } => format!(
            "weighted {}:{}, quantum {} ms",
            shares[0],
            shares[1],
            quantum.as_millis()
        ),
    };
    let vm = |i: usize| {
        let account = &schedule.accounts[i];
        format!(
            "{} {:.1}% ({:.1} ms, {} slices, progress {})",
            char::from(schedule.names[i]),
            100.0 * schedule.share(i),
            account.guest_time.as_secs_f64() * 1e3,
            account.slices,
            account.progress
        )
    };
    format!(
        "schedule ({policy}): guest time {}, {} in {:.0} ms",
        vm(0),
        vm(1),
        schedule.wall.as_secs_f64() * 1e3
    )
}
