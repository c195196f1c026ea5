//! Reports survive any value lab code hands them (`--explain` and lab 5's `gva_to_hva` with
//! values at the edges of memory and of the address space): a picture with the wrong value or a
//! refusal, never a panic.
#![cfg(feature = "solution")]

mod common;

use std::time::Duration;

use common::require_kvm;
use kit_common::{GUEST_MEMORY_SIZE, Mode};
use kvm_bindings::kvm_regs;
use kvm_hello::explain::{self, ExitEvent, Explanation};
use kvm_hello::labs::Labs;
use kvm_hello::vmm::{self, Program, RunConfig};
use lab1_memory::KvmRunMapping;
use lab2_paging::{Level, PD_ADDR, PTE_PRESENT, PTE_PS, PTE_RW, Walk, WalkStep};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Lab 3's `general_registers`.
type GeneralRegisters = fn(Mode, usize) -> kvm_regs;

/// Lab 3's registers with RSP replaced.
fn with_rsp<const RSP: u64>(mode: Mode, memory_size: usize) -> kvm_regs {
    kvm_regs {
        rsp: RSP,
        ..(Labs::BUILT.general_registers)(mode, memory_size)
    }
}

/// Every picture of an explanation, text and SVG.
fn every_picture(explanation: &Explanation) -> String {
    let mut all = explain::text(explanation, b"");
    for (_, svg) in explain::svg_files(explanation) {
        all.push_str(&svg);
    }
    all
}

#[test]
fn explain_pictures_any_initial_rsp() {
    require_kvm();
    let top = GUEST_MEMORY_SIZE as u64;
    let cases: [(GeneralRegisters, u64); 5] = [
        (with_rsp::<0>, 0),
        (with_rsp::<0xfff>, 0xfff),
        (with_rsp::<0x1000>, 0x1000),
        (with_rsp::<{ GUEST_MEMORY_SIZE as u64 }>, top),
        (with_rsp::<{ u64::MAX }>, u64::MAX),
    ];
    for (general_registers, rsp) in cases {
        let report = vmm::run(RunConfig {
            labs: Labs {
                general_registers,
                ..Labs::BUILT
            },
            mode: Mode::Long,
            image: guests::HELLO64.to_vec(),
            capture_output: true,
            trace: false,
            timeout: Duration::from_secs(5),
            explain_walk: Some(0x400),
            program: Program::Hello,
        });
        let explanation = report.explanation.expect("the run got as far as the registers");
        assert_eq!(explanation.rsp, rsp);
        let text = explain::text(&explanation, &report.output);
        if rsp > 0 {
            let stack = format!("RSP starts at {rsp:#x}");
            assert!(text.contains(&stack), "RSP {rsp:#x}:\n{text}");
        }
        let _ = explain::svg_files(&explanation);
    }
}

#[test]
fn explain_pictures_values_at_the_top_of_the_address_space() {
    let step = WalkStep {
        level: Level::Pml4,
        index: 511,
        entry_addr: u64::MAX,
        entry: u64::MAX,
    };
    let explanation = Explanation {
        mode: Mode::Long,
        image_len: 0,
        host_base: u64::MAX - 0xfff,
        kvm_run: KvmRunMapping {
            address: u64::MAX,
            size: 0,
        },
        cr3: u64::MAX,
        rsp: 0xfff,
        tables: Vec::new(),
        walk: Some(Walk {
            gva: u64::MAX,
            steps: vec![step; 1000],
            result: Ok(u64::MAX),
        }),
        walk_gva: u64::MAX,
        exits: vec![
            ExitEvent {
                kind: "io out".into(),
                port: Some(0xe9),
                data: b"x".to_vec(),
                data_offset: Some(u64::MAX),
            };
            3
        ],
    };
    let all = every_picture(&explanation);
    assert!(all.contains("past the end of the 64-bit address space"), "{all}");
    assert!(all.contains("empty: 0 bytes"), "a kvm_run of size 0: {all}");
    assert!(all.contains("no host address: it lies outside guest memory"), "{all}");
    assert!(all.contains("RSP starts at 0xfff"), "{all}");

    // A long run's timeline: more exits than the picture has room for.
    let many = Explanation {
        exits: vec![explanation.exits[0].clone(); 100_000],
        ..explanation
    };
    assert!(explain::svg_exit_timeline(&many).contains("100000 returns from KVM_RUN"));
}

#[test]
fn gva_to_hva_refuses_a_physical_address_just_past_guest_memory() {
    let end = GUEST_MEMORY_SIZE as u64;
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEMORY_SIZE)]).unwrap();
    let cr3 = (Labs::BUILT.setup_long_mode_page_tables)(&memory).unwrap();
    // A second 2 MiB page, mapped to the guest physical addresses just past guest memory.
    let pd1 = end | PTE_PRESENT | PTE_RW | PTE_PS;
    memory.write_obj(pd1, GuestAddress(PD_ADDR + 8)).unwrap();
    let host_base = (Labs::BUILT.guest_memory_host_address)(&memory);
    let gva_to_hva = Labs::BUILT.gva_to_hva;
    assert_eq!(
        gva_to_hva(&memory, cr3, host_base, end - 1),
        Some(host_base + end - 1),
        "the last byte"
    );
    assert_eq!(
        gva_to_hva(&memory, cr3, host_base, end),
        None,
        "the first byte past the end"
    );
    assert_eq!(gva_to_hva(&memory, cr3, host_base, end + 0x1234), None);
}
