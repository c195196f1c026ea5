//! # Lab 7: moving a running VM
//!
//! Snapshot a VM, restore it into a fresh one, and move it while it runs: the source sends all of
//! guest memory, then, round after round, the pages the guest wrote meanwhile (KVM's dirty-page
//! log), and when few are left it stops the guest, sends the last ones and the vCPU's state, and
//! the destination resumes it. The two ends are two kvm-hello processes joined by a Unix socket
//! (`wire.rs`: typed records, given). You write the nine functions marked `TODO(lab7)`; the guest
//! (`guest/migrate/pager.rs`), the VM's creation (with your lab 6), the stream and everything
//! else is given. Book: "Lab 7: Moving a running VM".
//!
//! Run it with `cargo run -p kvm-hello -- --lab migrate`; compare with `--no-migration`; check it
//! with `cargo grade lab7`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

use std::io;
use std::time::Duration;

pub mod wire;
pub use wire::{LINK_TIMEOUT, Link, LinkError, Record};

pub use std::io::Write;

pub use kit_common::{CONSOLE_PORT, GUEST_MEMORY_SIZE, Mode};
pub use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
pub use kvm_ioctls::{VcpuExit, VcpuFd};
pub use lab1_memory::{GUEST_MEMORY_SLOT, Lab1Error, Vm};
pub use lab2_paging::Lab2Error;
pub use lab4_exit_loop::{ExitCounts, UnexpectedExit};
pub use lab6_scheduling::{Base, Lab6Error, SliceTimer, thread_cpu_time};
pub use vm_memory::GuestMemoryMmap;

// ANCHOR: constants
/// A page: what the dirty log tracks and what the stream sends.
pub const PAGE_SIZE: usize = 4096;
/// The guest's pages.
pub const GUEST_PAGES: usize = GUEST_MEMORY_SIZE / PAGE_SIZE;
/// The parameter block the host writes before the first run: seed, dirty rate, steps, step
/// length in TSC ticks (u64 each, in that order).
pub const PARAMS_ADDR: u64 = 0x1000;
/// Where the guest stores the steps it has done (u64).
pub const PROGRESS_ADDR: u64 = 0x1020;
/// Where the guest stores its checksum when it is done (u64).
pub const CHECKSUM_ADDR: u64 = 0x1028;
/// A step's length: the guest paces itself on the TSC, so its write rate is the same on any host.
pub const STEP_LENGTH: Duration = Duration::from_millis(1);
/// The guest's working set: 128 pages (512 KiB) from 1 MiB.
pub const WORK_BASE: u64 = 0x10_0000;
/// The working set's pages.
pub const WORK_PAGES: usize = 128;
// ANCHOR_END: constants

// ANCHOR: params
/// What the guest computes: everything it prints follows from these three (the step's length in
/// TSC ticks, which the host measures, only paces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The generator's seed.
    pub seed: u64,
    /// Words the guest writes per step, each in a page its generator picks.
    pub dirty_rate: u64,
    /// Steps before the guest prints its checksum and halts.
    pub steps: u64,
}
// ANCHOR_END: params

/// The migration guest in a VM of its own.
#[derive(Debug)]
pub struct GuestVm {
    /// The vCPU (declared before `vm`: dropped first).
    pub vcpu: VcpuFd,
    /// The VM and its memory.
    pub vm: Vm,
    /// Exits, by reason.
    pub exits: ExitCounts,
    /// Whether the guest has halted (it is done).
    pub halted: bool,
}

// ANCHOR: vcpu_state
/// The vCPU state a move carries (see the book for what else a real VMM carries, and why this
/// guest needs no more): the general registers, the special registers (segments, CR0/CR3/CR4,
/// EFER: the CPU mode and the page tables' root) and the x87/SSE state (the compiled guest keeps
/// values in XMM registers).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VcpuState {
    /// `KVM_GET_REGS`.
    pub regs: kvm_regs,
    /// `KVM_GET_SREGS`.
    pub sregs: kvm_sregs,
    /// `KVM_GET_FPU`.
    pub fpu: kvm_fpu,
}
// ANCHOR_END: vcpu_state

/// A whole VM at one instant: its vCPU and every byte of its memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The vCPU.
    pub vcpu: VcpuState,
    /// Guest physical memory from 0, `GUEST_MEMORY_SIZE` bytes.
    pub memory: Vec<u8>,
}

// ANCHOR: plan
/// When the source stops pre-copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// At most this many pre-copy rounds (the first sends all memory); 0: stop and copy at once.
    pub max_rounds: u32,
    /// Stop when the dirty set is at most this many pages.
    pub stop_pages: usize,
    /// The shortest slice the guest runs between two rounds.
    pub min_slice: Duration,
}
// ANCHOR_END: plan

// ANCHOR: report
/// One pre-copy round, as the report shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// From 1.
    pub number: u32,
    /// Pages sent in it.
    pub pages: usize,
    /// How long sending them took (wall clock).
    pub send_time: Duration,
    /// The guest time the guest then ran.
    pub guest_time: Duration,
    /// The dirty set the log gave after it: the pages still to send.
    pub dirty_after: usize,
}

/// What `migrate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    /// The pre-copy rounds, in order.
    pub rounds: Vec<Round>,
    /// Pages sent in the stop-and-copy round.
    pub stop_copy_pages: usize,
    /// From the guest's stop on the source to the destination's `Resumed`.
    pub downtime: Duration,
}

impl Migration {
    /// Every page sent, stop-and-copy round included.
    pub fn total_pages(&self) -> usize {
        self.rounds.iter().map(|r| r.pages).sum::<usize>() + self.stop_copy_pages
    }
}
// ANCHOR_END: report

/// How a slice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceEnd {
    /// The slice timer went off: `KVM_RUN` returned EINTR, any I/O the guest had started is complete.
    Timer,
    /// The guest halted: it is done.
    Halted,
}

/// The functions `migrate` is built from: yours (the grader swaps one to seed a mistake).
#[derive(Debug, Clone, Copy)]
#[allow(clippy::type_complexity)]
pub struct Parts {
    /// Saves the vCPU's state.
    pub save_vcpu: fn(&VcpuFd) -> Result<VcpuState, Lab7Error>,
    /// Turns the dirty log on.
    pub enable_dirty_log: fn(&Vm) -> Result<(), Lab7Error>,
    /// Reads and clears the dirty log.
    pub take_dirty_pages: fn(&Vm) -> Result<Vec<u64>, Lab7Error>,
    /// Runs the guest for a slice.
    pub run_slice: fn(&mut GuestVm, Option<Duration>, &mut SliceTimer, &mut dyn Write) -> Result<SliceEnd, Lab7Error>,
}

/// What can go wrong in lab 7.
#[derive(Debug, thiserror::Error)]
pub enum Lab7Error {
    /// Lab 1 failed.
    #[error("{0}")]
    Lab1(#[from] Lab1Error),
    /// Lab 2 failed.
    #[error("{0}")]
    Lab2(#[from] Lab2Error),
    /// A vCPU or VM ioctl was refused.
    #[error("{ioctl} failed: {source}")]
    Ioctl {
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
    /// An exit the migration guest never causes.
    #[error("{0}")]
    Unexpected(UnexpectedExit),
    /// The output could not be written.
    #[error("cannot write the guest's output: {0}")]
    Console(#[source] io::Error),
    /// Lab 6 failed (its VM, or the slice timer).
    #[error("{0}")]
    Lab6(#[from] Lab6Error),
    /// The migration stream failed.
    #[error("{0}")]
    Link(#[from] LinkError),
    /// The destination reported a failure of its own.
    #[error("the destination stopped: {message}")]
    Destination {
        /// Its exit status.
        status: u8,
        /// Its line.
        message: String,
    },
    /// The other end sent a record that does not belong here.
    #[error("the migration stream broke its order: {0}")]
    Protocol(String),
}

// ANCHOR: create_vm
/// Lab 6's `create_guest_vm`: a VM built with labs 1 to 3, running an image in long mode.
pub type CreateGuestVm = fn(&Base, u8, &[u8]) -> Result<lab6_scheduling::GuestVm, Lab6Error>;

/// The migration guest in a new VM (given): your lab 6 builds it, then its parameters go in.
pub fn create_vm(
    create_guest_vm: CreateGuestVm,
    base: &Base,
    image: &[u8],
    params: &Params,
) -> Result<GuestVm, Lab7Error> {
    use vm_memory::{Bytes, GuestAddress};
    let built = create_guest_vm(base, b'M', image)?;
    let step_tsc = tsc_ticks(STEP_LENGTH);
    for (i, value) in [params.seed, params.dirty_rate, params.steps, step_tsc]
        .into_iter()
        .enumerate()
    {
        built
            .vm
            .memory
            .write_obj(value, GuestAddress(PARAMS_ADDR + 8 * i as u64))?;
    }
    Ok(GuestVm {
        vcpu: built.vcpu,
        vm: built.vm,
        exits: ExitCounts::default(),
        halted: false,
    })
}
// ANCHOR_END: create_vm

/// The TSC ticks in `length`, measured on this host once per process (given): the guest's TSC
/// runs at the host's rate.
pub fn tsc_ticks(length: Duration) -> u64 {
    static PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let per_second = *PER_SECOND.get_or_init(|| {
        let (start, tsc) = (std::time::Instant::now(), read_tsc());
        std::thread::sleep(Duration::from_millis(20));
        read_tsc().wrapping_sub(tsc) as f64 / start.elapsed().as_secs_f64()
    });
    (per_second * length.as_secs_f64()) as u64
}

fn read_tsc() -> u64 {
    // SAFETY: RDTSC is on every x86-64 CPU and touches no memory.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// A VM with a vCPU and zeroed memory, nothing loaded: where a restore or a destination starts
/// (given).
pub fn empty_vm(base: &Base) -> Result<GuestVm, Lab7Error> {
    let memory_size = GUEST_MEMORY_SIZE;
    let vm = (base.vm_init)(memory_size)?;
    let fd = (base.vcpu_init)(&vm)?.fd;
    Ok(GuestVm {
        vcpu: fd,
        vm,
        exits: ExitCounts::default(),
        halted: false,
    })
}

/// Reads the guest's checksum (meaningful once it has halted).
pub fn read_checksum(memory: &GuestMemoryMmap) -> Result<u64, Lab7Error> {
    use vm_memory::{Bytes, GuestAddress};
    Ok(memory.read_obj::<u64>(GuestAddress(CHECKSUM_ADDR))?)
}

/// Reads the guest's progress: the steps it has done.
pub fn read_progress(memory: &GuestMemoryMmap) -> Result<u64, Lab7Error> {
    use vm_memory::{Bytes, GuestAddress};
    Ok(memory.read_obj::<u64>(GuestAddress(PROGRESS_ADDR))?)
}

// ANCHOR: stub_run_slice
// TODO(lab7): lab 6's slice, for one guest and with a stop condition that matters for a move.
// Nothing to do once `guest.halted`. With a length, arm `timer` for it; then `KVM_RUN` until: EINTR
// (the timer; KVM completed any I/O the guest had started before it returned) gives `Timer`; HLT
// sets `guest.halted` and gives `Halted`; a console OUT goes to `console` and the guest runs on
// (never stop right after it: the OUT is complete only at the next KVM_RUN). Count the exits in
// `guest.exits`; any other exit is `Lab7Error::Unexpected`. Disarm the timer on every path.
/// Runs the guest until its slice ends (`length` of this thread's CPU time) or, with no length,
/// until it halts.
#[cfg(not(feature = "solution"))]
pub fn run_slice(
    guest: &mut GuestVm,
    length: Option<Duration>,
    timer: &mut SliceTimer,
    console: &mut dyn Write,
) -> Result<SliceEnd, Lab7Error> {
    let _ = (guest, length, timer, console);
    todo!("lab7 run_slice (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_run_slice

// ANCHOR: stub_save_vcpu
// TODO(lab7): the vCPU's state, with KVM_GET_REGS, KVM_GET_SREGS and KVM_GET_FPU (`VcpuState`).
// Name the ioctl in the error (`Lab7Error::Ioctl`).
/// Saves what the vCPU needs to resume elsewhere.
#[cfg(not(feature = "solution"))]
pub fn save_vcpu(vcpu: &VcpuFd) -> Result<VcpuState, Lab7Error> {
    let _ = vcpu;
    todo!("lab7 save_vcpu (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_save_vcpu

// ANCHOR: stub_restore_vcpu
// TODO(lab7): put `state` into `vcpu`: the special registers first (they set the CPU mode the
// general ones are read in), then the general registers, then the FPU.
/// Loads a saved state into a vCPU.
#[cfg(not(feature = "solution"))]
pub fn restore_vcpu(vcpu: &VcpuFd, state: &VcpuState) -> Result<(), Lab7Error> {
    let _ = (vcpu, state);
    todo!("lab7 restore_vcpu (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_restore_vcpu

// ANCHOR: stub_snapshot
// TODO(lab7): a snapshot of a stopped guest: its vCPU (`save_vcpu`) and a copy of all of its memory.
/// The whole VM at this instant.
#[cfg(not(feature = "solution"))]
pub fn snapshot(guest: &GuestVm) -> Result<Snapshot, Lab7Error> {
    let _ = guest;
    todo!("lab7 snapshot (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_snapshot

// ANCHOR: stub_restore_snapshot
// TODO(lab7): a fresh VM (`empty_vm`), the snapshot's memory written into it, its vCPU restored
// (`restore_vcpu`). Nothing else: the page tables and the parameters are in the memory already.
// Graded (lab7_snapshot_round_trip): restore_snapshot gives a new VM whose vCPU, as save_vcpu
// reads it, equals the snapshot's bit for bit (general registers, special registers, FPU), with
// all of the snapshot's memory: the restored guest ends with the checksum of an unmoved run.
/// A new VM that resumes where the snapshot was taken.
#[cfg(not(feature = "solution"))]
pub fn restore_snapshot(base: &Base, snapshot: &Snapshot) -> Result<GuestVm, Lab7Error> {
    let _ = (base, snapshot);
    todo!("lab7 restore_snapshot (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_restore_snapshot

// ANCHOR: stub_enable_dirty_log
// TODO(lab7): register the memory slot again (same slot, same memory) with the flag
// KVM_MEM_LOG_DIRTY_PAGES: from then on KVM records every page the guest writes.
/// Turns on KVM's dirty-page log for the guest's memory.
#[cfg(not(feature = "solution"))]
pub fn enable_dirty_log(vm: &Vm) -> Result<(), Lab7Error> {
    let _ = vm;
    todo!("lab7 enable_dirty_log (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_enable_dirty_log

// ANCHOR: stub_take_dirty_pages
// TODO(lab7): KVM_GET_DIRTY_LOG on the slot (`VmFd::get_dirty_log`): one bit per page, set for
// each page written since the last call (the call clears them). Return the page numbers, in order.
// Graded (lab7_dirty_log): take_dirty_pages returns, in increasing order, the number of every
// page the guest wrote since the last call; on a slot registered without
// KVM_MEM_LOG_DIRTY_PAGES it returns KVM's error.
/// The pages the guest wrote since the last call.
#[cfg(not(feature = "solution"))]
pub fn take_dirty_pages(vm: &Vm) -> Result<Vec<u64>, Lab7Error> {
    let _ = vm;
    todo!("lab7 take_dirty_pages (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_take_dirty_pages

// ANCHOR: stub_migrate
// TODO(lab7): the source. Send `Hello`, turn the dirty log on, then pre-copy: round 1 sends every
// page, each later round the dirty set (a `Page` record each, then `RoundEnd`). After each round
// the guest runs one slice (`parts.run_slice`) as long as sending took, at least
// `plan.min_slice`, and the log gives the next dirty set. Stop when it has at most
// `plan.stop_pages` pages, after `plan.max_rounds` rounds, or when the guest halts. Then
// stop-and-copy: the last dirty set, `Vcpu` (`parts.save_vcpu`), `Resume`, and wait for
// `Resumed`: the downtime runs from the stop to it. Call the functions through `parts`.
// Graded (lab7_move_fast_writer): A moved guest prints exactly the lines and the checksum of an
// unmoved run, even when it writes faster than the rounds can send: the stop-and-copy round
// sends the pages of one last dirty log read after the guest stopped.
// Graded (lab7_rounds_converge): Round 1 sends all 512 pages; each later round sends the dirty
// set the log gave after the one before; pre-copy stops when that set has at most
// plan.stop_pages pages or after plan.max_rounds rounds, and the stop-and-copy round sends the
// last dirty set.
/// Moves `guest` to the destination at the other end of `link`.
#[cfg(not(feature = "solution"))]
pub fn migrate(
    parts: &Parts,
    guest: &mut GuestVm,
    plan: &Plan,
    link: &mut Link,
    console: &mut dyn Write,
) -> Result<Migration, Lab7Error> {
    let _ = (parts, guest, plan, link, console);
    todo!("lab7 migrate (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_migrate

// ANCHOR: stub_receive
// TODO(lab7): the destination. The first record is `Hello` (its memory size must be
// GUEST_MEMORY_SIZE); build an `empty_vm`, write each `Page` where it belongs, keep the last
// `Vcpu` state and, at `Resume`, restore it (`restore_vcpu`) and return the VM. Any other
// record, or a page outside memory, is a `Lab7Error::Protocol`.
/// Receives a migrating guest; returns it ready to run.
#[cfg(not(feature = "solution"))]
pub fn receive(base: &Base, link: &mut Link) -> Result<GuestVm, Lab7Error> {
    let _ = (base, link);
    todo!("lab7 receive (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
}
// ANCHOR_END: stub_receive

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
