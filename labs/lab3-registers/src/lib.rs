//! # Lab 3: registers and CPU modes
//!
//! kvm-hello-world's `setup_protected_mode`, `setup_paged_32bit_mode`, `setup_long_mode` and the
//! `regs` of each `run_*_mode`: the vCPU state that puts the guest in its mode before the first
//! instruction. You write the three functions marked `TODO(lab3)`; they take and return plain
//! values, so no KVM is needed to check them; kvm-hello hands their results to KVM
//! (`KVM_GET_SREGS`, then `KVM_SET_SREGS` and `KVM_SET_REGS`).
//! Book: "Lab 3: Registers and CPU modes".
//!
//! Check your work with `cargo grade lab3`.
//! (`--features solution` builds the reference in `solution.rs` instead of the functions marked
//! `#[cfg(not(feature = "solution"))]`; you never need it.)

pub use kit_common::Mode;
pub use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

// ANCHOR: constants
/// CR0 bit 0, Protection Enable: protected mode (segments by descriptor).
pub const CR0_PE: u64 = 1 << 0;
/// CR0 bit 1, Monitor Coprocessor: WAIT/FWAIT honour TS.
pub const CR0_MP: u64 = 1 << 1;
/// CR0 bit 2, Emulation: x87 instructions fault (left clear).
pub const CR0_EM: u64 = 1 << 2;
/// CR0 bit 3, Task Switched (left clear).
pub const CR0_TS: u64 = 1 << 3;
/// CR0 bit 4, Extension Type: a 387-class FPU (hard-wired to 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// CR0 bit 5, Numeric Error: x87 errors are reported natively.
pub const CR0_NE: u64 = 1 << 5;
/// CR0 bit 16, Write Protect: ring 0 honours read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR0 bit 18, Alignment Mask: EFLAGS.AC may enable alignment checks.
pub const CR0_AM: u64 = 1 << 18;
/// CR0 bit 29, Not Write-through (left clear).
pub const CR0_NW: u64 = 1 << 29;
/// CR0 bit 30, Cache Disable (left clear).
pub const CR0_CD: u64 = 1 << 30;
/// CR0 bit 31, Paging: translate through the tables at CR3.
pub const CR0_PG: u64 = 1 << 31;

/// CR4 bit 4, Page Size Extensions: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4 bit 5, Physical Address Extension: 64-bit entries; required for long mode.
pub const CR4_PAE: u64 = 1 << 5;

/// EFER bit 8, Long Mode Enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER bit 10, Long Mode Active: set by the CPU when paging is turned on with LME. KVM_SET_SREGS
/// does not set it for you and refuses LME with CR0.PG but without LMA (EINVAL): set both.
pub const EFER_LMA: u64 = 1 << 10;

/// Descriptor type 11: code, execute/read, accessed.
pub const SEG_TYPE_CODE: u8 = 11;
/// Descriptor type 3: data, read/write, accessed.
pub const SEG_TYPE_DATA: u8 = 3;
/// The code segment's selector, as a GDT-based guest would load it (index 1, RPL 0). There is no
/// GDT in guest memory: KVM_SET_SREGS loads the segment's hidden part from `kvm_segment`.
pub const CODE_SELECTOR: u16 = 1 << 3;
/// The data segments' selector (index 2, RPL 0); no GDT either.
pub const DATA_SELECTOR: u16 = 2 << 3;
/// A flat segment's limit with 4 KiB granularity: 4 GiB.
pub const FLAT_LIMIT: u32 = 0xffff_ffff;

/// RFLAGS bit 1 is reserved and always reads 1; every other flag starts clear (IF too: the
/// guest has no IDT).
pub const RFLAGS_RESERVED: u64 = 1 << 1;
/// The guest's first instruction: the image is loaded at guest physical 0.
pub const ENTRY_POINT: u64 = kit_common::GUEST_LOAD_ADDR;
// ANCHOR_END: constants

// ANCHOR: stub_flat_segment
// TODO(lab3): a flat segment covering 4 GiB: `kvm_segment { base: 0, limit: FLAT_LIMIT, g: 1,
// present: 1, dpl: 0, s: 1, .. }` (s = 1: a code/data descriptor; `avl`, `unusable` and `padding`
// stay 0). The code segment (`SEG_TYPE_CODE` in `type_`, `CODE_SELECTOR`) is 64-bit in long mode
// (`l` = 1, `db` = 0) and 32-bit otherwise (`l` = 0, `db` = 1); the data segment is
// `SEG_TYPE_DATA` with `DATA_SELECTOR` and `db` = 1, `l` = 0. Real mode does not use these.
// The book's Lab 3 chapter has a table of every field.
// Graded (lab3_flat_segment): flat_segment(mode, code) is a present, ring-0, flat 4 GiB segment:
// base 0, limit FLAT_LIMIT, g 1, s 1, dpl 0; the code segment has SEG_TYPE_CODE and CODE_SELECTOR
// and is 64-bit in long mode (l 1, db 0), 32-bit otherwise (l 0, db 1); the data segment has
// SEG_TYPE_DATA, DATA_SELECTOR, db 1 and l 0; every other field is 0. Mode::Real is never asked for
// and not graded: answer as for Mode::Protected.
/// The flat code (`code == true`) or data segment of a protected, paged32 or long-mode guest.
#[cfg(not(feature = "solution"))]
pub fn flat_segment(mode: Mode, code: bool) -> kvm_segment {
    let _ = (mode, code);
    todo!("lab3 flat_segment (labs/lab3-registers/src/lib.rs; book: Lab 3, Registers and CPU modes)")
}
// ANCHOR_END: stub_flat_segment

// ANCHOR: stub_special_registers
// TODO(lab3): start from `sregs` (the vCPU's reset state, from KVM_GET_SREGS) and set, per mode:
// - real: CS selector and base 0 (the reset state fetches from 0xFFFFFFF0), nothing else;
// - protected: CR0.PE and the flat segments (CS, then DS, ES, FS, GS, SS);
// - paged32: as protected, plus CR3, CR4 = PSE, CR0 = PE|MP|ET|NE|WP|AM|PG, EFER = 0;
// - long: CR3, CR4 = PAE, CR0 = PE|MP|ET|NE|WP|AM|PG, EFER = LME|LMA, 64-bit CS and the flat
//   data segment in DS, ES, FS, GS and SS.
// KVM_SET_SREGS checks the result: LME with PG but without LMA, or CS.L = 1 outside long mode,
// is refused with EINVAL.
// Graded (lab3_long_mode_control_registers): In long mode special_registers sets CR0 =
// PE|MP|ET|NE|WP|AM|PG, CR3 = the cr3 it is given, CR4 = PAE and EFER = LME|LMA.
// Graded (lab3_long_mode_code_segment): In long mode CS is flat_segment(Mode::Long, true): a 64-bit
// code segment (l 1, db 0).
// Graded (lab3_data_segments): In protected, paged32 and long mode, DS, ES, FS, GS and SS each hold
// flat_segment(mode, false).
// Graded (lab3_protected_mode): In protected mode special_registers sets CR0.PE, keeps every other
// CR0 bit of the reset state, leaves CR3, CR4 and EFER as they were, and loads 32-bit flat segments
// (CS.l 0, CS.db 1).
// Graded (lab3_paged32_mode): In paged32 mode special_registers sets CR0 = PE|MP|ET|NE|WP|AM|PG,
// CR3 = the cr3 it is given, CR4 = PSE (not PAE), EFER = 0, and 32-bit flat segments.
// Graded (lab3_real_mode): In real mode special_registers sets CS.selector and CS.base to 0 and
// changes nothing else of the reset state.
/// The special registers (control registers, EFER, segments) for `mode`.
#[cfg(not(feature = "solution"))]
pub fn special_registers(mode: Mode, sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let _ = (mode, sregs, cr3);
    todo!("lab3 special_registers (labs/lab3-registers/src/lib.rs; book: Lab 3, Registers and CPU modes)")
}
// ANCHOR_END: stub_special_registers

// ANCHOR: stub_general_registers
// TODO(lab3): RIP = `ENTRY_POINT`, RFLAGS = `RFLAGS_RESERVED`, every other register 0, except
// the stack: RSP = `mem_size` (the top of guest memory; the stack grows down) in the 32- and
// 64-bit modes, and 0 in real mode (SP wraps to 0xFFFE on the first push: the top of the first
// 64 KiB, all that SS = 0 reaches).
// Graded (lab3_general_registers): general_registers sets RIP = ENTRY_POINT, RFLAGS =
// RFLAGS_RESERVED, RSP = mem_size in protected, paged32 and long mode and 0 in real mode, and every
// other register to 0.
// Graded (lab3_guest_runs_in_each_mode): With the registers special_registers and
// general_registers give for a mode, a guest loaded at 0 runs from RIP 0 in that mode: its code
// executes with the operand size of that mode, its pushes land just below mem_size, and its stores
// reach guest physical memory through segments based at 0 (and, in long mode, through the page
// tables at the CR3 it was given).
// Graded (lab3_guest_runs_in_paged32): The same holds in paged32 mode, through a 32-bit page
// directory at the CR3 it was given whose large entries map 4 MiB pages (which needs CR4.PSE).
/// The general registers for `mode` with `mem_size` bytes of guest memory.
#[cfg(not(feature = "solution"))]
pub fn general_registers(mode: Mode, mem_size: usize) -> kvm_regs {
    let _ = (mode, mem_size);
    todo!("lab3 general_registers (labs/lab3-registers/src/lib.rs; book: Lab 3, Registers and CPU modes)")
}
// ANCHOR_END: stub_general_registers

#[cfg(feature = "solution")]
mod solution;
#[cfg(feature = "solution")]
pub use solution::*;
