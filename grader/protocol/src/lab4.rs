//! Lab 4: exits handled one at a time, the result slot and checks, and guest runs through the
//! exit loop.

use serde::{Deserialize, Serialize};

use crate::{Outcome, Request};

/// One exit to hand to `handle_exit`, made up by the judge (no KVM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// `VcpuExit::IoOut(port, data)`.
    IoOut {
        /// The port.
        port: u16,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// `VcpuExit::IoIn(port, data)` with `len` bytes to fill.
    IoIn {
        /// The port.
        port: u16,
        /// Bytes to read.
        len: usize,
    },
    /// `VcpuExit::MmioRead(addr, data)` with `len` bytes to fill.
    MmioRead {
        /// The guest physical address.
        addr: u64,
        /// The access size.
        len: usize,
    },
    /// `VcpuExit::Hlt`.
    Hlt,
    /// `VcpuExit::Shutdown`.
    Shutdown,
    /// An exit of no reason the lab names (`VcpuExit::IrqWindowOpen`: KVM's interrupt window,
    /// which a VMM that asks for it gets on every host).
    Other,
}

/// Hand `exits`, in this order, to `handle_exit` with one console and one set of counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandleExits {
    /// The exits.
    pub exits: Vec<Exit>,
}

impl Request for HandleExits {
    const NAME: &'static str = "lab4.handle_exits";
    type Reply = Handled;
}

/// What `handle_exit` made of the exits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handled {
    /// What it returned for each exit, in order.
    pub results: Vec<Result<Flow, LoopError>>,
    /// Everything written to the console.
    pub console: Vec<u8>,
    /// The counts afterwards.
    pub counts: Counts,
}

/// The lab's `Flow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flow {
    /// Enter the guest again.
    Continue,
    /// Leave the loop.
    Halt,
}

/// The lab's `UnexpectedExit` (a given type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnexpectedExit {
    /// OUT to a port other than the console.
    IoOut {
        /// The port.
        port: u16,
        /// Bytes written.
        len: usize,
    },
    /// IN from any port.
    IoIn {
        /// The port.
        port: u16,
        /// Bytes to read.
        len: usize,
    },
    /// An MMIO read.
    MmioRead {
        /// The guest physical address.
        addr: u64,
        /// The access size.
        len: usize,
    },
    /// An MMIO write.
    MmioWrite {
        /// The guest physical address.
        addr: u64,
        /// The access size.
        len: usize,
    },
    /// A triple fault.
    Shutdown,
    /// `KVM_EXIT_INTERNAL_ERROR`.
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY`.
    FailEntry {
        /// The hardware's reason.
        reason: u64,
    },
    /// Any other exit, by name.
    Other(String),
}

/// The lab's `ExitLoopError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoopError {
    /// `ExitLoopError::Run`: KVM_RUN failed with this errno (and this text).
    Run {
        /// The OS error number.
        errno: i32,
        /// As the error displays.
        text: String,
    },
    /// `ExitLoopError::Unexpected`.
    Unexpected(UnexpectedExit),
    /// `ExitLoopError::Console`, as it displays.
    Console(String),
}

/// The lab's `ExitCounts`, as the lab filled them in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// OUT exits.
    pub io_out: u64,
    /// IN exits.
    pub io_in: u64,
    /// HLT exits.
    pub hlt: u64,
    /// MMIO exits.
    pub mmio: u64,
    /// Triple faults.
    pub shutdown: u64,
    /// Every other exit.
    pub other: u64,
}

impl Counts {
    /// All exits (saturating: the numbers come from lab code).
    pub fn total(&self) -> u64 {
        [self.io_in, self.hlt, self.mmio, self.shutdown, self.other]
            .into_iter()
            .fold(self.io_out, u64::saturating_add)
    }
}

/// Write `memory` into fresh, zeroed guest memory, then `read_result_slot` at each width.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadResultSlot {
    /// The words to write first.
    pub memory: Vec<(u64, u64)>,
    /// The widths, in this order.
    pub widths: Vec<usize>,
}

impl Request for ReadResultSlot {
    const NAME: &'static str = "lab4.read_result_slot";
    type Reply = Vec<Outcome<u64>>;
}

/// `check_results(rax, memory)` for each pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResults {
    /// (rax, memory value) pairs, in this order.
    pub cases: Vec<(u64, u64)>,
}

impl Request for CheckResults {
    const NAME: &'static str = "lab4.check_results";
    type Reply = Vec<Result<(), ResultError>>;
}

/// The lab's `ResultError` (a given type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultError {
    /// RAX is not 42.
    Rax(u64),
    /// The memory is not 42.
    Memory(u64),
    /// Any other error, as it displays.
    Other(String),
}

/// The CPU modes of a guest run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// 16-bit real mode.
    Real,
    /// 32-bit protected mode, no paging.
    Protected,
    /// 32-bit protected mode with 32-bit paging.
    Paged32,
    /// 64-bit long mode.
    Long,
}

/// Run `image` in `mode` as kvm-hello does (labs 1 to 4), within `timeout_ms` of vCPU time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunGuest {
    /// The CPU mode.
    pub mode: Mode,
    /// The flat image, loaded at guest physical 0.
    pub image: Vec<u8>,
    /// The watchdog's limit, in milliseconds of vCPU time.
    pub timeout_ms: u64,
    /// Record every exit the loop gives its trace callback.
    pub trace: bool,
}

impl Request for RunGuest {
    const NAME: &'static str = "lab4.run_guest";
    type Reply = GuestRun;
}

/// What a guest run left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestRun {
    /// kvm-hello's exit status for the run (0: it succeeded).
    pub status: i32,
    /// Why it failed ("" when it succeeded).
    pub message: String,
    /// What the guest printed, as the console received it.
    pub output: Vec<u8>,
    /// The counts the loop filled in.
    pub counts: Counts,
    /// RAX when the guest stopped (KVM_GET_REGS).
    pub rax: Option<u64>,
    /// The result slot as `read_result_slot` read it.
    pub memory_0x400: Option<u64>,
    /// Every exit the loop gave its trace callback (only when asked for).
    pub traced: Option<Vec<TracedExit>>,
}

/// One exit the trace callback saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedExit {
    /// `io out`, `io in`, `hlt`, `mmio`, `shutdown`, or the exit's name.
    pub kind: String,
    /// The port of an I/O exit.
    pub port: Option<u16>,
    /// The bytes of an OUT.
    pub data: Vec<u8>,
}

/// Give `run_until_halt` a vCPU whose KVM_RUN fails at once with EINTR (`immediate_exit`),
/// with `rax` in its RAX and KVM asked to copy the registers into kvm_run on every return from
/// KVM_RUN (`KVM_SYNC_X86_REGS`), and wait at most `wait_ms` for it to return.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailingKvmRun {
    /// How long to wait, in milliseconds.
    pub wait_ms: u64,
    /// The vCPU's RAX.
    pub rax: u64,
}

impl Request for FailingKvmRun {
    const NAME: &'static str = "lab4.failing_kvm_run";
    type Reply = FailedKvmRun;
}

/// What `run_until_halt` did with a KVM_RUN that fails.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedKvmRun {
    /// What it returned, or `None` when it had not returned in time.
    pub returned: Option<Result<(), LoopError>>,
    /// RAX in kvm_run's synced registers afterwards (cleared before the call; KVM writes it
    /// when KVM_RUN returns, even with EINTR): `None` when it had not returned.
    pub synced_rax: Option<u64>,
}
