//! # Lab 4: the exit loop
//!
//! kvm-hello-world's `run_vm`: enter the guest with `KVM_RUN`, handle each exit, print what the
//! guest writes to port 0xE9, stop at HLT, then check the 42s. You write the four functions
//! marked `TODO(lab4)`; everything else is given. Book: "Lab 4: The exit loop".
//!
//! Check your work with `cargo grade lab4`; run the whole VMM with `cargo run -p kvm-hello`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

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

// TODO(lab4): serve one exit and count it in `counts` by reason. An OUT to `CONSOLE_PORT`
// writes all its bytes to `console` (the slice holds size x count bytes; KVM gives string OUT
// one element per exit, but `rep ins` read-ahead and SEV-ES give more); HLT ends the loop. Every other exit is counted,
// then returned as `ExitLoopError::Unexpected(UnexpectedExit::from_exit(&exit))`.
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

// TODO(lab4): call `vcpu.run()` (KVM_RUN: the guest runs until its next exit) until
// `handle_exit` says `Flow::Halt`. Give every exit to `trace` before handling it (kvm-hello
// --trace prints them). A failed KVM_RUN is `ExitLoopError::Run`.
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

// TODO(lab4): read the guest's result: `width` bytes (2, 4 or 8: the mode's word size) at
// `RESULT_ADDR`, little-endian, through vm-memory. kvm-hello-world does `memcpy(&memval, ...)`.
/// The value the guest stored at 0x400.
#[cfg(not(feature = "solution"))]
pub fn read_result_slot(memory: &GuestMemoryMmap, width: usize) -> Result<u64, ResultError> {
    let _ = (memory, width);
    todo!("lab4 read_result_slot (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)")
}

// TODO(lab4): kvm-hello-world's two checks: RAX must be `EXPECTED_RESULT`, then the memory
// value must be too.
/// Checks RAX and the memory at 0x400 after the guest halted.
#[cfg(not(feature = "solution"))]
pub fn check_results(rax: u64, memory_value: u64) -> Result<(), ResultError> {
    let _ = (rax, memory_value);
    todo!("lab4 check_results (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)")
}

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
