//! Lab 0: the LWN VM, observed through runs of the judge's real-mode code.

use serde::{Deserialize, Serialize};

use crate::Request;
use crate::lab1::{GuestRun, LabFailure};

/// Where the probe maps the judge's boot code: the last page below 4 GiB, whose last 16 bytes
/// hold the instruction a vCPU fresh from reset fetches first (0xfffffff0, SDM vol. 3A, 10.1.4).
pub const ROM_ADDR: u64 = 0xffff_f000;
/// The size of that page.
pub const ROM_SIZE: u64 = 0x1000;
/// The memory slot of that page (the VM's own memory is slot 0).
pub const ROM_SLOT: u32 = 7;

/// The lab's `create_vm`; the probe reads its regions and the page's first bytes, writes the
/// judge's bytes into the page, then runs a vCPU of its own from its reset state, with the
/// judge's `reset_code` at 0xfffffff0 (which loads registers and jumps to 0:0x1000); then
/// reads the judge's ranges back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedVmRun {
    /// At most 16 bytes of real-mode code at the reset vector.
    pub reset_code: Vec<u8>,
    /// (guest physical address, bytes) written through the VM's memory before the run.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// (guest physical address, length) read through the VM's memory before any write.
    pub reads_before: Vec<(u64, u64)>,
    /// (guest physical address, length) read after the run.
    pub reads_after: Vec<(u64, u64)>,
    /// The most exits the probe serves.
    pub max_exits: u32,
}

/// What `CreatedVmRun` observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedVmSeen {
    /// (first guest physical address, length) of each region of the VM's memory.
    pub regions: Vec<(u64, u64)>,
    /// `reads_before`, in order (`None`: outside the memory).
    pub before: Vec<Option<Vec<u8>>>,
    /// The run.
    pub run: GuestRun,
    /// `reads_after`, in order.
    pub after: Vec<Option<Vec<u8>>>,
}

impl Request for CreatedVmRun {
    const NAME: &'static str = "lab0.created_vm_run";
    type Reply = Result<CreatedVmSeen, LabFailure>;
}

/// The registers `setup_vcpu` left that the LWN code depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwnRegisters {
    /// CS.base.
    pub cs_base: u64,
    /// CS.selector.
    pub cs_selector: u16,
    /// RIP.
    pub rip: u64,
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RFLAGS.
    pub rflags: u64,
}

/// The lab's `setup_vcpu` on the lab's `create_vm`, with `code` written over the page's code;
/// the probe reports its registers, then runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupVcpuRun {
    /// The code at 0x1000.
    pub code: Vec<u8>,
    /// The most exits the probe serves.
    pub max_exits: u32,
}

/// What `SetupVcpuRun` observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupVcpuSeen {
    /// The registers before the run (`Err`: KVM_GET_REGS or KVM_GET_SREGS failed).
    pub registers: Result<LwnRegisters, String>,
    /// The run.
    pub run: GuestRun,
}

impl Request for SetupVcpuRun {
    const NAME: &'static str = "lab0.setup_vcpu_run";
    type Reply = Result<SetupVcpuSeen, LabFailure>;
}

/// The lab's `run`, on a thread of its own for at most `limit_ms`, on a vCPU the probe created
/// fresh from reset in the VM of the lab's `create_vm`, `code` written over the page's code and
/// `reset_code` at the reset vector (as `CreatedVmRun`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LwnRun {
    /// The code at 0x1000.
    pub code: Vec<u8>,
    /// The code at the reset vector.
    pub reset_code: Vec<u8>,
    /// How long `run` may take.
    pub limit_ms: u64,
}

/// What the lab's `run` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwnRunSeen {
    /// What it wrote to its console.
    pub console: Vec<u8>,
    /// Its counts: total, io_out, hlt.
    pub counts: (u64, u64, u64),
    /// Its result (`Err`: the error's text); `None`: it had not returned within the limit.
    pub result: Option<Result<(), String>>,
}

/// What `LwnRun` observed, or the lab function before `run` that failed.
pub type LwnRunReply = Result<LwnRunSeen, LabFailure>;

impl Request for LwnRun {
    const NAME: &'static str = "lab0.run";
    type Reply = LwnRunReply;
}
