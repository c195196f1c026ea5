//! Labs 1 and 0 give partial credit: a check that judges one function passes while the lab's
//! other functions are still stubs (the probe prepares the vCPU itself, or starts it from reset
//! with the judge's boot code, instead of calling them).
#![cfg(feature = "solution")]

mod common;

use common::{outcome_of, seed};
use grader::runner::Outcome;
use grader_probe::Labs;

fn stub_vcpu_init(_vm: &lab1_memory::Vm) -> Result<lab1_memory::Vcpu<'_>, lab1_memory::Lab1Error> {
    todo!("lab1 vcpu_init (a stub left for this test)")
}

fn stub_setup_vcpu(_vm: &lab0_lwn::LwnVm) -> Result<kvm_ioctls::VcpuFd, lab0_lwn::Lab0Error> {
    todo!("lab0 setup_vcpu (a stub left for this test)")
}

#[test]
fn vm_init_is_graded_without_vcpu_init() {
    let labs = Labs {
        vcpu_init: stub_vcpu_init,
        ..Labs::BUILT
    };
    let seed = seed();
    assert_eq!(
        outcome_of("lab1_vm_init_memory", labs, seed),
        Outcome::Passed,
        "seed {seed}"
    );
    match outcome_of("lab1_memory_seen_by_vcpu", labs, seed) {
        Outcome::NotImplemented(stub) => assert!(stub.contains("lab1 vcpu_init"), "{stub}"),
        other => panic!("seed {seed}: {other:?}"),
    }
}

#[test]
fn create_vm_slot_and_run_are_graded_without_setup_vcpu() {
    let labs = Labs {
        lwn_setup_vcpu: stub_setup_vcpu,
        ..Labs::BUILT
    };
    let seed = seed();
    for check in ["lab0_create_vm", "lab0_memory_slot", "lab0_run"] {
        assert_eq!(outcome_of(check, labs, seed), Outcome::Passed, "{check}, seed {seed}");
    }
    match outcome_of("lab0_setup_vcpu", labs, seed) {
        Outcome::NotImplemented(stub) => assert!(stub.contains("lab0 setup_vcpu"), "{stub}"),
        other => panic!("seed {seed}: {other:?}"),
    }
}
