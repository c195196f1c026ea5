//! # Lab 0: the LWN warm-up
//!
//! The VM of LWN's "Using the KVM API", the first step of the assignment: real mode, one 4 KiB
//! page of memory at guest physical 0x1000, code that adds AL and BL (both 2), prints the digit and
//! a newline on the serial port 0x3f8 and halts. You write the three functions marked
//! `TODO(lab0)`; everything else is given. Book: "Lab 0: The LWN warm-up".
//!
//! Run it with `cargo run -p kvm-hello -- --lab lwn`; check it with `cargo grade lab0`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

// The end-to-end checks of this lab (kvm-hello run as a program) state their rules here:
// Graded (e2e_lab_lwn): `kvm-hello --lab lwn --guest IMAGE` runs IMAGE in the VM your create_vm
// made, from 0x1000: it ends with status 0, its --json report's output is exactly what the guest
// wrote to the serial port, and it counts one io exit per OUT and one hlt.

pub use std::io::Write;

pub use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
pub use lab4_exit_loop::{ExitCounts, UnexpectedExit};
pub use vm_memory::GuestMemoryMmap;

/// The guest: `mov $0x3f8, %dx; add %bl, %al; add $'0', %al; out %al, (%dx); mov $'\n', %al;
/// out %al, (%dx); hlt`.
pub const CODE: [u8; 12] = [0xba, 0xf8, 0x03, 0x00, 0xd8, 0x04, b'0', 0xee, 0xb0, b'\n', 0xee, 0xf4];
/// Where the one page of guest memory, and the code at its start, sit in guest physical memory.
pub const CODE_ADDR: u64 = 0x1000;
/// The size of that page.
pub const PAGE_SIZE: usize = 0x1000;
/// The serial port the guest prints on (COM1).
pub const SERIAL_PORT: u16 = 0x3f8;
/// The KVM API version every kernel since 2.6.22 reports.
pub const KVM_API_VERSION: i32 = 12;

/// The LWN VM: KVM, the VM and its page of memory.
///
/// The fields drop in the order they are declared: the VM (`fd`) before the `memory` registered
/// with it. Drop the vCPU before the `LwnVm`.
#[derive(Debug)]
pub struct LwnVm {
    /// The open `/dev/kvm`.
    pub kvm: Kvm,
    /// The VM.
    pub fd: VmFd,
    /// One page at guest physical 0x1000, registered as slot 0.
    pub memory: GuestMemoryMmap,
}

/// What can go wrong in lab 0.
#[derive(Debug, thiserror::Error)]
pub enum Lab0Error {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The device is not a usable KVM.
    #[error("/dev/kvm reports KVM API version {0}, expected {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// A KVM ioctl failed.
    #[error("{ioctl} failed: {source}")]
    Ioctl {
        /// The ioctl's name.
        ioctl: &'static str,
        /// The kernel's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The page of guest memory could not be allocated.
    #[error("cannot allocate the guest's page: {0}")]
    Allocate(#[source] vm_memory::mmap::FromRangesError),
    /// Guest memory could not be written, or its host address found.
    #[error("guest memory: {0}")]
    Memory(#[source] vm_memory::GuestMemoryError),
    /// `KVM_RUN` failed (EINTR when the watchdog stopped the vCPU).
    #[error("KVM_RUN failed: {0}")]
    Run(#[source] kvm_ioctls::Error),
    /// An exit the VM does not serve.
    #[error("{0}")]
    Unexpected(UnexpectedExit),
    /// The output could not be written.
    #[error("cannot write the guest's output: {0}")]
    Console(#[source] std::io::Error),
}

// ANCHOR: stub_create_vm
// TODO(lab0): open /dev/kvm and check the API version, create the VM, allocate one page
// (`PAGE_SIZE`) of guest memory at `CODE_ADDR`, copy `CODE` to its start (vm-memory), and
// register the page with KVM as slot 0 at guest physical `CODE_ADDR` (an `unsafe` call: say why it
// is sound in a `// SAFETY:` comment).
// Graded (lab0_create_vm): create_vm gives the VM one region of guest memory, PAGE_SIZE bytes at
// guest physical CODE_ADDR, holding CODE at its start.
// Graded (lab0_memory_slot): create_vm registers its page with KVM as slot 0 at guest physical
// CODE_ADDR, memory_size PAGE_SIZE, flags 0 (writable), and userspace_addr the host address of that
// same page.
/// Creates the LWN VM with its page of memory and code.
#[cfg(not(feature = "solution"))]
pub fn create_vm() -> Result<LwnVm, Lab0Error> {
    todo!("lab0 create_vm (labs/lab0-lwn/src/lib.rs; book: Lab 0, The LWN warm-up)")
}
// ANCHOR_END: stub_create_vm

// ANCHOR: stub_setup_vcpu
// TODO(lab0): create vCPU 0; in its special registers set CS base and selector to 0 (real mode
// then fetches from CS:IP = 0:0x1000); in its general registers set RIP = `CODE_ADDR`, RAX = 2,
// RBX = 2 and RFLAGS = 0x2 (bit 1 is reserved and must be 1).
// Graded (lab0_setup_vcpu): setup_vcpu leaves CS.base and CS.selector 0, RIP = CODE_ADDR, RAX = 2,
// RBX = 2 and RFLAGS = 0x2.
/// Creates and sets up the vCPU.
#[cfg(not(feature = "solution"))]
pub fn setup_vcpu(vm: &LwnVm) -> Result<VcpuFd, Lab0Error> {
    let _ = vm;
    todo!("lab0 setup_vcpu (labs/lab0-lwn/src/lib.rs; book: Lab 0, The LWN warm-up)")
}
// ANCHOR_END: stub_setup_vcpu

// ANCHOR: stub_run
// TODO(lab0): `KVM_RUN` until HLT. Give every exit to `trace` first, count it in `counts`; an OUT to
// `SERIAL_PORT` writes its bytes to `console`; any other exit is
// `Lab0Error::Unexpected(UnexpectedExit::from_exit(&exit))`; a failed `KVM_RUN` is `Lab0Error::Run`.
// Graded (lab0_run): run gives every exit to trace, counts it once under its reason in counts,
// writes each OUT to SERIAL_PORT to console and returns at the first HLT: the LWN code prints "4"
// and a newline in 3 exits; code the grader makes for the run is served the same way.
/// Runs the guest until it halts.
#[cfg(not(feature = "solution"))]
pub fn run(
    vcpu: &mut VcpuFd,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    trace: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), Lab0Error> {
    let _ = (vcpu, console, counts, trace);
    todo!("lab0 run (labs/lab0-lwn/src/lib.rs; book: Lab 0, The LWN warm-up)")
}
// ANCHOR_END: stub_run

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
