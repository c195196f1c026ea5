//! Lab 7's parts on their own, through kvm-hello's lab table: a snapshot restored into a fresh VM
//! has the vCPU's state bit for bit and finishes with the checksum of the VM it was taken from;
//! the dirty log reports the pages the guest writes, not those the host writes.
#![cfg(feature = "solution")]

mod common;

use std::time::Duration;

use kvm_hello::labs::Labs;
use lab7_migration::{Params, SliceEnd, SliceTimer, create_vm, read_checksum, read_progress};

const PARAMS: Params = Params {
    seed: 99,
    dirty_rate: 20,
    steps: 300,
};

/// Runs the guest until it has done a few steps (its start fills 512 KiB first).
fn run_a_few_steps(labs: &Labs, guest: &mut lab7_migration::GuestVm, timer: &mut SliceTimer, out: &mut Vec<u8>) {
    while read_progress(&guest.vm.memory).unwrap() < 3 {
        let ended = (labs.migration_run_slice)(guest, Some(Duration::from_millis(20)), timer, out).unwrap();
        assert_eq!(ended, SliceEnd::Timer, "the guest does not end within 3 steps");
    }
}

fn run_to_end(labs: &Labs, guest: &mut lab7_migration::GuestVm, timer: &mut SliceTimer, out: &mut Vec<u8>) -> u64 {
    let ended = (labs.migration_run_slice)(guest, None, timer, out).unwrap();
    assert!(matches!(ended, SliceEnd::Halted), "the guest halts: {ended:?}");
    read_checksum(&guest.vm.memory).unwrap()
}

#[test]
fn a_restored_snapshot_has_the_same_vcpu_and_finishes_the_same() {
    common::require_kvm();
    let labs = Labs::BUILT;
    let base = labs.base();
    let mut timer = SliceTimer::new().unwrap();
    let mut guest = create_vm(labs.create_guest_vm, &base, guests::MIGRATE64, &PARAMS).unwrap();
    run_a_few_steps(&labs, &mut guest, &mut timer, &mut Vec::new());

    let snapshot = (labs.snapshot)(&guest).unwrap();
    let mut restored = (labs.restore_snapshot)(&base, &snapshot).unwrap();
    assert_eq!(
        (labs.save_vcpu)(&restored.vcpu).unwrap(),
        snapshot.vcpu,
        "the restored vCPU's registers, special registers and FPU, bit for bit"
    );
    let (mut rest_here, mut rest_there) = (Vec::new(), Vec::new());
    let here = run_to_end(&labs, &mut guest, &mut timer, &mut rest_here);
    let there = run_to_end(&labs, &mut restored, &mut timer, &mut rest_there);
    assert_eq!(here, there);
    assert_eq!(rest_here, rest_there, "the restored VM prints what the original prints");
    assert!(String::from_utf8_lossy(&rest_there).ends_with(&format!("checksum {there:#018x}\n")));
}

#[test]
fn the_dirty_log_gives_the_pages_the_guest_wrote() {
    common::require_kvm();
    let labs = Labs::BUILT;
    let mut timer = SliceTimer::new().unwrap();
    let mut guest = create_vm(labs.create_guest_vm, &labs.base(), guests::MIGRATE64, &PARAMS).unwrap();
    run_a_few_steps(&labs, &mut guest, &mut timer, &mut Vec::new());
    (labs.enable_dirty_log)(&guest.vm).unwrap();
    assert_eq!(
        (labs.take_dirty_pages)(&guest.vm).unwrap(),
        Vec::<u64>::new(),
        "the log starts empty"
    );
    (labs.migration_run_slice)(&mut guest, Some(Duration::from_millis(30)), &mut timer, &mut Vec::new()).unwrap();
    let dirty = (labs.take_dirty_pages)(&guest.vm).unwrap();
    let params_page = lab7_migration::PARAMS_ADDR / 4096;
    let work = lab7_migration::WORK_BASE / 4096..lab7_migration::WORK_BASE / 4096 + 128;
    assert!(dirty.contains(&params_page), "the progress slot's page: {dirty:?}");
    assert!(dirty.iter().any(|p| work.contains(p)), "working-set pages: {dirty:?}");
    assert!(dirty.windows(2).all(|w| w[0] < w[1]), "in order: {dirty:?}");
    // The log was cleared by the read; a write by the host is none of KVM's business.
    use vm_memory::Bytes;
    guest
        .vm
        .memory
        .write_obj(7u64, vm_memory::GuestAddress(0x18_0000))
        .unwrap();
    assert_eq!((labs.take_dirty_pages)(&guest.vm).unwrap(), Vec::<u64>::new());
}

/// A destination whose `receive` is still a stub: the run ends with status 6 and the stub's own
/// line, and the source has run the guest to its end (the output of an unmoved run).
#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_stub_on_the_destination_ends_the_run_with_its_own_line() {
    common::require_kvm();
    fn receive_stub(
        _: &lab7_migration::Base,
        _: &mut lab7_migration::Link,
    ) -> Result<lab7_migration::GuestVm, lab7_migration::Lab7Error> {
        todo!("lab7 receive (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)")
    }
    kvm_hello::vmm::install_panic_hook(false);
    let options = |no_migration| kvm_hello::cli::MigrateOptions {
        params: PARAMS,
        max_rounds: 4,
        no_migration,
        kill_destination: None,
    };
    let timeout = Duration::from_secs(20);
    let unmoved = kvm_hello::vmm::run_migrate(Labs::BUILT, options(true), kvm_hello::vmm::Where::Thread, true, timeout);
    assert!(unmoved.failure.is_none(), "{:?}", unmoved.failure);
    let labs = Labs {
        receive: receive_stub,
        ..Labs::BUILT
    };
    let report = kvm_hello::vmm::run_migrate(labs, options(false), kvm_hello::vmm::Where::Thread, true, timeout);
    let failure = report.failure.expect("the run fails");
    assert_eq!(failure.status, kit_common::Status::NotImplemented);
    assert_eq!(
        failure.message,
        "not implemented yet: lab7 receive (labs/lab7-migration/src/lib.rs; book: Lab 7, Moving a running VM)"
    );
    assert_eq!(
        report.output, unmoved.output,
        "the source ran the guest to its end alone"
    );
    assert_eq!(report.migration.unwrap().finished_on, Some("source"));
}
