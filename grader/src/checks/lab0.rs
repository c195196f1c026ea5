//! Lab 0: the LWN warm-up VM, checked on a real KVM.

use std::time::Duration;

use kit_common::Status;
use kvm_ioctls::VcpuExit;
use lab0_lwn::{CODE, CODE_ADDR, LwnVm, PAGE_SIZE, SERIAL_PORT};
use lab4_exit_loop::ExitCounts;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{Group, expect_field, fail};
use crate::{Check, Ctx, Part, describe, guestgen};

/// How long the lab's loop may take on code made for a run.
const MADE_RUN_LIMIT: Duration = Duration::from_secs(5);

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
    KVM.check(
        "lab0_memory_slot",
        "create_vm registers its page at 0x1000, writable, as that memory",
        1,
        memory_slot,
    ),
    KVM.check(
        "lab0_run",
        "run prints \"4\\n\" in 3 exits, and a guest made for this run",
        2,
        run,
    ),
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

/// Where the probe's vCPU stopped.
enum Stop {
    Hlt,
    MmioRead(u64),
    MmioWrite(u64),
    Other(String),
    Failed(String),
}

impl Stop {
    fn of(exit: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> Stop {
        match exit {
            Ok(VcpuExit::Hlt) => Stop::Hlt,
            Ok(VcpuExit::MmioRead(addr, _)) => Stop::MmioRead(addr),
            Ok(VcpuExit::MmioWrite(addr, _)) => Stop::MmioWrite(addr),
            Ok(other) => Stop::Other(format!("{other:?}")),
            Err(err) => Stop::Failed(err.to_string()),
        }
    }
}

/// What the probe's stop says about the slot; `nothing_ran` when RIP never left the first
/// instruction.
fn slot_problem(stop: Stop, probe: u64, nothing_ran: bool) -> Option<String> {
    match stop {
        Stop::Hlt => None,
        Stop::MmioRead(addr) if addr < probe || nothing_ran => Some(format!(
            "the vCPU found no memory at guest physical {addr:#x} to fetch the code from: register the page as slot 0 at guest_phys_addr 0x1000"
        )),
        Stop::MmioRead(addr) => Some(format!(
            "the vCPU found no memory at guest physical {addr:#x}: the slot must cover the whole page at 0x1000 (memory_size 0x1000)"
        )),
        Stop::MmioWrite(addr) => Some(format!(
            "the guest could read but not write guest physical {addr:#x}: the slot is registered read-only (flags must be 0, not KVM_MEM_READONLY)"
        )),
        Stop::Other(exit) if nothing_ran => Some(format!(
            "the vCPU could not fetch the code at guest physical {CODE_ADDR:#x} (it ended with {exit}): no memory is registered there; register the page as slot 0 at guest_phys_addr 0x1000"
        )),
        Stop::Other(exit) => Some(format!(
            "the vCPU did not run the code written at 0x1000 of the memory create_vm returned (it ended with {exit}): register that memory's host address as the slot's userspace_addr"
        )),
        Stop::Failed(err) => Some(format!(
            "KVM_RUN of a probe failed: {err}: is the page registered with KVM?"
        )),
    }
}

fn memory_slot(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let vm = vm(ctx)?;
    let probe = CODE_ADDR + rng.range(0x200, 0xff0);
    let value = rng.range(1, 256) as u8;
    let code = guestgen::probe_memory(probe as u16, value);
    vm.memory
        .write_slice(&code, GuestAddress(CODE_ADDR))
        .map_err(|err| format!("the grader cannot write its probe at 0x1000: {err}"))?;
    let mut vcpu = (ctx.labs.lwn_setup_vcpu)(&vm).map_err(|err| fail(LAB, "setup_vcpu", err))?;
    let stop = Stop::of(vcpu.run());
    let nothing_ran = vcpu.get_regs().is_ok_and(|regs| regs.rip == CODE_ADDR);
    if let Some(problem) = slot_problem(stop, probe, nothing_ran) {
        return Err(fail(LAB, "create_vm", problem));
    }
    let stored: u8 = vm
        .memory
        .read_obj(GuestAddress(probe))
        .map_err(|err| format!("reading {probe:#x}: {err}"))?;
    if stored != value {
        return Err(fail(
            LAB,
            "create_vm",
            format!(
                "the guest stored {value} at guest physical {probe:#x}, but the memory create_vm returned holds {stored} there: the slot's userspace_addr must be that memory's host address"
            ),
        ));
    }
    Ok(())
}

/// Runs LWN-style code made for this run through the lab's create_vm, setup_vcpu and run (the
/// code is written over the LWN code at 0x1000), on a thread with a deadline.
fn run_made(ctx: &Ctx) -> Result<(), String> {
    let mut rng = ctx.rng();
    let text = rng.text_between(2, 24);
    let guest = guestgen::lwn(&text, SERIAL_PORT);
    let labs = ctx.labs;
    let image = guest.image.clone();
    let ran = super::on_lab_thread("lwn", MADE_RUN_LIMIT, move || {
        let vm = (labs.lwn_create_vm)().map_err(|err| fail(LAB, "create_vm", err))?;
        vm.memory
            .write_slice(&image, GuestAddress(CODE_ADDR))
            .map_err(|err| format!("the grader cannot write its code at 0x1000: {err}"))?;
        let mut vcpu = (labs.lwn_setup_vcpu)(&vm).map_err(|err| fail(LAB, "setup_vcpu", err))?;
        let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
        (labs.lwn_run)(&mut vcpu, &mut console, &mut counts, &mut |_| {})
            .map_err(|err| fail(LAB, "run", format!("code made for this run: {err}")))?;
        Ok::<_, String>((console, counts))
    })?;
    let Some(finished) = ran else {
        return Err(fail(
            LAB,
            "run",
            format!(
                "code made for this run had not halted after {} s: leave the loop at HLT",
                MADE_RUN_LIMIT.as_secs()
            ),
        ));
    };
    let (console, counts) = finished?;
    if console != guest.output {
        return Err(fail(
            LAB,
            "run",
            format!(
                "code made for this run (one OUT to 0x3f8 per byte) {}",
                super::output_difference(&console, &guest.output)
            ),
        ));
    }
    let out = guest.exits - 1;
    if (counts.total(), counts.io_out, counts.hlt) != (guest.exits, out, 1) {
        return Err(fail(
            LAB,
            "run",
            format!(
                "code made for this run made {} exits (io_out {}, hlt {}), expected {} (io_out {out}, hlt 1): count every exit once, under its reason",
                counts.total(),
                counts.io_out,
                counts.hlt,
                guest.exits
            ),
        ));
    }
    Ok(())
}

fn run(ctx: &Ctx) -> Result<(), String> {
    super::lab1::require_kvm()?;
    if ctx.rng().chance(50) {
        run_made(ctx)?;
        run_kit(ctx)
    } else {
        run_kit(ctx)?;
        run_made(ctx)
    }
}

fn run_kit(ctx: &Ctx) -> Result<(), String> {
    let report = kvm_hello::vmm::run_lwn(ctx.labs, true, false, super::GUEST_TIMEOUT);
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
            format!(
                "the LWN guest {}: print every byte of an OUT to 0x3f8",
                super::output_difference(&report.output, b"4\n")
            ),
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
