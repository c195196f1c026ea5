//! Seeded mistakes of lab 6, applied to the reference one at a time: the grader must fail each
//! with a message that names the lab, the function and the mistake, and a loop that never ends
//! must be stopped by the run's watchdog, well within the check's time limit, never hang.
#![cfg(feature = "solution")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use grader::find_check;
use grader_probe::Labs;
use kit_common::{GUEST_MEMORY_SIZE, Mode};
use lab6_scheduling::{Account, Choice, GuestVm, Lab6Error, Policy, SliceEnd, SliceTimer, Write};

/// Runs `check` on the reference with one function swapped; returns its failure message and how
/// long it took.
fn failure_of(check: &str, seed: impl FnOnce(&mut Labs)) -> (String, Duration) {
    let limit = find_check(check)
        .unwrap_or_else(|| panic!("no check {check}"))
        .time_limit();
    let started = Instant::now();
    let message = common::failure_of(check, seed);
    let took = started.elapsed();
    assert!(took < limit, "{check}: took {took:?}, beyond its time limit");
    (message, took)
}

/// Asserts that the message names the place and every expected phrase.
fn assert_names(message: &str, place: &str, phrases: &[&str]) {
    assert!(message.starts_with(place), "{message:?} does not start with {place:?}");
    assert!(
        message.contains("(book: Lab 6, Scheduling two VMs)"),
        "{message:?} names no chapter"
    );
    for phrase in phrases {
        assert!(message.contains(phrase), "{message:?} does not say {phrase:?}");
    }
}

#[test]
fn switching_without_saving_state() {
    // Each slice starts the guest again from its entry point, as if the VM's registers were not
    // kept between its slices.
    fn seeded(
        vm: &mut GuestVm,
        length: Option<Duration>,
        timer: &mut SliceTimer,
        console: &mut dyn Write,
    ) -> Result<SliceEnd, Lab6Error> {
        let regs = lab3_registers::general_registers(Mode::Long, GUEST_MEMORY_SIZE);
        vm.vcpu.set_regs(&regs).map_err(|source| Lab6Error::Registers {
            ioctl: "KVM_SET_REGS",
            source,
        })?;
        lab6_scheduling::run_slice(vm, length, timer, console)
    }
    let (message, _) = failure_of("lab6_state_survives_switches", |labs| labs.run_slice = seeded);
    assert_names(
        &message,
        "lab6 run_slice: VM A's progress went from",
        &["a VM must go on where it stopped"],
    );
}

#[test]
fn one_timer_never_rearmed() {
    // The timer is armed for the first slice only: every later slice runs until the watchdog.
    static ARMED_ONCE: AtomicBool = AtomicBool::new(false);
    fn seeded(
        vm: &mut GuestVm,
        length: Option<Duration>,
        timer: &mut SliceTimer,
        console: &mut dyn Write,
    ) -> Result<SliceEnd, Lab6Error> {
        if ARMED_ONCE.swap(true, Ordering::Relaxed) {
            return run_forever(vm);
        }
        lab6_scheduling::run_slice(vm, length, timer, console)
    }
    let (message, _) = failure_of("lab6_round_robin_quantum", |labs| labs.run_slice = seeded);
    assert_names(
        &message,
        "lab6 run_schedule: round-robin for 1000.0 ms: timeout: lab6 run_schedule did not return",
        &["does it loop forever?"],
    );
}

/// A slice with no timer that ignores console exits: it never ends.
fn run_forever(vm: &mut GuestVm) -> Result<SliceEnd, Lab6Error> {
    loop {
        match vm.vcpu.run() {
            Ok(_) => {}
            Err(err) if err.errno() == libc::EINTR => {}
            Err(err) => return Err(Lab6Error::Run(err)),
        }
    }
}

#[test]
fn a_slice_that_never_ends() {
    fn seeded(
        vm: &mut GuestVm,
        _length: Option<Duration>,
        _timer: &mut SliceTimer,
        _console: &mut dyn Write,
    ) -> Result<SliceEnd, Lab6Error> {
        run_forever(vm)
    }
    let (message, _) = failure_of("lab6_both_progress", |labs| labs.run_slice = seeded);
    assert_names(
        &message,
        "lab6 run_schedule: cooperative for 200.0 ms: timeout: lab6 run_schedule did not return",
        &["does it loop forever?"],
    );
}

#[test]
fn shares_inverted() {
    fn seeded(policy: &Policy, accounts: &[Account; 2], last: Option<usize>) -> Choice {
        match *policy {
            Policy::Weighted { quantum, shares } => lab6_scheduling::next_slice(
                &Policy::Weighted {
                    quantum,
                    shares: [shares[1], shares[0]],
                },
                accounts,
                last,
            ),
            other => lab6_scheduling::next_slice(&other, accounts, last),
        }
    }
    let (message, _) = failure_of("lab6_weighted_shares", |labs| labs.next_slice = seeded);
    assert_names(
        &message,
        "lab6 next_slice: weighted 70:30 over 1000.0 ms: VM A got ",
        &["expected 70% within "],
    );
    // Inverted shares give A about 30% (slices that overrun on a loaded machine move it by a few
    // points either way): well below half, which is what names the mistake.
    let share: f64 = message["lab6 next_slice: weighted 70:30 over 1000.0 ms: VM A got ".len()..]
        .split('%')
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no share in {message:?}"));
    assert!(share < 50.0, "inverted shares gave A {share}%: {message}");
    let (message, _) = failure_of("lab6_next_slice_weighted", |labs| labs.next_slice = seeded);
    assert_names(
        &message,
        "lab6 next_slice: weighted 70:30 with guest times",
        &["furthest behind its share"],
    );
}

#[test]
fn one_line_buffer_for_both_vms() {
    // Both VMs write into one buffer: a line holds bytes of both.
    fn seeded(
        vm: &mut GuestVm,
        length: Option<Duration>,
        timer: &mut SliceTimer,
        console: &mut dyn Write,
    ) -> Result<SliceEnd, Lab6Error> {
        static SHARED: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
        let mut shared = SHARED.lock().unwrap();
        std::mem::swap(&mut vm.line, &mut shared);
        let ended = lab6_scheduling::run_slice(vm, length, timer, console);
        std::mem::swap(&mut vm.line, &mut shared);
        ended
    }
    let (message, _) = failure_of("lab6_state_survives_switches", |labs| labs.run_slice = seeded);
    assert_names(
        &message,
        "lab6 run_slice: the console line",
        &["keep each VM's half-written line in its own buffer"],
    );
}
