//! Lab 0: the LWN VM runs the judge's real-mode code; the probe reports what the guest printed,
//! the registers the lab set and what the page holds, never whether that is right.

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use grader_protocol::lab0::{
    CreatedVmRun, CreatedVmSeen, LwnRegisters, LwnRun, LwnRunSeen, SetupVcpuRun, SetupVcpuSeen, Start,
};
use grader_protocol::lab1::LabFailure;
use grader_protocol::{Envelope, Request};
use kit_common::LabPanic;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd};
use lab0_lwn::{CODE_ADDR, LwnVm, PAGE_SIZE};
use lab4_exit_loop::ExitCounts;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::lab1::{not_started, read_all, regions, run_vcpu, write_all};
use crate::{Handled, Probe, handle};

/// Answers lab 0's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Handled> {
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        CreatedVmRun::NAME => handle(body, |request: CreatedVmRun| Ok(created_vm_run(probe, &request))),
        SetupVcpuRun::NAME => handle(body, |request: SetupVcpuRun| setup_vcpu_run(probe, &request)),
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

/// The LWN VM as the probe builds it: one page at 0x1000 holding `code`, slot 0.
fn probe_vm(code: &[u8]) -> Result<LwnVm, String> {
    let kvm = Kvm::new().map_err(|err| format!("cannot open /dev/kvm: {err}"))?;
    let fd = kvm.create_vm().map_err(|err| format!("KVM_CREATE_VM failed: {err}"))?;
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(CODE_ADDR), PAGE_SIZE)])
        .map_err(|err| format!("cannot allocate a page: {err}"))?;
    memory
        .write_slice(code, GuestAddress(CODE_ADDR))
        .map_err(|err| format!("cannot write the code: {err}"))?;
    let host = memory
        .get_host_address(GuestAddress(CODE_ADDR))
        .map_err(|err| format!("no host address: {err}"))? as u64;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: CODE_ADDR,
        memory_size: PAGE_SIZE as u64,
        userspace_addr: host,
    };
    // SAFETY: the region is `memory`'s one page, which the returned LwnVm keeps alive as long
    // as the VM (its fields drop the VM first).
    unsafe { fd.set_user_memory_region(region) }
        .map_err(|err| format!("KVM_SET_USER_MEMORY_REGION failed: {err}"))?;
    Ok(LwnVm { kvm, fd, memory })
}

/// The probe's own vCPU in real mode at CS:IP = 0:0x1000 with `start`'s registers.
fn probe_vcpu(vm: &LwnVm, start: Start) -> Result<VcpuFd, String> {
    let fd = vm.fd.create_vcpu(0).map_err(|err| format!("KVM_CREATE_VCPU failed: {err}"))?;
    let mut sregs = fd.get_sregs().map_err(|err| format!("KVM_GET_SREGS failed: {err}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    fd.set_sregs(&sregs).map_err(|err| format!("KVM_SET_SREGS failed: {err}"))?;
    let mut regs = fd.get_regs().map_err(|err| format!("KVM_GET_REGS failed: {err}"))?;
    (regs.rip, regs.rax, regs.rbx, regs.rflags) = (CODE_ADDR, start.rax, start.rbx, 2);
    fd.set_regs(&regs).map_err(|err| format!("KVM_SET_REGS failed: {err}"))?;
    Ok(fd)
}

fn created_vm_run(probe: &Probe, request: &CreatedVmRun) -> Result<CreatedVmSeen, LabFailure> {
    let vm = (probe.labs.lwn_create_vm)().map_err(|err| lab_failure("create_vm", err))?;
    let before = read_all(&vm.memory, &request.reads_before);
    write_all(&vm.memory, &request.writes);
    let run = match probe_vcpu(&vm, request.start) {
        Ok(mut fd) => run_vcpu(&mut fd, request.max_exits),
        Err(why) => not_started(why),
    };
    Ok(CreatedVmSeen {
        regions: regions(&vm.memory),
        before,
        run,
        after: read_all(&vm.memory, &request.reads_after),
    })
}

fn setup_vcpu_run(probe: &Probe, request: &SetupVcpuRun) -> Result<Result<SetupVcpuSeen, LabFailure>, String> {
    let vm = probe_vm(&request.code)?;
    let mut fd = match (probe.labs.lwn_setup_vcpu)(&vm) {
        Ok(fd) => fd,
        Err(err) => return Ok(Err(lab_failure("setup_vcpu", err))),
    };
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
    Ok(Ok(SetupVcpuSeen { registers, run }))
}

fn lwn_run(probe: &Probe, request: &LwnRun) -> Result<LwnRunSeen, String> {
    let vm = probe_vm(&request.code)?;
    let mut fd = probe_vcpu(&vm, request.start)?;
    let run = probe.labs.lwn_run;
    let (tx, rx) = channel();
    // The lab's loop runs on a thread of its own, named so the probe's hook records its panics;
    // one that never returns is left behind (the runner's CPU limit ends the process).
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
        // The VM outlives the vCPU's thread: `vm` is moved in and dropped here.
        drop(vm);
    });
    spawned.map_err(|err| format!("cannot start a thread: {err}"))?;
    match rx.recv_timeout(Duration::from_millis(request.limit_ms)) {
        Ok(Ok((console, counts, result))) => Ok(LwnRunSeen {
            console,
            counts: (counts.total(), counts.io_out, counts.hlt),
            result: Some(result),
        }),
        // Raised again on the answering thread, so the answer says what the lab's thread hit.
        Ok(Err(LabPanic::NotImplemented(stub))) => panic!("not yet implemented: {stub}"),
        Ok(Err(LabPanic::Other(message))) => std::panic::resume_unwind(Box::new(message)),
        Err(RecvTimeoutError::Timeout) => Ok(LwnRunSeen {
            console: Vec::new(),
            counts: (0, 0, 0),
            result: None,
        }),
        Err(RecvTimeoutError::Disconnected) => Err("lab code's thread ended without a result".into()),
    }
}
