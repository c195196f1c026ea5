//! Seeded mistakes: typical student errors applied to the reference, one at a time. The grader
//! must fail each with a message that names the lab, the function and the mistake.
#![cfg(feature = "solution")]

mod common;

use std::io::Write;

use common::failure_of;
use grader_probe::Labs;
use kvm_bindings::{kvm_regs, kvm_sregs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use lab1_memory::{Lab1Error, Vm};
use lab2_paging::{Lab2Error, Level, Walk, WalkFault, WalkStep};
use lab3_registers::Mode;
use lab4_exit_loop::{ExitCounts, ExitLoopError, Flow, ResultError};
use lab5_hypercalls::{Host, Lab5Error};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Asserts that the message names the place and every expected phrase.
fn assert_names(message: &str, place: &str, phrases: &[&str]) {
    assert!(message.starts_with(place), "{message:?} does not start with {place:?}");
    assert!(message.contains("(book: "), "{message:?} names no chapter");
    for phrase in phrases {
        assert!(message.contains(phrase), "{message:?} does not say {phrase:?}");
    }
}

fn write_u64(memory: &GuestMemoryMmap, addr: u64, value: u64) {
    memory.write_obj(value, GuestAddress(addr)).unwrap();
}

// ---- lab 2 ----

#[test]
fn pd_entry_without_ps() {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x4000, 0x7);
        Ok(cr3)
    }
    let message = failure_of("lab2_pd_entry", |labs| labs.setup_long_mode_page_tables = seeded);
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PD[0] = 0x7 (P|RW|US), expected 0x87 (P|RW|US|PS)",
        &["without PS the entry points to a page table instead of mapping a 2 MiB page"],
    );
}

#[test]
fn pdpt_pointing_at_the_wrong_table() {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x3000, 0x3007);
        Ok(cr3)
    }
    let message = failure_of("lab2_pdpt_entry", |labs| labs.setup_long_mode_page_tables = seeded);
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PDPT[0] = 0x3007",
        &["must hold the PD at 0x4000"],
    );
}

#[test]
fn pml4_entry_without_user() {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x2000, 0x3003);
        Ok(cr3)
    }
    let message = failure_of("lab2_pml4_entry", |labs| labs.setup_long_mode_page_tables = seeded);
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PML4[0] = 0x3003 (P|RW)",
        &["US"],
    );
}

#[test]
fn a_second_2mib_page_mapped() {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x4008, 0x20_0087);
        Ok(cr3)
    }
    let message = failure_of("lab2_nothing_else_mapped", |labs| {
        labs.setup_long_mode_page_tables = seeded
    });
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PD[1] = 0x200087",
        &["only entry 0 of each table is used"],
    );
}

#[test]
fn paged32_directory_without_ps() {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_paged32_page_directory(memory)?;
        memory.write_obj(0x7u32, GuestAddress(0x2000)).unwrap();
        Ok(cr3)
    }
    let message = failure_of("lab2_paged32_directory", |labs| {
        labs.setup_paged32_page_directory = seeded
    });
    assert_names(
        &message,
        "lab2 setup_paged32_page_directory: PD32[0] (4 bytes) = 0x7",
        &["without PS"],
    );
}

#[test]
fn walk_that_ignores_ps() {
    /// Walks four levels whatever the entries say.
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        let mut walk = Walk {
            gva,
            steps: Vec::new(),
            result: Err(WalkFault::NonCanonical(gva)),
        };
        let mut table = cr3;
        for level in Level::WALK {
            let index = (gva >> level.shift()) & 0x1ff;
            let entry_addr = table + index * 8;
            let entry: u64 = memory.read_obj(GuestAddress(entry_addr)).unwrap_or(0);
            walk.steps.push(WalkStep {
                level,
                index,
                entry_addr,
                entry,
            });
            if entry & 1 == 0 {
                walk.result = Err(WalkFault::NotPresent(level));
                return walk;
            }
            table = entry & 0x000f_ffff_ffff_f000;
        }
        walk.result = Ok(table | (gva & 0xfff));
        walk
    }
    let message = failure_of("lab2_translate_identity", |labs| labs.translate = seeded);
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["has PS: it maps a 2 MiB page and the walk ends there"],
    );
}

// ---- lab 3 ----

fn long_sregs_with(change: fn(&mut kvm_sregs)) -> fn(Mode, kvm_sregs, u64) -> kvm_sregs {
    // A fn pointer cannot capture: each test passes its change through this table.
    CHANGE.with(|c| c.set(Some(change)));
    |mode, sregs, cr3| {
        let mut s = lab3_registers::special_registers(mode, sregs, cr3);
        if let Some(change) = CHANGE.with(|c| c.get()) {
            change(&mut s);
        }
        s
    }
}

thread_local! {
    static CHANGE: std::cell::Cell<Option<fn(&mut kvm_sregs)>> = const { std::cell::Cell::new(None) };
}

#[test]
fn efer_without_lma() {
    let seeded = long_sregs_with(|s| s.efer = 0x100);
    let message = failure_of("lab3_long_mode_control_registers", |labs| {
        labs.special_registers = seeded
    });
    assert_names(
        &message,
        "lab3 special_registers: EFER in long mode = 0x100 (LME), expected 0x500 (LME|LMA)",
        &["not LMA", "EINVAL"],
    );
}

#[test]
fn long_mode_without_pae() {
    let seeded = long_sregs_with(|s| s.cr4 = 0);
    let message = failure_of("lab3_long_mode_control_registers", |labs| {
        labs.special_registers = seeded
    });
    assert_names(
        &message,
        "lab3 special_registers: CR4 in long mode = 0x0 (none), expected 0x20 (PAE)",
        &["requires PAE"],
    );
}

#[test]
fn long_mode_without_paging() {
    let seeded = long_sregs_with(|s| s.cr0 &= !(1 << 31));
    let message = failure_of("lab3_long_mode_control_registers", |labs| {
        labs.special_registers = seeded
    });
    assert_names(
        &message,
        "lab3 special_registers: CR0 in long mode = 0x50033",
        &["without PG"],
    );
}

#[test]
fn paged32_without_paging() {
    // Paged32 is the mode with CR4.PSE; without PG the guest still greets, so only lab 3 says it.
    let seeded = long_sregs_with(|s| {
        if s.cr4 & (1 << 4) != 0 {
            s.cr0 &= !(1 << 31);
        }
    });
    let message = failure_of("lab3_paged32_mode", |labs| labs.special_registers = seeded);
    assert_names(
        &message,
        "lab3 special_registers: CR0 in paged32 mode = 0x50033",
        &["without PG", "unpaged protected mode"],
    );
    assert!(!message.contains("long mode"), "{message}");
}

#[test]
fn code_segment_32_bit_in_long_mode() {
    let seeded = long_sregs_with(|s| {
        s.cs.l = 0;
        s.cs.db = 1;
    });
    let message = failure_of("lab3_long_mode_code_segment", |labs| labs.special_registers = seeded);
    assert_names(
        &message,
        "lab3 special_registers: CS.l in long mode = 0x0, expected 0x1",
        &["32-bit compatibility mode"],
    );
}

#[test]
fn data_segments_with_the_code_type() {
    let seeded = long_sregs_with(|s| s.ss.type_ = 11);
    let message = failure_of("lab3_data_segments", |labs| labs.special_registers = seeded);
    assert_names(
        &message,
        "lab3 special_registers: SS.type in ",
        &["mode = 0xb, expected 0x3", "data type 3"],
    );
}

#[test]
fn stack_pointer_at_0() {
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        kvm_regs {
            rsp: 0,
            ..lab3_registers::general_registers(mode, mem_size)
        }
    }
    let message = failure_of("lab3_general_registers", |labs| labs.general_registers = seeded);
    assert_names(
        &message,
        "lab3 general_registers: RSP in ",
        &["mode = 0x0, expected 0x200000", "with RSP = 0"],
    );
}

#[test]
fn rflags_0() {
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        kvm_regs {
            rflags: 0,
            ..lab3_registers::general_registers(mode, mem_size)
        }
    }
    let message = failure_of("lab3_general_registers", |labs| labs.general_registers = seeded);
    assert_names(
        &message,
        "lab3 general_registers: RFLAGS in ",
        &["mode = 0x0, expected 0x2", "bit 1 of RFLAGS is reserved"],
    );
}

#[test]
fn canned_sregs_that_ignore_the_given_state() {
    // A state built from scratch, whatever the vCPU had: right registers, lost descriptor tables.
    fn seeded(mode: Mode, _sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
        lab3_registers::special_registers(mode, kvm_sregs::default(), cr3)
    }
    for check in [
        "lab3_long_mode_control_registers",
        "lab3_long_mode_code_segment",
        "lab3_paged32_mode",
    ] {
        let message = failure_of(check, |labs| labs.special_registers = seeded);
        assert_names(
            &message,
            "lab3 special_registers: ",
            &[" mode = 0x0, expected 0x", "keep the value the vCPU had"],
        );
    }
}

#[test]
fn guest_with_interrupts_enabled() {
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        kvm_regs {
            rflags: 0x202,
            ..lab3_registers::general_registers(mode, mem_size)
        }
    }
    let message = failure_of("lab3_guest_runs_in_each_mode", |labs| labs.general_registers = seeded);
    assert_names(
        &message,
        "lab3 general_registers: after the ",
        &["show RFLAGS as the lab set it", "RFLAGS 0x202"],
    );
}

#[test]
fn guest_with_a_32_bit_code_segment_in_long_mode() {
    let seeded = long_sregs_with(|s| {
        if s.efer != 0 {
            s.cs.l = 0;
            s.cs.db = 1;
        }
    });
    let message = failure_of("lab3_guest_runs_in_each_mode", |labs| labs.special_registers = seeded);
    assert!(
        message.contains("a long-mode guest") || message.contains("after the long-mode guest"),
        "{message}"
    );
    assert!(message.contains("l 0, db 1"), "{message}");
}

#[test]
fn guest_with_a_data_segment_not_at_0() {
    let seeded = long_sregs_with(|s| {
        if s.cr0 & 1 != 0 {
            s.ds.base = 0x1000;
        }
    });
    let message = failure_of("lab3_guest_runs_in_each_mode", |labs| labs.special_registers = seeded);
    assert_names(
        &message,
        "lab3 special_registers: after the ",
        &["guest, the word at 0x", "stored a value through DS"],
    );
}

#[test]
fn guest_with_the_kit_cr3_instead_of_the_one_given() {
    let seeded = long_sregs_with(|s| {
        if s.efer != 0 {
            s.cr3 = 0x2000;
        }
    });
    let message = failure_of("lab3_guest_runs_in_each_mode", |labs| labs.special_registers = seeded);
    assert_names(
        &message,
        "lab3 special_registers/general_registers: a long-mode guest stopped with ",
        &["before its HLT"],
    );
}

#[test]
fn stack_at_the_kit_memory_size_whatever_the_size() {
    // A canned RSP: right for the kit's 2 MiB, wrong for the memory size of this run.
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        let right = lab3_registers::general_registers(mode, mem_size);
        kvm_regs {
            rsp: if right.rsp == 0 { 0 } else { 0x20_0000 },
            ..right
        }
    }
    let message = failure_of("lab3_general_registers", |labs| labs.general_registers = seeded);
    assert_names(
        &message,
        "lab3 general_registers: RSP in ",
        &["mode = 0x200000, expected 0x"],
    );
    let message = failure_of("lab3_guest_runs_in_each_mode", |labs| labs.general_registers = seeded);
    assert!(
        message.starts_with("lab3 general_registers")
            || message.starts_with("lab3 special_registers/general_registers"),
        "{message}"
    );
    assert!(message.contains("RSP 0x200000"), "{message}");
}

// ---- lab 4 ----

#[test]
fn output_of_only_the_first_byte() {
    fn seeded(exit: VcpuExit<'_>, console: &mut dyn Write, counts: &mut ExitCounts) -> Result<Flow, ExitLoopError> {
        match exit {
            VcpuExit::IoOut(0xE9, data) => {
                counts.io_out += 1;
                console.write_all(&data[..1]).map_err(ExitLoopError::Console)?;
                Ok(Flow::Continue)
            }
            other => lab4_exit_loop::handle_exit(other, console, counts),
        }
    }
    let message = failure_of("lab4_console_output", |labs| labs.handle_exit = seeded);
    assert_names(
        &message,
        "lab4 handle_exit: an OUT of ",
        &["bytes", "to 0xE9 printed", "size x count"],
    );
}

#[test]
fn loop_that_does_not_stop_at_hlt() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        loop {
            let exit = vcpu.run().map_err(ExitLoopError::Run)?;
            trace(&exit);
            lab4_exit_loop::handle_exit(exit, console, counts)?; // ignores Flow::Halt
        }
    }
    let message = failure_of("lab4_stops_at_hlt", |labs| labs.run_until_halt = seeded);
    assert_names(
        &message,
        "lab4 run_until_halt: the guest ran on after its HLT",
        &["leave the loop at the first HLT"],
    );
}

#[test]
fn result_read_at_the_wrong_address() {
    fn seeded(memory: &GuestMemoryMmap, width: usize) -> Result<u64, ResultError> {
        let mut bytes = [0u8; 8];
        memory.read_slice(&mut bytes[..width], GuestAddress(0x4000)).unwrap();
        Ok(u64::from_le_bytes(bytes))
    }
    let message = failure_of("lab4_result_slot", |labs| labs.read_result_slot = seeded);
    assert_names(
        &message,
        "lab4 read_result_slot: the ",
        &["-byte value at 0x400 = 0x0, expected"],
    );
}

#[test]
fn result_read_at_the_wrong_width() {
    fn seeded(memory: &GuestMemoryMmap, _width: usize) -> Result<u64, ResultError> {
        Ok(memory.read_obj::<u64>(GuestAddress(0x400)).unwrap())
    }
    let message = failure_of("lab4_result_slot", |labs| labs.read_result_slot = seeded);
    assert_names(
        &message,
        "lab4 read_result_slot: the ",
        &["-byte value at 0x400 = ", "read exactly `width` bytes"],
    );
}

#[test]
fn only_rax_checked() {
    fn seeded(rax: u64, _memory: u64) -> Result<(), ResultError> {
        if rax == 42 { Ok(()) } else { Err(ResultError::Rax(rax)) }
    }
    let message = failure_of("lab4_check_results", |labs| labs.check_results = seeded);
    assert_names(
        &message,
        "lab4 check_results: check_results(rax = 42, memory = ",
        &["gave Ok(())", "then the memory"],
    );
}

// ---- lab 1 ----

#[test]
fn memory_registered_with_the_wrong_size() {
    /// The reference, but only the first MiB is registered with KVM.
    fn seeded(mem_size: usize) -> Result<Vm, Lab1Error> {
        let kvm = Kvm::new().map_err(Lab1Error::OpenKvm)?;
        let fd = kvm.create_vm().map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_CREATE_VM",
            source,
        })?;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
        let host = memory.get_host_address(GuestAddress(0)).unwrap() as u64;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 0x10_0000,
            userspace_addr: host,
        };
        // SAFETY: the region lies inside `memory`, which `Vm` keeps alive as long as the VM.
        unsafe { fd.set_user_memory_region(region) }.map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_SET_USER_MEMORY_REGION",
            source,
        })?;
        Ok(Vm { kvm, fd, memory })
    }
    let message = failure_of("lab1_memory_seen_by_vcpu", |labs| labs.vm_init = seeded);
    assert_names(
        &message,
        // The first address the guest reads is random in the last 16 bytes of guest memory.
        "lab1 vm_init: the vCPU found no memory at guest physical 0x1ffff",
        &["memory_size = mem_size"],
    );
}

#[test]
fn a_lab_bug_that_panics_is_reported_without_a_backtrace() {
    fn seeded(mode: Mode, _mem_size: usize) -> kvm_regs {
        let computed: Vec<(Mode, kvm_regs)> = Vec::new();
        let registers = computed.iter().find(|(m, _)| *m == mode).map(|(_, r)| *r);
        registers.expect("registers were never computed")
    }
    let message = failure_of("lab3_general_registers", |labs| labs.general_registers = seeded);
    assert!(
        message.starts_with("lab code panicked: registers were never computed (at grader/tests/seeded.rs:"),
        "{message}"
    );
}

#[test]
fn loop_that_never_returns_to_kvm_run() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        let exit = vcpu.run().map_err(ExitLoopError::Run)?;
        trace(&exit);
        lab4_exit_loop::handle_exit(exit, console, counts)?;
        loop {
            // Forgets to enter the guest again (spinning: the watchdog's CPU-time limit stops it).
            std::hint::spin_loop();
        }
    }
    let message = failure_of("lab4_hello_long_mode", |labs| labs.run_until_halt = seeded);
    assert_names(
        &message,
        "lab4 run_until_halt: ",
        &["long-mode guest", "timeout", "the exit loop did not return"],
    );
}

// ---- lab 0 ----

#[test]
fn lwn_vcpu_left_at_the_reset_rip() {
    fn seeded(vm: &lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error> {
        let vcpu = lab0_lwn::setup_vcpu(vm)?;
        let regs = kvm_regs {
            rip: 0,
            ..vcpu.get_regs().unwrap()
        };
        vcpu.set_regs(&regs).unwrap();
        Ok(vcpu)
    }
    let message = failure_of("lab0_setup_vcpu", |labs| labs.lwn_setup_vcpu = seeded);
    assert_names(
        &message,
        "lab0 setup_vcpu: RIP = 0x0, expected 0x1000",
        &["the code starts at guest physical 0x1000"],
    );
}

#[test]
fn lwn_bl_not_set() {
    fn seeded(vm: &lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error> {
        let vcpu = lab0_lwn::setup_vcpu(vm)?;
        let regs = kvm_regs {
            rbx: 0,
            ..vcpu.get_regs().unwrap()
        };
        vcpu.set_regs(&regs).unwrap();
        Ok(vcpu)
    }
    let message = failure_of("lab0_setup_vcpu", |labs| labs.lwn_setup_vcpu = seeded);
    assert_names(
        &message,
        "lab0 setup_vcpu: RBX = 0x0, expected 0x2",
        &["both start at 2"],
    );
}

// ---- lab 1 and lab 0: answers that are right in every run, without the work (issue 18) ----

/// Lab 1's memory, allocated as vm_init must, but not registered with KVM: the regions are
/// right, the vCPU finds nothing.
fn memory_not_registered(mem_size: usize) -> Result<Vm, Lab1Error> {
    let kvm = Kvm::new().map_err(Lab1Error::OpenKvm)?;
    let fd = kvm.create_vm().map_err(|source| Lab1Error::Ioctl {
        ioctl: "KVM_CREATE_VM",
        source,
    })?;
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
    Ok(Vm { kvm, fd, memory })
}

#[test]
fn vm_init_that_allocates_but_registers_nothing() {
    let message = failure_of("lab1_vm_init_memory", |labs| labs.vm_init = memory_not_registered);
    assert_names(&message, "lab1 vm_init: ", &["register"]);
}

#[test]
fn vm_init_that_registers_another_allocation() {
    /// The right regions, but KVM is given a second allocation of the same size.
    fn seeded(mem_size: usize) -> Result<Vm, Lab1Error> {
        let vm = memory_not_registered(mem_size)?;
        let other = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_size as u64,
            userspace_addr: other.get_host_address(GuestAddress(0)).unwrap() as u64,
        };
        // SAFETY: `other` is leaked below, so the region stays mapped as long as the VM.
        unsafe { vm.fd.set_user_memory_region(region) }.unwrap();
        std::mem::forget(other);
        Ok(vm)
    }
    let message = failure_of("lab1_vm_init_memory", |labs| labs.vm_init = seeded);
    // The code written into the memory vm_init returned is not what the vCPU runs.
    assert_names(&message, "lab1 vm_init: code made for this run", &["userspace_addr"]);
}

#[test]
fn vcpu_init_with_a_vcpu_of_another_vm() {
    /// The right run_size, on a vCPU of an empty VM: it cannot run the VM's code.
    fn seeded(vm: &Vm) -> Result<lab1_memory::Vcpu<'_>, Lab1Error> {
        let other = vm.kvm.create_vm().unwrap();
        let fd = other.create_vcpu(0).unwrap();
        Ok(lab1_memory::Vcpu {
            fd,
            run_size: vm.fd.run_size(),
            vm,
        })
    }
    for check in ["lab1_vcpu_init", "lab1_memory_seen_by_vcpu"] {
        let message = failure_of(check, |labs| labs.vcpu_init = seeded);
        assert!(message.starts_with("lab1 "), "{message}");
    }
}

#[test]
fn load_image_that_copies_before_it_refuses() {
    fn seeded(memory: &GuestMemoryMmap, image: &[u8]) -> Result<(), Lab1Error> {
        let fits = image.len().min(lab1_memory::MAX_IMAGE_SIZE);
        memory.write_slice(&image[..fits], GuestAddress(0)).unwrap();
        lab1_memory::load_image(memory, image)
    }
    let message = failure_of("lab1_load_image", |labs| labs.load_image = seeded);
    assert_names(
        &message,
        "lab1 load_image: refused an image of ",
        &["refuse before copying"],
    );
}

#[test]
fn lwn_create_vm_that_registers_nothing() {
    /// The page and the code where they belong, but no slot: what the check used to read.
    fn seeded() -> Result<lab0_lwn::LwnVm, lab0_lwn::Lab0Error> {
        let kvm = Kvm::new().map_err(lab0_lwn::Lab0Error::OpenKvm)?;
        let fd = kvm.create_vm().unwrap();
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        memory.write_slice(&lab0_lwn::CODE, GuestAddress(0x1000)).unwrap();
        Ok(lab0_lwn::LwnVm { kvm, fd, memory })
    }
    let message = failure_of("lab0_create_vm", |labs| labs.lwn_create_vm = seeded);
    // KVM_RUN without a slot: an exit on VMX and SVM, ENOSPC on PVM (this machine).
    assert_names(&message, "lab0 create_vm: ", &["register"]);
}

#[test]
fn lwn_setup_vcpu_of_another_vm() {
    /// The registers a correct setup_vcpu leaves, on a vCPU of a VM without the code.
    fn seeded(vm: &lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error> {
        let other = lab0_lwn::LwnVm {
            kvm: Kvm::new().unwrap(),
            fd: vm.kvm.create_vm().unwrap(),
            memory: GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap(),
        };
        lab0_lwn::setup_vcpu(&other)
    }
    let message = failure_of("lab0_setup_vcpu", |labs| labs.lwn_setup_vcpu = seeded);
    assert_names(
        &message,
        "lab0 setup_vcpu: the vCPU it returned, run on code made for this run",
        &["CS:IP = 0:0x1000"],
    );
}

#[test]
fn hard_coded_lwn_output_and_counts() {
    fn seeded(
        _vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), lab0_lwn::Lab0Error> {
        console.write_all(b"4\n").map_err(lab0_lwn::Lab0Error::Console)?;
        (counts.io_out, counts.hlt) = (2, 1);
        Ok(())
    }
    let message = failure_of("lab0_run", |labs| labs.lwn_run = seeded);
    assert_names(&message, "lab0 run: ", &["printed \"4\\n\", expected"]);
}

// ---- lab 5 ----

#[test]
fn print32bit_without_a_newline() {
    fn seeded(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
        match exit {
            VcpuExit::IoOut(0xEA, data) => {
                host.counts.io_out += 1;
                let value = u32::from_le_bytes(data.try_into().unwrap());
                host.record("print32bit", &[value.into()], None);
                write!(console, "{value}").map_err(Lab5Error::Console)?;
                Ok(Flow::Continue)
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console),
        }
    }
    let message = failure_of("lab5_print32bit", |labs| labs.handle_hypercall = seeded);
    assert_names(
        &message,
        "lab5 handle_hypercall: print32bit(",
        &["the newline is missing", "with a newline"],
    );
}

#[test]
fn num_exits_without_the_current_exit() {
    fn seeded(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
        match exit {
            VcpuExit::IoIn(0xEB, data) => {
                let exits = host.counts.total() as u32; // counted after answering
                host.counts.io_in += 1;
                data.copy_from_slice(&exits.to_le_bytes());
                host.record("num_exits", &[], Some(exits.into()));
                Ok(Flow::Continue)
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console),
        }
    }
    let message = failure_of("lab5_num_exits", |labs| labs.handle_hypercall = seeded);
    assert_names(
        &message,
        "lab5 handle_hypercall: num_exits after ",
        &["count the exit first"],
    );
}

#[test]
fn exit_report_with_in_and_out_swapped() {
    fn seeded(memory: &GuestMemoryMmap, counts: &ExitCounts) -> Result<u64, Lab5Error> {
        let swapped = ExitCounts {
            io_in: counts.io_out,
            io_out: counts.io_in,
            ..*counts
        };
        lab5_hypercalls::write_exit_report(memory, &swapped)
    }
    let message = failure_of("lab5_write_exit_report", |labs| labs.write_exit_report = seeded);
    assert_names(
        &message,
        "lab5 write_exit_report: 0x5000 holds \"IO in: ",
        &["expected \"IO in: "],
    );
}

#[test]
fn gva_to_hva_that_returns_the_guest_physical_address() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, _host_base: u64, gva: u64) -> Option<u64> {
        lab2_paging::translate(memory, cr3, gva).result.ok()
    }
    let message = failure_of("lab5_gva_to_hva", |labs| labs.gva_to_hva = seeded);
    assert_names(
        &message,
        "lab5 gva_to_hva: gva_to_hva(0x",
        &["that is the guest physical address itself", "then add host_base"],
    );
}

#[test]
fn a_stub_reached_through_a_guest_run_is_reported_as_not_implemented() {
    fn stub(
        _: &mut VcpuFd,
        _: &mut dyn Write,
        _: &mut ExitCounts,
        _: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        panic!("not yet implemented: lab4 run_until_halt (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)")
    }
    let mut labs = Labs::BUILT;
    labs.run_until_halt = stub;
    let outcome = common::outcome_of("lab4_hello_long_mode", labs, common::seed());
    assert_eq!(
        outcome,
        grader::runner::Outcome::NotImplemented(
            "not implemented yet: lab4 run_until_halt (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)"
                .into()
        )
    );
}

// ---- causes named from the first departure (issue 9) ----

/// The reference walk with one step changed: `next_table` gives the next table's address from
/// an entry, `leaf` says whether an entry at a level maps a page, `scale` is the entry size (0:
/// 8 without the canonical check).
fn walk_with(
    memory: &GuestMemoryMmap,
    cr3: u64,
    gva: u64,
    next_table: fn(u64) -> u64,
    leaf: fn(Level, u64) -> bool,
    scale: u64,
    record_not_present: bool,
) -> Walk {
    let mut walk = Walk {
        gva,
        steps: Vec::new(),
        result: Err(WalkFault::NonCanonical(gva)),
    };
    if scale != 0 && ((gva << 16) as i64 >> 16) as u64 != gva {
        return walk;
    }
    // A scale of 0 stands for "8, without the canonical check".
    let scale = if scale == 0 { 8 } else { scale };
    let mut table = cr3 & 0x000f_ffff_ffff_f000;
    for level in Level::WALK {
        let index = (gva >> level.shift()) & 0x1ff;
        let entry_addr = table + index * scale;
        let entry: u64 = memory.read_obj(GuestAddress(entry_addr)).unwrap_or(0);
        if entry & 1 == 0 {
            if record_not_present {
                walk.steps.push(WalkStep {
                    level,
                    index,
                    entry_addr,
                    entry,
                });
            }
            walk.result = Err(WalkFault::NotPresent(level));
            return walk;
        }
        walk.steps.push(WalkStep {
            level,
            index,
            entry_addr,
            entry,
        });
        if leaf(level, entry) {
            let offset = (1u64 << level.shift()) - 1;
            walk.result = Ok((entry & 0x000f_ffff_ffff_f000 & !offset) | (gva & offset));
            return walk;
        }
        table = next_table(entry);
    }
    walk
}

fn masked(entry: u64) -> u64 {
    entry & 0x000f_ffff_ffff_f000
}

fn right_leaf(level: Level, entry: u64) -> bool {
    level == Level::Pt || (entry & 0x80 != 0 && matches!(level, Level::Pdpt | Level::Pd))
}

#[test]
fn walk_without_the_canonical_check() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, masked, right_leaf, 0, true)
    }
    let message = failure_of("lab2_translate_faults", |labs| labs.translate = seeded);
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["is not canonical", "WalkFault::NonCanonical"],
    );
}

#[test]
fn walk_with_entry_addresses_not_scaled_by_8() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, masked, right_leaf, 1, true)
    }
    let message = failure_of("lab2_translate_other_pages", |labs| labs.translate = seeded);
    assert_names(&message, "lab2 translate: the walk of 0x", &["not scaled by 8"]);
}

#[test]
fn walk_that_keeps_flag_bits_in_the_table_address() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, |entry| entry, right_leaf, 8, true)
    }
    let message = failure_of("lab2_translate_other_pages", |labs| labs.translate = seeded);
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["flag bits were left in the table's address"],
    );
}

#[test]
fn walk_that_honours_ps_only_in_the_pd() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(
            memory,
            cr3,
            gva,
            masked,
            |level, entry| level == Level::Pt || (level == Level::Pd && entry & 0x80 != 0),
            8,
            true,
        )
    }
    let message = failure_of("lab2_translate_other_pages", |labs| labs.translate = seeded);
    assert_names(&message, "lab2 translate: the walk of 0x", &["maps a 1 GiB page"]);
}

#[test]
fn walk_that_does_not_record_the_non_present_entry() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, masked, right_leaf, 8, false)
    }
    let message = failure_of("lab2_translate_faults", |labs| labs.translate = seeded);
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["stopped before recording the non-present"],
    );
}

#[test]
fn protected_mode_cr0_that_loses_its_bits() {
    let seeded = long_sregs_with(|s| {
        if s.cs.l == 0 && s.cr0 & (1 << 31) == 0 {
            s.cr0 = 1;
        }
    });
    let message = failure_of("lab3_protected_mode", |labs| labs.special_registers = seeded);
    assert_names(
        &message,
        "lab3 special_registers: CR0 in protected mode = 0x1 (PE)",
        &["keeps the CR0 it is given", "only adds PE"],
    );
}

fn printing_twice(
    vcpu: &mut VcpuFd,
    console: &mut dyn Write,
    counts: &mut ExitCounts,
    trace: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), ExitLoopError> {
    loop {
        let exit = vcpu.run().map_err(ExitLoopError::Run)?;
        trace(&exit);
        if let VcpuExit::IoOut(0xE9, data) = &exit {
            console.write_all(data).map_err(ExitLoopError::Console)?;
        }
        if lab4_exit_loop::handle_exit(exit, console, counts)? == Flow::Halt {
            return Ok(());
        }
    }
}

#[test]
fn output_printed_twice() {
    let message = failure_of("lab4_hello_long_mode", |labs| labs.run_until_halt = printing_twice);
    assert_names(&message, "lab4 run_until_halt: ", &["every byte twice"]);
}

#[test]
fn an_unexpected_exit_treated_as_hlt() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        match lab4_exit_loop::run_until_halt(vcpu, console, counts, trace) {
            Err(ExitLoopError::Unexpected(_)) => Ok(()),
            other => other,
        }
    }
    let message = failure_of("lab4_unexpected_exit_ends_the_run", |labs| labs.run_until_halt = seeded);
    assert_names(
        &message,
        "lab4 handle_exit: ",
        &["as if the guest had halted", "was swallowed"],
    );
}

#[test]
fn trace_callback_never_called() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        lab4_exit_loop::run_until_halt(vcpu, console, counts, &mut |_| {})
    }
    let message = failure_of("lab4_trace_every_exit", |labs| labs.run_until_halt = seeded);
    assert_names(
        &message,
        "lab4 run_until_halt: ",
        &["the trace callback saw 0", "once for every exit"],
    );
}

#[test]
fn a_failed_kvm_run_retried() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        loop {
            let Ok(exit) = vcpu.run() else {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            };
            trace(&exit);
            if lab4_exit_loop::handle_exit(exit, console, counts)? == Flow::Halt {
                return Ok(());
            }
        }
    }
    let message = failure_of("lab4_kvm_run_errors", |labs| labs.run_until_halt = seeded);
    assert_names(&message, "lab4 run_until_halt: ", &["retries a failed KVM_RUN"]);
}

#[test]
fn a_failed_kvm_run_swallowed() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        match lab4_exit_loop::run_until_halt(vcpu, console, counts, trace) {
            Err(ExitLoopError::Run(_)) => Ok(()),
            other => other,
        }
    }
    let message = failure_of("lab4_kvm_run_errors", |labs| labs.run_until_halt = seeded);
    assert_names(&message, "lab4 run_until_halt: ", &["was swallowed"]);
}

#[test]
fn a_string_of_exactly_the_maximum_length_refused() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Result<Vec<u8>, Lab5Error> {
        let bytes = lab5_hypercalls::read_guest_string(memory, cr3, gva)?;
        if bytes.len() >= lab5_hypercalls::MAX_STRING {
            // Refused as the reference refuses a string without a NUL.
            return Err(Lab5Error::BadAddress {
                call: "print_str",
                gva,
                reason: lab5_hypercalls::AddressError::Unterminated,
            });
        }
        Ok(bytes)
    }
    let message = failure_of("lab5_read_guest_string", |labs| labs.read_guest_string = seeded);
    assert_names(
        &message,
        "lab5 read_guest_string: a string of exactly MAX_STRING = 4096 bytes",
        &["a string of exactly that length is fine"],
    );
}

#[test]
fn print32bit_in_hex() {
    fn seeded(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
        match exit {
            VcpuExit::IoOut(0xEA, data) => {
                host.counts.io_out += 1;
                let value = u32::from_le_bytes(data.try_into().unwrap());
                host.record("print32bit", &[value.into()], None);
                writeln!(console, "{value:x}").map_err(Lab5Error::Console)?;
                Ok(Flow::Continue)
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console),
        }
    }
    let message = failure_of("lab5_print32bit", |labs| labs.handle_hypercall = seeded);
    assert_names(&message, "lab5 handle_hypercall: print32bit(", &["printed in hex"]);
}

#[test]
fn memory_registered_read_only() {
    fn seeded(mem_size: usize) -> Result<Vm, Lab1Error> {
        let kvm = Kvm::new().map_err(Lab1Error::OpenKvm)?;
        let fd = kvm.create_vm().map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_CREATE_VM",
            source,
        })?;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
        let host = memory.get_host_address(GuestAddress(0)).unwrap() as u64;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: kvm_bindings::KVM_MEM_READONLY,
            guest_phys_addr: 0,
            memory_size: mem_size as u64,
            userspace_addr: host,
        };
        // SAFETY: the region is `memory`, which `Vm` keeps alive as long as the VM.
        unsafe { fd.set_user_memory_region(region) }.map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_SET_USER_MEMORY_REGION",
            source,
        })?;
        Ok(Vm { kvm, fd, memory })
    }
    let message = failure_of("lab1_memory_seen_by_vcpu", |labs| labs.vm_init = seeded);
    assert_names(
        &message,
        "lab1 vm_init: the guest could read guest physical 0x1ffff",
        &["but not write it", "read-only"],
    );
}

// ---- cheats: none gains a point over the stub it replaces ----

#[test]
fn hard_coded_hello_output_and_counts() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        console.write_all(b"Hello, world!\n").map_err(ExitLoopError::Console)?;
        (counts.io_out, counts.hlt) = (14, 1);
        let regs = kvm_regs {
            rax: 42,
            ..vcpu.get_regs().unwrap()
        };
        vcpu.set_regs(&regs).unwrap();
        Ok(())
    }
    for check in ["lab4_hello_long_mode", "lab4_hello_real_mode", "lab4_string_io"] {
        let message = failure_of(check, |labs| labs.run_until_halt = seeded);
        assert!(message.starts_with("lab4 "), "{message}");
    }
}

#[test]
fn a_failed_kvm_run_made_up_without_calling_kvm_run() {
    fn seeded(
        _vcpu: &mut VcpuFd,
        _console: &mut dyn Write,
        _counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        Err(ExitLoopError::Run(kvm_ioctls::Error::new(libc::EINTR)))
    }
    let message = failure_of("lab4_kvm_run_errors", |labs| labs.run_until_halt = seeded);
    assert_names(&message, "lab4 run_until_halt: ", &["without calling KVM_RUN"]);
}

#[test]
fn a_loop_that_panics_on_its_own_thread_is_reported_without_a_backtrace() {
    fn seeded(
        _vcpu: &mut VcpuFd,
        _console: &mut dyn Write,
        _counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        let exits: Vec<u64> = Vec::new();
        panic!("no exit {}", exits.len())
    }
    let message = failure_of("lab4_kvm_run_errors", |labs| labs.run_until_halt = seeded);
    assert!(
        message.starts_with("lab code panicked: no exit 0 (at grader/tests/seeded.rs:"),
        "{message}"
    );
}

#[test]
fn handle_exit_that_halts_on_every_exit() {
    fn seeded(exit: VcpuExit<'_>, _console: &mut dyn Write, counts: &mut ExitCounts) -> Result<Flow, ExitLoopError> {
        let _ = exit;
        counts.hlt += 1;
        Ok(Flow::Halt)
    }
    let message = failure_of("lab4_hlt_ends_the_loop", |labs| labs.handle_exit = seeded);
    assert_names(
        &message,
        "lab4 handle_exit: an OUT to 0xE9 gave Ok(Halt)",
        &["the guest goes on after printing"],
    );
}

#[test]
fn the_kit_guests_counts_filled_in_after_a_real_run() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        let result = lab4_exit_loop::run_until_halt(vcpu, console, counts, trace);
        *counts = ExitCounts {
            io_out: 14,
            hlt: 1,
            ..ExitCounts::default()
        };
        result
    }
    for check in ["lab4_hello_long_mode", "lab4_hello_real_mode"] {
        let message = failure_of(check, |labs| labs.run_until_halt = seeded);
        assert_names(
            &message,
            "lab4 run_until_halt: a ",
            &["made 15 exits (io_out 14, hlt 1), expected"],
        );
    }
}

#[test]
fn trace_fed_made_up_exits() {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        lab4_exit_loop::run_until_halt(vcpu, console, counts, &mut |_| trace(&VcpuExit::Hlt))
    }
    let message = failure_of("lab4_trace_every_exit", |labs| labs.run_until_halt = seeded);
    assert_names(
        &message,
        "lab4 run_until_halt: the trace callback's exit 1 was hlt",
        &["expected io out Some(233)", "as KVM_RUN returned it"],
    );
}

#[test]
fn result_slot_that_always_reads_42() {
    fn seeded(_memory: &GuestMemoryMmap, _width: usize) -> Result<u64, ResultError> {
        Ok(42)
    }
    let message = failure_of("lab4_hello_long_mode", |labs| labs.read_result_slot = seeded);
    assert_names(
        &message,
        "lab4 read_result_slot: a long-mode guest made for this run",
        &["the run read 0x2a", "read the mode's word"],
    );
}

#[test]
fn result_checks_that_pass_everything() {
    fn seeded(_rax: u64, _memory: u64) -> Result<(), ResultError> {
        Ok(())
    }
    let message = failure_of("lab4_hello_real_mode", |labs| labs.check_results = seeded);
    assert_names(
        &message,
        "lab4 check_results: a real-mode guest made for this run",
        &["passed the result checks: both must be 42"],
    );
}

/// The end-to-end checks with `script` (sh) as the VMM, the labs as built.
fn e2e_outcome_with_vmm(check: &str, script: &str) -> grader::runner::Outcome {
    let mut backend = common::InProcess {
        probe: grader_probe::Probe {
            labs: Labs::BUILT,
            vmm: ("/bin/sh".into(), vec!["-c".into(), script.into(), "kvm-hello".into()]),
        },
    };
    let check = grader::find_check(check).expect("an e2e check");
    grader::runner::run_check(&mut backend, &check, common::seed()).expect("not interrupted")
}

#[test]
fn a_vmm_that_prints_the_kit_guests_greeting_and_summary() {
    // What a correct kvm-hello prints for the kit's own guest, whatever guest it is given.
    let script = r#"
        case "$*" in
        *--json*) printf '%s\n' '{"mode":"long","output":"Hello, world!\n","exits":{"total":15,"io":14,"hlt":1},"rax":42,"memory_0x400":42,"ok":true,"status":0}' ;;
        *) printf 'Hello, world!\n'
           echo 'kvm-hello: guest halted after 15 exits (io 14, hlt 1); rax = 42, memory[0x400] = 42' >&2 ;;
        esac
    "#;
    for check in [
        "e2e_long_mode",
        "e2e_protected_mode",
        "e2e_real_mode",
        "e2e_json_report",
    ] {
        match e2e_outcome_with_vmm(check, script) {
            grader::runner::Outcome::Failed(message) => {
                assert!(message.starts_with("kvm-hello --guest GUEST --mode "), "{message}")
            }
            other => panic!("{check}: a canned greeting was not caught: {other:?}"),
        }
    }
}

#[test]
fn a_stub_reached_through_kvm_hello_is_reported_as_not_implemented() {
    let script = "echo 'kvm-hello: not implemented yet: lab4 run_until_halt (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)' >&2; exit 6";
    assert_eq!(
        e2e_outcome_with_vmm("e2e_long_mode", script),
        grader::runner::Outcome::NotImplemented(
            "not implemented yet: lab4 run_until_halt (labs/lab4-exit-loop/src/lib.rs; book: Lab 4, The exit loop)"
                .into()
        )
    );
}

#[test]
fn hard_coded_hypercall_output() {
    /// What the kit's hypercall guest (guest/hypercalls) prints: plausible, and the same on every run.
    const KIT_GUEST_OUTPUT: &[u8] = b"Hello from the hypercall guest!\n2048\n4294967295\nThis line costs one exit.\n35\n37\nIO in: 3\nIO out: 37\nInvalid GVA\n";
    fn seeded(
        vcpu: &mut VcpuFd,
        host: &mut Host<'_>,
        console: &mut dyn Write,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), Lab5Error> {
        console.write_all(KIT_GUEST_OUTPUT).map_err(Lab5Error::Console)?;
        (host.counts.io_in, host.counts.io_out, host.counts.hlt) = (3, 40, 1);
        // The results a halted guest leaves, so only the output can tell.
        host.memory.write_obj(42u64, GuestAddress(0x400)).unwrap();
        let regs = kvm_regs {
            rax: 42,
            ..vcpu.get_regs().unwrap()
        };
        vcpu.set_regs(&regs).unwrap();
        Ok(())
    }
    for check in [
        "lab5_hypercall_guest",
        "lab5_print_str_in_one_exit",
        "lab5_gva_to_hva_live",
    ] {
        let message = failure_of(check, |labs| labs.run_hypercalls = seeded);
        assert_names(
            &message,
            "lab5 handle_hypercall: a hypercall guest made for this run printed ",
            &["expected"],
        );
    }
}

#[test]
fn gva_to_hva_without_the_memory_bound() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, host_base: u64, gva: u64) -> Option<u64> {
        // Any guest physical address the tables give, in guest memory or not.
        Some(host_base + lab2_paging::translate(memory, cr3, gva).result.ok()?)
    }
    let message = failure_of("lab5_gva_to_hva_outside_memory", |labs| labs.gva_to_hva = seeded);
    assert_names(
        &message,
        "lab5 gva_to_hva: gva_to_hva(0x",
        &["past the end of guest memory", "answer None"],
    );
}

#[test]
fn read_guest_string_without_a_limit() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Result<Vec<u8>, Lab5Error> {
        let mut bytes = Vec::new();
        loop {
            let at = gva + bytes.len() as u64;
            let gpa = lab2_paging::translate(memory, cr3, at)
                .result
                .map_err(|fault| Lab5Error::BadAddress {
                    call: "print_str",
                    gva,
                    reason: fault.into(),
                })?;
            let byte: u8 = memory
                .read_obj(GuestAddress(gpa))
                .map_err(|err| Lab5Error::BadAddress {
                    call: "print_str",
                    gva,
                    reason: err.into(),
                })?;
            if byte == 0 {
                return Ok(bytes);
            }
            bytes.push(byte);
        }
    }
    let message = failure_of("lab5_read_guest_string", |labs| labs.read_guest_string = seeded);
    assert_names(
        &message,
        "lab5 read_guest_string: a string with no NUL within 4096 bytes",
        &["expected Err(Lab5Error::BadAddress)"],
    );
}

#[test]
fn read_guest_string_that_translates_only_its_first_address() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Result<Vec<u8>, Lab5Error> {
        let bad = |reason| Lab5Error::BadAddress {
            call: "print_str",
            gva,
            reason,
        };
        let gpa = lab2_paging::translate(memory, cr3, gva)
            .result
            .map_err(|fault| bad(fault.into()))?;
        // Then on through guest physical memory, as if the next page followed it there.
        let mut bytes = Vec::new();
        while bytes.len() <= lab5_hypercalls::MAX_STRING {
            let byte: u8 = memory
                .read_obj(GuestAddress(gpa + bytes.len() as u64))
                .map_err(|err| bad(err.into()))?;
            if byte == 0 {
                return Ok(bytes);
            }
            bytes.push(byte);
        }
        Err(bad(lab5_hypercalls::AddressError::Unterminated))
    }
    let message = failure_of("lab5_read_guest_string", |labs| labs.read_guest_string = seeded);
    assert_names(
        &message,
        "lab5 read_guest_string: a ",
        &["across", "translating the address of each page"],
    );
}

#[test]
fn hypercall_loop_that_never_returns() {
    fn seeded(
        vcpu: &mut VcpuFd,
        host: &mut Host<'_>,
        console: &mut dyn Write,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), Lab5Error> {
        lab5_hypercalls::run_hypercalls(vcpu, host, console, trace)?;
        // Spins after the HLT instead of returning: kvm-hello's watchdog must end the run.
        loop {
            std::hint::spin_loop();
        }
    }
    let message = failure_of("lab5_print_str_in_one_exit", |labs| labs.run_hypercalls = seeded);
    assert_names(
        &message,
        "lab5 run_hypercalls: a hypercall guest made for this run: timeout",
        &[],
    );
}

/// The reference's `run_hypercalls` serving every exit with `$handle` (the reference loop calls
/// its own `handle_hypercall`).
macro_rules! hypercall_loop {
    ($handle:ident) => {{
        fn serve_all(
            vcpu: &mut VcpuFd,
            host: &mut Host<'_>,
            console: &mut dyn Write,
            trace: &mut dyn FnMut(&VcpuExit<'_>),
        ) -> Result<(), Lab5Error> {
            loop {
                let exit = vcpu.run().map_err(Lab5Error::Run)?;
                trace(&exit);
                if $handle(exit, host, console)? == Flow::Halt {
                    return Ok(());
                }
            }
        }
        serve_all
    }};
}

#[test]
fn live_gva_to_hva_without_the_page_tables() {
    fn seeded(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
        match exit {
            VcpuExit::IoOut(0xEE, data) => {
                host.counts.io_out += 1;
                let slot = u64::from(u32::from_le_bytes(data.try_into().unwrap()));
                let gpa = lab2_paging::translate(host.memory, host.cr3, slot).result.unwrap();
                let gva: u64 = host.memory.read_obj(GuestAddress(gpa)).unwrap();
                // The GVA taken for a guest physical address: right for the identity map only.
                let hva = (gva < 0x20_0000).then(|| host.host_base + gva);
                host.memory.write_obj(hva.unwrap_or(0), GuestAddress(gpa)).unwrap();
                host.record("gva_to_hva", &[gva], Some(hva.unwrap_or(0)));
                if hva.is_none() {
                    console.write_all(b"Invalid GVA\n").map_err(Lab5Error::Console)?;
                }
                Ok(Flow::Continue)
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console),
        }
    }
    let message = failure_of("lab5_gva_to_hva_live", |labs| {
        labs.run_hypercalls = hypercall_loop!(seeded)
    });
    assert_names(
        &message,
        "lab5 handle_hypercall: a hypercall guest made for this run printed ",
        &["gva_to_hva of GVA", "the guest maps its first 2 MiB again"],
    );
}

#[test]
fn live_print_str_without_the_page_tables() {
    fn seeded(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
        match exit {
            VcpuExit::IoOut(0xEC, data) => {
                host.counts.io_out += 1;
                let gva = u64::from(u32::from_le_bytes(data.try_into().unwrap()));
                host.record("print_str", &[gva], None);
                // The GVA read as a guest physical address.
                let mut at = gva;
                while let Ok(byte) = host.memory.read_obj::<u8>(GuestAddress(at)) {
                    if byte == 0 {
                        break;
                    }
                    console.write_all(&[byte]).map_err(Lab5Error::Console)?;
                    at += 1;
                }
                Ok(Flow::Continue)
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console),
        }
    }
    let message = failure_of("lab5_hypercall_guest", |labs| {
        labs.run_hypercalls = hypercall_loop!(seeded)
    });
    assert_names(
        &message,
        "lab5 handle_hypercall: a hypercall guest made for this run printed ",
        &["print_str of a ", "read through the guest's page tables"],
    );
}

#[test]
fn a_stub_reached_in_the_hypercall_loop_is_reported_as_not_implemented() {
    fn stub(
        _: &mut VcpuFd,
        _: &mut Host<'_>,
        _: &mut dyn Write,
        _: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), Lab5Error> {
        panic!("not yet implemented: lab5 run_hypercalls (labs/lab5-hypercalls/src/lib.rs; book: Lab 5, Hypercalls)")
    }
    let mut labs = Labs::BUILT;
    labs.run_hypercalls = stub;
    let outcome = common::outcome_of("lab5_hypercall_guest", labs, common::seed());
    assert_eq!(
        outcome,
        grader::runner::Outcome::NotImplemented(
            "not implemented yet: lab5 run_hypercalls (labs/lab5-hypercalls/src/lib.rs; book: Lab 5, Hypercalls)"
                .into()
        )
    );
}

#[test]
fn lwn_memory_registered_at_guest_physical_0() {
    fn seeded() -> Result<lab0_lwn::LwnVm, lab0_lwn::Lab0Error> {
        let vm = lab0_lwn::create_vm()?;
        let host = vm.memory.get_host_address(GuestAddress(0x1000)).unwrap() as u64;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 0x1000,
            userspace_addr: host,
        };
        // SAFETY: the region is the VM's own page, kept alive by `LwnVm`; slot 0 is moved.
        unsafe { vm.fd.set_user_memory_region(region) }.unwrap();
        Ok(vm)
    }
    let message = failure_of("lab0_memory_slot", |labs| labs.lwn_create_vm = seeded);
    assert_names(&message, "lab0 create_vm: the vCPU ", &["guest_phys_addr 0x1000"]);
}

#[test]
fn memory_registered_one_byte_short() {
    fn seeded(mem_size: usize) -> Result<Vm, Lab1Error> {
        let kvm = Kvm::new().map_err(Lab1Error::OpenKvm)?;
        let fd = kvm.create_vm().map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_CREATE_VM",
            source,
        })?;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
        let host = memory.get_host_address(GuestAddress(0)).unwrap() as u64;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_size as u64 - 1,
            userspace_addr: host,
        };
        // SAFETY: the region lies inside `memory`, which `Vm` keeps alive as long as the VM.
        unsafe { fd.set_user_memory_region(region) }.map_err(|source| Lab1Error::Ioctl {
            ioctl: "KVM_SET_USER_MEMORY_REGION",
            source,
        })?;
        Ok(Vm { kvm, fd, memory })
    }
    let message = failure_of("lab1_vm_init_memory", |labs| labs.vm_init = seeded);
    assert_names(
        &message,
        "lab1 vm_init: KVM_SET_USER_MEMORY_REGION failed",
        &["not a multiple of the page size"],
    );
}

#[test]
fn gva_to_hva_slot_not_dereferenced() {
    fn seeded(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
        match exit {
            VcpuExit::IoOut(0xEE, data) => {
                host.counts.io_out += 1;
                let slot = u64::from(u32::from_le_bytes(data.try_into().unwrap()));
                // Translates the slot's own address instead of the GVA stored there.
                let hva = lab5_hypercalls::gva_to_hva(host.memory, host.cr3, host.host_base, slot).unwrap_or(0);
                host.memory.write_obj(hva, GuestAddress(slot)).unwrap();
                host.record("gva_to_hva", &[slot], Some(hva));
                Ok(Flow::Continue)
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console),
        }
    }
    let message = failure_of("lab5_gva_to_hva_hypercall", |labs| labs.handle_hypercall = seeded);
    assert_names(
        &message,
        "lab5 handle_hypercall: gva_to_hva with its slot at 0x",
        &["translation of the slot's own address"],
    );
}

#[test]
fn gva_to_hva_written_back_in_4_bytes() {
    fn seeded(exit: VcpuExit<'_>, host: &mut Host<'_>, console: &mut dyn Write) -> Result<Flow, Lab5Error> {
        match exit {
            VcpuExit::IoOut(0xEE, data) => {
                let slot = u64::from(u32::from_le_bytes(data.try_into().unwrap()));
                let flow = lab5_hypercalls::handle_hypercall(VcpuExit::IoOut(0xEE, data), host, console)?;
                let hva: u64 = host.memory.read_obj(GuestAddress(slot)).unwrap();
                host.memory.write_obj(hva & 0xffff_ffff, GuestAddress(slot)).unwrap();
                Ok(flow)
            }
            other => lab5_hypercalls::handle_hypercall(other, host, console),
        }
    }
    let message = failure_of("lab5_gva_to_hva_hypercall", |labs| labs.handle_hypercall = seeded);
    assert_names(
        &message,
        "lab5 handle_hypercall: gva_to_hva with its slot at 0x",
        &["only the low 4 bytes"],
    );
}

#[test]
fn walk_that_keeps_nx_in_the_table_address() {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        let mut walk = Walk {
            gva,
            steps: Vec::new(),
            result: Err(WalkFault::NonCanonical(gva)),
        };
        if ((gva << 16) as i64 >> 16) as u64 != gva {
            return walk;
        }
        let mut table = cr3 & !0xfff;
        for level in Level::WALK {
            let index = (gva >> level.shift()) & 0x1ff;
            let entry_addr = table + index * 8;
            let Ok(entry) = memory.read_obj::<u64>(GuestAddress(entry_addr)) else {
                walk.result = Err(WalkFault::TableOutsideMemory {
                    level,
                    addr: entry_addr,
                });
                return walk;
            };
            walk.steps.push(WalkStep {
                level,
                index,
                entry_addr,
                entry,
            });
            if entry & 1 == 0 {
                walk.result = Err(WalkFault::NotPresent(level));
                return walk;
            }
            if right_leaf(level, entry) {
                let offset = (1u64 << level.shift()) - 1;
                walk.result = Ok((entry & 0x000f_ffff_ffff_f000 & !offset) | (gva & offset));
                return walk;
            }
            table = entry & !0xfff; // keeps NX (bit 63) and the bits an OS may use
        }
        walk
    }
    let message = failure_of("lab2_translate_other_pages", |labs| labs.translate = seeded);
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["flag bits were left in the table's address", "NX is bit 63"],
    );
}

#[test]
fn gva_to_hva_that_ignores_the_page_tables() {
    fn seeded(_memory: &GuestMemoryMmap, _cr3: u64, host_base: u64, gva: u64) -> Option<u64> {
        (gva < 0x20_0000).then(|| host_base + gva)
    }
    for check in ["lab5_gva_to_hva", "lab5_gva_to_hva_outside_memory"] {
        let message = failure_of(check, |labs| labs.gva_to_hva = seeded);
        assert_names(&message, "lab5 gva_to_hva: gva_to_hva(0x", &["expected"]);
    }
}

#[test]
fn read_guest_string_that_ignores_the_page_tables() {
    fn seeded(memory: &GuestMemoryMmap, _cr3: u64, gva: u64) -> Result<Vec<u8>, Lab5Error> {
        let mut bytes = Vec::new();
        let mut at = gva;
        loop {
            let Ok(byte) = memory.read_obj::<u8>(GuestAddress(at)) else {
                return lab5_hypercalls::read_guest_string(memory, 0x2000, 1 << 46);
            };
            if byte == 0 || bytes.len() > lab5_hypercalls::MAX_STRING {
                return Ok(bytes);
            }
            bytes.push(byte);
            at += 1;
        }
    }
    let message = failure_of("lab5_read_guest_string", |labs| labs.read_guest_string = seeded);
    assert_names(
        &message,
        "lab5 read_guest_string: a ",
        &["on a page the tables map elsewhere", "translate the address"],
    );
}
