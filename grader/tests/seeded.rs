//! Seeded mistakes: typical student errors applied to the reference, one at a time. The grader
//! must fail each with a message that names the lab, the function and the mistake.
#![cfg(feature = "solution")]

mod common;

use std::io::Write;

use common::causes::{Mistake, assert_no_wrong_cause};
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

/// Every seeded mistake of this file and the place it seeds (`labN function`): a new seeded
/// mistake gets a line here, so the wrong-cause sweep runs it against every check it reaches.
#[rustfmt::skip]
const MISTAKES: &[Mistake] = &[
    Mistake::new("hlt_counted_twice", "lab4 handle_exit", seed_hlt_counted_twice),
    Mistake::new("lwn_code_segment_base_not_0", "lab0 setup_vcpu", seed_lwn_code_segment_base_not_0),
    Mistake::new("pd_entry_without_ps", "lab2 setup_long_mode_page_tables", seed_pd_entry_without_ps),
    Mistake::new("pdpt_pointing_at_the_wrong_table", "lab2 setup_long_mode_page_tables", seed_pdpt_pointing_at_the_wrong_table),
    Mistake::new("pml4_entry_without_user", "lab2 setup_long_mode_page_tables", seed_pml4_entry_without_user),
    Mistake::new("a_second_2mib_page_mapped", "lab2 setup_long_mode_page_tables", seed_a_second_2mib_page_mapped),
    Mistake::new("paged32_directory_without_ps", "lab2 setup_paged32_page_directory", seed_paged32_directory_without_ps),
    Mistake::new("walk_that_ignores_ps", "lab2 translate", seed_walk_that_ignores_ps),
    Mistake::new("efer_without_lma", "lab3 special_registers", seed_efer_without_lma),
    Mistake::new("long_mode_without_pae", "lab3 special_registers", seed_long_mode_without_pae),
    Mistake::new("long_mode_without_paging", "lab3 special_registers", seed_long_mode_without_paging),
    Mistake::new("paged32_without_paging", "lab3 special_registers", seed_paged32_without_paging),
    Mistake::new("code_segment_32_bit_in_long_mode", "lab3 special_registers", seed_code_segment_32_bit_in_long_mode),
    Mistake::new("data_segments_with_the_code_type", "lab3 special_registers", seed_data_segments_with_the_code_type),
    Mistake::new("stack_pointer_at_0", "lab3 general_registers", seed_stack_pointer_at_0),
    Mistake::new("rflags_0", "lab3 general_registers", seed_rflags_0),
    Mistake::new("canned_sregs_that_ignore_the_given_state", "lab3 special_registers", seed_canned_sregs_that_ignore_the_given_state),
    Mistake::new("guest_with_interrupts_enabled", "lab3 general_registers", seed_guest_with_interrupts_enabled),
    Mistake::new("guest_with_a_32_bit_code_segment_in_long_mode", "lab3 special_registers", seed_guest_with_a_32_bit_code_segment_in_long_mode),
    Mistake::new("guest_with_a_data_segment_not_at_0", "lab3 special_registers", seed_guest_with_a_data_segment_not_at_0),
    Mistake::new("guest_with_the_kit_cr3_instead_of_the_one_given", "lab3 special_registers", seed_guest_with_the_kit_cr3_instead_of_the_one_given),
    Mistake::new("stack_at_the_kit_memory_size_whatever_the_size", "lab3 general_registers", seed_stack_at_the_kit_memory_size_whatever_the_size),
    Mistake::new("output_of_only_the_first_byte", "lab4 handle_exit", seed_output_of_only_the_first_byte),
    Mistake::new("loop_that_does_not_stop_at_hlt", "lab4 run_until_halt", seed_loop_that_does_not_stop_at_hlt),
    Mistake::new("result_read_at_the_wrong_address", "lab4 read_result_slot", seed_result_read_at_the_wrong_address),
    Mistake::new("result_read_at_the_wrong_width", "lab4 read_result_slot", seed_result_read_at_the_wrong_width),
    Mistake::new("only_rax_checked", "lab4 check_results", seed_only_rax_checked),
    Mistake::new("memory_registered_with_the_wrong_size", "lab1 vm_init", seed_memory_registered_with_the_wrong_size),
    Mistake::new("a_lab_bug_that_panics_is_reported_without_a_backtrace", "lab3 general_registers", seed_a_lab_bug_that_panics_is_reported_without_a_backtrace),
    Mistake::new("loop_that_never_returns_to_kvm_run", "lab4 run_until_halt", seed_loop_that_never_returns_to_kvm_run),
    Mistake::new("lwn_vcpu_left_at_the_reset_rip", "lab0 setup_vcpu", seed_lwn_vcpu_left_at_the_reset_rip),
    Mistake::new("lwn_bl_not_set", "lab0 setup_vcpu", seed_lwn_bl_not_set),
    Mistake::new("vm_init_that_allocates_but_registers_nothing", "lab1 vm_init", seed_vm_init_that_allocates_but_registers_nothing),
    Mistake::new("vm_init_that_registers_another_allocation", "lab1 vm_init", seed_vm_init_that_registers_another_allocation),
    Mistake::new("vcpu_init_with_a_vcpu_of_another_vm", "lab1 vcpu_init", seed_vcpu_init_with_a_vcpu_of_another_vm),
    Mistake::new("load_image_that_copies_before_it_refuses", "lab1 load_image", seed_load_image_that_copies_before_it_refuses),
    Mistake::new("lwn_create_vm_that_registers_nothing", "lab0 create_vm", seed_lwn_create_vm_that_registers_nothing),
    Mistake::new("lwn_setup_vcpu_of_another_vm", "lab0 setup_vcpu", seed_lwn_setup_vcpu_of_another_vm),
    Mistake::new("hard_coded_lwn_output_and_counts", "lab0 run", seed_hard_coded_lwn_output_and_counts),
    Mistake::new("print32bit_without_a_newline", "lab5 handle_hypercall", seed_print32bit_without_a_newline),
    Mistake::new("num_exits_without_the_current_exit", "lab5 handle_hypercall", seed_num_exits_without_the_current_exit),
    Mistake::new("exit_report_with_in_and_out_swapped", "lab5 write_exit_report", seed_exit_report_with_in_and_out_swapped),
    Mistake::new("gva_to_hva_that_returns_the_guest_physical_address", "lab5 gva_to_hva", seed_gva_to_hva_that_returns_the_guest_physical_address),
    Mistake::new("walk_without_the_canonical_check", "lab2 translate", seed_walk_without_the_canonical_check),
    Mistake::new("walk_with_entry_addresses_not_scaled_by_8", "lab2 translate", seed_walk_with_entry_addresses_not_scaled_by_8),
    Mistake::new("walk_that_keeps_flag_bits_in_the_table_address", "lab2 translate", seed_walk_that_keeps_flag_bits_in_the_table_address),
    Mistake::new("walk_that_honours_ps_only_in_the_pd", "lab2 translate", seed_walk_that_honours_ps_only_in_the_pd),
    Mistake::new("walk_that_does_not_record_the_non_present_entry", "lab2 translate", seed_walk_that_does_not_record_the_non_present_entry),
    Mistake::new("protected_mode_cr0_that_loses_its_bits", "lab3 special_registers", seed_protected_mode_cr0_that_loses_its_bits),
    Mistake::new("output_printed_twice", "lab4 run_until_halt", seed_output_printed_twice),
    Mistake::new("an_unexpected_exit_treated_as_hlt", "lab4 run_until_halt", seed_an_unexpected_exit_treated_as_hlt),
    Mistake::new("trace_callback_never_called", "lab4 run_until_halt", seed_trace_callback_never_called),
    Mistake::new("a_failed_kvm_run_retried", "lab4 run_until_halt", seed_a_failed_kvm_run_retried),
    Mistake::new("a_failed_kvm_run_swallowed", "lab4 run_until_halt", seed_a_failed_kvm_run_swallowed),
    Mistake::new("a_string_of_exactly_the_maximum_length_refused", "lab5 read_guest_string", seed_a_string_of_exactly_the_maximum_length_refused),
    Mistake::new("print32bit_in_hex", "lab5 handle_hypercall", seed_print32bit_in_hex),
    Mistake::new("memory_registered_read_only", "lab1 vm_init", seed_memory_registered_read_only),
    Mistake::new("hard_coded_hello_output_and_counts", "lab4 run_until_halt", seed_hard_coded_hello_output_and_counts),
    Mistake::new("a_failed_kvm_run_made_up_without_calling_kvm_run", "lab4 run_until_halt", seed_a_failed_kvm_run_made_up_without_calling_kvm_run),
    Mistake::new("a_loop_that_panics_on_its_own_thread_is_reported_without_a_backtrace", "lab4 run_until_halt", seed_a_loop_that_panics_on_its_own_thread_is_reported_without_a_backtrace),
    Mistake::new("handle_exit_that_halts_on_every_exit", "lab4 handle_exit", seed_handle_exit_that_halts_on_every_exit),
    Mistake::new("the_kit_guests_counts_filled_in_after_a_real_run", "lab4 run_until_halt", seed_the_kit_guests_counts_filled_in_after_a_real_run),
    Mistake::new("trace_fed_made_up_exits", "lab4 run_until_halt", seed_trace_fed_made_up_exits),
    Mistake::new("result_slot_that_always_reads_42", "lab4 read_result_slot", seed_result_slot_that_always_reads_42),
    Mistake::new("result_checks_that_pass_everything", "lab4 check_results", seed_result_checks_that_pass_everything),
    Mistake::new("hard_coded_hypercall_output", "lab5 run_hypercalls", seed_hard_coded_hypercall_output),
    Mistake::new("gva_to_hva_without_the_memory_bound", "lab5 gva_to_hva", seed_gva_to_hva_without_the_memory_bound),
    Mistake::new("read_guest_string_without_a_limit", "lab5 read_guest_string", seed_read_guest_string_without_a_limit),
    Mistake::new("read_guest_string_that_translates_only_its_first_address", "lab5 read_guest_string", seed_read_guest_string_that_translates_only_its_first_address),
    Mistake::new("hypercall_loop_that_never_returns", "lab5 run_hypercalls", seed_hypercall_loop_that_never_returns),
    Mistake::new("live_gva_to_hva_without_the_page_tables", "lab5 handle_hypercall", seed_live_gva_to_hva_without_the_page_tables),
    Mistake::new("live_print_str_without_the_page_tables", "lab5 handle_hypercall", seed_live_print_str_without_the_page_tables),
    Mistake::new("lwn_memory_registered_at_guest_physical_0", "lab0 create_vm", seed_lwn_memory_registered_at_guest_physical_0),
    Mistake::new("memory_registered_one_byte_short", "lab1 vm_init", seed_memory_registered_one_byte_short),
    Mistake::new("gva_to_hva_slot_not_dereferenced", "lab5 handle_hypercall", seed_gva_to_hva_slot_not_dereferenced),
    Mistake::new("gva_to_hva_written_back_in_4_bytes", "lab5 handle_hypercall", seed_gva_to_hva_written_back_in_4_bytes),
    Mistake::new("walk_that_keeps_nx_in_the_table_address", "lab2 translate", seed_walk_that_keeps_nx_in_the_table_address),
    Mistake::new("gva_to_hva_that_ignores_the_page_tables", "lab5 gva_to_hva", seed_gva_to_hva_that_ignores_the_page_tables),
    Mistake::new("read_guest_string_that_ignores_the_page_tables", "lab5 read_guest_string", seed_read_guest_string_that_ignores_the_page_tables),
];

/// No failed check names a cause other than the seeded one, over every mistake above: each runs
/// against every check of its lab and the later labs, as `cargo grade` runs them. Long, so
/// ignored here; `cargo xtask ci` runs it.
#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn no_seeded_mistake_is_blamed_on_another_cause() {
    assert_no_wrong_cause(MISTAKES);
}

fn write_u64(memory: &GuestMemoryMmap, addr: u64, value: u64) {
    memory.write_obj(value, GuestAddress(addr)).unwrap();
}

// ---- lab 2 ----

fn seed_pd_entry_without_ps(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x4000, 0x7);
        Ok(cr3)
    }
    labs.setup_long_mode_page_tables = seeded;
}

#[test]
fn pd_entry_without_ps() {
    let message = failure_of("lab2_pd_entry", seed_pd_entry_without_ps);
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PD[0] = 0x7 (P|RW|US), expected 0x87 (P|RW|US|PS)",
        &["without PS the entry points to a page table instead of mapping a 2 MiB page"],
    );
}

fn seed_pdpt_pointing_at_the_wrong_table(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x3000, 0x3007);
        Ok(cr3)
    }
    labs.setup_long_mode_page_tables = seeded;
}

#[test]
fn pdpt_pointing_at_the_wrong_table() {
    let message = failure_of("lab2_pdpt_entry", seed_pdpt_pointing_at_the_wrong_table);
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PDPT[0] = 0x3007",
        &["must hold the PD at 0x4000"],
    );
}

fn seed_pml4_entry_without_user(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x2000, 0x3003);
        Ok(cr3)
    }
    labs.setup_long_mode_page_tables = seeded;
}

#[test]
fn pml4_entry_without_user() {
    let message = failure_of("lab2_pml4_entry", seed_pml4_entry_without_user);
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PML4[0] = 0x3003 (P|RW)",
        &["US"],
    );
}

fn seed_a_second_2mib_page_mapped(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_long_mode_page_tables(memory)?;
        write_u64(memory, 0x4008, 0x20_0087);
        Ok(cr3)
    }
    labs.setup_long_mode_page_tables = seeded;
}

#[test]
fn a_second_2mib_page_mapped() {
    let message = failure_of("lab2_nothing_else_mapped", seed_a_second_2mib_page_mapped);
    assert_names(
        &message,
        "lab2 setup_long_mode_page_tables: PD[1] = 0x200087",
        &["only entry 0 of each table is used"],
    );
}

fn seed_paged32_directory_without_ps(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap) -> Result<u64, Lab2Error> {
        let cr3 = lab2_paging::setup_paged32_page_directory(memory)?;
        memory.write_obj(0x7u32, GuestAddress(0x2000)).unwrap();
        Ok(cr3)
    }
    labs.setup_paged32_page_directory = seeded;
}

#[test]
fn paged32_directory_without_ps() {
    let message = failure_of("lab2_paged32_directory", seed_paged32_directory_without_ps);
    assert_names(
        &message,
        "lab2 setup_paged32_page_directory: PD32[0] (4 bytes) = 0x7",
        &["without PS"],
    );
}

fn seed_walk_that_ignores_ps(labs: &mut Labs) {
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
    labs.translate = seeded;
}

#[test]
fn walk_that_ignores_ps() {
    let message = failure_of("lab2_translate_identity", seed_walk_that_ignores_ps);
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

fn seed_efer_without_lma(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| s.efer = 0x100);
    labs.special_registers = seeded;
}

#[test]
fn efer_without_lma() {
    let message = failure_of("lab3_long_mode_control_registers", seed_efer_without_lma);
    assert_names(
        &message,
        "lab3 special_registers: EFER in long mode = 0x100 (LME), expected 0x500 (LME|LMA)",
        &["not LMA", "EINVAL"],
    );
}

fn seed_long_mode_without_pae(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| s.cr4 = 0);
    labs.special_registers = seeded;
}

#[test]
fn long_mode_without_pae() {
    let message = failure_of("lab3_long_mode_control_registers", seed_long_mode_without_pae);
    assert_names(
        &message,
        "lab3 special_registers: CR4 in long mode = 0x0 (none), expected 0x20 (PAE)",
        &["requires PAE"],
    );
}

fn seed_long_mode_without_paging(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| s.cr0 &= !(1 << 31));
    labs.special_registers = seeded;
}

#[test]
fn long_mode_without_paging() {
    let message = failure_of("lab3_long_mode_control_registers", seed_long_mode_without_paging);
    assert_names(
        &message,
        "lab3 special_registers: CR0 in long mode = 0x50033",
        &["without PG"],
    );
}

fn seed_paged32_without_paging(labs: &mut Labs) {
    // Paged32 is the mode with CR4.PSE; without PG the guest still greets, so only lab 3 says it.
    let seeded = long_sregs_with(|s| {
        if s.cr4 & (1 << 4) != 0 {
            s.cr0 &= !(1 << 31);
        }
    });
    labs.special_registers = seeded;
}

#[test]
fn paged32_without_paging() {
    let message = failure_of("lab3_paged32_mode", seed_paged32_without_paging);
    assert_names(
        &message,
        "lab3 special_registers: CR0 in paged32 mode = 0x50033",
        &["without PG", "unpaged protected mode"],
    );
    assert!(!message.contains("long mode"), "{message}");
}

fn seed_code_segment_32_bit_in_long_mode(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| {
        s.cs.l = 0;
        s.cs.db = 1;
    });
    labs.special_registers = seeded;
}

#[test]
fn code_segment_32_bit_in_long_mode() {
    let message = failure_of("lab3_long_mode_code_segment", seed_code_segment_32_bit_in_long_mode);
    assert_names(
        &message,
        "lab3 special_registers: CS.l in long mode = 0x0, expected 0x1",
        &["32-bit compatibility mode"],
    );
}

fn seed_data_segments_with_the_code_type(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| s.ss.type_ = 11);
    labs.special_registers = seeded;
}

#[test]
fn data_segments_with_the_code_type() {
    let message = failure_of("lab3_data_segments", seed_data_segments_with_the_code_type);
    assert_names(
        &message,
        "lab3 special_registers: SS.type in ",
        &["mode = 0xb, expected 0x3", "data type 3"],
    );
}

fn seed_stack_pointer_at_0(labs: &mut Labs) {
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        kvm_regs {
            rsp: 0,
            ..lab3_registers::general_registers(mode, mem_size)
        }
    }
    labs.general_registers = seeded;
}

#[test]
fn stack_pointer_at_0() {
    let message = failure_of("lab3_general_registers", seed_stack_pointer_at_0);
    assert_names(
        &message,
        "lab3 general_registers: RSP in ",
        &["mode = 0x0, expected 0x200000", "with RSP = 0"],
    );
}

fn seed_rflags_0(labs: &mut Labs) {
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        kvm_regs {
            rflags: 0,
            ..lab3_registers::general_registers(mode, mem_size)
        }
    }
    labs.general_registers = seeded;
}

#[test]
fn rflags_0() {
    let message = failure_of("lab3_general_registers", seed_rflags_0);
    assert_names(
        &message,
        "lab3 general_registers: RFLAGS in ",
        &["mode = 0x0, expected 0x2", "bit 1 of RFLAGS is reserved"],
    );
}

fn seed_canned_sregs_that_ignore_the_given_state(labs: &mut Labs) {
    // A state built from scratch, whatever the vCPU had: right registers, lost descriptor tables.
    fn seeded(mode: Mode, _sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
        lab3_registers::special_registers(mode, kvm_sregs::default(), cr3)
    }
    labs.special_registers = seeded;
}

#[test]
fn canned_sregs_that_ignore_the_given_state() {
    for check in [
        "lab3_long_mode_control_registers",
        "lab3_long_mode_code_segment",
        "lab3_paged32_mode",
    ] {
        let message = failure_of(check, seed_canned_sregs_that_ignore_the_given_state);
        assert_names(
            &message,
            "lab3 special_registers: ",
            &[" mode = 0x0, expected 0x", "keep the value the vCPU had"],
        );
    }
}

fn seed_guest_with_interrupts_enabled(labs: &mut Labs) {
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        kvm_regs {
            rflags: 0x202,
            ..lab3_registers::general_registers(mode, mem_size)
        }
    }
    labs.general_registers = seeded;
}

#[test]
fn guest_with_interrupts_enabled() {
    let message = failure_of("lab3_guest_runs_in_each_mode", seed_guest_with_interrupts_enabled);
    assert_names(
        &message,
        "lab3 general_registers: after the ",
        &["show RFLAGS as the lab set it", "RFLAGS 0x202"],
    );
}

fn seed_guest_with_a_32_bit_code_segment_in_long_mode(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| {
        if s.efer != 0 {
            s.cs.l = 0;
            s.cs.db = 1;
        }
    });
    labs.special_registers = seeded;
}

#[test]
fn guest_with_a_32_bit_code_segment_in_long_mode() {
    let message = failure_of(
        "lab3_guest_runs_in_each_mode",
        seed_guest_with_a_32_bit_code_segment_in_long_mode,
    );
    assert!(
        message.contains("a long-mode guest") || message.contains("after the long-mode guest"),
        "{message}"
    );
    assert!(message.contains("l 0, db 1"), "{message}");
}

fn seed_guest_with_a_data_segment_not_at_0(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| {
        if s.cr0 & 1 != 0 {
            s.ds.base = 0x1000;
        }
    });
    labs.special_registers = seeded;
}

#[test]
fn guest_with_a_data_segment_not_at_0() {
    let message = failure_of("lab3_guest_runs_in_each_mode", seed_guest_with_a_data_segment_not_at_0);
    assert_names(
        &message,
        "lab3 special_registers: after the ",
        &["guest, the word at 0x", "stored a value through DS"],
    );
}

fn seed_guest_with_the_kit_cr3_instead_of_the_one_given(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| {
        if s.efer != 0 {
            s.cr3 = 0x2000;
        }
    });
    labs.special_registers = seeded;
}

#[test]
fn guest_with_the_kit_cr3_instead_of_the_one_given() {
    let message = failure_of(
        "lab3_guest_runs_in_each_mode",
        seed_guest_with_the_kit_cr3_instead_of_the_one_given,
    );
    assert_names(
        &message,
        "lab3 special_registers/general_registers: a long-mode guest stopped with ",
        &["before its HLT"],
    );
}

fn seed_stack_at_the_kit_memory_size_whatever_the_size(labs: &mut Labs) {
    // A canned RSP: right for the kit's 2 MiB, wrong for the memory size of this run.
    fn seeded(mode: Mode, mem_size: usize) -> kvm_regs {
        let right = lab3_registers::general_registers(mode, mem_size);
        kvm_regs {
            rsp: if right.rsp == 0 { 0 } else { 0x20_0000 },
            ..right
        }
    }
    labs.general_registers = seeded;
}

#[test]
fn stack_at_the_kit_memory_size_whatever_the_size() {
    let message = failure_of(
        "lab3_general_registers",
        seed_stack_at_the_kit_memory_size_whatever_the_size,
    );
    assert_names(
        &message,
        "lab3 general_registers: RSP in ",
        &["mode = 0x200000, expected 0x"],
    );
    let message = failure_of(
        "lab3_guest_runs_in_each_mode",
        seed_stack_at_the_kit_memory_size_whatever_the_size,
    );
    assert!(
        message.starts_with("lab3 general_registers")
            || message.starts_with("lab3 special_registers/general_registers"),
        "{message}"
    );
    assert!(message.contains("RSP 0x200000"), "{message}");
}

// ---- lab 4 ----

fn seed_output_of_only_the_first_byte(labs: &mut Labs) {
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
    labs.handle_exit = seeded;
}

#[test]
fn output_of_only_the_first_byte() {
    let message = failure_of("lab4_console_output", seed_output_of_only_the_first_byte);
    assert_names(
        &message,
        "lab4 handle_exit: an OUT of ",
        &["bytes", "to 0xE9 printed", "size x count"],
    );
}

fn seed_loop_that_does_not_stop_at_hlt(labs: &mut Labs) {
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
    labs.run_until_halt = seeded;
}

#[test]
fn loop_that_does_not_stop_at_hlt() {
    let message = failure_of("lab4_stops_at_hlt", seed_loop_that_does_not_stop_at_hlt);
    assert_names(
        &message,
        "lab4 run_until_halt: the guest ran on after its HLT",
        &["leave the loop at the first HLT"],
    );
}

fn seed_result_read_at_the_wrong_address(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, width: usize) -> Result<u64, ResultError> {
        let mut bytes = [0u8; 8];
        memory.read_slice(&mut bytes[..width], GuestAddress(0x4000)).unwrap();
        Ok(u64::from_le_bytes(bytes))
    }
    labs.read_result_slot = seeded;
}

#[test]
fn result_read_at_the_wrong_address() {
    let message = failure_of("lab4_result_slot", seed_result_read_at_the_wrong_address);
    assert_names(
        &message,
        "lab4 read_result_slot: the ",
        &["-byte value at 0x400 = 0x0, expected"],
    );
}

fn seed_result_read_at_the_wrong_width(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, _width: usize) -> Result<u64, ResultError> {
        Ok(memory.read_obj::<u64>(GuestAddress(0x400)).unwrap())
    }
    labs.read_result_slot = seeded;
}

#[test]
fn result_read_at_the_wrong_width() {
    let message = failure_of("lab4_result_slot", seed_result_read_at_the_wrong_width);
    assert_names(
        &message,
        "lab4 read_result_slot: the ",
        &["-byte value at 0x400 = ", "read exactly `width` bytes"],
    );
}

fn seed_only_rax_checked(labs: &mut Labs) {
    fn seeded(rax: u64, _memory: u64) -> Result<(), ResultError> {
        if rax == 42 { Ok(()) } else { Err(ResultError::Rax(rax)) }
    }
    labs.check_results = seeded;
}

#[test]
fn only_rax_checked() {
    let message = failure_of("lab4_check_results", seed_only_rax_checked);
    assert_names(
        &message,
        "lab4 check_results: check_results(rax = 42, memory = ",
        &["gave Ok(())", "then the memory"],
    );
}

// ---- lab 1 ----

fn seed_memory_registered_with_the_wrong_size(labs: &mut Labs) {
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
    labs.vm_init = seeded;
}

#[test]
fn memory_registered_with_the_wrong_size() {
    let message = failure_of("lab1_memory_seen_by_vcpu", seed_memory_registered_with_the_wrong_size);
    assert_names(
        &message,
        // The first address the guest reads is random in the last 16 bytes of guest memory.
        "lab1 vm_init: the vCPU found no memory at guest physical 0x1ffff",
        &["memory_size = mem_size"],
    );
}

fn seed_a_lab_bug_that_panics_is_reported_without_a_backtrace(labs: &mut Labs) {
    fn seeded(mode: Mode, _mem_size: usize) -> kvm_regs {
        let computed: Vec<(Mode, kvm_regs)> = Vec::new();
        let registers = computed.iter().find(|(m, _)| *m == mode).map(|(_, r)| *r);
        registers.expect("registers were never computed")
    }
    labs.general_registers = seeded;
}

#[test]
fn a_lab_bug_that_panics_is_reported_without_a_backtrace() {
    let message = failure_of(
        "lab3_general_registers",
        seed_a_lab_bug_that_panics_is_reported_without_a_backtrace,
    );
    assert!(
        message.starts_with("lab code panicked: registers were never computed (at grader/tests/seeded.rs:"),
        "{message}"
    );
}

fn seed_loop_that_never_returns_to_kvm_run(labs: &mut Labs) {
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
    labs.run_until_halt = seeded;
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn loop_that_never_returns_to_kvm_run() {
    let message = failure_of("lab4_hello_long_mode", seed_loop_that_never_returns_to_kvm_run);
    assert_names(
        &message,
        "lab4 run_until_halt: ",
        &["long-mode guest", "timeout", "the exit loop did not return"],
    );
}

// ---- lab 0 ----

fn seed_lwn_vcpu_left_at_the_reset_rip(labs: &mut Labs) {
    fn seeded(vm: &lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error> {
        let vcpu = lab0_lwn::setup_vcpu(vm)?;
        let regs = kvm_regs {
            rip: 0,
            ..vcpu.get_regs().unwrap()
        };
        vcpu.set_regs(&regs).unwrap();
        Ok(vcpu)
    }
    labs.lwn_setup_vcpu = seeded;
}

#[test]
fn lwn_vcpu_left_at_the_reset_rip() {
    let message = failure_of("lab0_setup_vcpu", seed_lwn_vcpu_left_at_the_reset_rip);
    assert_names(
        &message,
        "lab0 setup_vcpu: RIP = 0x0, expected 0x1000",
        &["the code starts at guest physical 0x1000"],
    );
}

fn seed_lwn_bl_not_set(labs: &mut Labs) {
    fn seeded(vm: &lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error> {
        let vcpu = lab0_lwn::setup_vcpu(vm)?;
        let regs = kvm_regs {
            rbx: 0,
            ..vcpu.get_regs().unwrap()
        };
        vcpu.set_regs(&regs).unwrap();
        Ok(vcpu)
    }
    labs.lwn_setup_vcpu = seeded;
}

#[test]
fn lwn_bl_not_set() {
    let message = failure_of("lab0_setup_vcpu", seed_lwn_bl_not_set);
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

fn seed_vm_init_that_allocates_but_registers_nothing(labs: &mut Labs) {
    labs.vm_init = memory_not_registered;
}

#[test]
fn vm_init_that_allocates_but_registers_nothing() {
    let message = failure_of("lab1_vm_init_memory", seed_vm_init_that_allocates_but_registers_nothing);
    assert_names(&message, "lab1 vm_init: ", &["register"]);
}

fn seed_vm_init_that_registers_another_allocation(labs: &mut Labs) {
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
    labs.vm_init = seeded;
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn vm_init_that_registers_another_allocation() {
    let message = failure_of("lab1_vm_init_memory", seed_vm_init_that_registers_another_allocation);
    // The code written into the memory vm_init returned is not what the vCPU runs.
    assert_names(&message, "lab1 vm_init: code made for this run", &["userspace_addr"]);
}

fn seed_vcpu_init_with_a_vcpu_of_another_vm(labs: &mut Labs) {
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
    labs.vcpu_init = seeded;
}

#[test]
fn vcpu_init_with_a_vcpu_of_another_vm() {
    for check in ["lab1_vcpu_init", "lab1_memory_seen_by_vcpu"] {
        let message = failure_of(check, seed_vcpu_init_with_a_vcpu_of_another_vm);
        assert!(message.starts_with("lab1 "), "{message}");
    }
}

fn seed_load_image_that_copies_before_it_refuses(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, image: &[u8]) -> Result<(), Lab1Error> {
        let fits = image.len().min(lab1_memory::MAX_IMAGE_SIZE);
        memory.write_slice(&image[..fits], GuestAddress(0)).unwrap();
        lab1_memory::load_image(memory, image)
    }
    labs.load_image = seeded;
}

#[test]
fn load_image_that_copies_before_it_refuses() {
    let message = failure_of("lab1_load_image", seed_load_image_that_copies_before_it_refuses);
    assert_names(
        &message,
        "lab1 load_image: refused an image of ",
        &["refuse before copying"],
    );
}

fn seed_lwn_create_vm_that_registers_nothing(labs: &mut Labs) {
    /// The page and the code where they belong, but no slot: what the check used to read.
    fn seeded() -> Result<lab0_lwn::LwnVm, lab0_lwn::Lab0Error> {
        let kvm = Kvm::new().map_err(lab0_lwn::Lab0Error::OpenKvm)?;
        let fd = kvm.create_vm().unwrap();
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        memory.write_slice(&lab0_lwn::CODE, GuestAddress(0x1000)).unwrap();
        Ok(lab0_lwn::LwnVm { kvm, fd, memory })
    }
    labs.lwn_create_vm = seeded;
}

#[test]
fn lwn_create_vm_that_registers_nothing() {
    let message = failure_of("lab0_create_vm", seed_lwn_create_vm_that_registers_nothing);
    // KVM_RUN without a slot: an exit on VMX and SVM, ENOSPC on PVM (this machine).
    assert_names(&message, "lab0 create_vm: ", &["register"]);
}

fn seed_lwn_setup_vcpu_of_another_vm(labs: &mut Labs) {
    /// The registers a correct setup_vcpu leaves, on a vCPU of a VM without the code.
    fn seeded(vm: &lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error> {
        let other = lab0_lwn::LwnVm {
            kvm: Kvm::new().unwrap(),
            fd: vm.kvm.create_vm().unwrap(),
            memory: GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap(),
        };
        lab0_lwn::setup_vcpu(&other)
    }
    labs.lwn_setup_vcpu = seeded;
}

#[test]
fn lwn_setup_vcpu_of_another_vm() {
    let message = failure_of("lab0_setup_vcpu", seed_lwn_setup_vcpu_of_another_vm);
    assert_names(
        &message,
        "lab0 setup_vcpu: the vCPU it returned, run on code made for this run",
        &["CS:IP = 0:0x1000"],
    );
}

fn seed_hard_coded_lwn_output_and_counts(labs: &mut Labs) {
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
    labs.lwn_run = seeded;
}

#[test]
fn hard_coded_lwn_output_and_counts() {
    let message = failure_of("lab0_run", seed_hard_coded_lwn_output_and_counts);
    assert_names(&message, "lab0 run: ", &["printed \"4\\n\", expected"]);
}

// ---- lab 5 ----

fn seed_print32bit_without_a_newline(labs: &mut Labs) {
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
    labs.handle_hypercall = seeded;
}

#[test]
fn print32bit_without_a_newline() {
    let message = failure_of("lab5_print32bit", seed_print32bit_without_a_newline);
    assert_names(
        &message,
        "lab5 handle_hypercall: print32bit(",
        &["the newline is missing", "with a newline"],
    );
}

fn seed_num_exits_without_the_current_exit(labs: &mut Labs) {
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
    labs.handle_hypercall = seeded;
}

#[test]
fn num_exits_without_the_current_exit() {
    let message = failure_of("lab5_num_exits", seed_num_exits_without_the_current_exit);
    assert_names(
        &message,
        "lab5 handle_hypercall: num_exits after ",
        &["count the exit first"],
    );
}

fn seed_exit_report_with_in_and_out_swapped(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, counts: &ExitCounts) -> Result<u64, Lab5Error> {
        let swapped = ExitCounts {
            io_in: counts.io_out,
            io_out: counts.io_in,
            ..*counts
        };
        lab5_hypercalls::write_exit_report(memory, &swapped)
    }
    labs.write_exit_report = seeded;
}

#[test]
fn exit_report_with_in_and_out_swapped() {
    let message = failure_of("lab5_write_exit_report", seed_exit_report_with_in_and_out_swapped);
    assert_names(
        &message,
        "lab5 write_exit_report: 0x5000 holds \"IO in: ",
        &["expected \"IO in: "],
    );
}

fn seed_gva_to_hva_that_returns_the_guest_physical_address(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, _host_base: u64, gva: u64) -> Option<u64> {
        lab2_paging::translate(memory, cr3, gva).result.ok()
    }
    labs.gva_to_hva = seeded;
}

#[test]
fn gva_to_hva_that_returns_the_guest_physical_address() {
    let message = failure_of(
        "lab5_gva_to_hva",
        seed_gva_to_hva_that_returns_the_guest_physical_address,
    );
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

fn seed_walk_without_the_canonical_check(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, masked, right_leaf, 0, true)
    }
    labs.translate = seeded;
}

#[test]
fn walk_without_the_canonical_check() {
    let message = failure_of("lab2_translate_faults", seed_walk_without_the_canonical_check);
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["is not canonical", "WalkFault::NonCanonical"],
    );
}

fn seed_walk_with_entry_addresses_not_scaled_by_8(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, masked, right_leaf, 1, true)
    }
    labs.translate = seeded;
}

#[test]
fn walk_with_entry_addresses_not_scaled_by_8() {
    let message = failure_of(
        "lab2_translate_other_pages",
        seed_walk_with_entry_addresses_not_scaled_by_8,
    );
    assert_names(&message, "lab2 translate: the walk of 0x", &["not scaled by 8"]);
}

fn seed_walk_that_keeps_flag_bits_in_the_table_address(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, |entry| entry, right_leaf, 8, true)
    }
    labs.translate = seeded;
}

#[test]
fn walk_that_keeps_flag_bits_in_the_table_address() {
    let message = failure_of(
        "lab2_translate_other_pages",
        seed_walk_that_keeps_flag_bits_in_the_table_address,
    );
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["flag bits were left in the table's address"],
    );
}

fn seed_walk_that_honours_ps_only_in_the_pd(labs: &mut Labs) {
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
    labs.translate = seeded;
}

#[test]
fn walk_that_honours_ps_only_in_the_pd() {
    let message = failure_of("lab2_translate_other_pages", seed_walk_that_honours_ps_only_in_the_pd);
    assert_names(&message, "lab2 translate: the walk of 0x", &["maps a 1 GiB page"]);
}

fn seed_walk_that_does_not_record_the_non_present_entry(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, gva: u64) -> Walk {
        walk_with(memory, cr3, gva, masked, right_leaf, 8, false)
    }
    labs.translate = seeded;
}

#[test]
fn walk_that_does_not_record_the_non_present_entry() {
    let message = failure_of(
        "lab2_translate_faults",
        seed_walk_that_does_not_record_the_non_present_entry,
    );
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["stopped before recording the non-present"],
    );
}

fn seed_protected_mode_cr0_that_loses_its_bits(labs: &mut Labs) {
    let seeded = long_sregs_with(|s| {
        if s.cs.l == 0 && s.cr0 & (1 << 31) == 0 {
            s.cr0 = 1;
        }
    });
    labs.special_registers = seeded;
}

#[test]
fn protected_mode_cr0_that_loses_its_bits() {
    let message = failure_of("lab3_protected_mode", seed_protected_mode_cr0_that_loses_its_bits);
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

fn seed_output_printed_twice(labs: &mut Labs) {
    labs.run_until_halt = printing_twice;
}

#[test]
fn output_printed_twice() {
    let message = failure_of("lab4_hello_long_mode", seed_output_printed_twice);
    assert_names(&message, "lab4 run_until_halt/handle_exit: ", &["every byte twice"]);
}

fn seed_an_unexpected_exit_treated_as_hlt(labs: &mut Labs) {
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
    labs.run_until_halt = seeded;
}

#[test]
fn an_unexpected_exit_treated_as_hlt() {
    let message = failure_of(
        "lab4_unexpected_exit_ends_the_run",
        seed_an_unexpected_exit_treated_as_hlt,
    );
    // The loop or handle_exit may have swallowed the exit: the run cannot tell which.
    assert_names(
        &message,
        "lab4 run_until_halt/handle_exit: ",
        &["as if the guest had halted", "was swallowed"],
    );
}

fn seed_trace_callback_never_called(labs: &mut Labs) {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        lab4_exit_loop::run_until_halt(vcpu, console, counts, &mut |_| {})
    }
    labs.run_until_halt = seeded;
}

#[test]
fn trace_callback_never_called() {
    let message = failure_of("lab4_trace_every_exit", seed_trace_callback_never_called);
    assert_names(
        &message,
        "lab4 run_until_halt: ",
        &["the trace callback saw 0", "once for every exit"],
    );
}

fn seed_a_failed_kvm_run_retried(labs: &mut Labs) {
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
    labs.run_until_halt = seeded;
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_failed_kvm_run_retried() {
    let message = failure_of("lab4_kvm_run_errors", seed_a_failed_kvm_run_retried);
    assert_names(&message, "lab4 run_until_halt: ", &["retries a failed KVM_RUN"]);
}

fn seed_a_failed_kvm_run_swallowed(labs: &mut Labs) {
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
    labs.run_until_halt = seeded;
}

#[test]
fn a_failed_kvm_run_swallowed() {
    let message = failure_of("lab4_kvm_run_errors", seed_a_failed_kvm_run_swallowed);
    assert_names(&message, "lab4 run_until_halt: ", &["was swallowed"]);
}

fn seed_a_string_of_exactly_the_maximum_length_refused(labs: &mut Labs) {
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
    labs.read_guest_string = seeded;
}

#[test]
fn a_string_of_exactly_the_maximum_length_refused() {
    let message = failure_of(
        "lab5_read_guest_string",
        seed_a_string_of_exactly_the_maximum_length_refused,
    );
    assert_names(
        &message,
        "lab5 read_guest_string: a string of exactly MAX_STRING = 4096 bytes",
        &["a string of exactly that length is fine"],
    );
}

fn seed_print32bit_in_hex(labs: &mut Labs) {
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
    labs.handle_hypercall = seeded;
}

#[test]
fn print32bit_in_hex() {
    let message = failure_of("lab5_print32bit", seed_print32bit_in_hex);
    assert_names(&message, "lab5 handle_hypercall: print32bit(", &["printed in hex"]);
}

fn seed_memory_registered_read_only(labs: &mut Labs) {
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
    labs.vm_init = seeded;
}

#[test]
fn memory_registered_read_only() {
    let message = failure_of("lab1_memory_seen_by_vcpu", seed_memory_registered_read_only);
    assert_names(
        &message,
        "lab1 vm_init: the guest could read guest physical 0x1ffff",
        &["but not write it", "read-only"],
    );
}

// ---- cheats: none gains a point over the stub it replaces ----

fn seed_hard_coded_hello_output_and_counts(labs: &mut Labs) {
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
    labs.run_until_halt = seeded;
}

#[test]
fn hard_coded_hello_output_and_counts() {
    for check in ["lab4_hello_long_mode", "lab4_hello_real_mode", "lab4_string_io"] {
        let message = failure_of(check, seed_hard_coded_hello_output_and_counts);
        assert!(message.starts_with("lab4 "), "{message}");
    }
}

fn seed_a_failed_kvm_run_made_up_without_calling_kvm_run(labs: &mut Labs) {
    fn seeded(
        _vcpu: &mut VcpuFd,
        _console: &mut dyn Write,
        _counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        Err(ExitLoopError::Run(kvm_ioctls::Error::new(libc::EINTR)))
    }
    labs.run_until_halt = seeded;
}

#[test]
fn a_failed_kvm_run_made_up_without_calling_kvm_run() {
    let message = failure_of(
        "lab4_kvm_run_errors",
        seed_a_failed_kvm_run_made_up_without_calling_kvm_run,
    );
    assert_names(&message, "lab4 run_until_halt: ", &["without calling KVM_RUN"]);
}

fn seed_a_loop_that_panics_on_its_own_thread_is_reported_without_a_backtrace(labs: &mut Labs) {
    fn seeded(
        _vcpu: &mut VcpuFd,
        _console: &mut dyn Write,
        _counts: &mut ExitCounts,
        _trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        let exits: Vec<u64> = Vec::new();
        panic!("no exit {}", exits.len())
    }
    labs.run_until_halt = seeded;
}

#[test]
fn a_loop_that_panics_on_its_own_thread_is_reported_without_a_backtrace() {
    let message = failure_of(
        "lab4_kvm_run_errors",
        seed_a_loop_that_panics_on_its_own_thread_is_reported_without_a_backtrace,
    );
    assert!(
        message.starts_with("lab code panicked: no exit 0 (at grader/tests/seeded.rs:"),
        "{message}"
    );
}

fn seed_handle_exit_that_halts_on_every_exit(labs: &mut Labs) {
    fn seeded(exit: VcpuExit<'_>, _console: &mut dyn Write, counts: &mut ExitCounts) -> Result<Flow, ExitLoopError> {
        let _ = exit;
        counts.hlt += 1;
        Ok(Flow::Halt)
    }
    labs.handle_exit = seeded;
}

#[test]
fn handle_exit_that_halts_on_every_exit() {
    let message = failure_of("lab4_hlt_ends_the_loop", seed_handle_exit_that_halts_on_every_exit);
    assert_names(
        &message,
        "lab4 handle_exit: an OUT to 0xE9 gave Ok(Halt)",
        &["the guest goes on after printing"],
    );
}

fn seed_the_kit_guests_counts_filled_in_after_a_real_run(labs: &mut Labs) {
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
    labs.run_until_halt = seeded;
}

#[test]
fn the_kit_guests_counts_filled_in_after_a_real_run() {
    for check in ["lab4_hello_long_mode", "lab4_hello_real_mode"] {
        let message = failure_of(check, seed_the_kit_guests_counts_filled_in_after_a_real_run);
        assert_names(
            &message,
            "lab4 run_until_halt/handle_exit: a ",
            &["made 15 exits (io_out 14, hlt 1), expected"],
        );
    }
}

fn seed_trace_fed_made_up_exits(labs: &mut Labs) {
    fn seeded(
        vcpu: &mut VcpuFd,
        console: &mut dyn Write,
        counts: &mut ExitCounts,
        trace: &mut dyn FnMut(&VcpuExit<'_>),
    ) -> Result<(), ExitLoopError> {
        lab4_exit_loop::run_until_halt(vcpu, console, counts, &mut |_| trace(&VcpuExit::Hlt))
    }
    labs.run_until_halt = seeded;
}

#[test]
fn trace_fed_made_up_exits() {
    let message = failure_of("lab4_trace_every_exit", seed_trace_fed_made_up_exits);
    assert_names(
        &message,
        "lab4 run_until_halt: the trace callback's exit 1 was hlt",
        &["expected io out Some(233)", "as KVM_RUN returned it"],
    );
}

fn seed_result_slot_that_always_reads_42(labs: &mut Labs) {
    fn seeded(_memory: &GuestMemoryMmap, _width: usize) -> Result<u64, ResultError> {
        Ok(42)
    }
    labs.read_result_slot = seeded;
}

#[test]
fn result_slot_that_always_reads_42() {
    let message = failure_of("lab4_hello_long_mode", seed_result_slot_that_always_reads_42);
    assert_names(
        &message,
        "lab4 read_result_slot: a long-mode guest made for this run",
        &["the run read 0x2a", "read the mode's word"],
    );
}

fn seed_result_checks_that_pass_everything(labs: &mut Labs) {
    fn seeded(_rax: u64, _memory: u64) -> Result<(), ResultError> {
        Ok(())
    }
    labs.check_results = seeded;
}

#[test]
fn result_checks_that_pass_everything() {
    let message = failure_of("lab4_hello_real_mode", seed_result_checks_that_pass_everything);
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

fn seed_hard_coded_hypercall_output(labs: &mut Labs) {
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
    labs.run_hypercalls = seeded;
}

#[test]
fn hard_coded_hypercall_output() {
    for check in [
        "lab5_hypercall_guest",
        "lab5_print_str_in_one_exit",
        "lab5_gva_to_hva_live",
    ] {
        let message = failure_of(check, seed_hard_coded_hypercall_output);
        assert_names(
            &message,
            "lab5 handle_hypercall/run_hypercalls: a hypercall guest made for this run printed ",
            &["expected"],
        );
    }
}

fn seed_gva_to_hva_without_the_memory_bound(labs: &mut Labs) {
    fn seeded(memory: &GuestMemoryMmap, cr3: u64, host_base: u64, gva: u64) -> Option<u64> {
        // Any guest physical address the tables give, in guest memory or not.
        Some(host_base + lab2_paging::translate(memory, cr3, gva).result.ok()?)
    }
    labs.gva_to_hva = seeded;
}

#[test]
fn gva_to_hva_without_the_memory_bound() {
    let message = failure_of(
        "lab5_gva_to_hva_outside_memory",
        seed_gva_to_hva_without_the_memory_bound,
    );
    assert_names(
        &message,
        "lab5 gva_to_hva: gva_to_hva(0x",
        &["past the end of guest memory", "answer None"],
    );
}

fn seed_read_guest_string_without_a_limit(labs: &mut Labs) {
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
    labs.read_guest_string = seeded;
}

#[test]
fn read_guest_string_without_a_limit() {
    let message = failure_of("lab5_read_guest_string", seed_read_guest_string_without_a_limit);
    assert_names(
        &message,
        "lab5 read_guest_string: a string with no NUL within 4096 bytes",
        &["expected Err(Lab5Error::BadAddress)"],
    );
}

fn seed_read_guest_string_that_translates_only_its_first_address(labs: &mut Labs) {
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
    labs.read_guest_string = seeded;
}

#[test]
fn read_guest_string_that_translates_only_its_first_address() {
    let message = failure_of(
        "lab5_read_guest_string",
        seed_read_guest_string_that_translates_only_its_first_address,
    );
    assert_names(
        &message,
        "lab5 read_guest_string: a ",
        &["across", "translating the address of each page"],
    );
}

fn seed_hypercall_loop_that_never_returns(labs: &mut Labs) {
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
    labs.run_hypercalls = seeded;
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn hypercall_loop_that_never_returns() {
    let message = failure_of("lab5_print_str_in_one_exit", seed_hypercall_loop_that_never_returns);
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

fn seed_live_gva_to_hva_without_the_page_tables(labs: &mut Labs) {
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
    labs.run_hypercalls = hypercall_loop!(seeded);
}

#[test]
fn live_gva_to_hva_without_the_page_tables() {
    let message = failure_of("lab5_gva_to_hva_live", seed_live_gva_to_hva_without_the_page_tables);
    assert_names(
        &message,
        "lab5 handle_hypercall/run_hypercalls: a hypercall guest made for this run printed ",
        &["gva_to_hva of GVA", "the guest maps its first 2 MiB again"],
    );
}

fn seed_live_print_str_without_the_page_tables(labs: &mut Labs) {
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
    labs.run_hypercalls = hypercall_loop!(seeded);
}

#[test]
fn live_print_str_without_the_page_tables() {
    let message = failure_of("lab5_hypercall_guest", seed_live_print_str_without_the_page_tables);
    assert_names(
        &message,
        "lab5 handle_hypercall/run_hypercalls: a hypercall guest made for this run printed ",
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

fn seed_lwn_memory_registered_at_guest_physical_0(labs: &mut Labs) {
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
    labs.lwn_create_vm = seeded;
}

#[test]
fn lwn_memory_registered_at_guest_physical_0() {
    let message = failure_of("lab0_memory_slot", seed_lwn_memory_registered_at_guest_physical_0);
    assert_names(&message, "lab0 create_vm: the vCPU ", &["guest_phys_addr 0x1000"]);
}

fn seed_memory_registered_one_byte_short(labs: &mut Labs) {
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
    labs.vm_init = seeded;
}

#[test]
fn memory_registered_one_byte_short() {
    let message = failure_of("lab1_vm_init_memory", seed_memory_registered_one_byte_short);
    assert_names(
        &message,
        "lab1 vm_init: KVM_SET_USER_MEMORY_REGION failed",
        &["not a multiple of the page size"],
    );
}

fn seed_gva_to_hva_slot_not_dereferenced(labs: &mut Labs) {
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
    labs.handle_hypercall = seeded;
}

#[test]
fn gva_to_hva_slot_not_dereferenced() {
    let message = failure_of("lab5_gva_to_hva_hypercall", seed_gva_to_hva_slot_not_dereferenced);
    assert_names(
        &message,
        "lab5 handle_hypercall: gva_to_hva with its slot at 0x",
        &["translation of the slot's own address"],
    );
}

fn seed_gva_to_hva_written_back_in_4_bytes(labs: &mut Labs) {
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
    labs.handle_hypercall = seeded;
}

#[test]
fn gva_to_hva_written_back_in_4_bytes() {
    let message = failure_of("lab5_gva_to_hva_hypercall", seed_gva_to_hva_written_back_in_4_bytes);
    assert_names(
        &message,
        "lab5 handle_hypercall: gva_to_hva with its slot at 0x",
        &["only the low 4 bytes"],
    );
}

fn seed_walk_that_keeps_nx_in_the_table_address(labs: &mut Labs) {
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
    labs.translate = seeded;
}

#[test]
fn walk_that_keeps_nx_in_the_table_address() {
    let message = failure_of(
        "lab2_translate_other_pages",
        seed_walk_that_keeps_nx_in_the_table_address,
    );
    assert_names(
        &message,
        "lab2 translate: the walk of 0x",
        &["flag bits were left in the table's address", "NX is bit 63"],
    );
}

fn seed_gva_to_hva_that_ignores_the_page_tables(labs: &mut Labs) {
    fn seeded(_memory: &GuestMemoryMmap, _cr3: u64, host_base: u64, gva: u64) -> Option<u64> {
        (gva < 0x20_0000).then(|| host_base + gva)
    }
    labs.gva_to_hva = seeded;
}

#[test]
fn gva_to_hva_that_ignores_the_page_tables() {
    for check in ["lab5_gva_to_hva", "lab5_gva_to_hva_outside_memory"] {
        let message = failure_of(check, seed_gva_to_hva_that_ignores_the_page_tables);
        assert_names(&message, "lab5 gva_to_hva: gva_to_hva(0x", &["expected"]);
    }
}

fn seed_read_guest_string_that_ignores_the_page_tables(labs: &mut Labs) {
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
    labs.read_guest_string = seeded;
}

#[test]
fn read_guest_string_that_ignores_the_page_tables() {
    let message = failure_of(
        "lab5_read_guest_string",
        seed_read_guest_string_that_ignores_the_page_tables,
    );
    assert_names(
        &message,
        "lab5 read_guest_string: a ",
        &["on a page the tables map elsewhere", "translate the address"],
    );
}

// ---- wrong causes a tester met (issue 20): the check with the evidence names the cause; the
// others point to it or list the causes they cannot tell apart ----

fn seed_hlt_counted_twice(labs: &mut Labs) {
    fn seeded(exit: VcpuExit<'_>, console: &mut dyn Write, counts: &mut ExitCounts) -> Result<Flow, ExitLoopError> {
        let halt = matches!(exit, VcpuExit::Hlt);
        let flow = lab4_exit_loop::handle_exit(exit, console, counts)?;
        if halt {
            counts.hlt += 1;
        }
        Ok(flow)
    }
    labs.handle_exit = seeded;
}

#[test]
fn hlt_counted_twice() {
    let message = failure_of("lab4_hlt_ends_the_loop", seed_hlt_counted_twice);
    assert_names(
        &message,
        "lab4 handle_exit: counts.hlt after one HLT = 0x2, expected 0x1",
        &[],
    );
    // The trace saw every exit: the wrong HLT count is not the trace's (it was blamed once).
    let outcome = common::outcome_of("lab4_trace_every_exit", with(seed_hlt_counted_twice), common::seed());
    assert_eq!(outcome, grader::runner::Outcome::Passed);
}

#[test]
fn truncated_output_is_not_blamed_on_the_other_port() {
    let message = failure_of("lab4_unexpected_exits", seed_output_of_only_the_first_byte);
    assert_names(&message, "lab4 handle_exit: after an OUT to 0xe9", &["only the first"]);
    assert!(
        !message.contains("is not)") && !message.contains("only port 0xE9 is the console"),
        "{message}"
    );
}

fn seed_lwn_code_segment_base_not_0(labs: &mut Labs) {
    fn seeded(vm: &lab0_lwn::LwnVm) -> Result<VcpuFd, lab0_lwn::Lab0Error> {
        let vcpu = lab0_lwn::setup_vcpu(vm)?;
        let mut sregs = vcpu.get_sregs().unwrap();
        sregs.cs.base = 0xffff_0000;
        vcpu.set_sregs(&sregs).unwrap();
        Ok(vcpu)
    }
    labs.lwn_setup_vcpu = seeded;
}

#[test]
fn lwn_code_segment_base_not_0() {
    let message = failure_of("lab0_setup_vcpu", seed_lwn_code_segment_base_not_0);
    assert_names(
        &message,
        "lab0 setup_vcpu: CS.base = 0xffff0000, expected 0x0",
        &["CS base"],
    );
}

/// The labs with one mistake seeded.
fn with(seed: fn(&mut Labs)) -> Labs {
    let mut labs = Labs::BUILT;
    seed(&mut labs);
    labs
}

/// The mistakes the test command sweeps (the full sweep is `cargo xtask ci`'s): the three wrong
/// causes a tester met.
const QUICK: &[&str] = &[
    "hlt_counted_twice",
    "output_of_only_the_first_byte",
    "lwn_code_segment_base_not_0",
];

#[test]
fn the_quick_mistakes_are_blamed_on_their_cause() {
    let quick: Vec<Mistake> = QUICK
        .iter()
        .map(|name| {
            *MISTAKES
                .iter()
                .find(|m| m.name == *name)
                .unwrap_or_else(|| panic!("no mistake {name} in MISTAKES"))
        })
        .collect();
    assert_no_wrong_cause(&quick);
}

/// A check whose failure another failed check of the run explains points to it, with its cause,
/// in every output: the scoreboard, the JSON report (`--json`, `--report`) and Gradescope's.
#[test]
fn a_failure_explained_by_an_earlier_check_points_to_it_in_every_output() {
    let mut backend = common::causes::Forked {
        probe: grader_probe::Probe {
            labs: with(seed_lwn_create_vm_that_registers_nothing),
            vmm: (common::probe_exe(), vec![grader_protocol::VMM_ARG.to_owned()]),
        },
    };
    let seed = common::seed();
    let suite = grader::runner::run_suite(&mut backend, seed, |check| check.part == grader::Part::Lab(0));
    let outcome_of = |name: &str| {
        let result = suite
            .results
            .iter()
            .find(|r| r.check.name == name)
            .expect("a lab-0 check");
        result.outcome.message()
    };
    let cause = outcome_of("lab0_create_vm");
    assert!(cause.starts_with("lab0 create_vm: "), "seed {seed}: {cause}");
    let pointer = outcome_of("lab0_setup_vcpu");
    let shown = cause.split(" (book: ").next().unwrap();
    assert_eq!(pointer, format!("see lab0_create_vm ({shown})"), "seed {seed}");
    assert!(grader::scoreboard::text(&suite).contains(&format!("         {pointer}\n")));
    let json = grader::scoreboard::json_lines(&suite);
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "lab0_setup_vcpu")
        .unwrap();
    assert_eq!(entry["message"], pointer.as_str());
    assert_eq!(entry["see"], "lab0_create_vm");
    assert_eq!(entry["outcome"], "failed");
    let gradescope = grader::scoreboard::gradescope(&suite);
    let test = gradescope["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["number"] == "lab0_setup_vcpu")
        .unwrap();
    assert_eq!(test["output"], pointer.as_str());
    assert_eq!(test["score"], 0);
}
