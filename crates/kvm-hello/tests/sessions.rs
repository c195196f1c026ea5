//! Runs in one process, as the grader makes them: each has its own watchdog and its own panic
//! report, a panic leaves nothing armed behind, and a stop that comes before the vCPU is armed
//! still stops the run.
#![cfg(feature = "solution")]

mod common;

use std::io::Write;
use std::time::Duration;

use common::require_kvm;
use kit_common::Status;
use kvm_hello::labs::Labs;
use kvm_hello::vmm::{self, Program, RunConfig, RunReport};
use kvm_ioctls::{VcpuExit, VcpuFd};
use lab1_memory::{Lab1Error, Vm};
use lab4_exit_loop::{ExitCounts, ExitLoopError};

/// A corpus guest's image.
fn corpus(name: &str) -> Vec<u8> {
    let guest = guests::CORPUS.iter().find(|g| g.name == name);
    guest.unwrap_or_else(|| panic!("no corpus guest {name}")).image.to_vec()
}

fn config(labs: Labs, image: Vec<u8>, timeout: Duration) -> RunConfig {
    RunConfig {
        labs,
        mode: kit_common::Mode::Long,
        image,
        capture_output: true,
        trace: false,
        timeout,
        explain_walk: None,
        program: Program::Hello,
    }
}

fn failure(report: &RunReport) -> (Status, &str) {
    let failure = report.failure.as_ref().expect("the run fails");
    (failure.status, failure.message.as_str())
}

/// The thread's own CPU time.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid place for the answer.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(read, 0, "the thread's CPU clock");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Keeps this thread busy for `cpu` of CPU time, as a slow lab function does.
fn burn(cpu: Duration) {
    let until = thread_cpu_time() + cpu;
    while thread_cpu_time() < until {
        std::hint::spin_loop();
    }
}

/// An exit loop with a bug: it panics after the first KVM_RUN, while the vCPU is armed.
fn panics_while_armed(
    vcpu: &mut VcpuFd,
    _: &mut dyn Write,
    _: &mut ExitCounts,
    _: &mut dyn FnMut(&VcpuExit<'_>),
) -> Result<(), ExitLoopError> {
    let _ = vcpu.run();
    panic!("a bug in the exit loop");
}

#[test]
fn a_panic_while_armed_then_a_timeout_in_the_same_process() {
    require_kvm();
    vmm::install_panic_hook(true);
    let second = Duration::from_secs(1);
    let panicking = Labs {
        run_until_halt: panics_while_armed,
        ..Labs::BUILT
    };
    let report = vmm::run(config(panicking, guests::HELLO64.to_vec(), second));
    let (status, message) = failure(&report);
    assert_eq!(status, Status::LabPanicked, "{message}");
    assert!(message.contains("a bug in the exit loop"), "{message}");
    assert!(
        message.contains("sessions.rs"),
        "the hook's place is reported: {message}"
    );

    // The panic's vCPU and kvm_run are gone; this run's watchdog must stop this run's vCPU.
    let report = vmm::run(config(Labs::BUILT, corpus("spin-long"), Duration::from_millis(300)));
    let (status, message) = failure(&report);
    assert_eq!(status, Status::Timeout, "{message}");
    assert!(message.contains("did not halt within 0.3 s of vCPU time"), "{message}");
}

/// Lab 1's `vm_init`, slow: it runs `SLOW_VM_INIT` of CPU time first.
fn slow_vm_init(size: usize) -> Result<Vm, Lab1Error> {
    burn(SLOW_VM_INIT);
    (Labs::BUILT.vm_init)(size)
}
const SLOW_VM_INIT: Duration = Duration::from_millis(400);

#[test]
fn a_stop_before_the_vcpu_is_armed_sticks_and_names_the_function() {
    require_kvm();
    let slow = Labs {
        vm_init: slow_vm_init,
        ..Labs::BUILT
    };
    // The limit passes inside vm_init, long before the vCPU exists: the guest must not run.
    let report = vmm::run(config(slow, guests::HELLO64.to_vec(), Duration::from_millis(150)));
    let (status, message) = failure(&report);
    assert_eq!(status, Status::Timeout, "{message}");
    assert!(
        message.contains("lab1 vm_init"),
        "the timeout names the function: {message}"
    );
    assert!(message.contains("0.15 s of vCPU time"), "and the limit: {message}");
    assert_eq!(report.counts.total(), 0, "the guest never ran");
    assert!(report.output.is_empty());
}

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_blocked_vcpu_thread_is_stopped_by_the_wall_clock_backstop() {
    require_kvm();
    fn sleeping_vm_init(size: usize) -> Result<Vm, Lab1Error> {
        std::thread::sleep(Duration::from_millis(100) * vmm::BLOCKED_FACTOR * 2);
        (Labs::BUILT.vm_init)(size)
    }
    let sleeping = Labs {
        vm_init: sleeping_vm_init,
        ..Labs::BUILT
    };
    let report = vmm::run(config(sleeping, guests::HELLO64.to_vec(), Duration::from_millis(100)));
    let (status, message) = failure(&report);
    assert_eq!(status, Status::Timeout, "{message}");
    assert!(message.contains("wall-clock backstop"), "which limit: {message}");
    assert!(message.contains("did not run at all for 1.2 s"), "{message}");
    assert!(message.contains("lab1 vm_init"), "{message}");
}

#[test]
fn an_honest_guest_is_not_stopped_by_a_budget_it_does_not_use() {
    require_kvm();
    let report = vmm::run(config(Labs::BUILT, guests::HELLO64.to_vec(), Duration::from_secs(5)));
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.output, b"Hello, world!\n");
}

/// The --timeout of the ceiling test: its ceiling is `CEILING_FACTOR` times as long.
const DRIP_TIMEOUT: Duration = Duration::from_millis(50);

#[test]
#[ignore = "slow: cargo xtask ci runs it"]
fn a_vcpu_thread_that_sleeps_more_than_it_runs_is_stopped_by_the_wall_clock_ceiling() {
    require_kvm();
    // Runs 1 ms in every 100: never blocked for long, never near its CPU budget.
    fn dripping_vm_init(size: usize) -> Result<Vm, Lab1Error> {
        let until = std::time::Instant::now() + DRIP_TIMEOUT * vmm::CEILING_FACTOR + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            burn(Duration::from_millis(1));
        }
        (Labs::BUILT.vm_init)(size)
    }
    let dripping = Labs {
        vm_init: dripping_vm_init,
        ..Labs::BUILT
    };
    let report = vmm::run(config(dripping, guests::HELLO64.to_vec(), DRIP_TIMEOUT));
    let (status, message) = failure(&report);
    assert_eq!(status, Status::Timeout, "{message}");
    assert!(message.contains("wall-clock ceiling of 3 s"), "which limit: {message}");
    assert!(message.contains("lab1 vm_init"), "{message}");
}
