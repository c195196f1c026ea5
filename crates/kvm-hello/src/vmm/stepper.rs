//! `kvm-hello --step`, the KVM half: the guest runs one instruction per `KVM_RUN` under
//! `KVM_GUESTDBG_SINGLESTEP`, its exits served by the student's `handle_exit` (lab 4), on the
//! vCPU thread and under the run's watchdog like any exit loop.
//!
//! Hosts differ under single step, so nothing here depends on which one runs it:
//! - after an I/O exit, hardware (VMX, SVM) gives a debug exit once the OUT completes, PVM does not
//!   and runs on. So the OUT is completed with `immediate_exit` set: KVM finishes the pending I/O
//!   and returns (a debug exit, or EINTR) without running the next instruction either way;
//! - HLT exits as HLT on hardware; on PVM it gives a debug exit after it instead. The stepper
//!   decodes every instruction before it runs, so it knows that the guest halts either way.

use std::io::Write;

use kit_common::Mode;
use kvm_bindings::{KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, kvm_guest_debug, kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use lab4_exit_loop::{ExitCounts, ExitLoopError, Flow, UnexpectedExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::watchdog::Watchdog;
use crate::explain::ExitEvent;
use crate::labs::Labs;
use crate::step::{self, MAX_INSTRUCTION_LEN, Place, Step};

/// What `--step` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOptions {
    /// Stop after this many instructions (`--max-steps`).
    pub max_steps: u64,
    /// One JSON record per step instead of listing lines.
    pub json: bool,
}

/// How a stepped run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// The guest ran HLT and `handle_exit` said to stop.
    Halted,
    /// `--max-steps` instructions ran without a HLT.
    Limit,
}

/// The guest's memory and how its addresses translate.
pub(crate) struct GuestView<'a> {
    pub labs: &'a Labs,
    pub mode: Mode,
    pub memory: &'a GuestMemoryMmap,
    pub cr3: u64,
}

impl GuestView<'_> {
    /// The guest physical address of a linear address: lab 2's walk in long mode, KVM's
    /// (`KVM_TRANSLATE`) with 32-bit paging, the address itself without paging.
    pub fn physical(&self, vcpu: &VcpuFd, linear: u64) -> Option<u64> {
        match self.mode {
            Mode::Long => (self.labs.translate)(self.memory, self.cr3, linear).result.ok(),
            Mode::Paged32 => vcpu
                .translate_gva(linear)
                .ok()
                .filter(|t| t.valid != 0)
                .map(|t| t.physical_address),
            Mode::Real | Mode::Protected => Some(linear),
        }
    }

    /// Up to `buf.len()` bytes at a guest physical address; fewer at the end of memory.
    pub fn read_physical(&self, gpa: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            match self.memory.read(&mut buf[done..], GuestAddress(gpa + done as u64)) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        done
    }
}

/// The linear address of RIP: CS's base plus RIP (the base is 0 in long mode's flat segments).
fn linear_rip(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    if sregs.cs.l != 0 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip)
    }
}

/// Turns single step on (or everything off).
pub(crate) fn set_single_step(vcpu: &VcpuFd, on: bool) -> Result<(), ExitLoopError> {
    let debug = kvm_guest_debug {
        control: if on {
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP
        } else {
            0
        },
        ..Default::default()
    };
    vcpu.set_guest_debug(&debug).map_err(ExitLoopError::Run)
}

/// Completes an I/O instruction whose exit was served, without running the next one: with
/// `immediate_exit` set, KVM finishes the pending I/O and returns at once (EINTR, or on hardware
/// the single step's debug exit for the I/O instruction).
pub(crate) fn complete_io(vcpu: &mut VcpuFd) -> Result<(), ExitLoopError> {
    vcpu.set_kvm_immediate_exit(1);
    let completed = match vcpu.run() {
        Ok(VcpuExit::Debug(_)) => Ok(()),
        Ok(other) => Err(ExitLoopError::Unexpected(UnexpectedExit::from_exit(&other))),
        Err(err) if err.errno() == libc::EINTR => Ok(()),
        Err(err) => Err(ExitLoopError::Run(err)),
    };
    vcpu.set_kvm_immediate_exit(0);
    completed
}

/// Runs one instruction: every exit it causes goes to `handle_exit` and into `exits`. Returns
/// whether `handle_exit` said that the guest halted.
pub(crate) fn run_one(
    vcpu: &mut VcpuFd,
    labs: &Labs,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    kvm_run: u64,
    exits: &mut Vec<ExitEvent>,
) -> Result<bool, ExitLoopError> {
    loop {
        let exit = vcpu.run().map_err(ExitLoopError::Run)?;
        if let VcpuExit::Debug(_) = exit {
            return Ok(false);
        }
        exits.push(ExitEvent::of(&exit, kvm_run));
        let io = matches!(exit, VcpuExit::IoOut(..) | VcpuExit::IoIn(..));
        match (labs.handle_exit)(exit, console, counts)? {
            Flow::Halt => return Ok(true),
            Flow::Continue if io => {
                complete_io(vcpu)?;
                return Ok(false);
            }
            // Any other exit the lab serves: the instruction has not completed yet.
            Flow::Continue => {}
        }
    }
}

/// The HLT exit a host did not give (PVM under single step), served as the hardware's would be.
fn halt_without_exit(
    labs: &Labs,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    exits: &mut Vec<ExitEvent>,
) -> Result<bool, ExitLoopError> {
    let exit = VcpuExit::Hlt;
    exits.push(ExitEvent::of(&exit, 0));
    Ok((labs.handle_exit)(exit, console, counts)? == Flow::Halt)
}

/// Steps the guest until it halts, faults, reaches `options.max_steps` or is stopped by the
/// watchdog (a `KVM_RUN` interrupted by its kick returns EINTR, which the caller reports as the
/// timeout). Every step is written to `listing` as it completes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_until_halt(
    vcpu: &mut VcpuFd,
    guest: &GuestView<'_>,
    options: StepOptions,
    watchdog: &Watchdog,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    kvm_run: u64,
    listing: &mut dyn Write,
) -> Result<(StepEnd, u64), ExitLoopError> {
    set_single_step(vcpu, true)?;
    let mut number = 0;
    while number < options.max_steps {
        if watchdog.stopped().is_some() {
            return Err(ExitLoopError::Run(kvm_ioctls::Error::new(libc::EINTR)));
        }
        let before = vcpu.get_regs().map_err(ExitLoopError::Run)?;
        let sregs = vcpu.get_sregs().map_err(ExitLoopError::Run)?;
        let bitness = step::bitness(&sregs.cs);
        let mut bytes = [0u8; MAX_INSTRUCTION_LEN];
        let fetched = guest
            .physical(vcpu, linear_rip(&before, &sregs))
            .map_or(0, |gpa| guest.read_physical(gpa, &mut bytes));
        let instruction = step::decode(&bytes[..fetched], bitness, before.rip);
        number += 1;

        let mut exits = Vec::new();
        let mut ran = run_one(vcpu, guest.labs, console, counts, kvm_run, &mut exits);
        if instruction.halts && matches!(ran, Ok(false)) && exits.is_empty() {
            ran = halt_without_exit(guest.labs, console, counts, &mut exits);
        }
        // A step that faulted is listed too, with the exit that ended it, before the error.
        let after = vcpu.get_regs().unwrap_or(before);
        let step = Step {
            number,
            place: Place {
                rip: before.rip,
                real_mode_cs: (sregs.cr0 & 1 == 0).then_some(sregs.cs.selector),
            },
            bytes: bytes[..instruction.len.min(fetched)].to_vec(),
            text: instruction.text,
            // After a shutdown an SVM host has reset the vCPU (VMX and PVM do not): on any host the
            // registers read back then say nothing about the instruction.
            changed: match exits.last() {
                Some(exit) if exit.kind == "shutdown" => Vec::new(),
                _ => step::changed_registers(&before, &after, bitness),
            },
            exits,
        };
        let shown = if options.json {
            format!("{}\n", step::json(&step))
        } else {
            step::text(&step)
        };
        listing.write_all(shown.as_bytes()).map_err(ExitLoopError::Console)?;
        if ran? {
            return Ok((StepEnd::Halted, number));
        }
    }
    Ok((StepEnd::Limit, number))
}
