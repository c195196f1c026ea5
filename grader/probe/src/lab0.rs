//! Lab 0: the LWN VM runs the judge's real-mode code; the probe reports what the guest printed,
//! the registers the lab set and what the page holds, never whether that is right.

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use grader_protocol::lab0::{
    CreatedVmRun, CreatedVmSeen, LwnRegisters, LwnRun, LwnRunReply, LwnRunSeen, ROM_ADDR, ROM_SIZE, ROM_SLOT,
    SetupVcpuRun, SetupVcpuSeen,
};
use grader_protocol::lab1::LabFailure;
use grader_protocol::{Envelope, Request};
use kit_common::LabPanic;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VcpuFd;
use lab0_lwn::{CODE_ADDR, LwnVm};
use lab4_exit_loop::ExitCounts;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::lab1::{not_started, read_all, regions, run_vcpu, write_all};
use crate::{Handled, Probe, handle};

/// Answers lab 0's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        CreatedVmRun::NAME => handle(body, |request: CreatedVmRun| created_vm_run(probe, &request)),
        SetupVcpuRun::NAME => handle(body, |request: SetupVcpuRun| Ok(setup_vcpu_run(probe, &request))),
        LwnRun::NAME => handle(body, |request: LwnRun| lwn_run(probe, &request)),
        _ => return None,
    })
}

fn lab_failure(function: &str, error: impl std::fmt::Display) -> LabFailure {
    LabFailure {
        function: function.to_owned(),
        error: error.to_string(),
    }
}

/// Maps the judge's boot code at the reset vector (slot `ROM_SLOT`, the page at `ROM_ADDR`) and
/// creates vCPU 0, which starts from its reset state: the judge's code loads its registers and
/// jumps to the VM's page. The probe sets no register itself.
fn vcpu_from_reset(vm: &LwnVm, rom: &GuestMemoryMmap, reset_code: &[u8]) -> Result<VcpuFd, String> {
    let code = &reset_code[..reset_code.len().min(16)];
    rom.write_slice(code, GuestAddress(ROM_ADDR + ROM_SIZE - 16))
        .map_err(|err| format!("cannot write the boot code: {err}"))?;
    let host = rom
        .get_host_address(GuestAddress(ROM_ADDR))
        .map_err(|err| format!("no host address for the boot page: {err}"))? as u64;
    let region = kvm_userspace_memory_region {
        slot: ROM_SLOT,
        flags: 0,
        guest_phys_addr: ROM_ADDR,
        memory_size: ROM_SIZE,
        userspace_addr: host,
    };
    // SAFETY: `rom` is a mapping of ROM_SIZE bytes that the caller keeps alive until the VM is
    // dropped (it is declared before the VM).
    unsafe { vm.fd.set_user_memory_region(region) }
        .map_err(|err| format!("KVM_SET_USER_MEMORY_REGION (the boot page) failed: {err}"))?;
    vm.fd
        .create_vcpu(0)
        .map_err(|err| format!("KVM_CREATE_VCPU failed: {err}"))
}

/// A page for the boot code.
fn rom() -> Result<GuestMemoryMmap, String> {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(ROM_ADDR), ROM_SIZE as usize)])
        .map_err(|err| format!("cannot allocate the boot page: {err}"))
}

fn created_vm_run(probe: &Probe, request: &CreatedVmRun) -> Result<Result<CreatedVmSeen, LabFailure>, String> {
    // Declared before the VM, so it is unmapped only after the VM is gone.
    let rom = rom()?;
    let vm = match (probe.labs.lwn_create_vm)() {
        Ok(vm) => vm,
        Err(err) => return Ok(Err(lab_failure("create_vm", err))),
    };
    let before = read_all(&vm.memory, &request.reads_before);
    write_all(&vm.memory, &request.writes);
    let run = match vcpu_from_reset(&vm, &rom, &request.reset_code) {
        Ok(mut fd) => run_vcpu(&mut fd, request.max_exits),
        Err(why) => not_started(why),
    };
    Ok(Ok(CreatedVmSeen {
        regions: regions(&vm.memory),
        before,
        run,
        after: read_all(&vm.memory, &request.reads_after),
    }))
}

fn setup_vcpu_run(probe: &Probe, request: &SetupVcpuRun) -> Result<SetupVcpuSeen, LabFailure> {
    let vm = (probe.labs.lwn_create_vm)().map_err(|err| lab_failure("create_vm", err))?;
    write_all(&vm.memory, &[(CODE_ADDR, request.code.clone())]);
    let mut fd = (probe.labs.lwn_setup_vcpu)(&vm).map_err(|err| lab_failure("setup_vcpu", err))?;
    let registers = fd
        .get_sregs()
        .map_err(|err| format!("KVM_GET_SREGS failed: {err}"))
        .and_then(|sregs| {
            let regs = fd.get_regs().map_err(|err| format!("KVM_GET_REGS failed: {err}"))?;
            Ok(LwnRegisters {
                cs_base: sregs.cs.base,
                cs_selector: sregs.cs.selector,
                rip: regs.rip,
                rax: regs.rax,
                rbx: regs.rbx,
                rflags: regs.rflags,
            })
        });
    let run = run_vcpu(&mut fd, request.max_exits);
    Ok(SetupVcpuSeen { registers, run })
}

fn lwn_run(probe: &Probe, request: &LwnRun) -> Result<LwnRunReply, String> {
    let rom = rom()?;
    let vm = match (probe.labs.lwn_create_vm)() {
        Ok(vm) => vm,
        Err(err) => return Ok(Err(lab_failure("create_vm", err))),
    };
    write_all(&vm.memory, &[(CODE_ADDR, request.code.clone())]);
    let mut fd = vcpu_from_reset(&vm, &rom, &request.reset_code)?;
    let run = probe.labs.lwn_run;
    let (tx, rx) = channel();
    // The lab's loop runs on a thread of its own, named so the probe's hook records its panics;
    // one that never returns is left behind (the runner's CPU limit ends the process), with the
    // VM and the boot page it runs in.
    let spawned = std::thread::Builder::new().name("lab-lwn-run".into()).spawn(move || {
        let _ = kvm_hello::vmm::take_last_panic();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
            let result = run(&mut fd, &mut console, &mut counts, &mut |_| {}).map_err(|err| err.to_string());
            (console, counts, result)
        }));
        let outcome = outcome.map_err(|payload| {
            kvm_hello::vmm::take_last_panic().unwrap_or_else(|| {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                LabPanic::from_message(&message, None)
            })
        });
        let _ = tx.send(outcome);
        drop(fd);
        drop(vm);
        drop(rom);
    });
    spawned.map_err(|err| format!("cannot start a thread: {err}"))?;
    match rx.recv_timeout(Duration::from_millis(request.limit_ms)) {
        Ok(Ok((console, counts, result))) => Ok(Ok(LwnRunSeen {
            console,
            counts: (counts.total(), counts.io_out, counts.hlt),
            result: Some(result),
        })),
        // Raised again on the answering thread, so the answer says what the lab's thread hit.
        Ok(Err(LabPanic::NotImplemented(stub))) => panic!("not yet implemented: {stub}"),
        Ok(Err(LabPanic::Other(message))) => std::panic::resume_unwind(Box::new(message)),
        Err(RecvTimeoutError::Timeout) => Ok(Ok(LwnRunSeen {
            console: Vec::new(),
            counts: (0, 0, 0),
            result: None,
        })),
        Err(RecvTimeoutError::Disconnected) => Err("lab code's thread ended without a result".into()),
    }
}
