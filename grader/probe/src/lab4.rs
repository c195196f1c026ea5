//! Lab 4: `handle_exit` on the judge's made-up exits, the result slot and checks, guest runs
//! through the student's exit loop (kvm-hello's session, under its watchdog), and a loop whose
//! KVM_RUN fails.

use std::time::Duration;

use grader_protocol::lab4::{
    self as wire, CheckResults, Counts, Exit, FailedKvmRun, FailingKvmRun, Flow, GuestRun, HandleExits, Handled,
    LoopError, ReadResultSlot, RunGuest, TracedExit,
};
use grader_protocol::{Envelope, Request};
use kit_common::{LabPanic, Mode};
use kvm_hello::vmm::{self, Program, RunConfig};
use kvm_ioctls::VcpuExit;
use lab4_exit_loop::{ExitCounts, ExitLoopError, ResultError, UnexpectedExit};

use crate::{Handled as Answered, Probe, handle, memory};

/// Answers lab 4's requests.
pub fn route(probe: &Probe, envelope: &Envelope) -> Option<Answered> {
    let labs = probe.labs;
    let body = &envelope.body;
    Some(match envelope.request.as_str() {
        HandleExits::NAME => handle(body, |request: HandleExits| Ok(handle_exits(probe, &request.exits))),
        ReadResultSlot::NAME => handle(body, |request: ReadResultSlot| {
            let memory = memory::fresh()?;
            memory::fill(&memory, &request.memory)?;
            Ok(request
                .widths
                .iter()
                .map(|&width| (labs.read_result_slot)(&memory, width).map_err(|err| err.to_string()))
                .collect())
        }),
        CheckResults::NAME => handle(body, |request: CheckResults| {
            Ok(request
                .cases
                .iter()
                .map(|&(rax, value)| (labs.check_results)(rax, value).map_err(result_error))
                .collect())
        }),
        RunGuest::NAME => handle(body, |request: RunGuest| Ok(run_guest(probe, request))),
        FailingKvmRun::NAME => handle(body, |request: FailingKvmRun| {
            failing_kvm_run(probe, Duration::from_millis(request.wait_ms), request.rax)
        }),
        _ => return None,
    })
}

fn handle_exits(probe: &Probe, exits: &[Exit]) -> Handled {
    let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
    let mut results = Vec::new();
    for exit in exits {
        let mut buffer = [0u8; 8];
        let exit = match exit {
            Exit::IoOut { port, data } => VcpuExit::IoOut(*port, data),
            Exit::IoIn { port, len } => VcpuExit::IoIn(*port, &mut buffer[..(*len).min(8)]),
            Exit::MmioRead { addr, len } => VcpuExit::MmioRead(*addr, &mut buffer[..(*len).min(8)]),
            Exit::Hlt => VcpuExit::Hlt,
            Exit::Shutdown => VcpuExit::Shutdown,
            Exit::Other => VcpuExit::IrqWindowOpen,
        };
        let result = (probe.labs.handle_exit)(exit, &mut console, &mut counts);
        results.push(result.map(flow).map_err(loop_error));
    }
    Handled {
        results,
        console,
        counts: counts_of(&counts),
    }
}

fn flow(flow: lab4_exit_loop::Flow) -> Flow {
    match flow {
        lab4_exit_loop::Flow::Continue => Flow::Continue,
        lab4_exit_loop::Flow::Halt => Flow::Halt,
    }
}

fn counts_of(c: &ExitCounts) -> Counts {
    Counts {
        io_out: c.io_out,
        io_in: c.io_in,
        hlt: c.hlt,
        mmio: c.mmio,
        shutdown: c.shutdown,
        other: c.other,
    }
}

fn unexpected(exit: UnexpectedExit) -> wire::UnexpectedExit {
    use wire::UnexpectedExit as W;
    match exit {
        UnexpectedExit::IoOut { port, len } => W::IoOut { port, len },
        UnexpectedExit::IoIn { port, len } => W::IoIn { port, len },
        UnexpectedExit::MmioRead { addr, len } => W::MmioRead { addr, len },
        UnexpectedExit::MmioWrite { addr, len } => W::MmioWrite { addr, len },
        UnexpectedExit::Shutdown => W::Shutdown,
        UnexpectedExit::InternalError => W::InternalError,
        UnexpectedExit::FailEntry { reason } => W::FailEntry { reason },
        UnexpectedExit::Other(name) => W::Other(name),
    }
}

fn loop_error(err: ExitLoopError) -> LoopError {
    match err {
        ExitLoopError::Run(e) => LoopError::Run {
            errno: e.errno(),
            text: e.to_string(),
        },
        ExitLoopError::Unexpected(exit) => LoopError::Unexpected(unexpected(exit)),
        ExitLoopError::Console(e) => LoopError::Console(e.to_string()),
    }
}

fn result_error(err: ResultError) -> wire::ResultError {
    match err {
        ResultError::Rax(value) => wire::ResultError::Rax(value),
        ResultError::Memory(value) => wire::ResultError::Memory(value),
        other => wire::ResultError::Other(other.to_string()),
    }
}

fn mode(mode: wire::Mode) -> Mode {
    match mode {
        wire::Mode::Real => Mode::Real,
        wire::Mode::Protected => Mode::Protected,
        wire::Mode::Paged32 => Mode::Paged32,
        wire::Mode::Long => Mode::Long,
    }
}

/// A guest run as kvm-hello makes it: the student's labs 1 to 4 on a vCPU thread under
/// kvm-hello's watchdog (`timeout_ms` of vCPU time, a wall-clock backstop above it), so a loop
/// that never returns is stopped and named, in this process as in a jailed one.
fn run_guest(probe: &Probe, request: RunGuest) -> GuestRun {
    let report = vmm::run(RunConfig {
        labs: probe.labs,
        mode: mode(request.mode),
        image: request.image,
        capture_output: true,
        trace: false,
        timeout: Duration::from_millis(request.timeout_ms),
        // The explanation records every exit the loop gives its trace callback.
        explain_walk: request.trace.then_some(kit_common::RESULT_ADDR),
        program: Program::Hello,
    });
    let (status, message) = report
        .failure
        .as_ref()
        .map_or((0, String::new()), |f| (f.status.code(), f.message.clone()));
    GuestRun {
        status,
        message,
        output: report.output,
        counts: counts_of(&report.counts),
        rax: report.rax,
        memory_0x400: report.memory_0x400,
        traced: report.explanation.map(|explanation| {
            explanation
                .exits
                .into_iter()
                .map(|e| TracedExit {
                    kind: e.kind,
                    port: e.port,
                    data: e.data,
                })
                .collect()
        }),
    }
}

/// What the lab's loop did with a KVM_RUN that fails at once, and whether KVM_RUN was entered
/// at all: KVM copies the registers into kvm_run when KVM_RUN returns (`KVM_SYNC_X86_REGS`;
/// x86 KVM's common code does it on the EINTR path too, whatever the vendor module: seen on
/// PVM here), so the judge's RAX shows there only after a real KVM_RUN. `returned` is `None` when the loop
/// had not returned within `wait` (it retries; its thread is left behind and ends with the
/// process, which the runner's CPU limit also bounds).
fn failing_kvm_run(probe: &Probe, wait: Duration, rax: u64) -> Result<FailedKvmRun, String> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|err| format!("cannot open /dev/kvm: {err}"))?;
    let vm = kvm.create_vm().map_err(|err| format!("cannot create a VM: {err}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|err| format!("cannot create a vCPU: {err}"))?;
    let regs = kvm_bindings::kvm_regs {
        rax,
        ..vcpu.get_regs().map_err(|err| format!("KVM_GET_REGS failed: {err}"))?
    };
    vcpu.set_regs(&regs)
        .map_err(|err| format!("KVM_SET_REGS failed: {err}"))?;
    vcpu.sync_regs_mut().regs = kvm_bindings::kvm_regs::default();
    vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::Register);
    // With immediate_exit set, KVM_RUN returns EINTR before it enters the guest, every time:
    // what a VMM sees when its vCPU is kicked (kvm-hello's watchdog does exactly this).
    vcpu.set_kvm_immediate_exit(1);
    let run_until_halt = probe.labs.run_until_halt;
    let returned = on_lab_thread("kvm-run", wait, move || {
        let _vm = vm;
        let (mut console, mut counts) = (Vec::new(), ExitCounts::default());
        let returned = run_until_halt(&mut vcpu, &mut console, &mut counts, &mut |_| {});
        (returned, vcpu.sync_regs().regs.rax)
    })?;
    Ok(match returned {
        Some((returned, synced_rax)) => FailedKvmRun {
            returned: Some(returned.map_err(loop_error)),
            synced_rax: Some(synced_rax),
        },
        None => FailedKvmRun {
            returned: None,
            synced_rax: None,
        },
    })
}

/// Runs lab code on a thread of its own (named `lab-…`, so the probe's hook records its
/// panics) and waits for it at most `limit`: `Some(value)` when it returned, `None` when it
/// had not. A panic of lab code is raised again on the calling thread, so the answer reports a
/// stub reached or a panic as it would for code called directly.
pub fn on_lab_thread<T: Send + 'static>(
    name: &str,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("lab-{name}"))
        .spawn(move || {
            let _ = vmm::take_last_panic();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|payload| {
                vmm::take_last_panic().unwrap_or_else(|| {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into());
                    LabPanic::from_message(&message, None)
                })
            });
            let _ = tx.send(outcome);
        })
        .map_err(|err| format!("cannot start a thread: {err}"))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => Ok(Some(value)),
        // Through the hook of this thread, which records a stub as a stub.
        Ok(Err(LabPanic::NotImplemented(stub))) => panic!("not yet implemented: {stub}"),
        // Its message already names its place: unwound without the hook, it is the payload.
        Ok(Err(LabPanic::Other(message))) => std::panic::resume_unwind(Box::new(message)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err("lab code's thread ended without a result".into()),
    }
}
