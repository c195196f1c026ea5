//! Lab 1: the VM, its memory and its vCPU, observed through runs of the judge's code.

use serde::{Deserialize, Serialize};

use kvm_bindings::{kvm_regs, kvm_segment};

use crate::Request;

/// How the probe prepares a vCPU for the judge's code: CR0 bits to set, the code segment, the
/// data segment (DS, ES, SS) and the general registers, all chosen by the judge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpuSetup {
    /// OR-ed into CR0.
    pub cr0_or: u64,
    /// CS.
    pub code: kvm_segment,
    /// DS, ES and SS.
    pub data: kvm_segment,
    /// RIP, RFLAGS and the rest.
    pub regs: kvm_regs,
}

/// A lab function that returned an error: its name and the error's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabFailure {
    /// `vm_init`, `vcpu_init`, `create_vm`, `setup_vcpu`, `run`.
    pub function: String,
    /// The error as it displays.
    pub error: String,
}

/// Whose vCPU runs the judge's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VcpuOf {
    /// The probe creates vCPU 0 itself (KVM_CREATE_VCPU): only the lab's VM is judged.
    Probe,
    /// The lab's `vcpu_init`.
    Lab,
}

/// `vm_init(GUEST_MEMORY_SIZE)`, then the judge's bytes written through the memory it returned,
/// then a vCPU of that VM, prepared as `setup` says, runs until it stops; then the judge's
/// ranges read back through that memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VcpuRun {
    /// The vCPU's registers before the run.
    pub setup: CpuSetup,
    /// Whose vCPU runs.
    pub vcpu: VcpuOf,
    /// (guest physical address, bytes) written before the run: the code at 0, the data.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// (guest physical address, length) read after the run.
    pub reads: Vec<(u64, u64)>,
    /// Call the lab's `kvm_run_mapping` at the first OUT exit, and read the OUT's data at the
    /// address it returns (only with `VcpuOf::Lab`).
    pub mapping_at_first_out: bool,
    /// The most exits the probe serves before it stops the run.
    pub max_exits: u32,
}

impl Request for VcpuRun {
    const NAME: &'static str = "lab1.vcpu_run";
    type Reply = Result<VcpuRunReply, LabFailure>;
}

/// Why a vCPU run stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VcpuStop {
    /// HLT.
    Hlt,
    /// A read of guest physical memory no slot backs (KVM_EXIT_MMIO, read).
    MmioRead(u64),
    /// A write of guest physical memory no writable slot backs (KVM_EXIT_MMIO, write).
    MmioWrite(u64),
    /// Another exit, as kvm-ioctls shows it.
    Other(String),
    /// KVM_RUN failed: its error.
    RunFailed(String),
    /// The probe could not prepare the vCPU (create it, set its registers): the ioctl's error.
    Setup(String),
    /// It made more exits than the judge allowed.
    TooManyExits,
}

/// What a vCPU did: the data of every OUT, in order, and why it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRun {
    /// (port, data) of each OUT exit.
    pub outs: Vec<(u16, Vec<u8>)>,
    /// The last exit.
    pub stop: VcpuStop,
    /// RIP when it stopped, when KVM_GET_REGS answered.
    pub rip: Option<u64>,
}

impl GuestRun {
    /// Every byte written by OUTs to `port`.
    pub fn printed_on(&self, port: u16) -> Vec<u8> {
        self.outs
            .iter()
            .filter(|(p, _)| *p == port)
            .flat_map(|(_, data)| data.iter().copied())
            .collect()
    }
}

/// What the lab's `kvm_run_mapping` returned, and what its address shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingSeen {
    /// The address returned.
    pub address: u64,
    /// The size returned.
    pub size: u64,
    /// The bytes at `address` + the OUT's `io.data_offset` (as many as the OUT wrote), read
    /// without trusting the address (`None`: nothing is mapped there).
    pub out_data_there: Option<Vec<u8>>,
}

/// What `VcpuRun` observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuRunReply {
    /// (first guest physical address, length) of each region of the memory `vm_init` returned.
    pub regions: Vec<(u64, u64)>,
    /// `Vcpu::run_size` as `vcpu_init` recorded it (with `VcpuOf::Lab`).
    pub run_size: Option<u64>,
    /// KVM_GET_VCPU_MMAP_SIZE, asked by the probe of a /dev/kvm it opened itself.
    pub mmap_size: Option<u64>,
    /// Where kvm-ioctls mapped the vCPU's kvm_run (`VcpuFd::get_kvm_run`).
    pub kvm_run_address: Option<u64>,
    /// The lab's `kvm_run_mapping`, when asked and an OUT happened.
    pub mapping: Option<MappingSeen>,
    /// The run.
    pub run: GuestRun,
    /// The bytes read back for each of `VcpuRun::reads` (`None`: outside the memory).
    pub reads: Vec<Option<Vec<u8>>>,
}

/// `guest_memory_host_address` of a fresh 2 MiB guest memory into which the probe wrote
/// `bytes` at guest physical `at`; the bytes found at the returned address + `at` are read
/// without trusting the address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostAddress {
    /// Where the bytes go.
    pub at: u64,
    /// The judge's bytes.
    pub bytes: Vec<u8>,
}

/// What `HostAddress` observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAddressSeen {
    /// The address the lab returned.
    pub returned: u64,
    /// vm-memory's host address of guest physical 0.
    pub actual: u64,
    /// The bytes at `returned` + `at` (`None`: nothing is mapped there).
    pub found: Option<Vec<u8>>,
}

impl Request for HostAddress {
    const NAME: &'static str = "lab1.guest_memory_host_address";
    type Reply = HostAddressSeen;
}

/// `load_image` of each image into a fresh, zeroed guest memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadImages {
    /// The images, in this order.
    pub images: Vec<Vec<u8>>,
    /// How many bytes from guest physical 0 to report after each load.
    pub read_len: u64,
}

/// What `load_image` returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loaded {
    /// `Ok(())`.
    Ok,
    /// `Err(ImageTooLarge { len })`.
    TooLarge(u64),
    /// Another error: its text.
    Error(String),
}

/// One load: its result and guest memory from 0 afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSeen {
    /// What it returned.
    pub loaded: Loaded,
    /// The first `read_len` bytes of guest memory.
    pub memory: Vec<u8>,
}

impl Request for LoadImages {
    const NAME: &'static str = "lab1.load_images";
    type Reply = Vec<LoadSeen>;
}
