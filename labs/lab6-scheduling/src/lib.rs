//! # Lab 6: scheduling two VMs
//!
//! One hypervisor thread, two VMs, one vCPU each: the thread runs one vCPU at a time with
//! `KVM_RUN` until its slice ends, then switches to the other. A slice ends on a timer (a POSIX
//! timer's signal to this thread gets the vCPU out of `KVM_RUN`, as the watchdog's kick does), or,
//! in the cooperative policy, at the guest's next console exit. You write the four functions
//! marked `TODO(lab6)`: create a VM from your labs 1 to 3, choose the next slice, run one slice,
//! and the scheduler's loop. The worker guest (`guest/schedule/worker.rs`), the slice timer and
//! everything else is given. Book: "Lab 6: Scheduling two VMs".
//!
//! Run it with `cargo run -p kvm-hello -- --lab schedule --policy round-robin`; check it with
//! `cargo grade lab6`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

use std::io;
use std::time::Duration;

mod timer;
pub use timer::{SliceTimer, slice_signal, thread_cpu_time};

pub use std::io::Write;

pub use kit_common::{CONSOLE_PORT, GUEST_MEMORY_SIZE, Mode};
pub use kvm_bindings::{kvm_regs, kvm_sregs};
pub use kvm_ioctls::{VcpuExit, VcpuFd};
pub use lab1_memory::{Lab1Error, Vcpu, Vm};
pub use lab2_paging::Lab2Error;
pub use lab4_exit_loop::{ExitCounts, UnexpectedExit};
pub use vm_memory::GuestMemoryMmap;

// ANCHOR: constants
/// Where the host writes a VM's name (one ASCII letter) before its first run; the guest reads it.
pub const NAME_ADDR: u64 = 0x500;
/// Where the guest stores its progress (u64): the rounds of work it has done.
pub const PROGRESS_ADDR: u64 = 0x508;
/// The two VMs' names.
pub const VM_NAMES: [u8; 2] = [b'A', b'B'];
// ANCHOR_END: constants

/// The labs 1 to 3 functions a VM is built with: yours (kvm-hello fills this from its lab table).
#[derive(Debug, Clone, Copy)]
#[allow(clippy::type_complexity)]
pub struct Base {
    /// Lab 1: the VM and its memory.
    pub vm_init: fn(usize) -> Result<Vm, Lab1Error>,
    /// Lab 1: the vCPU.
    pub vcpu_init: fn(&Vm) -> Result<Vcpu<'_>, Lab1Error>,
    /// Lab 1: the image at guest physical 0.
    pub load_image: fn(&GuestMemoryMmap, &[u8]) -> Result<(), Lab1Error>,
    /// Lab 2: the long-mode page tables; returns CR3.
    pub setup_long_mode_page_tables: fn(&GuestMemoryMmap) -> Result<u64, Lab2Error>,
    /// Lab 3: the special registers.
    pub special_registers: fn(Mode, kvm_sregs, u64) -> kvm_sregs,
    /// Lab 3: the general registers.
    pub general_registers: fn(Mode, usize) -> kvm_regs,
}

// ANCHOR: policy
/// How the scheduler shares the thread between the two VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Switch at every console exit of the running guest; no timer.
    Cooperative,
    /// Take turns, one quantum of guest time each.
    RoundRobin {
        /// The slice length.
        quantum: Duration,
    },
    /// Proportional shares: over a run, VM i gets `shares[i]` percent of the guest time. Slices
    /// are one quantum long; the VM that is furthest behind its share runs next.
    Weighted {
        /// The slice length.
        quantum: Duration,
        /// Percentages; they add up to 100.
        shares: [u32; 2],
    },
}
// ANCHOR_END: policy

impl Policy {
    /// `cooperative`, `round-robin`, `weighted`: the name on kvm-hello's command line.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Cooperative => "cooperative",
            Policy::RoundRobin { .. } => "round-robin",
            Policy::Weighted { .. } => "weighted",
        }
    }
}

// ANCHOR: account
/// What one VM got and did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// Guest time: the CPU time this thread spent inside `KVM_RUN` for this VM.
    pub guest_time: Duration,
    /// Slices run.
    pub slices: u64,
    /// Exits, by reason (an interrupted `KVM_RUN` is no exit).
    pub exits: ExitCounts,
    /// The guest's own progress, read at `PROGRESS_ADDR` at the end of each slice.
    pub progress: u64,
}
// ANCHOR_END: account

/// One VM of the pair: its memory, its vCPU, its half-written console line and its account.
#[derive(Debug)]
pub struct GuestVm {
    /// `A` or `B`: the guest prints it, the host prefixes its lines with it.
    pub name: u8,
    /// The vCPU (declared before `vm`: dropped first).
    pub vcpu: VcpuFd,
    /// The VM and its memory.
    pub vm: Vm,
    /// What the guest printed since its last newline.
    pub line: Vec<u8>,
    /// Guest time, slices, exits, progress.
    pub account: Account,
}

/// How each line of VM `name` starts on the console: `[A] `. (A function of the name, not of the
/// `GuestVm`: while an exit's data borrows the vCPU, the VM's `name` field can still be read.)
pub fn line_prefix(name: u8) -> String {
    format!("[{}] ", char::from(name))
}

/// Why a slice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceEnd {
    /// The slice timer went off (`KVM_RUN` returned EINTR).
    Timer,
    /// The guest wrote to the console (the cooperative policy).
    Console,
}

/// The scheduler's decision: which VM runs, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// 0 or 1.
    pub vm: usize,
    /// The slice's guest time, or None: until the guest's next console exit.
    pub length: Option<Duration>,
}

/// One slice, as the schedule records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The VM that ran, 0 or 1.
    pub vm: usize,
    /// When it started, from the start of the schedule (wall clock).
    pub start: Duration,
    /// How long it lasted (wall clock).
    pub wall: Duration,
    /// The guest time it gave the VM.
    pub guest: Duration,
    /// The exits it had.
    pub exits: u64,
    /// The VM's progress at its end.
    pub progress: u64,
    /// Why it ended.
    pub ended_by: SliceEnd,
}

impl Slice {
    /// The slice of VM `vm` from the account it had `before` to the one it has `after`.
    pub fn between(
        vm: usize,
        before: &Account,
        after: &Account,
        start: Duration,
        wall: Duration,
        ended_by: SliceEnd,
    ) -> Slice {
        Slice {
            vm,
            start,
            wall,
            guest: after.guest_time.saturating_sub(before.guest_time),
            exits: after.exits.total().saturating_sub(before.exits.total()),
            progress: after.progress,
            ended_by,
        }
    }
}

/// The functions the scheduler's loop is built from: yours (the grader swaps one to check it).
#[derive(Debug, Clone, Copy)]
#[allow(clippy::type_complexity)]
pub struct Parts {
    /// Chooses the next slice.
    pub next_slice: fn(&Policy, &[Account; 2], Option<usize>) -> Choice,
    /// Runs one slice.
    pub run_slice: fn(&mut GuestVm, Option<Duration>, &mut SliceTimer, &mut dyn Write) -> Result<SliceEnd, Lab6Error>,
}

/// What can go wrong in lab 6.
#[derive(Debug, thiserror::Error)]
pub enum Lab6Error {
    /// Lab 1 failed.
    #[error("{0}")]
    Lab1(#[from] Lab1Error),
    /// Lab 2 failed.
    #[error("{0}")]
    Lab2(#[from] Lab2Error),
    /// A register ioctl was refused.
    #[error("{ioctl} failed: {source}")]
    Registers {
        /// The ioctl.
        ioctl: &'static str,
        /// What KVM said.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be read or written.
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// `KVM_RUN` failed with something other than the slice timer's EINTR.
    #[error("KVM_RUN failed: {0}")]
    Run(#[source] kvm_ioctls::Error),
    /// An exit the worker guest never causes.
    #[error("{0}")]
    Unexpected(UnexpectedExit),
    /// The output could not be written.
    #[error("cannot write the guest's output: {0}")]
    Console(#[source] io::Error),
    /// The slice timer could not be created or set.
    #[error("slice timer: {0}")]
    Timer(#[source] io::Error),
}

/// Reads the guest's progress counter.
pub fn read_progress(memory: &GuestMemoryMmap) -> Result<u64, Lab6Error> {
    use vm_memory::{Bytes, GuestAddress};
    Ok(memory.read_obj::<u64>(GuestAddress(PROGRESS_ADDR))?)
}

// ANCHOR: stub_create_guest_vm
// TODO(lab6): a VM of the pair, from your labs 1 to 3 through `base`: the VM and its memory, its
// vCPU (keep its `fd`), the image, the long-mode page tables, the special and general registers
// (KVM_GET_SREGS first, as in kvm-hello's session), then the VM's name at `NAME_ADDR`. Its line
// buffer and account start empty.
/// Creates VM `name` running `image` in long mode.
#[cfg(not(feature = "solution"))]
pub fn create_guest_vm(base: &Base, name: u8, image: &[u8]) -> Result<GuestVm, Lab6Error> {
    let _ = (base, name, image);
    todo!("lab6 create_guest_vm (labs/lab6-scheduling/src/lib.rs; book: Lab 6, Scheduling two VMs)")
}
// ANCHOR_END: stub_create_guest_vm

// ANCHOR: stub_next_slice
// TODO(lab6): the scheduler's decision, a pure function. `last` is the VM that ran the previous
// slice (None before the first). Cooperative: the other VM, until its next console exit (length
// None). Round robin: the other VM, one quantum. Weighted: the VM furthest behind its share, one
// quantum: VM 0 when guest_time[0] / shares[0] <= guest_time[1] / shares[1] (compare the cross
// products, no division).
// Graded (lab6_next_slice_turns): next_slice: with Cooperative and RoundRobin the next slice goes
// to the VM that did not run last, and to VM 0 when none has run yet (last = None); cooperative
// slices have no length (None), round-robin slices last one quantum, whatever the guest times.
// Graded (lab6_next_slice_weighted): next_slice with Weighted gives one quantum to VM 0 when
// guest_time[0] / shares[0] <= guest_time[1] / shares[1], else to VM 1 (compare the cross products,
// no division; a tie goes to VM 0).
/// Which VM runs next, and for how long.
#[cfg(not(feature = "solution"))]
pub fn next_slice(policy: &Policy, accounts: &[Account; 2], last: Option<usize>) -> Choice {
    let _ = (policy, accounts, last);
    todo!("lab6 next_slice (labs/lab6-scheduling/src/lib.rs; book: Lab 6, Scheduling two VMs)")
}
// ANCHOR_END: stub_next_slice

// ANCHOR: stub_run_slice
// TODO(lab6): run `vm` for one slice. With a length, arm `timer` for it; then `KVM_RUN` until the
// slice ends: EINTR is the timer (not an error); a console OUT goes into the VM's own `line`,
// and each complete line is written to `console` after `line_prefix(vm.name)`; with no length the
// slice ends after the first console exit. Count every exit in the account, add the CPU time of
// each `KVM_RUN` (`thread_cpu_time` before and after) to its guest time, count the slice, read the
// progress at its end, and disarm the timer on every path.
// Graded (lab6_cooperative_alternates): Cooperative: each slice runs until its VM's first console
// exit, then the other VM runs: the VMs alternate at every console exit.
// Graded (lab6_round_robin_quantum): RoundRobin: run_slice arms the slice timer with the quantum
// before its first KVM_RUN and ends the slice only at the timer's EINTR, so each slice lasts one
// quantum of the thread's CPU time (never more than 1 ms short of it; the median at most 12 ms
// over it), and disarms the timer after. The CPU time of every KVM_RUN is guest time, also that of
// the one the timer interrupted: in a slice without an exit it is all the guest time there is.
// Graded (lab6_state_survives_switches): A VM goes on where it stopped: its progress only grows
// from one of its slices to the next, and every line its guest prints appears once, whole, in
// order, with its VM's prefix (a half-written line waits in the VM's own buffer across switches).
/// Runs one slice of `vm`; returns why it ended.
#[cfg(not(feature = "solution"))]
pub fn run_slice(
    vm: &mut GuestVm,
    length: Option<Duration>,
    timer: &mut SliceTimer,
    console: &mut dyn Write,
) -> Result<SliceEnd, Lab6Error> {
    let _ = (vm, length, timer, console);
    todo!("lab6 run_slice (labs/lab6-scheduling/src/lib.rs; book: Lab 6, Scheduling two VMs)")
}
// ANCHOR_END: stub_run_slice

// ANCHOR: stub_run_schedule
// TODO(lab6): the scheduler's loop on this one thread: create the `SliceTimer`, then until the two
// VMs' guest time together reaches `duration`: `parts.next_slice`, `parts.run_slice` on that VM,
// and record the slice (`Slice::between` the VM's account before and after, with the wall-clock
// start and length). Call the functions through `parts`, not directly.
// Graded (lab6_both_progress): Under every policy both VMs run slices, gain guest time and
// progress: each slice adds the CPU time of its KVM_RUN calls to its VM's guest time (every slice:
// one ended by its console exit, one the timer interrupted after exits or without any; never more
// than the thread's CPU time in it), counts its exits (by reason, also an exit the worker never
// causes, which ends run_schedule with its error) and itself in the VM's account, and reads the
// VM's progress at its end.
// Graded (lab6_weighted_shares): Weighted, with shares drawn for each run: each VM's share of the
// guest time in the accounts is within 4 points of its request; the guests confirm the accounts:
// no slice adds more guest time than the thread's CPU time in it, and the two guests' best work
// per ms of the guest time their accounts got in a slice is within a factor of 1.5.
// Graded (lab6_ends_at_duration): run_schedule loops while the two VMs' guest time together is
// below the duration and stops at once when it reaches it.
/// Runs the pair for `duration` of guest time; returns every slice in order.
#[cfg(not(feature = "solution"))]
pub fn run_schedule(
    parts: &Parts,
    vms: &mut [GuestVm; 2],
    policy: &Policy,
    duration: Duration,
    console: &mut dyn Write,
) -> Result<Vec<Slice>, Lab6Error> {
    let _ = (parts, vms, policy, duration, console);
    todo!("lab6 run_schedule (labs/lab6-scheduling/src/lib.rs; book: Lab 6, Scheduling two VMs)")
}
// ANCHOR_END: stub_run_schedule

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
