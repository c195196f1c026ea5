//! The kvm-hello-world session: the labs called in the order of kvm-hello-world's `main` (and
//! LWN's), each announced to the run's watchdog so that a timeout names it.

use std::io::Write;

use kit_common::{GUEST_MEMORY_SIZE, Mode, Status};
use kvm_ioctls::VcpuExit;
use lab4_exit_loop::{ExitLoopError, UnexpectedExit};

use super::diagnosis::{self, lab0_failure, lab1_failure, refused};
use super::gdb::{self, GdbEnd};
use super::stepper::{self, GuestView, StepEnd};
use super::watchdog::{LabFn, Watchdog};
use super::{Failure, Program, RunConfig, RunReport};
use crate::explain::{self, ExitEvent, Explanation};

const LAB0: &str = "Lab 0, The LWN warm-up";
const LAB1: &str = "Lab 1, Guest memory and the vCPU";
const LAB2: &str = "Lab 2, Page tables";
const LAB3: &str = "Lab 3, Registers and CPU modes";
const LAB4: &str = "Lab 4, The exit loop";
const LAB5: &str = "Lab 5, Hypercalls";

const fn lab_fn(name: &'static str, book: &'static str) -> LabFn {
    LabFn {
        name,
        book,
        runs_the_guest: false,
    }
}

const fn exit_loop(name: &'static str, book: &'static str) -> LabFn {
    LabFn {
        name,
        book,
        runs_the_guest: true,
    }
}

const VM_INIT: LabFn = lab_fn("lab1 vm_init", LAB1);
const VCPU_INIT: LabFn = lab_fn("lab1 vcpu_init", LAB1);
const GUEST_MEMORY_HOST_ADDRESS: LabFn = lab_fn("lab1 guest_memory_host_address", LAB1);
const KVM_RUN_MAPPING: LabFn = lab_fn("lab1 kvm_run_mapping", LAB1);
const LOAD_IMAGE: LabFn = lab_fn("lab1 load_image", LAB1);
const SETUP_LONG_MODE_PAGE_TABLES: LabFn = lab_fn("lab2 setup_long_mode_page_tables", LAB2);
const SETUP_PAGED32_PAGE_DIRECTORY: LabFn = lab_fn("lab2 setup_paged32_page_directory", LAB2);
const TRANSLATE: LabFn = lab_fn("lab2 translate", LAB2);
const SPECIAL_REGISTERS: LabFn = lab_fn("lab3 special_registers", LAB3);
const GENERAL_REGISTERS: LabFn = lab_fn("lab3 general_registers", LAB3);
const RUN_UNTIL_HALT: LabFn = exit_loop("lab4 run_until_halt", LAB4);
const HANDLE_EXIT_STEPPED: LabFn = exit_loop("lab4 handle_exit (kvm-hello --step)", LAB4);
const HANDLE_EXIT_UNDER_GDB: LabFn = exit_loop("lab4 handle_exit (kvm-hello --gdb)", LAB4);
const RUN_HYPERCALLS: LabFn = exit_loop("lab5 run_hypercalls", LAB5);
const READ_RESULT_SLOT: LabFn = lab_fn("lab4 read_result_slot", LAB4);
const CHECK_RESULTS: LabFn = lab_fn("lab4 check_results", LAB4);
const LWN_CREATE_VM: LabFn = lab_fn("lab0 create_vm", LAB0);
const LWN_SETUP_VCPU: LabFn = lab_fn("lab0 setup_vcpu", LAB0);
const LWN_RUN: LabFn = exit_loop("lab0 run", LAB0);

/// Tells the watchdog that `function` starts; a run that was stopped goes no further.
fn enter(watchdog: &Watchdog, function: LabFn, report: &RunReport) -> Result<(), Failure> {
    watchdog
        .enter(function)
        .map_err(|stop| diagnosis::timeout(&stop, report))
}

/// The watchdog could not map the vCPU's kvm_run to stop it: the run does not start unguarded.
fn cannot_arm(err: std::io::Error) -> Failure {
    Failure::new(
        Status::GuestFault,
        format!("cannot map the vCPU's kvm_run for the watchdog: {err} (book: Troubleshooting)"),
    )
}

// ANCHOR: session
/// kvm-hello-world's `main` and `run_*_mode`, one lab at a time.
pub(crate) fn session(
    config: &RunConfig,
    watchdog: &Watchdog,
    console: &mut dyn Write,
    report: &mut RunReport,
) -> Result<(), Failure> {
    let labs = &config.labs;
    enter(watchdog, VM_INIT, report)?;
    let vm = (labs.vm_init)(GUEST_MEMORY_SIZE).map_err(lab1_failure)?;
    enter(watchdog, VCPU_INIT, report)?;
    let mut vcpu = (labs.vcpu_init)(&vm).map_err(lab1_failure)?;
    enter(watchdog, GUEST_MEMORY_HOST_ADDRESS, report)?;
    report.memory_host_base = Some((labs.guest_memory_host_address)(&vm.memory));
    enter(watchdog, KVM_RUN_MAPPING, report)?;
    report.kvm_run = Some((labs.kvm_run_mapping)(&mut vcpu));
    enter(watchdog, LOAD_IMAGE, report)?;
    (labs.load_image)(&vm.memory, &config.image).map_err(lab1_failure)?;

    let cr3 = match config.mode {
        Mode::Long => {
            enter(watchdog, SETUP_LONG_MODE_PAGE_TABLES, report)?;
            (labs.setup_long_mode_page_tables)(&vm.memory)
        }
        Mode::Paged32 => {
            enter(watchdog, SETUP_PAGED32_PAGE_DIRECTORY, report)?;
            (labs.setup_paged32_page_directory)(&vm.memory)
        }
        Mode::Real | Mode::Protected => Ok(0),
    }
    .map_err(|err| Failure::new(Status::GuestFault, format!("{err} (book: {LAB2})")))?;
    let reset = vcpu.fd.get_sregs().map_err(|err| refused("KVM_GET_SREGS", err))?;
    enter(watchdog, SPECIAL_REGISTERS, report)?;
    let sregs = (labs.special_registers)(config.mode, reset, cr3);
    vcpu.fd.set_sregs(&sregs).map_err(|err| refused("KVM_SET_SREGS", err))?;
    enter(watchdog, GENERAL_REGISTERS, report)?;
    let regs = (labs.general_registers)(config.mode, GUEST_MEMORY_SIZE);
    vcpu.fd.set_regs(&regs).map_err(|err| refused("KVM_SET_REGS", err))?;

    let mut events: Option<Vec<ExitEvent>> = config.explain_walk.map(|_| Vec::new());
    let kvm_run_address = report.kvm_run.map(|run| run.address).unwrap_or_default();
    if let (Some(walk_gva), Some(kvm_run)) = (config.explain_walk, report.kvm_run) {
        let walk = if config.mode == Mode::Long {
            enter(watchdog, TRANSLATE, report)?;
            Some((labs.translate)(&vm.memory, cr3, walk_gva))
        } else {
            None
        };
        report.explanation = Some(Explanation {
            mode: config.mode,
            image_len: config.image.len(),
            host_base: report.memory_host_base.unwrap_or_default(),
            kvm_run,
            cr3,
            rsp: regs.rsp,
            tables: explain::read_tables(&vm.memory, config.mode),
            walk,
            walk_gva,
            exits: Vec::new(),
        });
    }

    let mut trace = |exit: &VcpuExit<'_>| trace_exit(exit);
    let mut record = |exit: &VcpuExit<'_>| {
        if config.trace {
            trace_exit(exit);
        }
        if let Some(events) = events.as_mut() {
            events.push(ExitEvent::of(exit, kvm_run_address));
        }
    };
    let mut no_trace = |_: &VcpuExit<'_>| {};
    let tracer: &mut dyn FnMut(&VcpuExit<'_>) = match (config.explain_walk, config.trace) {
        (Some(_), _) => &mut record,
        (None, true) => &mut trace,
        (None, false) => &mut no_trace,
    };
    let mut bad_address = None;
    let mut step_limit = None;
    let mut gdb_ended = None;
    let armed = watchdog.arm(&vcpu.fd).map_err(cannot_arm)?;
    let looped = match config.program {
        Program::Hello => {
            enter(watchdog, RUN_UNTIL_HALT, report)?;
            (labs.run_until_halt)(&mut vcpu.fd, console, &mut report.counts, tracer)
        }
        Program::Hypercalls => {
            enter(watchdog, RUN_HYPERCALLS, report)?;
            let host_base = report.memory_host_base.unwrap_or_default();
            let mut host = lab5_hypercalls::Host::new(&vm.memory, cr3, host_base);
            let served = (labs.run_hypercalls)(&mut vcpu.fd, &mut host, console, tracer);
            report.counts = host.counts;
            report.hypercalls = Some(host.records);
            served.map_err(|err| diagnosis::lab5_loop_error(err, &mut bad_address))
        }
        Program::Step(options) => {
            enter(watchdog, HANDLE_EXIT_STEPPED, report)?;
            let guest = GuestView {
                labs,
                mode: config.mode,
                memory: &vm.memory,
                cr3,
            };
            let mut listing = std::io::LineWriter::new(std::io::stdout());
            let kvm_run = kvm_run_address;
            let stepped = stepper::step_until_halt(
                &mut vcpu.fd,
                &guest,
                options,
                watchdog,
                console,
                &mut report.counts,
                kvm_run,
                &mut listing,
            );
            let _ = stepper::set_single_step(&vcpu.fd, false);
            stepped.map(|(end, steps)| {
                if end == StepEnd::Limit {
                    step_limit = Some(steps);
                }
            })
        }
        Program::Gdb(options) => {
            enter(watchdog, HANDLE_EXIT_UNDER_GDB, report)?;
            let guest = GuestView {
                labs,
                mode: config.mode,
                memory: &vm.memory,
                cr3,
            };
            let served = gdb::serve(
                options,
                &mut vcpu.fd,
                &guest,
                watchdog,
                console,
                &mut report.counts,
                kvm_run_address,
            );
            match served {
                Ok(GdbEnd::Halted) => Ok(()),
                Ok(GdbEnd::CannotListen(message)) => return Err(Failure::new(Status::BadInput, message)),
                Ok(GdbEnd::Ended(message)) => {
                    gdb_ended = Some(message);
                    Ok(())
                }
                Err(err) => Err(err),
            }
        }
    };
    drop(armed);
    if let (Some(explanation), Some(events)) = (report.explanation.as_mut(), events) {
        explanation.exits = events;
    }

    let regs = vcpu.fd.get_regs().ok();
    report.rax = regs.map(|r| r.rax);
    report.rip = regs.map(|r| r.rip);
    if let (Some(message), Some(rip)) = (bad_address, report.rip) {
        let message = format!("guest fault: {message} at RIP {rip:#x} (book: {LAB5})");
        return Err(Failure::new(Status::GuestFault, message));
    }
    if let Some(message) = gdb_ended {
        return Err(Failure::new(Status::GuestFault, message));
    }
    if let (Some(steps), Some(rip)) = (step_limit, report.rip) {
        return Err(diagnosis::step_limit(steps, rip, report));
    }
    if let Err(err) = looped {
        let suberror = diagnosis::internal_error_suberror(&mut vcpu.fd);
        return Err(diagnosis::loop_failure(
            err,
            config.mode,
            watchdog.stopped(),
            report,
            suberror,
        ));
    }
    enter(watchdog, READ_RESULT_SLOT, report)?;
    let slot = (labs.read_result_slot)(&vm.memory, config.mode.result_width());
    report.memory_0x400 = slot.as_ref().ok().copied();
    let rax = report
        .rax
        .ok_or_else(|| Failure::new(Status::GuestFault, "KVM_GET_REGS failed after the guest halted"))?;
    enter(watchdog, CHECK_RESULTS, report)?;
    slot.and_then(|value| (labs.check_results)(rax, value))
        .map_err(diagnosis::result_failure)
}
// ANCHOR_END: session

/// One exit on stderr (`--trace`). A closed stderr is not an error of the run: the line is lost.
fn trace_exit(exit: &VcpuExit<'_>) {
    let line = match exit {
        VcpuExit::IoOut(port, data) => format!(
            "trace: io out, port {port:#x}, {} byte(s): {:?}",
            data.len(),
            String::from_utf8_lossy(data)
        ),
        VcpuExit::Hlt => "trace: hlt".to_owned(),
        other => format!("trace: {}", UnexpectedExit::from_exit(other)),
    };
    let _ = writeln!(std::io::stderr(), "{line}");
}

// ANCHOR: lwn_session
/// The LWN article's `main`, one lab-0 function at a time; `image`, when given (`--guest`),
/// replaces the article's code in the VM's page once `create_vm` has made it.
pub(crate) fn lwn_session(
    labs: &crate::labs::Labs,
    image: Option<&[u8]>,
    trace: bool,
    watchdog: &Watchdog,
    console: &mut dyn Write,
    report: &mut RunReport,
) -> Result<(), Failure> {
    enter(watchdog, LWN_CREATE_VM, report)?;
    let vm = (labs.lwn_create_vm)().map_err(lab0_failure)?;
    if let Some(image) = image {
        use vm_memory::{Bytes, GuestAddress};
        vm.memory
            .write_slice(image, GuestAddress(lab0_lwn::CODE_ADDR))
            .map_err(|err| Failure::new(Status::BadInput, format!("cannot load the guest at 0x1000: {err}")))?;
    }
    enter(watchdog, LWN_SETUP_VCPU, report)?;
    let mut vcpu = (labs.lwn_setup_vcpu)(&vm).map_err(lab0_failure)?;
    let mut tracer = |exit: &VcpuExit<'_>| {
        if trace {
            trace_exit(exit);
        }
    };
    let armed = watchdog.arm(&vcpu).map_err(cannot_arm)?;
    enter(watchdog, LWN_RUN, report)?;
    let looped = (labs.lwn_run)(&mut vcpu, console, &mut report.counts, &mut tracer);
    drop(armed);
    report.rip = vcpu.get_regs().ok().map(|regs| regs.rip);
    let err = match looped {
        Ok(()) => return Ok(()),
        Err(lab0_lwn::Lab0Error::Run(e)) => ExitLoopError::Run(e),
        Err(lab0_lwn::Lab0Error::Unexpected(exit)) => ExitLoopError::Unexpected(exit),
        Err(lab0_lwn::Lab0Error::Console(e)) => ExitLoopError::Console(e),
        Err(other) => return Err(lab0_failure(other)),
    };
    let suberror = diagnosis::internal_error_suberror(&mut vcpu);
    Err(diagnosis::loop_failure(
        err,
        Mode::Real,
        watchdog.stopped(),
        report,
        suberror,
    ))
}
// ANCHOR_END: lwn_session
