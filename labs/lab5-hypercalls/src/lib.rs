//! # Lab 5: hypercalls
//!
//! A guest asks its hypervisor for services: print a number, count exits, print a whole string in
//! one exit, translate an address. You write the host side, the five functions marked
//! `TODO(lab5)`; the guest (`guest/hypercalls/hypercalls.rs`) and everything else is given.
//! Book: "Lab 5: Hypercalls".
//!
//! Run it with `cargo run -p kvm-hello -- --lab hypercalls`; check it with `cargo grade lab5`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)
//!
//! The calling convention: one I/O port per call. A value of up to 4 bytes travels in the I/O
//! data itself; anything larger stays in guest memory and the guest passes its guest virtual
//! address (below 4 GiB) as a 4-byte OUT.

// The end-to-end checks of this lab (kvm-hello run as a program) state their rules here:
// Graded (e2e_lab_hypercalls): `kvm-hello --lab hypercalls --json` ends with status 0, and its
// report's first gva_to_hva record has gva 0x400 and hva memory_host_base + 0x400.

pub use std::io::Write;

pub use kvm_ioctls::{VcpuExit, VcpuFd};
pub use lab4_exit_loop::{ExitCounts, Flow, UnexpectedExit};
pub use vm_memory::GuestMemoryMmap;

// ANCHOR: ports
/// `print8bit(u8)`: OUT of 1 byte; the host prints the byte (the console, as in lab 4).
pub const PRINT8_PORT: u16 = 0xE9;
/// `print32bit(u32)`: OUT of 4 bytes; the host prints the value in decimal and a newline.
pub const PRINT32_PORT: u16 = 0xEA;
/// `num_exits() -> u32`: IN of 4 bytes; the host answers the number of exits so far, this one included.
pub const NUM_EXITS_PORT: u16 = 0xEB;
/// `print_str(&str)`: OUT of 4 bytes, the guest virtual address of a NUL-terminated string; the
/// host prints the string, in this one exit.
pub const PRINT_STR_PORT: u16 = 0xEC;
/// `num_exits_by_type() -> address`: IN of 4 bytes; the host writes "IO in: X\nIO out: Y\n" and a
/// NUL at `REPORT_ADDR` (X and Y count this exit too) and answers that address.
pub const EXITS_BY_TYPE_PORT: u16 = 0xED;
/// `gva_to_hva(u64) -> u64`: OUT of 4 bytes, the guest virtual address of an 8-byte slot that
/// holds the address to translate; the host writes the host virtual address back into the slot,
/// or prints "Invalid GVA" and writes 0.
pub const GVA_TO_HVA_PORT: u16 = 0xEE;
/// Where the host writes the exit report: guest physical 0x5000, just above the page tables.
pub const REPORT_ADDR: u64 = 0x5000;
/// The longest string `print_str` reads, NUL excluded.
pub const MAX_STRING: usize = 4096;
// ANCHOR_END: ports

/// One hypercall as the host served it (kvm-hello's JSON report lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypercallRecord {
    /// print8bit, print32bit, num_exits, print_str, num_exits_by_type, gva_to_hva.
    pub name: &'static str,
    /// Its arguments (for gva_to_hva: the address to translate).
    pub args: Vec<u64>,
    /// What it answered, if it answers.
    pub result: Option<u64>,
}

/// The host's side of the guest: its memory, where it is in the host, and what it did so far.
#[derive(Debug)]
pub struct Host<'a> {
    /// Guest physical memory.
    pub memory: &'a GuestMemoryMmap,
    /// The guest's CR3: its page tables, for translating the addresses it passes.
    pub cr3: u64,
    /// Host virtual address of guest physical 0.
    pub host_base: u64,
    /// Exits so far, by reason.
    pub counts: ExitCounts,
    /// Every hypercall served, in order.
    pub records: Vec<HypercallRecord>,
}

impl<'a> Host<'a> {
    /// A host for a guest that has not run yet.
    pub fn new(memory: &'a GuestMemoryMmap, cr3: u64, host_base: u64) -> Host<'a> {
        Host {
            memory,
            cr3,
            host_base,
            counts: ExitCounts::default(),
            records: Vec::new(),
        }
    }

    /// Records a hypercall (given: call it once for every hypercall you serve).
    pub fn record(&mut self, name: &'static str, args: &[u64], result: Option<u64>) {
        self.records.push(HypercallRecord {
            name,
            args: args.to_vec(),
            result,
        });
    }
}

/// What can go wrong in lab 5.
#[derive(Debug, thiserror::Error)]
pub enum Lab5Error {
    /// `KVM_RUN` failed (EINTR when the watchdog stopped the vCPU).
    #[error("KVM_RUN failed: {0}")]
    Run(#[source] kvm_ioctls::Error),
    /// An exit that is no hypercall, or a hypercall of the wrong size.
    #[error("{0}")]
    Unexpected(UnexpectedExit),
    /// The guest passed an address the host cannot read or write.
    #[error("hypercall {call}: guest address {gva:#x}: {reason}")]
    BadAddress {
        /// The hypercall.
        call: &'static str,
        /// The address the guest passed.
        gva: u64,
        /// Why it cannot be used.
        #[source]
        reason: AddressError,
    },
    /// The output could not be written.
    #[error("cannot write the guest's output: {0}")]
    Console(#[source] std::io::Error),
}

/// Why a guest address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// It does not translate through the guest's page tables.
    #[error("{0}")]
    Translate(#[from] lab2_paging::WalkFault),
    /// It translates to guest physical memory the host cannot read or write.
    #[error("{0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// A string has no NUL within `MAX_STRING` bytes.
    #[error("no NUL within {MAX_STRING} bytes")]
    Unterminated,
}

// ANCHOR: stub_read_guest_string
// TODO(lab5): read the NUL-terminated string at guest virtual `gva`: translate the address through
// the guest's page tables (`lab2_paging::translate`, your walker), read through vm-memory, stop at
// the NUL; more than `MAX_STRING` bytes without one, or an address that does not translate, is
// `Lab5Error::BadAddress`. A string may cross a page: translate every 4 KiB page it touches.
// This function cannot know its caller: its errors name `call: "print_str"` (its only caller)
// and `gva` the string's start, the address the guest passed, not the page that failed.
// Graded (lab5_read_guest_string): read_guest_string translates the string's address through the
// guest's page tables page by page (a string may cross a 4 KiB page boundary onto a page mapped
// anywhere), reads up to the NUL and returns the bytes without it; a string of up to MAX_STRING
// bytes before its NUL is read whole, a longer one is Lab5Error::BadAddress, and so is an address
// that does not translate.
/// The bytes of the guest's string at `gva`, without the NUL.
#[cfg(not(feature = "solution"))]
pub fn read_guest_string(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Result<Vec<u8>, Lab5Error> {
    let _ = (memory, cr3, gva);
    todo!("lab5 read_guest_string (labs/lab5-hypercalls/src/lib.rs; book: Lab 5, Hypercalls)")
}
// ANCHOR_END: stub_read_guest_string

// ANCHOR: stub_write_exit_report
// TODO(lab5): write "IO in: X\nIO out: Y\n" and a NUL at `REPORT_ADDR` (X = counts.io_in,
// Y = counts.io_out) and return `REPORT_ADDR`, the guest address the guest will print from.
// Graded (lab5_write_exit_report): write_exit_report writes "IO in: X\nIO out: Y\n" and a NUL at
// REPORT_ADDR (X = counts.io_in, Y = counts.io_out, in decimal) and returns REPORT_ADDR.
/// Writes the exit report into guest memory; returns its guest address.
#[cfg(not(feature = "solution"))]
pub fn write_exit_report(memory: &GuestMemoryMmap, counts: &ExitCounts) -> Result<u64, Lab5Error> {
    let _ = (memory, counts);
    todo!("lab5 write_exit_report (labs/lab5-hypercalls/src/lib.rs; book: Lab 5, Hypercalls)")
}
// ANCHOR_END: stub_write_exit_report

// ANCHOR: stub_gva_to_hva
// TODO(lab5): the host virtual address behind guest virtual `gva`: translate it with your lab 2
// walker, then add the guest physical address to `host_base`. `None` when it does not translate.
// Graded (lab5_gva_to_hva): gva_to_hva translates gva with the lab 2 walk and answers host_base
// plus the guest physical address, or None when the walk faults.
// Graded (lab5_gva_to_hva_outside_memory): gva_to_hva answers None when the address translates to a
// guest physical address outside guest memory (at or past its end): only an address inside the VM's
// memory has a host address.
/// The host virtual address that backs a guest virtual address.
#[cfg(not(feature = "solution"))]
pub fn gva_to_hva(memory: &GuestMemoryMmap, cr3: u64, host_base: u64, gva: u64) -> Option<u64> {
    let _ = (memory, cr3, host_base, gva);
    todo!("lab5 gva_to_hva (labs/lab5-hypercalls/src/lib.rs; book: Lab 5, Hypercalls)")
}
// ANCHOR_END: stub_gva_to_hva

// ANCHOR: stub_handle_hypercall
// TODO(lab5): serve one exit: count it in `host.counts` (by reason, before answering), then by port
// (see the constants above): print, answer an IN by filling `data` (u32, little-endian), read or
// write guest memory, and `host.record(...)` each hypercall (print_str before it reads its
// string, so one that fails is still recorded). A gva_to_hva slot that cannot be read or written
// is `Lab5Error::BadAddress { call: "gva_to_hva", gva: the slot's address, .. }`. HLT is
// `Flow::Halt`. An exit that is no hypercall, or has the wrong size, is
// `Lab5Error::Unexpected(UnexpectedExit::from_exit(&exit))`.
// Graded (lab5_print32bit): print32bit: an OUT of 4 bytes to PRINT32_PORT prints its value (the 4
// data bytes, little-endian) in decimal and a newline, is counted in io_out, is recorded as
// ("print32bit", [value], None), and answers Flow::Continue.
// Graded (lab5_num_exits): num_exits: an IN of 4 bytes from NUM_EXITS_PORT is counted first, then
// answered with the number of exits so far, this one included (a u32, little-endian, in the IN's
// data), and recorded with that number as its result. An exit that is no hypercall (MMIO, a triple
// fault, any other reason) is counted under its reason (mmio, shutdown, the rest in other), then is
// Lab5Error::Unexpected.
// Graded (lab5_gva_to_hva_hypercall): gva_to_hva hypercall: the OUT's 4-byte value is the guest
// virtual address of an 8-byte slot; the host reads the GVA from the slot, writes gva_to_hva of it
// back into the slot (8 bytes, little-endian), or, when there is none, prints "Invalid GVA" and a
// newline and writes 0; it records ("gva_to_hva", [the GVA read], Some(the value written)).
// Graded (lab5_print_str_in_one_exit): print_str prints its whole string in the one exit of its
// OUT: the hypercall guest makes 44 exits in all (one per hypercall, and the HLT).
/// Serves one exit of the hypercall guest.
#[cfg(not(feature = "solution"))]
pub fn handle_hypercall(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
    let _ = (exit, host, console);
    todo!("lab5 handle_hypercall (labs/lab5-hypercalls/src/lib.rs; book: Lab 5, Hypercalls)")
}
// ANCHOR_END: stub_handle_hypercall

// ANCHOR: stub_run_hypercalls
// TODO(lab5): lab 4's loop with `handle_hypercall`: `KVM_RUN`, give the exit to `trace`, serve it,
// until HLT. A failed `KVM_RUN` is `Lab5Error::Run`.
// Graded (lab5_hypercall_guest): run_hypercalls runs the kit's hypercall guest, and one the grader
// makes for the run, to its HLT, printing exactly what the port table says each call prints.
// Graded (lab5_gva_to_hva_live): In the running hypercall guest, gva_to_hva(0x400) answers
// memory_host_base + 0x400, and an address that does not translate answers 0 and prints "Invalid
// GVA".
/// Runs the hypercall guest until it halts.
#[cfg(not(feature = "solution"))]
pub fn run_hypercalls(
    vcpu: &mut VcpuFd,
    host: &mut Host<'_>,
    console: &mut dyn Write,
    trace: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), Lab5Error> {
    let _ = (vcpu, host, console, trace);
    todo!("lab5 run_hypercalls (labs/lab5-hypercalls/src/lib.rs; book: Lab 5, Hypercalls)")
}
// ANCHOR_END: stub_run_hypercalls

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
