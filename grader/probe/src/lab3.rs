//! Lab 3: the lab's registers as returned, and a short guest run with them on a VM the probe
//! sets up itself (no other lab is involved).

use grader_protocol::lab3::{
    FlatSegments, GeneralRegisters, GuestRun, Mode as WireMode, RunEnd, RunWithRegisters, SpecialRegisters,
};
use grader_protocol::{Envelope, Request, Words};
use kit_common::Mode;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{Handled, Labs, Probe, handle};

/// Where KVM may put the real-mode TSS on VMX (three pages below 4 GiB, outside guest memory).
const TSS_ADDRESS: usize = 0xfffb_d000;
/// The one memory slot.
const SLOT: u32 = 0;
/// The most guest memory a request may ask for (the judge asks for at most 64 MiB).
const MAX_MEM_SIZE: u64 = 256 << 20;

/// Answers lab 3's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let labs = &probe.labs;
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        FlatSegments::NAME => handle(body, |request: FlatSegments| {
            Ok(request
                .calls
                .iter()
                .map(|&(mode, code)| (labs.flat_segment)(mode_of(mode), code))
                .collect())
        }),
        SpecialRegisters::NAME => handle(body, |request: SpecialRegisters| {
            Ok(request
                .calls
                .iter()
                .map(|call| (labs.special_registers)(mode_of(call.mode), call.sregs, call.cr3))
                .collect())
        }),
        GeneralRegisters::NAME => handle(body, |request: GeneralRegisters| {
            request
                .calls
                .iter()
                .map(|&(mode, mem_size)| Ok((labs.general_registers)(mode_of(mode), mem_size_of(mem_size)?)))
                .collect()
        }),
        RunWithRegisters::NAME => handle(body, |request: RunWithRegisters| run(labs, &request)),
        _ => return None,
    })
}

fn mode_of(mode: WireMode) -> Mode {
    match mode {
        WireMode::Real => Mode::Real,
        WireMode::Protected => Mode::Protected,
        WireMode::Paged32 => Mode::Paged32,
        WireMode::Long => Mode::Long,
    }
}

fn mem_size_of(mem_size: u64) -> Result<usize, String> {
    usize::try_from(mem_size).map_err(|_| format!("a memory size of {mem_size:#x} bytes does not fit this host"))
}

/// Sets up a VM with the request's memory and the lab's registers, and runs it.
fn run(labs: &Labs, request: &RunWithRegisters) -> Result<GuestRun, String> {
    if request.mem_size > MAX_MEM_SIZE || !request.mem_size.is_multiple_of(0x1000) {
        return Err(format!(
            "a memory size of {:#x} bytes is not one the checks use",
            request.mem_size
        ));
    }
    let mem_size = mem_size_of(request.mem_size)?;
    let kvm = Kvm::new().map_err(|err| format!("cannot open /dev/kvm: {err}"))?;
    let vm = kvm.create_vm().map_err(|err| format!("KVM_CREATE_VM: {err}"))?;
    vm.set_tss_address(TSS_ADDRESS)
        .map_err(|err| format!("KVM_SET_TSS_ADDR: {err}"))?;
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)])
        .map_err(|err| format!("cannot allocate {mem_size:#x} bytes of guest memory: {err}"))?;
    for &(addr, value) in &request.memory {
        memory
            .write_obj(value, GuestAddress(addr))
            .map_err(|err| format!("cannot write {addr:#x}: {err}"))?;
    }
    memory
        .write_slice(&request.image, GuestAddress(0))
        .map_err(|err| format!("cannot load the guest: {err}"))?;
    let userspace_addr = memory
        .get_host_address(GuestAddress(0))
        .map_err(|err| format!("no host address for guest memory: {err}"))? as u64;
    let region = kvm_userspace_memory_region {
        slot: SLOT,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: request.mem_size,
        userspace_addr,
    };
    // SAFETY: the region is `memory`'s own mapping of `mem_size` bytes, and `memory` outlives
    // the VM: `vm` (and the vCPU made from it) is dropped at the end of this function, before
    // `memory`, which was declared earlier.
    unsafe { vm.set_user_memory_region(region) }.map_err(|err| format!("KVM_SET_USER_MEMORY_REGION: {err}"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|err| format!("KVM_CREATE_VCPU: {err}"))?;
    let reset = vcpu.get_sregs().map_err(|err| format!("KVM_GET_SREGS: {err}"))?;

    let mode = mode_of(request.mode);
    let sregs = (labs.special_registers)(mode, reset, request.cr3);
    let regs = (labs.general_registers)(mode, mem_size);
    let mut out = Vec::new();
    let end = if let Err(err) = vcpu.set_sregs(&sregs) {
        RunEnd::Refused(format!("KVM_SET_SREGS: {err}"))
    } else if let Err(err) = vcpu.set_regs(&regs) {
        RunEnd::Refused(format!("KVM_SET_REGS: {err}"))
    } else {
        // A guest that makes no exit at all is stopped by the probe process's CPU-time limit.
        let mut end = RunEnd::TooManyExits;
        for _ in 0..request.max_exits {
            match vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => out.extend(data.iter().map(|&byte| (port, byte))),
                Ok(VcpuExit::Hlt) => {
                    end = RunEnd::Halted;
                    break;
                }
                Ok(other) => {
                    end = RunEnd::Stopped(format!("{other:?}"));
                    break;
                }
                Err(err) => {
                    end = RunEnd::Refused(format!("KVM_RUN: {err}"));
                    break;
                }
            }
        }
        end
    };
    let regs_after = vcpu.get_regs().map_err(|err| format!("KVM_GET_REGS: {err}"));
    let memory = watched(&memory, &request.watch);
    Ok(GuestRun {
        sregs,
        regs,
        out,
        end,
        regs_after,
        memory,
    })
}

/// The nonzero 8-byte words of `ranges`, in address order, at most `Words::MAX_WORDS`.
fn watched(memory: &GuestMemoryMmap, ranges: &[(u64, u64)]) -> Words {
    let mut ranges = ranges.to_vec();
    ranges.sort_unstable();
    let mut words = Words::default();
    let mut next = 0;
    for (start, len) in ranges {
        let start = (start & !7).max(next);
        let end = start.saturating_add(len);
        for addr in (start..end).step_by(8) {
            let Ok(value) = memory.read_obj::<u64>(GuestAddress(addr)) else {
                break;
            };
            if value == 0 {
                continue;
            }
            if words.words.len() == Words::MAX_WORDS {
                words.more = true;
                return words;
            }
            words.words.push((addr, value));
        }
        next = end;
    }
    words
}
