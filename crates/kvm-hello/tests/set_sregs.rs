//! What `KVM_SET_SREGS` refuses: KVM does not take the vCPU state as given, it checks that the
//! control registers, EFER and CS describe a mode the CPU could be in. The book's chapter
//! "Under KVM_RUN" includes these cases; each is run here on the real KVM.

mod common;

use kvm_bindings::kvm_sregs;
use kvm_ioctls::{Kvm, VcpuFd};

const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const CR3: u64 = 0x2000;

/// A fresh vCPU (its VM is kept alive beside it) and its reset state.
fn fresh_vcpu() -> (kvm_ioctls::VmFd, VcpuFd, kvm_sregs) {
    common::require_kvm();
    let vm = Kvm::new().expect("open /dev/kvm").create_vm().expect("KVM_CREATE_VM");
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let reset = vcpu.get_sregs().expect("KVM_GET_SREGS");
    (vm, vcpu, reset)
}

// ANCHOR: cases
/// Long mode as lab 3 sets it: paging on, PAE, LME and LMA, a 64-bit code segment.
fn long_mode(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.cr0 |= CR0_PE | CR0_PG;
    sregs.cr3 = CR3;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs.cs.l = 1;
    sregs.cs.db = 0;
    sregs
}

/// KVM_SET_SREGS's answer: Ok, or the errno it failed with.
fn set(vcpu: &VcpuFd, sregs: &kvm_sregs) -> Result<(), i32> {
    vcpu.set_sregs(sregs).map_err(|err| err.errno())
}

#[test]
fn set_sregs_refuses_a_mode_the_cpu_could_not_be_in() {
    let (_vm, vcpu, reset) = fresh_vcpu();
    // The whole long-mode state is accepted.
    assert_eq!(set(&vcpu, &long_mode(reset)), Ok(()));
    // LME with paging on but without LMA: a real CPU would have set LMA itself. EINVAL.
    let no_lma = kvm_sregs {
        efer: EFER_LME,
        ..long_mode(reset)
    };
    assert_eq!(set(&vcpu, &no_lma), Err(libc::EINVAL));
    // Long mode without PAE does not exist. EINVAL.
    let no_pae = kvm_sregs {
        cr4: 0,
        ..long_mode(reset)
    };
    assert_eq!(set(&vcpu, &no_pae), Err(libc::EINVAL));
    // A 64-bit code segment (CS.L = 1) outside long mode: protected mode with L = 1. EINVAL.
    let mut protected_l = reset;
    protected_l.cr0 |= CR0_PE;
    protected_l.cs.l = 1;
    assert_eq!(set(&vcpu, &protected_l), Err(libc::EINVAL));
    // LMA without paging: long mode cannot be active. EINVAL.
    let lma_alone = kvm_sregs {
        efer: EFER_LME | EFER_LMA,
        ..reset
    };
    assert_eq!(set(&vcpu, &lma_alone), Err(libc::EINVAL));
    // Paging without protection (PG without PE) is no mode at all. EINVAL.
    let pg_without_pe = kvm_sregs {
        cr0: (reset.cr0 | CR0_PG) & !CR0_PE,
        ..reset
    };
    assert_eq!(set(&vcpu, &pg_without_pe), Err(libc::EINVAL));
}
// ANCHOR_END: cases

#[test]
fn set_sregs_takes_the_segments_without_a_gdt() {
    let (_vm, vcpu, reset) = fresh_vcpu();
    // KVM loads the hidden part of CS (base, limit, type, L) from the struct, not from a GDT:
    // GDTR keeps its reset value (base 0, limit 0xffff) and no descriptor exists in memory.
    vcpu.set_sregs(&long_mode(reset)).expect("KVM_SET_SREGS");
    let back = vcpu.get_sregs().expect("KVM_GET_SREGS");
    assert_eq!((back.gdt.base, back.gdt.limit), (reset.gdt.base, reset.gdt.limit));
    assert_eq!((back.idt.base, back.idt.limit), (reset.idt.base, reset.idt.limit));
    assert_eq!(back.cs.l, 1, "CS.L as given");
    assert_eq!(back.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
}
