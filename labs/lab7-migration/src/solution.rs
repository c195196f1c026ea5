//! The reference solution of lab 7 (built with `--features solution`).

// ANCHOR: imports
use std::time::Instant;

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::{
    Base, CONSOLE_PORT, Duration, GUEST_MEMORY_SIZE, GUEST_MEMORY_SLOT, GUEST_PAGES, GuestVm, Lab7Error, Link,
    Migration, PAGE_SIZE, Parts, Plan, Record, Round, SliceEnd, SliceTimer, Snapshot, UnexpectedExit, VcpuExit, VcpuFd,
    VcpuState, Vm, Write, empty_vm, thread_cpu_time,
};
// ANCHOR_END: imports

fn ioctl(ioctl: &'static str) -> impl Fn(kvm_ioctls::Error) -> Lab7Error {
    move |source| Lab7Error::Ioctl { ioctl, source }
}

// ANCHOR: run_slice
pub fn run_slice(
    guest: &mut GuestVm,
    length: Option<Duration>,
    timer: &mut SliceTimer,
    console: &mut dyn Write,
) -> Result<SliceEnd, Lab7Error> {
    if guest.halted {
        return Ok(SliceEnd::Halted);
    }
    if let Some(slice) = length {
        timer.arm(&guest.vcpu, slice)?;
    }
    let ended = run_until_a_whole_state(guest, console);
    let timer_stopped = timer.disarm();
    let ended = ended?;
    timer_stopped?;
    Ok(ended)
}

/// `KVM_RUN` until the state is whole and the slice is over: EINTR or HLT, never an OUT.
fn run_until_a_whole_state(guest: &mut GuestVm, console: &mut dyn Write) -> Result<SliceEnd, Lab7Error> {
    loop {
        let exit = guest.vcpu.run();
        let tally = &mut guest.exits;
        match exit {
            Err(interrupted) if interrupted.errno() == libc::EINTR => break Ok(SliceEnd::Timer),
            Err(refused) => break Err(Lab7Error::Run(refused)),
            Ok(VcpuExit::IoOut(CONSOLE_PORT, bytes)) => {
                tally.io_out += 1;
                console.write_all(bytes).map_err(Lab7Error::Console)?;
            }
            Ok(VcpuExit::Hlt) => break Ok(halt(tally, &mut guest.halted)),
            Ok(unserved) => {
                tally.other += 1;
                break Err(Lab7Error::Unexpected(UnexpectedExit::from_exit(&unserved)));
            }
        }
    }
}
/// The guest is done: HLT counted, and the VM marked so that it never runs again.
fn halt(tally: &mut crate::ExitCounts, halted: &mut bool) -> SliceEnd {
    tally.hlt += 1;
    *halted = true;
    SliceEnd::Halted
}
// ANCHOR_END: run_slice

// ANCHOR: save_vcpu
pub fn save_vcpu(vcpu: &VcpuFd) -> Result<VcpuState, Lab7Error> {
    Ok(VcpuState {
        regs: vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
        sregs: vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?,
        fpu: vcpu.get_fpu().map_err(ioctl("KVM_GET_FPU"))?,
    })
}
// ANCHOR_END: save_vcpu

// ANCHOR: restore_vcpu
pub fn restore_vcpu(vcpu: &VcpuFd, state: &VcpuState) -> Result<(), Lab7Error> {
    vcpu.set_sregs(&state.sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    vcpu.set_regs(&state.regs).map_err(ioctl("KVM_SET_REGS"))?;
    vcpu.set_fpu(&state.fpu).map_err(ioctl("KVM_SET_FPU"))?;
    Ok(())
}
// ANCHOR_END: restore_vcpu

// ANCHOR: snapshot
pub fn snapshot(guest: &GuestVm) -> Result<Snapshot, Lab7Error> {
    let vcpu = save_vcpu(&guest.vcpu)?;
    let mut memory = vec![0u8; GUEST_MEMORY_SIZE];
    guest.vm.memory.read_slice(&mut memory, GuestAddress(0))?;
    Ok(Snapshot { vcpu, memory })
}

pub fn restore_snapshot(base: &Base, snapshot: &Snapshot) -> Result<GuestVm, Lab7Error> {
    let guest = empty_vm(base)?;
    guest.vm.memory.write_slice(&snapshot.memory, GuestAddress(0))?;
    restore_vcpu(&guest.vcpu, &snapshot.vcpu)?;
    Ok(guest)
}
// ANCHOR_END: snapshot

// ANCHOR: dirty_log
pub fn enable_dirty_log(vm: &Vm) -> Result<(), Lab7Error> {
    let first_byte = GuestAddress(0);
    let slot = kvm_userspace_memory_region {
        slot: GUEST_MEMORY_SLOT,
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: first_byte.0,
        memory_size: GUEST_MEMORY_SIZE as u64,
        userspace_addr: vm.memory.get_host_address(first_byte)? as u64,
    };
    // SAFETY: the same slot over the same mapping `vm_init` registered (owned by `vm`, which
    // outlives the VM fd); only its flags change.
    unsafe { vm.fd.set_user_memory_region(slot) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))
}

pub fn take_dirty_pages(vm: &Vm) -> Result<Vec<u64>, Lab7Error> {
    let bitmap = vm
        .fd
        .get_dirty_log(GUEST_MEMORY_SLOT, GUEST_MEMORY_SIZE)
        .map_err(ioctl("KVM_GET_DIRTY_LOG"))?;
    let mut pages = Vec::new();
    for (i, word) in bitmap.iter().enumerate() {
        for bit in 0..64 {
            if word & (1 << bit) != 0 {
                pages.push(i as u64 * 64 + bit);
            }
        }
    }
    Ok(pages)
}
// ANCHOR_END: dirty_log

// ANCHOR: migrate
pub fn migrate(
    parts: &Parts,
    guest: &mut GuestVm,
    plan: &Plan,
    link: &mut Link,
    console: &mut dyn Write,
) -> Result<Migration, Lab7Error> {
    link.send(&Record::Hello {
        memory_size: GUEST_MEMORY_SIZE as u64,
    })?;
    (parts.enable_dirty_log)(&guest.vm)?;
    let mut timer = SliceTimer::new()?;
    let mut migration = Migration::default();
    let mut dirty: Vec<u64> = (0..GUEST_PAGES as u64).collect();
    let mut round = 0;
    while round < plan.max_rounds && !guest.halted {
        round += 1;
        let sending = Instant::now();
        send_pages(link, guest, &dirty, round)?;
        let send_time = sending.elapsed();
        // The guest runs as long as the transfer took: the time it would have run beside it.
        let before = thread_cpu_time();
        let ended = (parts.run_slice)(guest, Some(send_time.max(plan.min_slice)), &mut timer, console)?;
        let guest_time = thread_cpu_time().saturating_sub(before);
        let sent = dirty.len();
        dirty = (parts.take_dirty_pages)(&guest.vm)?;
        migration.rounds.push(Round {
            number: round,
            pages: sent,
            send_time,
            guest_time,
            dirty_after: dirty.len(),
        });
        if dirty.len() <= plan.stop_pages || ended == SliceEnd::Halted {
            break;
        }
    }
    // Stop and copy: the guest does not run again here.
    let stopped = Instant::now();
    send_pages(link, guest, &dirty, round + 1)?;
    migration.stop_copy_pages = dirty.len();
    link.send(&Record::Vcpu(Box::new((parts.save_vcpu)(&guest.vcpu)?)))?;
    link.send(&Record::Resume)?;
    match link.receive()? {
        Record::Resumed => {}
        Record::Failed { status, message } => return Err(Lab7Error::Destination { status, message }),
        other => return Err(Lab7Error::Protocol(format!("expected Resumed, got {other:?}"))),
    }
    migration.downtime = stopped.elapsed();
    Ok(migration)
}

/// One round: each page in `pages`, then the round's end.
fn send_pages(link: &mut Link, guest: &GuestVm, pages: &[u64], round: u32) -> Result<(), Lab7Error> {
    for &number in pages {
        let gpa = number * PAGE_SIZE as u64;
        let mut contents = vec![0u8; PAGE_SIZE];
        guest.vm.memory.read_slice(&mut contents, GuestAddress(gpa))?;
        link.send(&Record::Page { gpa, bytes: contents })?;
    }
    link.send(&Record::RoundEnd {
        round,
        pages: pages.len() as u32,
    })?;
    Ok(())
}
// ANCHOR_END: migrate

// ANCHOR: receive
pub fn receive(base: &Base, link: &mut Link) -> Result<GuestVm, Lab7Error> {
    match link.receive()? {
        Record::Hello { memory_size } if memory_size == GUEST_MEMORY_SIZE as u64 => {}
        other => return Err(Lab7Error::Protocol(format!("expected Hello of 2 MiB, got {other:?}"))),
    }
    let guest = empty_vm(base)?;
    let mut state = None;
    loop {
        match link.receive()? {
            Record::Page { gpa, bytes } => {
                if gpa % PAGE_SIZE as u64 != 0 || gpa >= GUEST_MEMORY_SIZE as u64 {
                    return Err(Lab7Error::Protocol(format!("a page at {gpa:#x}, outside guest memory")));
                }
                guest.vm.memory.write_slice(&bytes, GuestAddress(gpa))?;
            }
            Record::RoundEnd { .. } => {}
            Record::Vcpu(vcpu) => state = Some(vcpu),
            Record::Resume => {
                let state = state.ok_or_else(|| Lab7Error::Protocol("Resume before the vCPU's state".into()))?;
                restore_vcpu(&guest.vcpu, &state)?;
                return Ok(guest);
            }
            other => return Err(Lab7Error::Protocol(format!("unexpected {other:?}"))),
        }
    }
}
// ANCHOR_END: receive
