//! Two runs time out on parallel threads of one process: each is stopped by its own watchdog,
//! reported as its own timeout, and its vCPU thread ends (none is left spinning). On its own in
//! this file, so that no other test's vCPU thread is alive while the threads are counted.
#![cfg(feature = "solution")]

mod common;

use std::time::{Duration, Instant};

use common::require_kvm;
use kit_common::{Mode, Status};
use kvm_hello::labs::Labs;
use kvm_hello::vmm::{self, Program, RunConfig};

/// The vCPU threads of this process that are still alive.
fn vcpu_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "vcpu0")
        .count()
}

#[test]
fn two_runs_time_out_on_parallel_threads_each_with_its_own_report() {
    require_kvm();
    vmm::install_panic_hook(true);
    let run = |mode: Mode, guest: &'static str, millis: u64| {
        std::thread::spawn(move || {
            let image = guests::CORPUS.iter().find(|g| g.name == guest).unwrap().image.to_vec();
            vmm::run(RunConfig {
                labs: Labs::BUILT,
                mode,
                image,
                capture_output: true,
                trace: false,
                timeout: Duration::from_millis(millis),
                explain_walk: None,
                program: Program::Hello,
            })
        })
    };
    let long = run(Mode::Long, "spin-long", 300);
    let real = run(Mode::Real, "spin-real", 400);
    for (report, limit) in [(long.join().unwrap(), "0.3 s"), (real.join().unwrap(), "0.4 s")] {
        let failure = report.failure.expect("a timeout");
        assert_eq!(failure.status, Status::Timeout, "{}", failure.message);
        // "did not halt" is only said after the vCPU thread came back with its report.
        let expected = format!("did not halt within {limit} of vCPU time");
        assert!(failure.message.contains(&expected), "{}", failure.message);
        assert!(report.rip.is_some(), "the thread's own report: {}", failure.message);
    }
    // A thread that has been joined may linger in /proc for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while vcpu_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(vcpu_threads(), 0, "a vCPU thread is left running");
}
