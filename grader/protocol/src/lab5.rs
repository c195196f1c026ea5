//! Lab 5: hypercalls served on the judge's made-up exits and memory, and the judge's guests run
//! through the student's VMM.

use serde::{Deserialize, Serialize};

use crate::{Outcome, Request};

/// Exits by reason, as lab 4's `ExitCounts` holds them.
pub use crate::lab4::Counts;

/// Guest memory to prepare: fresh and zeroed, then these words and bytes written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    /// (guest physical address, 8-byte little-endian value): page tables, slots.
    pub words: Vec<(u64, u64)>,
    /// (guest physical address, bytes): strings.
    pub bytes: Vec<(u64, Vec<u8>)>,
}

/// An exit as KVM would report it, made up by the judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// `KVM_EXIT_IO`, out: the port and the data.
    Out {
        /// The port.
        port: u16,
        /// The data the guest wrote.
        data: Vec<u8>,
    },
    /// `KVM_EXIT_IO`, in: the port and the size (the data starts zeroed).
    In {
        /// The port.
        port: u16,
        /// Bytes the guest reads.
        size: usize,
    },
    /// `KVM_EXIT_HLT`.
    Hlt,
    /// `KVM_EXIT_MMIO`: a read or a write of `len` bytes at `addr` (no hypercall).
    Mmio {
        /// The guest physical address.
        addr: u64,
        /// The access size.
        len: usize,
        /// A write (else a read).
        write: bool,
    },
    /// `KVM_EXIT_SHUTDOWN`: a triple fault.
    Shutdown,
    /// An exit of no reason the labs name (`VcpuExit::IrqWindowOpen`).
    Other,
}

/// `handle_hypercall` on one made-up exit, with a `Host` over `memory`, then the judge's ranges
/// read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Serve {
    /// Guest memory before the exit.
    pub memory: Memory,
    /// `Host::cr3`.
    pub cr3: u64,
    /// `Host::host_base`.
    pub host_base: u64,
    /// `Host::counts` before the exit.
    pub counts: Counts,
    /// The exit.
    pub exit: Exit,
    /// (guest physical address, length) read after the exit.
    pub reads: Vec<(u64, u64)>,
}

/// One hypercall as the lab recorded it (`Host::record`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The hypercall's name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<u64>,
    /// What it answered.
    pub result: Option<u64>,
}

/// What `handle_hypercall` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flow {
    /// `Flow::Continue`.
    Continue,
    /// `Flow::Halt`.
    Halt,
}

/// What `Serve` observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// What it returned (an error as its text).
    pub flow: Outcome<Flow>,
    /// What it wrote on the console.
    pub console: Vec<u8>,
    /// `Host::counts` afterwards.
    pub counts: Counts,
    /// `Host::records` afterwards.
    pub records: Vec<Record>,
    /// An IN's data afterwards: what the guest would read.
    pub in_data: Vec<u8>,
    /// `Serve::reads`, in order (`None`: outside guest memory).
    pub reads: Vec<Option<Vec<u8>>>,
}

impl Request for Serve {
    const NAME: &'static str = "lab5.serve";
    type Reply = Served;
}

/// `read_guest_string` of each address, in memory prepared as `memory`, with `cr3`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadStrings {
    /// Guest memory.
    pub memory: Memory,
    /// The CR3 handed over.
    pub cr3: u64,
    /// The guest virtual addresses, in this order.
    pub gvas: Vec<u64>,
}

/// What one `read_guest_string` returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringRead {
    /// `Ok(bytes)`.
    Read(Vec<u8>),
    /// `Err(Lab5Error::BadAddress { .. })`, as it displays.
    BadAddress(String),
    /// Another error, as it displays.
    OtherError(String),
}

impl Request for ReadStrings {
    const NAME: &'static str = "lab5.read_guest_strings";
    type Reply = Vec<StringRead>;
}

/// `gva_to_hva` of each address, in memory prepared as `memory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GvaToHva {
    /// Guest memory.
    pub memory: Memory,
    /// The CR3 handed over.
    pub cr3: u64,
    /// The host base handed over.
    pub host_base: u64,
    /// The guest virtual addresses, in this order.
    pub gvas: Vec<u64>,
}

impl Request for GvaToHva {
    const NAME: &'static str = "lab5.gva_to_hva";
    type Reply = Vec<Option<u64>>;
}

/// `write_exit_report` with `counts` in fresh guest memory, then `read` read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteExitReport {
    /// The counts handed over.
    pub counts: Counts,
    /// (guest physical address, length) read afterwards.
    pub read: (u64, u64),
}

/// What `WriteExitReport` observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReportSeen {
    /// The address returned, or the error.
    pub returned: Outcome<u64>,
    /// The bytes read back.
    pub bytes: Vec<u8>,
}

impl Request for WriteExitReport {
    const NAME: &'static str = "lab5.write_exit_report";
    type Reply = ExitReportSeen;
}

/// The judge's long-mode image run as kvm-hello's `--lab hypercalls` runs a guest: the labs' VM,
/// tables and registers, then `run_hypercalls`, on a vCPU thread under kvm-hello's watchdog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunHypercallGuest {
    /// The flat image, loaded at guest physical 0.
    pub image: Vec<u8>,
    /// The watchdog's limit: CPU time of the vCPU thread, in ms.
    pub timeout_ms: u64,
}

/// What a run of the hypercall guest showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HypercallRun {
    /// kvm-hello's exit status for the run (0: ok; 6: a stub reached; 7: lab code panicked).
    pub status: i32,
    /// The failure's one line (empty when it succeeded).
    pub message: String,
    /// What the guest printed through the hypercalls.
    pub output: Vec<u8>,
    /// `Host::counts` afterwards, as the lab kept them.
    pub counts: Counts,
    /// The host address of guest physical 0, as lab 1's `guest_memory_host_address` gave it to
    /// the `Host`.
    pub memory_host_base: Option<u64>,
    /// RAX when the guest stopped.
    pub rax: Option<u64>,
    /// The result slot.
    pub memory_0x400: Option<u64>,
}

impl Request for RunHypercallGuest {
    const NAME: &'static str = "lab5.run_hypercall_guest";
    type Reply = HypercallRun;
}
