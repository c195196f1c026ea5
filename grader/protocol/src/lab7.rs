//! Lab 7: the migration guest snapshotted, restored, logged and moved.

use kvm_bindings::{kvm_regs, kvm_sregs};
use serde::{Deserialize, Serialize};

use crate::{Outcome, Request};

/// What the migration guest computes (its parameter block): everything it prints follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestParams {
    /// The generator's seed.
    pub seed: u64,
    /// Words written per step.
    pub dirty_rate: u64,
    /// Steps before the checksum.
    pub steps: u64,
}

/// The x87/SSE state, as `KVM_GET_FPU` gives it (kvm-bindings' `kvm_fpu` has no serde form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fpu {
    /// ST0..ST7, 16 bytes each.
    pub fpr: Vec<Vec<u8>>,
    /// Control word.
    pub fcw: u16,
    /// Status word.
    pub fsw: u16,
    /// Abridged tag word.
    pub ftwx: u8,
    /// Last opcode.
    pub last_opcode: u16,
    /// Last instruction pointer.
    pub last_ip: u64,
    /// Last data pointer.
    pub last_dp: u64,
    /// XMM0..XMM15, 16 bytes each.
    pub xmm: Vec<Vec<u8>>,
    /// MXCSR.
    pub mxcsr: u32,
}

/// A vCPU's state as the lab's `save_vcpu` returned it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VcpuSeen {
    /// General registers.
    pub regs: kvm_regs,
    /// Special registers.
    pub sregs: kvm_sregs,
    /// FPU and SSE.
    pub fpu: Fpu,
}

/// Create the guest (the lab's lab 6 `create_guest_vm`), run it a few steps with the lab's
/// `run_slice`, take a `snapshot`, `restore_snapshot` it into a new VM, `save_vcpu` there; then
/// run both VMs to their end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundTrip {
    /// The guest.
    pub params: GuestParams,
    /// Steps the guest does before the snapshot, at least.
    pub steps_before: u64,
}

/// What the round trip gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundTripSeen {
    /// The guest's progress at the snapshot.
    pub steps_done: u64,
    /// The snapshot's vCPU, or the error of `snapshot`.
    pub snapshot: Outcome<VcpuSeen>,
    /// `save_vcpu` of the restored VM, or the error of `restore_snapshot` or `save_vcpu`.
    pub restored: Outcome<VcpuSeen>,
    /// What the original VM printed after the snapshot, and its checksum.
    pub original_rest: Outcome<(Vec<u8>, u64)>,
    /// What the restored VM printed, and its checksum.
    pub restored_rest: Outcome<(Vec<u8>, u64)>,
}

impl Request for RoundTrip {
    const NAME: &'static str = "lab7.round_trip";
    type Reply = RoundTripSeen;
}

/// Run the guest a few steps, `take_dirty_pages` once before `enable_dirty_log` (a slot without
/// the flag), then enable the log, read it (clearing it), run one slice of `slice_ms`, read it
/// again; report the pages whose bytes changed during that slice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirtyLog {
    /// The guest.
    pub params: GuestParams,
    /// The slice between the two reads, in milliseconds of CPU time.
    pub slice_ms: u64,
}

/// What the dirty log gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirtyLogSeen {
    /// `take_dirty_pages` before `enable_dirty_log`.
    pub without_flag: Outcome<Vec<u64>>,
    /// `enable_dirty_log`.
    pub enabled: Outcome<()>,
    /// The first read after it.
    pub first: Outcome<Vec<u64>>,
    /// The read after the slice.
    pub second: Outcome<Vec<u64>>,
    /// The pages whose contents differ after the slice from before it (the probe compared).
    pub changed: Vec<u64>,
}

impl Request for DirtyLog {
    const NAME: &'static str = "lab7.dirty_log";
    type Reply = DirtyLogSeen;
}

/// Move the guest with the lab's `migrate` and `receive`, both in the probe (the destination on
/// a thread), as `kvm-hello --lab migrate` does with two processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Move {
    /// The guest.
    pub params: GuestParams,
    /// Pre-copy rounds at most.
    pub max_rounds: u32,
}

/// One pre-copy round, as the lab's `migrate` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundSeen {
    /// Its number.
    pub number: u32,
    /// Pages sent.
    pub pages: u64,
    /// The dirty set the log gave after it.
    pub dirty_after: u64,
}

/// What the move did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveSeen {
    /// kvm-hello's status for the run.
    pub status: i32,
    /// Its failure line, if any.
    pub failure: Option<String>,
    /// Everything the guest printed, on either end.
    pub output: Vec<u8>,
    /// `migrate`'s rounds (empty when it failed).
    pub rounds: Vec<RoundSeen>,
    /// Pages of the stop-and-copy round.
    pub stop_copy_pages: Option<u64>,
    /// The stop threshold of the plan `migrate` was given.
    pub stop_pages: u64,
    /// From the stop to `Resumed`, in microseconds.
    pub downtime_us: Option<u64>,
    /// `source` or `destination`.
    pub finished_on: Option<String>,
    /// The checksum the guest stored where it halted.
    pub checksum: Option<u64>,
    /// The steps the guest had done (its progress in its memory) at the stop-and-copy.
    pub steps_at_stop: Option<u64>,
}

impl Request for Move {
    const NAME: &'static str = "lab7.move";
    type Reply = MoveSeen;
}
