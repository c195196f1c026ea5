//! # Lab 4: the exit loop
//!
//! kvm-hello-world's `run_vm`: enter the guest with `KVM_RUN`, handle each exit, print what the
//! guest writes to port 0xE9, stop at HLT, then check the 42s. You write the four functions
//! marked `TODO(lab4)`; everything else is given. Book: "Lab 4: The exit loop".
//!
//! Check your work with `cargo grade lab4`; run the whole VMM with `cargo run -p kvm-hello`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

// The checks that run whole guests (through kvm-hello, with labs 1 to 3) state their rules here:
// Graded (lab4_hello_long_mode): With labs 1 to 3, run_until_halt runs the long-mode hello guest to
// its HLT in exactly 15 exits (14 OUTs and the HLT), printing "Hello, world!" and a newline, with
// 42 in RAX and at 0x400; a guest the grader makes for the run is served the same way.
// Graded (lab4_hello_real_mode): With labs 1 to 3, run_until_halt runs the real-mode hello guest to
// its HLT in exactly 15 exits, printing "Hello, world!" and a newline, with 42 in RAX and at 0x400
// (2 bytes wide); a guest the grader makes for the run is served the same way.
// Graded (e2e_long_mode): `kvm-hello --mode long` ends with status 0, prints exactly "Hello,
// world!" and a newline on stdout, and its summary line reads "guest halted after 15 exits (io 14,
// hlt 1); rax = 42, memory[0x400] = 42".
// Graded (e2e_protected_mode): `kvm-hello --mode protected` ends with status 0, prints exactly
// "Hello, world!" and a newline, and reports 15 exits (io 14, hlt 1) and the two 42s.
// Graded (e2e_real_mode): `kvm-hello --mode real` ends with status 0, prints exactly "Hello,
// world!" and a newline, and reports 15 exits (io 14, hlt 1) and the two 42s.
// Graded (e2e_paged32_mode): `kvm-hello --mode paged32` ends with status 0, prints exactly "Hello,
// world!" and a newline, and reports 15 exits (io 14, hlt 1) and the two 42s; on a host that
// refuses 32-bit paging (PVM) this check is not run.
// Graded (e2e_json_report): `kvm-hello --json` ends with status 0 and prints one JSON object that
// agrees with the run: mode "long", the greeting as output, 15 exits (io 14, hlt 1), rax and
// memory_0x400 42, ok true and status 0.

use std::fmt;
pub use std::io::Write;

pub use kit_common::{CONSOLE_PORT, EXPECTED_RESULT, RESULT_ADDR};
pub use kvm_ioctls::{VcpuExit, VcpuFd};
pub use vm_memory::GuestMemoryMmap;

// ANCHOR: counts
/// The guest's exits, counted by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExitCounts {
    /// OUT instructions (`KVM_EXIT_IO`, direction out).
    pub io_out: u64,
    /// IN instructions (`KVM_EXIT_IO`, direction in).
    pub io_in: u64,
    /// HLT instructions (`KVM_EXIT_HLT`).
    pub hlt: u64,
    /// Accesses to guest physical addresses with no memory behind them (`KVM_EXIT_MMIO`).
    pub mmio: u64,
    /// Triple faults (`KVM_EXIT_SHUTDOWN`).
    pub shutdown: u64,
    /// Every other exit reason.
    pub other: u64,
}

impl ExitCounts {
    /// All exits: every return from `KVM_RUN` with an exit reason.
    pub fn total(&self) -> u64 {
        // Saturating: the counts come from lab code, and a report must survive any value.
        [self.io_in, self.hlt, self.mmio, self.shutdown, self.other]
            .into_iter()
            .fold(self.io_out, u64::saturating_add)
    }

    /// Port I/O exits, in and out.
    pub fn io(&self) -> u64 {
        self.io_out.saturating_add(self.io_in)
    }
}

// ANCHOR_END: counts

/// What the loop does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Enter the guest again.
    Continue,
    /// The guest halted: leave the loop.
    Halt,
}

/// An exit the VMM does not serve, described for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnexpectedExit {
    /// OUT to a port other than the console.
    IoOut {
        /// The port.
        port: u16,
        /// Bytes written (size x count).
        len: usize,
    },
    /// IN from any port: the console is output-only.
    IoIn {
        /// The port.
        port: u16,
        /// Bytes to read (size x count).
        len: usize,
    },
    /// A read of a guest physical address with no memory behind it.
    MmioRead {
        /// The guest physical address.
        addr: u64,
        /// The access size.
        len: usize,
    },
    /// A write to a guest physical address with no memory behind it.
    MmioWrite {
        /// The guest physical address.
        addr: u64,
        /// The access size.
        len: usize,
    },
    /// `KVM_EXIT_SHUTDOWN`: a triple fault.
    Shutdown,
    /// `KVM_EXIT_INTERNAL_ERROR`: KVM could not emulate or deliver something.
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY`: the CPU refused the vCPU state.
    FailEntry {
        /// The hardware's entry failure reason.
        reason: u64,
    },
    /// Any other exit, by its kvm-ioctls name.
    Other(String),
}

impl UnexpectedExit {
    /// Describes an exit (given: use it for every exit your loop does not serve).
    pub fn from_exit(exit: &VcpuExit<'_>) -> UnexpectedExit {
        match exit {
            VcpuExit::IoOut(port, data) => UnexpectedExit::IoOut {
                port: *port,
                len: data.len(),
            },
            VcpuExit::IoIn(port, data) => UnexpectedExit::IoIn {
                port: *port,
                len: data.len(),
            },
            VcpuExit::MmioRead(addr, data) => UnexpectedExit::MmioRead {
                addr: *addr,
                len: data.len(),
            },
            VcpuExit::MmioWrite(addr, data) => UnexpectedExit::MmioWrite {
                addr: *addr,
                len: data.len(),
            },
            VcpuExit::Shutdown => UnexpectedExit::Shutdown,
            VcpuExit::InternalError => UnexpectedExit::InternalError,
            VcpuExit::FailEntry(reason, _) => UnexpectedExit::FailEntry { reason: *reason },
            other => UnexpectedExit::Other(format!("{other:?}")),
        }
    }
}

impl fmt::Display for UnexpectedExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnexpectedExit::IoOut { port, len } => {
                write!(f, "OUT of {len} byte(s) to port {port:#x}, which nothing serves")
            }
            UnexpectedExit::IoIn { port, len } => write!(
                f,
                "IN of {len} byte(s) from port {port:#x}, which nothing serves (the console is output-only)"
            ),
            UnexpectedExit::MmioRead { addr, len } => {
                write!(f, "MMIO read of {len} byte(s) at {addr:#x}, outside guest memory")
            }
            UnexpectedExit::MmioWrite { addr, len } => {
                write!(f, "MMIO write of {len} byte(s) at {addr:#x}, outside guest memory")
            }
            UnexpectedExit::Shutdown => f.write_str("triple fault (KVM_EXIT_SHUTDOWN)"),
            UnexpectedExit::InternalError => f.write_str("KVM internal error (KVM_EXIT_INTERNAL_ERROR)"),
            UnexpectedExit::FailEntry { reason } => {
                write!(f, "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x})")
            }
            UnexpectedExit::Other(name) => write!(f, "unexpected exit {name}"),
        }
    }
}

/// What can go wrong in the exit loop.
#[derive(Debug, thiserror::Error)]
pub enum ExitLoopError {
    /// `KVM_RUN` itself failed (EINTR when the watchdog stopped the vCPU).
    #[error("KVM_RUN failed: {0}")]
    Run(#[source] kvm_ioctls::Error),
    /// The guest made an exit the VMM does not serve.
    #[error("{0}")]
    Unexpected(UnexpectedExit),
    /// The guest's output could not be written.
    #[error("cannot write the guest's output: {0}")]
    Console(#[source] std::io::Error),
}

/// The result checks of kvm-hello-world's `run_vm`. (Equal when the variant and its numbers are,
/// whatever vm-memory's reason: tests compare results.)
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// RAX does not hold 42.
    #[error("wrong result: RAX is {0} ({0:#x}), expected 42")]
    Rax(u64),
    /// The memory at 0x400 does not hold 42.
    #[error("wrong result: memory at 0x400 is {0} ({0:#x}), expected 42")]
    Memory(u64),
    /// The result slot is wider than a u64.
    #[error("cannot read {width} byte(s) at 0x400: wider than 8 bytes")]
    TooWide {
        /// The width asked for.
        width: usize,
    },
    /// The result slot could not be read.
    #[error("cannot read {width} byte(s) at 0x400: {source}")]
    Unreadable {
        /// The width asked for.
        width: usize,
        /// vm-memory's reason.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

impl PartialEq for ResultError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ResultError::Rax(a), ResultError::Rax(b)) | (ResultError::Memory(a), ResultError::Memory(b)) => a == b,
            (ResultError::TooWide { width: a }, ResultError::TooWide { width: b })
            | (ResultError::Unreadable { width: a, .. }, ResultError::Unreadable { width: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for ResultError {}

// ANCHOR: stub_handle_exit
// TODO(lab4): serve one exit and count it in `counts` by reason. An OUT to `CONSOLE_PORT`
// writes all its bytes to `console` (the slice holds size x count bytes; KVM gives string OUT
// one element per exit, but `rep ins` read-ahead and SEV-ES give more); HLT ends the loop. Every other exit is counted,
// then returned as `ExitLoopError::Unexpected(UnexpectedExit::from_exit(&exit))`.
// Graded (lab4_console_output): handle_exit writes every byte of an OUT to CONSOLE_PORT (the whole
// data slice: size x count bytes) to console once, counts the exit once in counts.io_out, and
// answers Flow::Continue.
// Graded (lab4_hlt_ends_the_loop): handle_exit counts a HLT in counts.hlt and answers Flow::Halt.
// Graded (lab4_unexpected_exits): handle_exit counts every other exit under its reason (an OUT to
// another port in io_out, an IN in io_in, MMIO in mmio, a triple fault in shutdown, the rest in
// other), prints nothing of it, and returns
// ExitLoopError::Unexpected(UnexpectedExit::from_exit(&exit)).
// Graded (lab4_string_io): A rep outsb, a 4-byte OUT and a 2-byte OUT to the console print all
// their bytes, in order.
/// Serves one exit; tells the loop whether to continue.
#[cfg(not(feature = "solution"))]
pub fn handle_exit(
    exit: VcpuExit<'_>,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
) -> Result<Flow, ExitLoopError> {
    let _ = (exit, console, counts);
    todo!("lab4 handle_exit (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)")
}
// ANCHOR_END: stub_handle_exit

// ANCHOR: stub_run_until_halt
// TODO(lab4): call `vcpu.run()` (KVM_RUN: the guest runs until its next exit) until
// `handle_exit` says `Flow::Halt`. Give every exit to `trace` before handling it (kvm-hello
// --trace prints them). A failed KVM_RUN is `ExitLoopError::Run`.
// Graded (lab4_stops_at_hlt): run_until_halt returns at the first HLT: nothing the guest would do
// after it runs.
// Graded (lab4_unexpected_exit_ends_the_run): An OUT to a port other than 0xE9 is counted in io_out
// and ends the run with ExitLoopError::Unexpected naming its port; the run does not go on as if the
// guest had halted.
// Graded (lab4_trace_every_exit): run_until_halt calls trace(&exit) exactly once for every exit,
// before handling it.
// Graded (lab4_kvm_run_errors): run_until_halt returns a failed KVM_RUN at once as
// ExitLoopError::Run(the ioctl's error), without retrying it (EINTR included).
/// Runs the guest until it halts, writing its console output and counting its exits.
#[cfg(not(feature = "solution"))]
pub fn run_until_halt(
    vcpu: &mut VcpuFd,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    trace: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), ExitLoopError> {
    let _ = (vcpu, console, counts, trace);
    todo!("lab4 run_until_halt (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)")
}
// ANCHOR_END: stub_run_until_halt

// ANCHOR: stub_read_result_slot
// TODO(lab4): read the guest's result: `width` bytes (2, 4 or 8: the mode's word size) at
// `RESULT_ADDR`, little-endian, through vm-memory. kvm-hello-world does `memcpy(&memval, ...)`.
// A width above 8 does not fit a u64: `ResultError::TooWide` (kvm-hello never asks for one).
// Graded (lab4_result_slot): read_result_slot reads exactly width bytes (2, 4 or 8) at RESULT_ADDR,
// little-endian, and returns them zero-extended to a u64.
/// The value the guest stored at 0x400.
#[cfg(not(feature = "solution"))]
pub fn read_result_slot(memory: &GuestMemoryMmap, width: usize) -> Result<u64, ResultError> {
    let _ = (memory, width);
    todo!("lab4 read_result_slot (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)")
}
// ANCHOR_END: stub_read_result_slot

// ANCHOR: stub_check_results
// TODO(lab4): kvm-hello-world's two checks: RAX must be `EXPECTED_RESULT`, then the memory
// value must be too.
// Graded (lab4_check_results): check_results returns ResultError::Rax(rax) when RAX is not
// EXPECTED_RESULT, else ResultError::Memory(memory_value) when the memory value is not, else
// Ok(()): RAX is checked first.
// Graded (lab4_wrong_results_are_caught): A guest that halts with a wrong RAX, a wrong value at
// 0x400, or its result written at another width than its mode's fails the result checks, with the
// wrong value in the message.
/// Checks RAX and the memory at 0x400 after the guest halted.
#[cfg(not(feature = "solution"))]
pub fn check_results(rax: u64, memory_value: u64) -> Result<(), ResultError> {
    let _ = (rax, memory_value);
    todo!("lab4 check_results (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)")
}
// ANCHOR_END: stub_check_results

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
