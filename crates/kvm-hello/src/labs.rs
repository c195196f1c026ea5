//! The lab functions a run calls, as one table: kvm-hello uses the labs' own (`Labs::BUILT`);
//! the grader swaps single entries to check one lab at a time or to seed a mistake.

use std::io::Write;

use kit_common::Mode;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use lab1_memory::{KvmRunMapping, Lab1Error, Vcpu, Vm};
use lab2_paging::Lab2Error;
use lab4_exit_loop::{ExitCounts, ExitLoopError, ResultError};
use lab5_hypercalls::{Host, Lab5Error};
use lab6_scheduling::{Account, Choice, GuestVm, Lab6Error, Policy, Slice, SliceEnd, SliceTimer};
use lab7_migration::{GuestVm as MigrationGuest, Lab7Error};
use vm_memory::GuestMemoryMmap;

use std::time::Duration;

/// Every lab function, in the order kvm-hello-world's `main` needs them.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::type_complexity)]
pub struct Labs {
    /// Lab 1: create the VM and its memory.
    pub vm_init: fn(usize) -> Result<Vm, Lab1Error>,
    /// Lab 1: create the vCPU.
    pub vcpu_init: fn(&Vm) -> Result<Vcpu<'_>, Lab1Error>,
    /// Lab 1: the host address of guest physical 0.
    pub guest_memory_host_address: fn(&GuestMemoryMmap) -> u64,
    /// Lab 1: the kvm_run mapping.
    pub kvm_run_mapping: fn(&mut Vcpu<'_>) -> KvmRunMapping,
    /// Lab 1: copy the image to guest physical 0.
    pub load_image: fn(&GuestMemoryMmap, &[u8]) -> Result<(), Lab1Error>,
    /// Lab 2: the long-mode page tables.
    pub setup_long_mode_page_tables: fn(&GuestMemoryMmap) -> Result<u64, Lab2Error>,
    /// Lab 2: the paged32 page directory.
    pub setup_paged32_page_directory: fn(&GuestMemoryMmap) -> Result<u64, Lab2Error>,
    /// Lab 2: the software page walk.
    pub translate: fn(&GuestMemoryMmap, u64, u64) -> lab2_paging::Walk,
    /// Lab 3: a flat code or data segment.
    pub flat_segment: fn(Mode, bool) -> kvm_bindings::kvm_segment,
    /// Lab 3: the special registers.
    pub special_registers: fn(Mode, kvm_sregs, u64) -> kvm_sregs,
    /// Lab 3: the general registers.
    pub general_registers: fn(Mode, usize) -> kvm_regs,
    /// Lab 4: one exit (the loop calls it; the grader checks it on its own).
    pub handle_exit: fn(VcpuExit<'_>, &mut dyn Write, &mut ExitCounts) -> Result<lab4_exit_loop::Flow, ExitLoopError>,
    /// Lab 4: the exit loop.
    pub run_until_halt:
        fn(&mut VcpuFd, &mut dyn Write, &mut ExitCounts, &mut dyn FnMut(&VcpuExit<'_>)) -> Result<(), ExitLoopError>,
    /// Lab 0: the LWN VM and its memory.
    pub lwn_create_vm: fn() -> Result<lab0_lwn::LwnVm, lab0_lwn::Lab0Error>,
    /// Lab 0: the LWN vCPU.
    pub lwn_setup_vcpu: fn(&lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error>,
    /// Lab 0: the LWN run loop.
    pub lwn_run: fn(
        &mut VcpuFd,
        &mut dyn Write,
        &mut ExitCounts,
        &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), lab0_lwn::Lab0Error>,
    /// Lab 5: read a NUL-terminated guest string.
    pub read_guest_string: fn(&GuestMemoryMmap, u64, u64) -> Result<Vec<u8>, Lab5Error>,
    /// Lab 5: the exit report.
    pub write_exit_report: fn(&GuestMemoryMmap, &ExitCounts) -> Result<u64, Lab5Error>,
    /// Lab 5: guest virtual to host virtual.
    pub gva_to_hva: fn(&GuestMemoryMmap, u64, u64, u64) -> Option<u64>,
    /// Lab 5: one exit of the hypercall guest.
    pub handle_hypercall: fn(VcpuExit<'_>, &mut Host<'_>, &mut dyn Write) -> Result<lab4_exit_loop::Flow, Lab5Error>,
    /// Lab 5: the hypercall loop.
    pub run_hypercalls:
        fn(&mut VcpuFd, &mut Host<'_>, &mut dyn Write, &mut dyn FnMut(&VcpuExit<'_>)) -> Result<(), Lab5Error>,
    /// Lab 6: one VM of the pair, built with labs 1 to 3.
    pub create_guest_vm: fn(&lab6_scheduling::Base, u8, &[u8]) -> Result<GuestVm, Lab6Error>,
    /// Lab 6: the scheduler's decision.
    pub next_slice: fn(&Policy, &[Account; 2], Option<usize>) -> Choice,
    /// Lab 6: one slice.
    pub run_slice: fn(&mut GuestVm, Option<Duration>, &mut SliceTimer, &mut dyn Write) -> Result<SliceEnd, Lab6Error>,
    /// Lab 6: the scheduler's loop.
    pub run_schedule: fn(
        &lab6_scheduling::Parts,
        &mut [GuestVm; 2],
        &Policy,
        Duration,
        &mut dyn Write,
    ) -> Result<Vec<Slice>, Lab6Error>,
    /// Lab 7: one slice of the migration guest, stopped where its state is whole.
    pub migration_run_slice: fn(
        &mut MigrationGuest,
        Option<Duration>,
        &mut SliceTimer,
        &mut dyn Write,
    ) -> Result<lab7_migration::SliceEnd, Lab7Error>,
    /// Lab 7: save the vCPU's state.
    pub save_vcpu: fn(&VcpuFd) -> Result<lab7_migration::VcpuState, Lab7Error>,
    /// Lab 7: load a saved state into a vCPU.
    pub restore_vcpu: fn(&VcpuFd, &lab7_migration::VcpuState) -> Result<(), Lab7Error>,
    /// Lab 7: a snapshot of the whole VM.
    pub snapshot: fn(&MigrationGuest) -> Result<lab7_migration::Snapshot, Lab7Error>,
    /// Lab 7: a new VM from a snapshot.
    pub restore_snapshot: fn(&lab6_scheduling::Base, &lab7_migration::Snapshot) -> Result<MigrationGuest, Lab7Error>,
    /// Lab 7: turn the dirty log on.
    pub enable_dirty_log: fn(&Vm) -> Result<(), Lab7Error>,
    /// Lab 7: read and clear the dirty log.
    pub take_dirty_pages: fn(&Vm) -> Result<Vec<u64>, Lab7Error>,
    /// Lab 7: the source's side of a move.
    pub migrate: fn(
        &lab7_migration::Parts,
        &mut MigrationGuest,
        &lab7_migration::Plan,
        &mut lab7_migration::Link,
        &mut dyn Write,
    ) -> Result<lab7_migration::Migration, Lab7Error>,
    /// Lab 7: the destination's side.
    pub receive: fn(&lab6_scheduling::Base, &mut lab7_migration::Link) -> Result<MigrationGuest, Lab7Error>,
    /// Lab 4: read the result slot.
    pub read_result_slot: fn(&GuestMemoryMmap, usize) -> Result<u64, ResultError>,
    /// Lab 4: the two 42 checks.
    pub check_results: fn(u64, u64) -> Result<(), ResultError>,
}

impl Labs {
    /// The labs as built: the student's functions (the instructors' build can swap in the reference).
    pub const BUILT: Labs = Labs {
        vm_init: lab1_memory::vm_init,
        vcpu_init: lab1_memory::vcpu_init,
        guest_memory_host_address: lab1_memory::guest_memory_host_address,
        kvm_run_mapping: lab1_memory::kvm_run_mapping,
        load_image: lab1_memory::load_image,
        setup_long_mode_page_tables: lab2_paging::setup_long_mode_page_tables,
        setup_paged32_page_directory: lab2_paging::setup_paged32_page_directory,
        translate: lab2_paging::translate,
        flat_segment: lab3_registers::flat_segment,
        special_registers: lab3_registers::special_registers,
        general_registers: lab3_registers::general_registers,
        handle_exit: lab4_exit_loop::handle_exit,
        run_until_halt: lab4_exit_loop::run_until_halt,
        lwn_create_vm: lab0_lwn::create_vm,
        lwn_setup_vcpu: lab0_lwn::setup_vcpu,
        lwn_run: lab0_lwn::run,
        read_guest_string: lab5_hypercalls::read_guest_string,
        write_exit_report: lab5_hypercalls::write_exit_report,
        gva_to_hva: lab5_hypercalls::gva_to_hva,
        handle_hypercall: lab5_hypercalls::handle_hypercall,
        run_hypercalls: lab5_hypercalls::run_hypercalls,
        create_guest_vm: lab6_scheduling::create_guest_vm,
        next_slice: lab6_scheduling::next_slice,
        run_slice: lab6_scheduling::run_slice,
        run_schedule: lab6_scheduling::run_schedule,
        migration_run_slice: lab7_migration::run_slice,
        save_vcpu: lab7_migration::save_vcpu,
        restore_vcpu: lab7_migration::restore_vcpu,
        snapshot: lab7_migration::snapshot,
        restore_snapshot: lab7_migration::restore_snapshot,
        enable_dirty_log: lab7_migration::enable_dirty_log,
        take_dirty_pages: lab7_migration::take_dirty_pages,
        migrate: lab7_migration::migrate,
        receive: lab7_migration::receive,
        read_result_slot: lab4_exit_loop::read_result_slot,
        check_results: lab4_exit_loop::check_results,
    };
}

impl Labs {
    /// Labs 1 to 3 as lab 6 builds its VMs with them.
    pub fn base(&self) -> lab6_scheduling::Base {
        lab6_scheduling::Base {
            vm_init: self.vm_init,
            vcpu_init: self.vcpu_init,
            load_image: self.load_image,
            setup_long_mode_page_tables: self.setup_long_mode_page_tables,
            special_registers: self.special_registers,
            general_registers: self.general_registers,
        }
    }

    /// Lab 6's scheduler parts.
    pub fn scheduler_parts(&self) -> lab6_scheduling::Parts {
        lab6_scheduling::Parts {
            next_slice: self.next_slice,
            run_slice: self.run_slice,
        }
    }

    /// Lab 7's migration parts (with the given slice runner).
    pub fn migration_parts(&self) -> lab7_migration::Parts {
        lab7_migration::Parts {
            save_vcpu: self.save_vcpu,
            enable_dirty_log: self.enable_dirty_log,
            take_dirty_pages: self.take_dirty_pages,
            run_slice: self.migration_run_slice,
        }
    }
}
