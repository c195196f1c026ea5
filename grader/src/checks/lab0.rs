//! Lab 0: the LWN warm-up VM, checked on a real KVM.

use std::time::Duration;

use kit_common::Status;
use lab0_lwn::{CODE, CODE_ADDR, LwnVm, PAGE_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{Group, expect_field, fail};
use crate::{Check, Ctx, Part, describe};

const LAB: u8 = 0;
/// Lab 0's checks all create a VM.
const KVM: Group = Group {
    part: Part::Lab(LAB),
    needs: &[],
    runs_guest: true,
};

/// The checks of lab 0.
pub const CHECKS: &[Check] = &[
    KVM.check(
        "lab0_create_vm",
        "create_vm: one page at 0x1000 holding the code",
        2,
        create_vm,
    ),
    KVM.check(
        "lab0_setup_vcpu",
        "setup_vcpu: CS = 0, RIP = 0x1000, AL = BL = 2",
        2,
        setup_vcpu,
    ),
    KVM.check("lab0_run", "run prints \"4\\n\" in 3 exits (2 io, 1 hlt)", 2, run),
    super::e2e::LWN,
];

fn vm(ctx: &Ctx) -> Result<LwnVm, String> {
    super::lab1::require_kvm()?;
    (ctx.labs.lwn_create_vm)().map_err(|err| fail(LAB, "create_vm", err))
}

fn create_vm(ctx: &Ctx) -> Result<(), String> {
    let vm = vm(ctx)?;
    let regions: Vec<(u64, u64)> = vm.memory.iter().map(|r| (r.start_addr().0, r.len())).collect();
    if regions != [(CODE_ADDR, PAGE_SIZE as u64)] {
        return Err(fail(
            LAB,
            "create_vm",
            format!(
                "guest memory has regions {regions:x?}, expected one page [(0x1000, 0x1000)]: the LWN VM has 4 KiB at guest physical 0x1000"
            ),
        ));
    }
    let mut code = [0u8; CODE.len()];
    vm.memory
        .read_slice(&mut code, GuestAddress(CODE_ADDR))
        .map_err(|err| format!("reading 0x1000: {err}"))?;
    if code != CODE {
        return Err(fail(
            LAB,
            "create_vm",
            format!("guest physical 0x1000 holds {code:02x?}, expected the code {CODE:02x?}"),
        ));
    }
    Ok(())
}

fn setup_vcpu(ctx: &Ctx) -> Result<(), String> {
    let vm = vm(ctx)?;
    let vcpu = (ctx.labs.lwn_setup_vcpu)(&vm).map_err(|err| fail(LAB, "setup_vcpu", err))?;
    let sregs = vcpu.get_sregs().map_err(|err| format!("KVM_GET_SREGS failed: {err}"))?;
    let regs = vcpu.get_regs().map_err(|err| format!("KVM_GET_REGS failed: {err}"))?;
    let cs_why = "after reset CS.base is 0xffff0000; CS:IP = 0:0x1000 needs CS base and selector 0";
    expect_field(LAB, "setup_vcpu", "CS.base", sregs.cs.base, 0, describe::hex, cs_why)?;
    expect_field(
        LAB,
        "setup_vcpu",
        "CS.selector",
        sregs.cs.selector.into(),
        0,
        describe::hex,
        cs_why,
    )?;
    expect_field(
        LAB,
        "setup_vcpu",
        "RIP",
        regs.rip,
        CODE_ADDR,
        describe::hex,
        "the code starts at guest physical 0x1000",
    )?;
    expect_field(
        LAB,
        "setup_vcpu",
        "RAX",
        regs.rax,
        2,
        describe::hex,
        "the guest adds AL and BL: both start at 2",
    )?;
    expect_field(
        LAB,
        "setup_vcpu",
        "RBX",
        regs.rbx,
        2,
        describe::hex,
        "the guest adds AL and BL: both start at 2",
    )?;
    expect_field(
        LAB,
        "setup_vcpu",
        "RFLAGS",
        regs.rflags,
        2,
        describe::hex,
        "bit 1 of RFLAGS is reserved and must be 1",
    )
}

fn run(ctx: &Ctx) -> Result<(), String> {
    super::lab1::require_kvm()?;
    let report = kvm_hello::vmm::run_lwn(ctx.labs, true, false, Duration::from_secs(3));
    if let Some(failure) = &report.failure {
        return Err(match failure.status {
            Status::NotImplemented => super::stub_reached(&failure.message),
            Status::LabPanicked => failure.message.clone(),
            _ => fail(LAB, "run", &failure.message),
        });
    }
    let output = String::from_utf8_lossy(&report.output);
    if output != "4\n" {
        return Err(fail(
            LAB,
            "run",
            format!("the guest printed {output:?}, expected \"4\\n\": print every byte of an OUT to 0x3f8"),
        ));
    }
    let c = report.counts;
    if (c.total(), c.io_out, c.hlt) != (3, 2, 1) {
        return Err(fail(
            LAB,
            "run",
            format!(
                "{} exits (io_out {}, hlt {}), expected 3 (io_out 2, hlt 1)",
                c.total(),
                c.io_out,
                c.hlt
            ),
        ));
    }
    Ok(())
}
