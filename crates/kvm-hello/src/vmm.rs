//! One run of the VMM: the labs called in the order of kvm-hello-world's `main`, on a vCPU
//! thread watched by the caller's thread.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use kit_common::{GUEST_MEMORY_SIZE, LabPanic, Mode, Status};
use kvm_ioctls::VcpuExit;
use lab1_memory::{KvmRunMapping, Lab1Error};
use lab4_exit_loop::{ExitCounts, ExitLoopError, ResultError, UnexpectedExit};

use crate::explain::{self, ExitEvent, Explanation};
use crate::labs::Labs;
use crate::watchdog;

/// How long a kicked vCPU thread gets to come back before the run is reported without it (a lab
/// loop that spins without calling KVM_RUN cannot be interrupted; its thread ends with the process).
const KICK_GRACE: Duration = Duration::from_secs(1);
/// Present on hosts whose KVM is PVM, which runs paging only in long mode.
const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The lab functions to call.
    pub labs: Labs,
    /// The CPU mode.
    pub mode: Mode,
    /// The flat guest image.
    pub image: Vec<u8>,
    /// Keep the guest's output for the report instead of writing it to stdout.
    pub capture_output: bool,
    /// Print every exit on stderr.
    pub trace: bool,
    /// The watchdog's limit.
    pub timeout: Duration,
    /// `Some(gva)`: record an `Explanation` of the run, with a page walk of `gva`.
    pub explain_walk: Option<u64>,
    /// Which exit loop serves the guest.
    pub program: Program,
}

/// The host side a guest runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Labs 1 to 4: the console on port 0xE9 (kvm-hello-world).
    Hello,
    /// Labs 1 to 3 and lab 5's hypercalls, in long mode.
    Hypercalls,
}

/// Why a run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit status it ends with.
    pub status: Status,
    /// The one-line explanation.
    pub message: String,
}

impl Failure {
    fn new(status: Status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

/// Everything a run found out, as far as it got.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// The guest's console bytes (only when captured).
    pub output: Vec<u8>,
    /// Exits by reason.
    pub counts: ExitCounts,
    /// RAX when the guest stopped.
    pub rax: Option<u64>,
    /// RIP when the guest stopped.
    pub rip: Option<u64>,
    /// The value at 0x400, as wide as the mode's word.
    pub memory_0x400: Option<u64>,
    /// Host virtual address of guest physical 0.
    pub memory_host_base: Option<u64>,
    /// The vCPU's kvm_run mapping.
    pub kvm_run: Option<KvmRunMapping>,
    /// Why the run failed, if it did.
    pub failure: Option<Failure>,
    /// What `--explain` shows (only when asked for).
    pub explanation: Option<Explanation>,
    /// The hypercalls served (only for `Program::Hypercalls`).
    pub hypercalls: Option<Vec<lab5_hypercalls::HypercallRecord>>,
}

/// The last panic of lab code, recorded by the panic hook.
static LAST_PANIC: Mutex<Option<LabPanic>> = Mutex::new(None);
/// Name of the thread that runs lab code.
const VCPU_THREAD: &str = "vcpu0";

/// Replaces Rust's panic output: every panic is recorded for `take_last_panic` (lab panics are
/// reported by `run`), and, with `report_others`, a panic outside lab code prints one line.
pub fn install_panic_hook(report_others: bool) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("a panic without a message");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let panic = LabPanic::from_message(message, location.as_deref());
        if report_others && thread::current().name() != Some(VCPU_THREAD) {
            eprintln!("kvm-hello: internal error: {panic}");
        }
        *LAST_PANIC.lock().unwrap_or_else(PoisonError::into_inner) = Some(panic);
    }));
}

/// The last panic recorded by the hook of `install_panic_hook`, if any.
pub fn take_last_panic() -> Option<LabPanic> {
    LAST_PANIC.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// The status a lab panic ends a run with.
pub fn panic_status(panic: &LabPanic) -> Status {
    match panic {
        LabPanic::NotImplemented(_) => Status::NotImplemented,
        LabPanic::Other(_) => Status::LabPanicked,
    }
}

/// Where the guest's console bytes go.
enum Console {
    /// Straight to stdout, line by line on a terminal, in large blocks otherwise.
    Stdout(Box<dyn Write + Send>),
    /// Into the report.
    Capture(Vec<u8>),
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Console::Stdout(out) => out.write(buf),
            Console::Capture(bytes) => bytes.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Console::Stdout(out) => out.write_all(buf),
            Console::Capture(bytes) => bytes.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Console::Stdout(out) => out.flush(),
            Console::Capture(_) => Ok(()),
        }
    }
}

fn stdout_console() -> Console {
    let stdout = io::stdout();
    if stdout.is_terminal() {
        Console::Stdout(Box::new(io::LineWriter::new(stdout)))
    } else {
        Console::Stdout(Box::new(io::BufWriter::with_capacity(64 * 1024, stdout)))
    }
}

/// Set by the watchdog when it stopped the vCPU.
static TIMED_OUT: AtomicBool = AtomicBool::new(false);

/// Runs the guest on a vCPU thread and waits for it at most `config.timeout` (plus a grace
/// period to collect its state). Never returns early without a report, never hangs.
pub fn run(config: RunConfig) -> RunReport {
    let (timeout, capture_output) = (config.timeout, config.capture_output);
    let exit_loop = "run_until_halt (book: Lab 4, The exit loop)";
    run_session(timeout, capture_output, exit_loop, move |console, report| {
        session(&config, console, report)
    })
}

/// A session's work on the vCPU thread: it writes the guest's output to the console and what it
/// finds to the report.
pub trait Session: FnOnce(&mut dyn Write, &mut RunReport) -> Result<(), Failure> + Send + 'static {}
impl<F: FnOnce(&mut dyn Write, &mut RunReport) -> Result<(), Failure> + Send + 'static> Session for F {}

/// Runs `session` on a vCPU thread and waits for it at most `timeout` (then kicks the vCPU, and
/// waits a grace period). `exit_loop` names the lab loop for the message when it does not return.
/// Never hangs, never returns without a report.
pub fn run_session(timeout: Duration, capture_output: bool, exit_loop: &str, session: impl Session) -> RunReport {
    TIMED_OUT.store(false, Ordering::SeqCst);
    let signal_installed = watchdog::install();
    let (done_tx, done_rx) = mpsc::channel();
    let spawned = thread::Builder::new().name(VCPU_THREAD.into()).spawn(move || {
        let mut report = RunReport::default();
        let mut console = if capture_output {
            Console::Capture(Vec::new())
        } else {
            stdout_console()
        };
        let result = session(&mut console, &mut report);
        let flushed = console.flush();
        if let Console::Capture(bytes) = console {
            report.output = bytes;
        }
        report.failure = result.err().or_else(|| {
            flushed
                .err()
                .map(|err| Failure::new(Status::GuestFault, format!("cannot write the guest's output: {err}")))
        });
        let _ = done_tx.send(());
        report
    });
    let vcpu_thread = match spawned {
        Ok(handle) => handle,
        Err(err) => {
            let failure = Failure::new(Status::GuestFault, format!("cannot start the vCPU thread: {err}"));
            return RunReport {
                failure: Some(failure),
                ..RunReport::default()
            };
        }
    };

    let started = Instant::now();
    if done_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
        TIMED_OUT.store(true, Ordering::SeqCst);
        watchdog::kick(&vcpu_thread, signal_installed);
        if done_rx.recv_timeout(KICK_GRACE) == Err(mpsc::RecvTimeoutError::Timeout) {
            // The lab loop does not return to KVM_RUN: leave its thread behind (it ends with the
            // process) and report what is known.
            let message = format!(
                "timeout: the guest was stopped after {:.1} s, but the exit loop did not return: does {exit_loop} \
                 return the error of a failed KVM_RUN?",
                started.elapsed().as_secs_f64()
            );
            return RunReport {
                failure: Some(Failure::new(Status::Timeout, message)),
                ..RunReport::default()
            };
        }
    }
    match vcpu_thread.join() {
        Ok(report) => report,
        Err(_) => {
            let panic = take_last_panic().unwrap_or_else(|| LabPanic::Other("the vCPU thread panicked".into()));
            RunReport {
                failure: Some(Failure::new(panic_status(&panic), panic.to_string())),
                ..RunReport::default()
            }
        }
    }
}

// ANCHOR: session
/// kvm-hello-world's `main` and `run_*_mode`, one lab at a time.
fn session(config: &RunConfig, console: &mut dyn Write, report: &mut RunReport) -> Result<(), Failure> {
    let labs = &config.labs;
    let vm = (labs.vm_init)(GUEST_MEMORY_SIZE).map_err(lab1_failure)?;
    let mut vcpu = (labs.vcpu_init)(&vm).map_err(lab1_failure)?;
    report.memory_host_base = Some((labs.guest_memory_host_address)(&vm.memory));
    report.kvm_run = Some((labs.kvm_run_mapping)(&mut vcpu));
    (labs.load_image)(&vm.memory, &config.image).map_err(lab1_failure)?;

    let cr3 = match config.mode {
        Mode::Long => (labs.setup_long_mode_page_tables)(&vm.memory),
        Mode::Paged32 => (labs.setup_paged32_page_directory)(&vm.memory),
        Mode::Real | Mode::Protected => Ok(0),
    }
    .map_err(|err| Failure::new(Status::GuestFault, format!("{err} (book: Lab 2, Page tables)")))?;
    let refused = |ioctl: &str, err: kvm_ioctls::Error| {
        Failure::new(
            Status::GuestFault,
            format!(
                "{ioctl} failed: {err}: KVM refused the vCPU state; check CR0, CR4, EFER and the segments (book: Lab 3, \
                 Registers and CPU modes)"
            ),
        )
    };
    let reset = vcpu.fd.get_sregs().map_err(|err| refused("KVM_GET_SREGS", err))?;
    let sregs = (labs.special_registers)(config.mode, reset, cr3);
    vcpu.fd.set_sregs(&sregs).map_err(|err| refused("KVM_SET_SREGS", err))?;
    let regs = (labs.general_registers)(config.mode, GUEST_MEMORY_SIZE);
    vcpu.fd.set_regs(&regs).map_err(|err| refused("KVM_SET_REGS", err))?;

    let mut events: Option<Vec<ExitEvent>> = config.explain_walk.map(|_| Vec::new());
    let kvm_run_address = report.kvm_run.map(|run| run.address).unwrap_or_default();
    if let (Some(walk_gva), Some(kvm_run)) = (config.explain_walk, report.kvm_run) {
        report.explanation = Some(Explanation {
            mode: config.mode,
            image_len: config.image.len(),
            host_base: report.memory_host_base.unwrap_or_default(),
            kvm_run,
            cr3,
            rsp: regs.rsp,
            tables: explain::read_tables(&vm.memory, config.mode),
            walk: (config.mode == Mode::Long).then(|| (labs.translate)(&vm.memory, cr3, walk_gva)),
            walk_gva,
            exits: Vec::new(),
        });
    }

    watchdog::arm(&mut vcpu.fd);
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
    let looped = match config.program {
        Program::Hello => (labs.run_until_halt)(&mut vcpu.fd, console, &mut report.counts, tracer),
        Program::Hypercalls => {
            let host_base = report.memory_host_base.unwrap_or_default();
            let mut host = lab5_hypercalls::Host::new(&vm.memory, cr3, host_base);
            let served = (labs.run_hypercalls)(&mut vcpu.fd, &mut host, console, tracer);
            report.counts = host.counts;
            report.hypercalls = Some(host.records);
            served.map_err(|err| lab5_loop_error(err, &mut bad_address))
        }
    };
    watchdog::disarm();
    if let (Some(explanation), Some(events)) = (report.explanation.as_mut(), events) {
        explanation.exits = events;
    }

    let regs = vcpu.fd.get_regs().ok();
    report.rax = regs.map(|r| r.rax);
    report.rip = regs.map(|r| r.rip);
    if let (Some(message), Some(rip)) = (bad_address, report.rip) {
        let message = format!("guest fault: {message} at RIP {rip:#x} (book: Lab 5, Hypercalls)");
        return Err(Failure::new(Status::GuestFault, message));
    }
    if let Err(err) = looped {
        let suberror = internal_error_suberror(&mut vcpu.fd);
        return Err(loop_failure(err, config.mode, config.timeout, report, suberror));
    }
    let slot = (labs.read_result_slot)(&vm.memory, config.mode.result_width());
    report.memory_0x400 = slot.as_ref().ok().copied();
    let rax = report
        .rax
        .ok_or_else(|| Failure::new(Status::GuestFault, "KVM_GET_REGS failed after the guest halted"))?;
    slot.and_then(|value| lab4_exit_loop::check_results(rax, value))
        .map_err(result_failure)
}
// ANCHOR_END: session

fn trace_exit(exit: &VcpuExit<'_>) {
    match exit {
        VcpuExit::IoOut(port, data) => {
            eprintln!(
                "trace: io out, port {port:#x}, {} byte(s): {:?}",
                data.len(),
                String::from_utf8_lossy(data)
            )
        }
        VcpuExit::Hlt => eprintln!("trace: hlt"),
        other => eprintln!("trace: {}", UnexpectedExit::from_exit(other)),
    }
}

const TROUBLESHOOTING: &str = "book: Troubleshooting";

fn lab1_failure(err: Lab1Error) -> Failure {
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

/// The suberror of a `KVM_EXIT_INTERNAL_ERROR` (kvm-ioctls does not decode it).
fn internal_error_suberror(vcpu: &mut kvm_ioctls::VcpuFd) -> Option<u32> {
    let run = vcpu.get_kvm_run();
    if run.exit_reason != kvm_bindings::KVM_EXIT_INTERNAL_ERROR {
        return None;
    }
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union member the
    // kernel filled; it is plain integers.
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
fn lab5_loop_error(err: lab5_hypercalls::Lab5Error, bad_address: &mut Option<String>) -> ExitLoopError {
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

fn loop_failure(
    err: ExitLoopError,
    mode: Mode,
    timeout: Duration,
    report: &RunReport,
    suberror: Option<u32>,
) -> Failure {
    let at = report.rip.map(|rip| format!(" at RIP {rip:#x}")).unwrap_or_default();
    let exits = report.counts.total();
    match err {
        ExitLoopError::Run(e) if e.errno() == libc::EINTR && TIMED_OUT.load(Ordering::SeqCst) => Failure::new(
            Status::Timeout,
            format!(
                "timeout: the guest did not halt within {} s (stopped{at} after {exits} exits); a guest that spins or never \
                 reaches HLT ends here ({TROUBLESHOOTING})",
                timeout.as_secs_f64()
            ),
        ),
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
        ExitLoopError::Unexpected(UnexpectedExit::Shutdown) => Failure::new(
            Status::GuestFault,
            format!(
                "triple fault (KVM_EXIT_SHUTDOWN){at} after {exits} exits: there is no IDT, so any exception becomes a \
                 shutdown; check CR3, the page tables, EFER and CS ({TROUBLESHOOTING})"
            ),
        ),
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

fn result_failure(err: ResultError) -> Failure {
    Failure::new(Status::WrongResult, format!("{err} (book: Lab 4, The exit loop)"))
}

/// Runs lab 0, the LWN warm-up VM, on a vCPU thread under the watchdog.
pub fn run_lwn(labs: Labs, capture_output: bool, trace: bool, timeout: Duration) -> RunReport {
    let exit_loop = "lab0 run (book: Lab 0, The LWN warm-up)";
    run_session(timeout, capture_output, exit_loop, move |console, report| {
        lwn_session(&labs, trace, timeout, console, report)
    })
}

// ANCHOR: lwn_session
/// The LWN article's `main`, one lab-0 function at a time.
fn lwn_session(
    labs: &Labs,
    trace: bool,
    timeout: Duration,
    console: &mut dyn Write,
    report: &mut RunReport,
) -> Result<(), Failure> {
    let vm = (labs.lwn_create_vm)().map_err(lab0_failure)?;
    let mut vcpu = (labs.lwn_setup_vcpu)(&vm).map_err(lab0_failure)?;
    watchdog::arm(&mut vcpu);
    let mut tracer = |exit: &VcpuExit<'_>| {
        if trace {
            trace_exit(exit);
        }
    };
    let looped = (labs.lwn_run)(&mut vcpu, console, &mut report.counts, &mut tracer);
    watchdog::disarm();
    report.rip = vcpu.get_regs().ok().map(|regs| regs.rip);
    let err = match looped {
        Ok(()) => return Ok(()),
        Err(lab0_lwn::Lab0Error::Run(e)) => ExitLoopError::Run(e),
        Err(lab0_lwn::Lab0Error::Unexpected(exit)) => ExitLoopError::Unexpected(exit),
        Err(lab0_lwn::Lab0Error::Console(e)) => ExitLoopError::Console(e),
        Err(other) => return Err(lab0_failure(other)),
    };
    let suberror = internal_error_suberror(&mut vcpu);
    Err(loop_failure(err, Mode::Real, timeout, report, suberror))
}
// ANCHOR_END: lwn_session

fn lab0_failure(err: lab0_lwn::Lab0Error) -> Failure {
    use lab0_lwn::Lab0Error;
    match &err {
        Lab0Error::OpenKvm(e) => lab1_failure(Lab1Error::OpenKvm(*e)),
        Lab0Error::ApiVersion(v) => lab1_failure(Lab1Error::ApiVersion(*v)),
        _ => Failure::new(Status::GuestFault, format!("{err} (book: Lab 0, The LWN warm-up)")),
    }
}
