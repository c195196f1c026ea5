//! Diagnosis and hints: what a failed run tells the student, in one line naming the cause, the
//! place and the chapter that explains it.

use std::path::Path;
use std::time::Duration;

use kit_common::{Mode, Status};
use lab1_memory::Lab1Error;
use lab4_exit_loop::{ExitLoopError, ResultError, UnexpectedExit};

use super::watchdog::{BLOCKED_FACTOR, CEILING_FACTOR, Limit, Stop};
use super::{Failure, RunReport};

/// Present on hosts whose KVM is PVM, which runs paging only in long mode.
const PVM_MODULE: &str = "/sys/module/kvm_pvm";
const TROUBLESHOOTING: &str = "book: Troubleshooting";

pub(crate) fn lab1_failure(err: Lab1Error) -> Failure {
    let hint = match &err {
        Lab1Error::OpenKvm(e) if e.errno() == libc::ENOENT => {
            "there is no /dev/kvm: load the kvm module (modprobe kvm_intel or kvm_amd) and enable VT-x/AMD-V in the firmware"
        }
        Lab1Error::OpenKvm(e) if e.errno() == libc::EACCES || e.errno() == libc::EPERM => {
            "add yourself to the kvm group (sudo usermod -aG kvm $USER) and log in again"
        }
        Lab1Error::OpenKvm(_) | Lab1Error::ApiVersion(_) => "/dev/kvm is not a usable KVM device",
        Lab1Error::ImageTooLarge { .. } => return Failure::new(Status::BadInput, err.to_string()),
        Lab1Error::WriteImage(_) => {
            return Failure::new(
                Status::GuestFault,
                format!("{err} (book: Lab 1, Guest memory and the vCPU)"),
            );
        }
        _ => "KVM refused to set up the VM",
    };
    Failure::new(Status::KvmUnavailable, format!("{err}: {hint} ({TROUBLESHOOTING})"))
}

pub(crate) fn lab0_failure(err: lab0_lwn::Lab0Error) -> Failure {
    use lab0_lwn::Lab0Error;
    match err {
        Lab0Error::OpenKvm(e) => lab1_failure(Lab1Error::OpenKvm(e)),
        Lab0Error::ApiVersion(v) => lab1_failure(Lab1Error::ApiVersion(v)),
        other => Failure::new(Status::GuestFault, format!("{other} (book: Lab 0, The LWN warm-up)")),
    }
}

/// KVM refused a register ioctl of the VMM's.
pub(crate) fn refused(ioctl: &str, err: kvm_ioctls::Error) -> Failure {
    Failure::new(
        Status::GuestFault,
        format!(
            "{ioctl} failed: {err}: KVM refused the vCPU state; check CR0, CR4, EFER and the segments (book: Lab 3, \
             Registers and CPU modes)"
        ),
    )
}

/// The suberror of a `KVM_EXIT_INTERNAL_ERROR` (kvm-ioctls does not decode it).
pub(crate) fn internal_error_suberror(vcpu: &mut kvm_ioctls::VcpuFd) -> Option<u32> {
    let run = vcpu.get_kvm_run();
    if run.exit_reason != kvm_bindings::KVM_EXIT_INTERNAL_ERROR {
        return None;
    }
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union member the
    // kernel filled; it is plain integers, valid for any bits.
    Some(unsafe { run.__bindgen_anon_1.internal.suberror })
}

/// What a `KVM_EXIT_INTERNAL_ERROR` suberror means.
fn suberror_meaning(suberror: u32) -> &'static str {
    match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "KVM could not emulate an instruction the guest ran",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "an exception happened while delivering another",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "KVM could not deliver an event to the guest",
        _ => "see the kernel's KVM documentation",
    }
}

/// Lab 5's loop errors as lab 4's, so that both loops are reported alike; a bad address the
/// guest passed is a guest fault of its own, kept in `bad_address`.
pub(crate) fn lab5_loop_error(err: lab5_hypercalls::Lab5Error, bad_address: &mut Option<String>) -> ExitLoopError {
    use lab5_hypercalls::Lab5Error;
    match err {
        Lab5Error::Run(e) => ExitLoopError::Run(e),
        Lab5Error::Unexpected(exit) => ExitLoopError::Unexpected(exit),
        Lab5Error::Console(e) => ExitLoopError::Console(e),
        bad @ Lab5Error::BadAddress { .. } => {
            let message = bad.to_string();
            *bad_address = Some(message.clone());
            ExitLoopError::Unexpected(UnexpectedExit::Other(message))
        }
    }
}

/// Seconds as people write them: 5, 0.3.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// The limit a stop reached, as a message says it.
fn limit_reached(stop: &Stop) -> String {
    match stop.limit {
        Limit::Cpu => format!("{} s of vCPU time (--timeout)", secs(stop.limits.budget)),
        Limit::Blocked => format!(
            "the wall-clock backstop: the vCPU thread did not run at all for {} s ({BLOCKED_FACTOR} x --timeout), \
             so it was blocked (sleeping or waiting), not running",
            secs(stop.limits.blocked)
        ),
        Limit::Wall => format!(
            "the wall-clock ceiling of {} s ({CEILING_FACTOR} x --timeout) with only {:.2} s of vCPU time used: the \
             vCPU thread waited more than it ran",
            secs(stop.limits.ceiling),
            secs(stop.cpu)
        ),
    }
}

/// A timeout the lab code came back from: the exit loop with EINTR, or any lab function, after
/// which nothing else ran (`Watchdog::enter`). `report` says where the guest was.
pub(crate) fn timeout(stop: &Stop, report: &RunReport) -> Failure {
    let message = if stop.running.runs_the_guest {
        let at = report.rip.map(|rip| format!(" at RIP {rip:#x}")).unwrap_or_default();
        format!(
            "timeout: the guest did not halt within {}, stopped{at} after {} exits; a guest that spins or never \
             reaches HLT ends here ({TROUBLESHOOTING})",
            limit_reached(stop),
            report.counts.total()
        )
    } else {
        format!(
            "timeout: {} was still running when the run reached {}: does it loop? (book: {})",
            stop.running.name,
            limit_reached(stop),
            stop.running.book
        )
    };
    Failure::new(Status::Timeout, message)
}

/// A stop the lab code did not come back from within `grace`.
pub(crate) fn did_not_return(stop: &Stop, grace: Duration) -> Failure {
    let (name, book) = (stop.running.name, stop.running.book);
    let message = if stop.running.runs_the_guest {
        format!(
            "timeout: the guest was stopped after {}, but the exit loop did not return: does {name} return the error \
             of a failed KVM_RUN? (book: {book})",
            limit_reached(stop)
        )
    } else {
        format!(
            "timeout: {name} did not return within {} s after the run reached {}: does it loop forever? (book: {book})",
            secs(grace),
            limit_reached(stop)
        )
    };
    Failure::new(Status::Timeout, message)
}

/// The RIP a vCPU reads back after KVM resets it on a shutdown: SVM hosts do (`shutdown_interception`
/// re-initialises the VMCB, which the APM leaves undefined then); VMX and PVM keep the guest's RIP.
const RESET_RIP: u64 = 0xfff0;

pub(crate) fn loop_failure(
    err: ExitLoopError,
    mode: Mode,
    stop: Option<Stop>,
    report: &RunReport,
    suberror: Option<u32>,
) -> Failure {
    let at = report.rip.map(|rip| format!(" at RIP {rip:#x}")).unwrap_or_default();
    let exits = report.counts.total();
    if let (ExitLoopError::Run(e), Some(stop)) = (&err, stop)
        && e.errno() == libc::EINTR
    {
        return timeout(&stop, report);
    }
    match err {
        ExitLoopError::Unexpected(UnexpectedExit::Shutdown)
            if mode == Mode::Paged32 && Path::new(PVM_MODULE).exists() =>
        {
            Failure::new(
                Status::GuestFault,
                format!(
                    "triple fault (KVM_EXIT_SHUTDOWN){at}: this host's KVM is PVM (kvm_pvm), which supports paging only \
                     in long mode, so paged32 cannot run here; it needs a VMX or SVM host ({TROUBLESHOOTING})"
                ),
            )
        }
        ExitLoopError::Unexpected(UnexpectedExit::Shutdown) => {
            let reset = if report.rip == Some(RESET_RIP) {
                " (RIP 0xfff0 is the reset state: SVM hosts reset the vCPU after a shutdown, so it does not \
                 say where the guest was; --trace shows its last exit, --step the instruction that faulted)"
            } else {
                ""
            };
            // In real mode IDTR's reset value is a valid vector table at 0: an exception jumps
            // through it instead of becoming a shutdown at once.
            let why = if mode == Mode::Real {
                "in real mode an exception jumps through the vector table at guest physical 0, which holds no \
                 handlers in the kit's guests, so the guest ran on until the CPU shut down; check CS and the registers"
            } else {
                "there is no IDT, so any exception becomes a shutdown; check CR3, the page tables, EFER and CS"
            };
            Failure::new(
                Status::GuestFault,
                format!("triple fault (KVM_EXIT_SHUTDOWN){at} after {exits} exits: {why}{reset} ({TROUBLESHOOTING})"),
            )
        }
        ExitLoopError::Unexpected(UnexpectedExit::InternalError) => {
            let detail = suberror.map_or_else(String::new, |sub| {
                format!(", suberror {sub}: {}", suberror_meaning(sub))
            });
            Failure::new(
                Status::GuestFault,
                format!(
                    "KVM internal error (KVM_EXIT_INTERNAL_ERROR{detail}){at} after {exits} exits: the guest ran \
                     something KVM cannot handle in this mode ({TROUBLESHOOTING})"
                ),
            )
        }
        ExitLoopError::Unexpected(exit) => Failure::new(
            Status::GuestFault,
            format!("guest fault: {exit}{at} after {exits} exits ({TROUBLESHOOTING})"),
        ),
        ExitLoopError::Run(e) => Failure::new(
            Status::GuestFault,
            format!("KVM_RUN failed{at}: {e} ({TROUBLESHOOTING})"),
        ),
        ExitLoopError::Console(e) => Failure::new(Status::GuestFault, format!("cannot write the guest's output: {e}")),
    }
}

/// `--step` ran `--max-steps` instructions and the guest has not halted.
pub(crate) fn step_limit(steps: u64, rip: u64, report: &RunReport) -> Failure {
    Failure::new(
        Status::Timeout,
        format!(
            "step limit: the guest ran {steps} instruction{} (--max-steps) without halting; stopped at RIP {rip:#x} \
             after {} exits (book: Debugging your guest)",
            if steps == 1 { "" } else { "s" },
            report.counts.total()
        ),
    )
}

pub(crate) fn result_failure(err: ResultError) -> Failure {
    Failure::new(Status::WrongResult, format!("{err} (book: Lab 4, The exit loop)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shutdown_at(rip: u64) -> String {
        let report = RunReport {
            rip: Some(rip),
            ..RunReport::default()
        };
        let err = ExitLoopError::Unexpected(UnexpectedExit::Shutdown);
        loop_failure(err, Mode::Long, None, &report, None).message
    }

    #[test]
    fn a_triple_fault_at_the_reset_rip_says_the_vcpu_was_reset() {
        let message = shutdown_at(RESET_RIP);
        assert!(
            message.contains("at RIP 0xfff0") && message.contains("reset state"),
            "{message}"
        );
        let message = shutdown_at(0x0);
        assert!(
            message.contains("at RIP 0x0") && !message.contains("reset state"),
            "{message}"
        );
    }
}
