//! Lab code is untrusted: forged verdicts, `exit(0)`, escaped children, fork loops, memory hogs
//! and chatter, each run through the real runner in a real child process (this test binary runs
//! itself as the check's process, with one lab function replaced), must gain nothing.
// TODO(probe split): rewritten for the probe/judge split and the jail (issue 18 item 9).
#![cfg(any())]
#![cfg(feature = "solution")]

use std::process::Command;
use std::time::{Duration, Instant};

use grader::runner::{Limits, Outcome, child_main_with, run_isolated_with};
use grader::{Labs, find_check};
use kvm_bindings::kvm_sregs;
use lab3_registers::Mode;

/// The environment variable that makes this binary the check's process for one scenario.
const SCENARIO: &str = "GRADER_ISOLATION_SCENARIO";
/// The check every scenario runs (a pure one: no KVM needed).
const CHECK: &str = "lab3_long_mode_control_registers";
const LIMITS: Limits = Limits {
    cpu: Duration::from_secs(2),
    wall: Duration::from_secs(4),
};

fn scenario() -> String {
    std::env::var(SCENARIO).unwrap_or_default()
}

/// special_registers as the scenario has it: the reference plus the scenario's misbehaviour.
fn misbehaving(mode: Mode, sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let right = lab3_registers::special_registers(mode, sregs, cr3);
    match scenario().as_str() {
        "print-forged-verdict-and-exit" => {
            println!("{{\"outcome\":\"passed\",\"message\":\"\"}}");
            std::process::exit(0);
        }
        "write-forged-verdict-on-fd-3" => {
            use std::io::Write;
            use std::os::fd::FromRawFd;
            // SAFETY: descriptor 3 is the result pipe; the forgery writes to it and leaks it.
            let mut pipe = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(3) });
            let _ = writeln!(pipe, "{{\"outcome\":\"passed\",\"message\":\"\"}}");
            std::process::exit(0);
        }
        "chatter-without-newline" => {
            print!("debug: cr3 = {cr3:#x} {{\"outcome\":\"failed\"");
            eprint!("stderr chatter");
            right
        }
        "chatter-with-newline" => {
            println!("debug line\n{{\"outcome\":\"failed\",\"message\":\"x\"}}");
            right
        }
        "escapee-printing-late" => {
            let script = format!(
                "echo $$ > {}; sleep 1; echo '{{\"outcome\":\"passed\",\"message\":\"\"}}'; echo late >&2; sleep 30",
                pid_file().display()
            );
            let _ = Command::new("setsid").args(["sh", "-c", &script]).spawn();
            std::thread::sleep(Duration::from_millis(300));
            kvm_sregs::default() // wrong: the check fails on its own
        }
        "escapee-and-hang" => {
            let script = format!("echo $$ > {}; exec sleep 30", pid_file().display());
            let _ = Command::new("setsid").args(["sh", "-c", &script]).spawn();
            loop {
                std::hint::spin_loop();
            }
        }
        "fork-loop" => loop {
            // SAFETY: fork in a test child that only loops; failures are ignored.
            unsafe { libc::fork() };
        },
        "memory-hog" => {
            // Touches 512 MiB, then asks for more address space, 1 GiB at a time.
            let mut hog: Vec<Vec<u8>> = (0..8).map(|_| vec![1u8; 64 << 20]).collect();
            loop {
                hog.push(Vec::with_capacity(1 << 30));
            }
        }
        "stack-overflow" => {
            // Recursion without a base case, as a buggy lab might have it.
            #[allow(unconditional_recursion)]
            fn deeper(n: u64) -> u64 {
                let frame = [n; 64];
                std::hint::black_box(&frame);
                deeper(n + 1) + frame[0]
            }
            std::hint::black_box(deeper(0));
            right
        }
        "keyed-to-the-check" => {
            // Behaviour keyed to the check it runs in: nothing tells which one.
            let args: Vec<String> = std::env::args().collect();
            let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
            let seen = format!("{args:?} {env:?} {comm}");
            if seen.contains("lab3") || seen.contains("control_registers") {
                kvm_sregs::default()
            } else {
                right
            }
        }
        _ => right,
    }
}

fn pid_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("grader-isolation-{}", scenario()))
}

/// The check's process: the runner starts this binary to run it for a scenario.
#[test]
#[ignore = "the check's process of the scenarios below, which run it"]
fn check_process() {
    if scenario().is_empty() {
        return;
    }
    let mut labs = Labs::BUILT;
    labs.special_registers = misbehaving;
    let status = child_main_with(labs, (env!("CARGO_BIN_EXE_grader").into(), vec!["vmm".into()]));
    std::process::exit(status.into());
}

/// One scenario at a time, so none waits for another inside its measured time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(scenario: &str) -> (Outcome, Duration) {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(find_check(CHECK).is_some());
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "check_process",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO, scenario);
    let started = Instant::now();
    let outcome = run_isolated_with(command, CHECK, 1234, LIMITS).expect("not interrupted");
    (outcome, started.elapsed())
}

fn gone(pid_file: &std::path::Path) {
    let pid = std::fs::read_to_string(pid_file).unwrap_or_default().trim().to_owned();
    let _ = std::fs::remove_file(pid_file);
    assert!(!pid.is_empty(), "the escapee never started");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the escaped process {pid} outlived its check: {stat}"
    );
}

fn failed(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed(message) | Outcome::TimedOut(message) => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn the_honest_reference_passes_through_the_runner() {
    assert_eq!(run("none").0, Outcome::Passed);
}

#[test]
fn a_printed_verdict_and_exit_0_fail() {
    let (outcome, _) = run("print-forged-verdict-and-exit");
    let message = failed(&outcome);
    assert!(message.contains("before the check finished"), "{message}");
    assert!(message.contains("your code printed on stdout"), "{message}");
}

#[test]
fn a_verdict_written_on_the_result_pipe_without_the_secret_fails() {
    let (outcome, _) = run("write-forged-verdict-on-fd-3");
    assert!(failed(&outcome).contains("before the check finished"), "{outcome:?}");
}

#[test]
fn chatter_with_or_without_a_newline_is_judged_as_silence() {
    assert_eq!(run("chatter-without-newline").0, Outcome::Passed);
    assert_eq!(run("chatter-with-newline").0, Outcome::Passed);
}

#[test]
fn a_late_verdict_from_an_escaped_child_is_ignored_and_the_child_killed() {
    let (outcome, took) = run("escapee-printing-late");
    let message = failed(&outcome);
    assert!(
        message.starts_with("lab3 special_registers: CR0 in long mode"),
        "{message}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    gone(&pid_file_of("escapee-printing-late"));
}

#[test]
fn a_hanging_check_with_an_escaped_child_ends_within_its_limits() {
    let (outcome, took) = run("escapee-and-hang");
    assert!(
        matches!(outcome, Outcome::TimedOut(ref m) if m.contains("CPU time")),
        "{outcome:?}"
    );
    assert!(took < LIMITS.wall + Duration::from_secs(1), "{took:?}");
    gone(&pid_file_of("escapee-and-hang"));
}

#[test]
fn a_fork_loop_costs_the_check_only() {
    let (outcome, took) = run("fork-loop");
    failed(&outcome);
    assert!(took < LIMITS.wall + Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_memory_hog_costs_the_check_only() {
    let (outcome, took) = run("memory-hog");
    let message = failed(&outcome);
    assert!(message.contains("before the check finished"), "{message}");
    assert!(message.contains("memory allocation"), "{message}");
    assert!(took < LIMITS.wall + Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_stack_overflow_is_named_from_the_check_s_stderr() {
    let (outcome, _) = run("stack-overflow");
    let message = failed(&outcome);
    assert!(message.contains("before the check finished"), "{message}");
    assert!(message.contains("overflowed its stack"), "{message}");
}

#[test]
fn lab_code_cannot_tell_which_check_it_is_in() {
    assert_eq!(run("keyed-to-the-check").0, Outcome::Passed);
}

fn pid_file_of(scenario: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("grader-isolation-{scenario}"))
}
