//! The probe: the half of a check that runs lab code.
//!
//! `grader-probe` reads one request ([`grader_protocol::Envelope`]) on stdin, calls the lab
//! functions on the inputs it names and writes one [`Answer`] on descriptor
//! [`ANSWER_FD`]: what it observed, never a verdict. It holds no expected value, no secret and
//! nothing of the judge: the right answers exist only in the `grader` process, which never links
//! lab code. Official grading starts the probe jailed (see `kit-jail`).
//!
//! One module per lab, each with a `route` that answers the requests of that lab.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use grader_protocol::{ANSWER_FD, Answer, Envelope, Request, VMM_ARG};
use kit_common::LabPanic;
use serde_json::Value;

pub use kvm_hello::labs::Labs;
/// The lab crates, for probes built around them (the kit's hostile probe).
pub use {
    lab0_lwn, lab1_memory, lab2_paging, lab3_registers, lab4_exit_loop, lab5_hypercalls, lab6_scheduling,
    lab7_migration,
};

pub mod e2e;
pub mod lab0;
pub mod lab1;
pub mod lab2;
pub mod lab3;
pub mod lab4;
pub mod lab5;
pub mod lab6;
pub mod lab7;
pub mod memory;

/// What the probe runs: the lab functions, and the program that is kvm-hello built from them.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The lab functions (the built labs; a test swaps in a seeded mistake).
    pub labs: Labs,
    /// The program that acts as kvm-hello, and the arguments before kvm-hello's own.
    pub vmm: (PathBuf, Vec<String>),
}

impl Probe {
    /// The labs as built, with this executable as the VMM.
    pub fn built() -> Probe {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("grader-probe"));
        Probe {
            labs: Labs::BUILT,
            vmm: (exe, vec![VMM_ARG.to_owned()]),
        }
    }
}

/// A request's handler's result: its reply, or why the probe could not do it.
pub type Handled = Result<Value, String>;

/// Runs a typed handler on a request's body.
pub fn handle<R: Request>(body: &Value, work: impl FnOnce(R) -> Result<R::Reply, String>) -> Handled {
    let request: R = serde_json::from_value(body.clone()).map_err(|err| format!("a malformed {}: {err}", R::NAME))?;
    let reply = work(request)?;
    serde_json::to_value(reply).map_err(|err| format!("cannot encode the reply to {}: {err}", R::NAME))
}

/// The handler of the request named in `envelope`.
fn route(probe: &Probe, envelope: &Envelope) -> Handled {
    let routes: &[fn(&Probe, &Envelope) -> Option<Handled>] = &[
        lab1::route,
        lab2::route,
        lab0::route,
        lab4::route,
        e2e::route,
        lab3::route,
        lab5::route,
        lab6::route,
        lab7::route,
    ];
    routes
        .iter()
        .find_map(|route| route(probe, envelope))
        .unwrap_or_else(|| Err(format!("no request {:?}", envelope.request)))
}

thread_local! {
    /// Set while this thread answers a request: its panics are lab code's, recorded silently.
    static ANSWERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once, a panic hook that records the panics of lab code (kvm-hello's recorder:
/// `take_last_panic`) on the threads that answer requests or run lab code, and leaves every
/// other panic, a test's own for instance, to the hook that was there before.
fn install_panic_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        kvm_hello::vmm::install_panic_hook(false);
        let recorder = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let lab_thread = thread.name().is_some_and(|n| n == "vcpu0" || n.starts_with("lab-"));
            if ANSWERING.with(|a| a.get()) || lab_thread {
                recorder(info);
            } else {
                previous(info);
            }
        }));
    });
}

/// Answers one request (JSON text): lab code runs on this thread, its panics become the answer.
pub fn answer(probe: &Probe, input: &str) -> Answer {
    let envelope: Envelope = match serde_json::from_str(input) {
        Ok(envelope) => envelope,
        Err(err) => return Answer::Refused(format!("the request is not JSON of an envelope: {err}")),
    };
    install_panic_hook();
    let _ = kvm_hello::vmm::take_last_panic();
    ANSWERING.with(|a| a.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| route(probe, &envelope)));
    ANSWERING.with(|a| a.set(false));
    match outcome {
        Ok(Ok(reply)) => Answer::Reply(reply),
        Ok(Err(refused)) => Answer::Refused(refused),
        Err(payload) => match kvm_hello::vmm::take_last_panic() {
            Some(LabPanic::NotImplemented(stub)) => Answer::NotImplemented(stub),
            Some(LabPanic::Other(message)) => Answer::Panicked(message),
            None => Answer::Panicked(
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into()),
            ),
        },
    }
}

/// `grader-probe`: `vmm ARGS` runs kvm-hello; otherwise one request on stdin, one answer on
/// descriptor 3.
pub fn main() -> ExitCode {
    main_with(Probe::built())
}

/// `main` with the lab functions given (the kit's isolation tests build hostile probes so).
pub fn main_with(probe: Probe) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(VMM_ARG) {
        // `--lab migrate` starts this executable again as its destination: behind `vmm` too.
        kvm_hello::vmm::set_self_prefix(vec![VMM_ARG.to_owned()]);
        let status = kvm_hello::main_with_args(args[1..].iter().map(Into::into));
        return ExitCode::from(status.code() as u8);
    }
    // SAFETY: fcntl on a descriptor number; it fails harmlessly when the descriptor is not open.
    if unsafe { libc::fcntl(ANSWER_FD, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        eprintln!("grader-probe: runs under the grader only (descriptor {ANSWER_FD} is not open): use cargo grade");
        return ExitCode::from(2);
    }
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("grader-probe: reads its request from the grader, not from a terminal");
        return ExitCode::from(2);
    }
    // Lab code reads nothing of the grader's: stdin is /dev/null from here on.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto descriptor 0, which this process owns; `null` stays valid meanwhile.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    let answer = answer(&probe, &input);
    let _ = std::io::stdout().flush();
    // SAFETY: the grader opened ANSWER_FD for this process; nothing else here owns it.
    let mut channel = unsafe { std::fs::File::from_raw_fd(ANSWER_FD) };
    let text = serde_json::to_string(&answer).unwrap_or_else(|_| "\"unencodable\"".into());
    if channel.write_all(text.as_bytes()).is_err() {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
