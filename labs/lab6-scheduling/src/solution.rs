//! The reference solution of lab 6 (built with `--features solution`).

// ANCHOR: imports
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuExit;
use vm_memory::{Bytes, GuestAddress};

use crate::{
    Account, Base, CONSOLE_PORT, Choice, GUEST_MEMORY_SIZE, GuestVm, Lab6Error, Mode, NAME_ADDR, Parts, Policy, Slice,
    SliceEnd, SliceTimer, UnexpectedExit, Write, line_prefix, read_progress, thread_cpu_time,
};
// ANCHOR_END: imports

// ANCHOR: create_guest_vm
pub fn create_guest_vm(base: &Base, name: u8, image: &[u8]) -> Result<GuestVm, Lab6Error> {
    let vm = (base.vm_init)(GUEST_MEMORY_SIZE)?;
    let vcpu = (base.vcpu_init)(&vm)?.fd;
    (base.load_image)(&vm.memory, image)?;
    let cr3 = (base.setup_long_mode_page_tables)(&vm.memory)?;
    let registers = |ioctl| move |source| Lab6Error::Registers { ioctl, source };
    let reset = vcpu.get_sregs().map_err(registers("KVM_GET_SREGS"))?;
    let sregs = (base.special_registers)(Mode::Long, reset, cr3);
    vcpu.set_sregs(&sregs).map_err(registers("KVM_SET_SREGS"))?;
    let regs = (base.general_registers)(Mode::Long, GUEST_MEMORY_SIZE);
    vcpu.set_regs(&regs).map_err(registers("KVM_SET_REGS"))?;
    vm.memory.write_obj(name, GuestAddress(NAME_ADDR))?;
    Ok(GuestVm {
        name,
        vcpu,
        vm,
        line: Vec::new(),
        account: Account::default(),
    })
}
// ANCHOR_END: create_guest_vm

// ANCHOR: next_slice
pub fn next_slice(policy: &Policy, accounts: &[Account; 2], last: Option<usize>) -> Choice {
    let other = last.map_or(0, |vm| 1 - vm);
    match *policy {
        Policy::Cooperative => Choice {
            vm: other,
            length: None,
        },
        Policy::RoundRobin { quantum } => Choice {
            vm: other,
            length: Some(quantum),
        },
        Policy::Weighted { quantum, shares } => {
            // guest_time[0] / shares[0] <= guest_time[1] / shares[1], without dividing.
            let behind = accounts[0].guest_time.as_nanos() * u128::from(shares[1])
                <= accounts[1].guest_time.as_nanos() * u128::from(shares[0]);
            Choice {
                vm: if behind { 0 } else { 1 },
                length: Some(quantum),
            }
        }
    }
}
// ANCHOR_END: next_slice

// ANCHOR: run_slice
pub fn run_slice(
    vm: &mut GuestVm,
    length: Option<Duration>,
    timer: &mut SliceTimer,
    console: &mut dyn Write,
) -> Result<SliceEnd, Lab6Error> {
    if let Some(length) = length {
        timer.arm(&vm.vcpu, length)?;
    }
    let ran = run_until_slice_ends(vm, length.is_none(), console);
    let disarmed = timer.disarm();
    vm.account.slices += 1;
    vm.account.progress = read_progress(&vm.vm.memory)?;
    let ended_by = ran?;
    disarmed?;
    Ok(ended_by)
}

/// `KVM_RUN` until the timer's EINTR or, when `yield_on_console`, the first console exit.
fn run_until_slice_ends(
    vm: &mut GuestVm,
    yield_on_console: bool,
    console: &mut dyn Write,
) -> Result<SliceEnd, Lab6Error> {
    loop {
        let before = thread_cpu_time();
        let exit = vm.vcpu.run();
        vm.account.guest_time += thread_cpu_time().saturating_sub(before);
        match exit {
            Err(err) if err.errno() == libc::EINTR => return Ok(SliceEnd::Timer),
            Err(err) => return Err(Lab6Error::Run(err)),
            Ok(VcpuExit::IoOut(CONSOLE_PORT, data)) => {
                vm.account.exits.io_out += 1;
                for &byte in data {
                    vm.line.push(byte);
                    if byte == b'\n' {
                        let prefix = line_prefix(vm.name);
                        console.write_all(prefix.as_bytes()).map_err(Lab6Error::Console)?;
                        console.write_all(&vm.line).map_err(Lab6Error::Console)?;
                        vm.line.clear();
                    }
                }
                if yield_on_console {
                    return Ok(SliceEnd::Console);
                }
            }
            Ok(other) => {
                let unexpected = UnexpectedExit::from_exit(&other);
                match other {
                    VcpuExit::Hlt => vm.account.exits.hlt += 1,
                    VcpuExit::IoIn(..) => vm.account.exits.io_in += 1,
                    VcpuExit::IoOut(..) => vm.account.exits.io_out += 1,
                    _ => vm.account.exits.other += 1,
                }
                return Err(Lab6Error::Unexpected(unexpected));
            }
        }
    }
}
// ANCHOR_END: run_slice

// ANCHOR: run_schedule
pub fn run_schedule(
    parts: &Parts,
    vms: &mut [GuestVm; 2],
    policy: &Policy,
    duration: Duration,
    console: &mut dyn Write,
) -> Result<Vec<Slice>, Lab6Error> {
    let mut timer = SliceTimer::new()?;
    let started = Instant::now();
    let mut slices = Vec::new();
    let mut last = None;
    while vms[0].account.guest_time + vms[1].account.guest_time < duration {
        let accounts = [vms[0].account, vms[1].account];
        let choice = (parts.next_slice)(policy, &accounts, last);
        let start = started.elapsed();
        let vm = &mut vms[choice.vm];
        let ended_by = (parts.run_slice)(vm, choice.length, &mut timer, console)?;
        let wall = started.elapsed().saturating_sub(start);
        slices.push(Slice::between(
            choice.vm,
            &accounts[choice.vm],
            &vm.account,
            start,
            wall,
            ended_by,
        ));
        last = Some(choice.vm);
    }
    Ok(slices)
}
// ANCHOR_END: run_schedule
