//! Lab 3: the registers of each mode, as plain values, and a short guest run with them.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use serde::{Deserialize, Serialize};

use crate::{Outcome, Request, Words};

/// The CPU modes of kvm-hello-world, as the wire names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// 16-bit real mode.
    Real,
    /// 32-bit protected mode without paging.
    Protected,
    /// 32-bit protected mode with 32-bit paging.
    Paged32,
    /// 64-bit long mode.
    Long,
}

/// Call `flat_segment(mode, code)` for each pair, in this order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlatSegments {
    /// (mode, code).
    pub calls: Vec<(Mode, bool)>,
}

impl Request for FlatSegments {
    const NAME: &'static str = "lab3.flat_segments";
    type Reply = Vec<kvm_segment>;
}

/// One call of `special_registers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecialCall {
    /// The mode.
    pub mode: Mode,
    /// The state handed in (as KVM_GET_SREGS might give it).
    pub sregs: kvm_sregs,
    /// The CR3 handed in.
    pub cr3: u64,
}

/// Call `special_registers` for each call, in this order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecialRegisters {
    /// The calls.
    pub calls: Vec<SpecialCall>,
}

impl Request for SpecialRegisters {
    const NAME: &'static str = "lab3.special_registers";
    type Reply = Vec<kvm_sregs>;
}

/// Call `general_registers(mode, mem_size)` for each pair, in this order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneralRegisters {
    /// (mode, mem_size).
    pub calls: Vec<(Mode, u64)>,
}

impl Request for GeneralRegisters {
    const NAME: &'static str = "lab3.general_registers";
    type Reply = Vec<kvm_regs>;
}

/// Run a guest with the lab's registers: a VM with `mem_size` bytes at guest physical 0 holding
/// `memory` (the judge's page tables) and `image` at 0; the vCPU gets
/// `special_registers(mode, KVM_GET_SREGS, cr3)` and `general_registers(mode, mem_size)`, then
/// runs until it halts, stops otherwise, or has made `max_exits` exits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunWithRegisters {
    /// The mode the lab sets up.
    pub mode: Mode,
    /// The CR3 handed to `special_registers`.
    pub cr3: u64,
    /// Guest memory size, handed to `general_registers` too.
    pub mem_size: u64,
    /// 8-byte words to write first.
    pub memory: Vec<(u64, u64)>,
    /// The guest, loaded at 0.
    pub image: Vec<u8>,
    /// Ranges of guest memory, (start, length) in bytes, whose nonzero 8-byte words to report
    /// afterwards (the judge asks for whole pages, not for the words it expects).
    pub watch: Vec<(u64, u64)>,
    /// The most exits to run.
    pub max_exits: u32,
}

/// How the guest's run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEnd {
    /// KVM_EXIT_HLT.
    Halted,
    /// Any other exit that ends a run (its name and details as KVM reported them).
    Stopped(String),
    /// `max_exits` exits without a halt.
    TooManyExits,
    /// KVM_SET_SREGS, KVM_SET_REGS or KVM_RUN failed: the ioctl and its error.
    Refused(String),
}

/// What the guest did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestRun {
    /// The registers the lab returned (what KVM was given).
    pub sregs: kvm_sregs,
    /// The general registers the lab returned.
    pub regs: kvm_regs,
    /// Every byte the guest wrote with OUT, as (port, byte), in order.
    pub out: Vec<(u16, u8)>,
    /// How the run ended.
    pub end: RunEnd,
    /// The general registers when it ended (KVM_GET_REGS), when KVM gave them.
    pub regs_after: Outcome<kvm_regs>,
    /// The nonzero 8-byte words of the watched ranges.
    pub memory: Words,
}

impl Request for RunWithRegisters {
    const NAME: &'static str = "lab3.run_with_registers";
    type Reply = GuestRun;
}
